"""Adapters name their base portably: the embedded SmolLM2 by its Hub id plus its GGUF file's hash,
never by a folder of the training machine's cache; Hub adapter ids work where a folder does.

The Hub is played by a local folder laid out as the Hub cache (HF_HUB_CACHE, HF_HUB_OFFLINE=1):
the base's snapshot holds the files of the converted embedded model, as another machine would
hold the Hub's own. Loads that must not see this process's state run in a subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trained_adapter import trained_adapter

from triplesmith.errors import ModelError
from triplesmith.models import (
    EMBEDDED_MODELS,
    MARKER,
    adapter_hash,
    convert_embedded,
    embedded_sha256,
    resolve_adapter,
    resolve_base,
)
from triplesmith.training.manifest import name_base_portably, read_manifest

HUB_ID = EMBEDDED_MODELS["smollm2"]["hub_id"]
COMMIT = "a" * 40
SENTENCE = "Barack Obama was born in Hawaii."

AUTO_PEFT = """
import json, sys, torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

adapter, out = sys.argv[1], sys.argv[2]
model = AutoPeftModelForCausalLM.from_pretrained(adapter)
base = model.peft_config["default"].base_model_name_or_path
ids = AutoTokenizer.from_pretrained(base)(sys.argv[3], return_tensors="pt")
with torch.no_grad():
    adapted = model(**ids).logits
    with model.disable_adapter():
        plain = model(**ids).logits
torch.save({"adapted": adapted, "plain": plain}, out)
print(json.dumps({"base": base}))
"""


def hub_snapshot(hub: Path, repo_id: str, files: Path) -> Path:
    """`files` laid out as the Hub cache holds a repo: refs/main naming a snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for file in files.iterdir():
        if file.is_file() and file.name != MARKER:
            (snapshot / file.name).symlink_to(file.resolve())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def offline_env(hub: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", **extra}
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_adapter(tmp_path_factory.getbasetemp() / "shared-adapter")


# --- acceptance: AutoPeftModelForCausalLM after the training cache moved ------------------------


@pytest.mark.slow
def test_an_adapter_loads_with_auto_peft_after_the_training_cache_is_moved(trained, tmp_path):
    import torch
    from peft import PeftModel

    from triplesmith.models import load

    config = json.loads((trained.adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_ID
    manifest = read_manifest(trained.adapter)
    assert (manifest.base_model_path, manifest.base_model_sha256) == (HUB_ID, embedded_sha256())
    assert manifest.adapter_hash == adapter_hash(trained.adapter)  # hashed after the rewrite
    for file in trained.adapter.glob("*"):  # checkpoints/ are for resuming on this machine
        if file.suffix in (".json", ".md"):
            assert str(trained.cache) not in file.read_text(), file.name

    moved = trained.cache.with_name("cache-moved")
    trained.cache.rename(moved)
    hub = tmp_path / "hub"
    hub_snapshot(hub, HUB_ID, convert_embedded("smollm2"))
    logits = tmp_path / "logits.pt"
    command = [sys.executable, "-c", AUTO_PEFT, str(trained.adapter), str(logits), SENTENCE]
    env = offline_env(hub, TRIPLESMITH_CACHE_DIR=str(moved))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"base": HUB_ID}

    loaded = torch.load(logits)
    assert not torch.allclose(loaded["adapted"], loaded["plain"], atol=1e-4)  # adapter applied
    model, tokenizer = load("smollm2")  # the embedded model, as triplesmith resolves it
    reference = PeftModel.from_pretrained(model, str(trained.adapter))
    with torch.no_grad():
        expected = reference(**tokenizer(SENTENCE, return_tensors="pt")).logits
    assert torch.allclose(loaded["adapted"], expected, atol=1e-4)


@pytest.mark.slow
def test_a_hub_adapter_id_runs_an_hf_chain_offline(trained, tmp_path):
    hub = tmp_path / "hub"
    hub_snapshot(hub, "someone/smollm2-triples", trained.adapter)
    spec = "hf:smollm2+adapter=someone/smollm2-triples+max_new_tokens=24"
    command = [sys.executable, "-m", "triplesmith.cli.app", "extract", SENTENCE, "-c", spec]
    done = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=offline_env(hub), timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    extraction = json.loads(done.stdout)
    assert extraction["chain"] == spec and extraction["error"] is None
    assert extraction["adapter_hash"] == adapter_hash(trained.adapter)


def test_a_hub_adapter_id_missing_from_the_offline_cache_is_one_line(tmp_path):
    spec = "hf:smollm2+adapter=someone/not-downloaded"
    command = [sys.executable, "-m", "triplesmith.cli.app", "extract", SENTENCE, "-c", spec]
    done = subprocess.run(
        command, capture_output=True, text=True, env=offline_env(tmp_path / "hub"), timeout=300
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "someone/not-downloaded" in line and "HF_HUB_CACHE" in line


# --- the pieces ---------------------------------------------------------------------------------


def test_a_saved_config_naming_the_cache_folder_is_rewritten_to_the_hub_id(tmp_path):
    cache_copy = tmp_path / "cache" / "models" / "smollm2"
    cache_copy.mkdir(parents=True)
    marker = {"hub_id": HUB_ID, "source_sha256": "f" * 64}
    (cache_copy / MARKER).write_text(json.dumps(marker))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    saved = {"base_model_name_or_path": str(cache_copy), "peft_type": "LORA", "r": 8}
    (adapter / "adapter_config.json").write_text(json.dumps(saved))
    (adapter / "README.md").write_text(f"---\nbase_model: {cache_copy}\n---\n")

    assert name_base_portably(adapter) == HUB_ID
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config == {**saved, "base_model_name_or_path": HUB_ID}
    assert (adapter / "README.md").read_text() == f"---\nbase_model: {HUB_ID}\n---\n"
    assert name_base_portably(adapter) is None  # already portable: nothing to do


def test_a_base_named_with_another_gguf_hash_is_refused():
    with pytest.raises(ModelError, match="is not the installed embedded smollm2"):
        resolve_base(HUB_ID, "0" * 64)
    assert resolve_base(HUB_ID, embedded_sha256()).name == "smollm2"


def test_an_adapter_folder_without_adapter_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not a PEFT adapter directory"):
        resolve_adapter(str(tmp_path))
    with pytest.raises(ModelError, match="not a Hub adapter id"):
        resolve_adapter("no such folder")
