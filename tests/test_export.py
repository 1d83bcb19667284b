"""`triplesmith export`: an adapter merged into its base (a transformers folder) and as a GGUF file.

Each export is read back by another loader and must give the logits of the adapter applied by
peft: the merged folder by `AutoModelForCausalLM`, the GGUF by transformers' GGUF loader (which
undoes llama.cpp's rotary layout, so a wrong permutation would show). The SmolLM2 adapter is
trained once with the project's training code (tests/trained_adapter.py); the errors use a
tiny random Llama with an untrained-but-random LoRA.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trained_adapter import trained_adapter
from typer.testing import CliRunner

from triplesmith.cli.app import app
from triplesmith.errors import ModelError
from triplesmith.training.export import EXPORT_RECORD, export_gguf, export_merged, merge_adapter

SENTENCE = "Barack Obama was born in Hawaii."


def adapted_logits(adapter: Path, base: str = "smollm2") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the sentence through peft's adapter on the base (not merged), and the input."""
    from peft import PeftModel

    from triplesmith.models import load

    model, tokenizer = load(base, device="cpu")
    ids = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        return PeftModel.from_pretrained(model, str(adapter))(**ids).logits, ids["input_ids"]


def logits_of(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits.float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_adapter(tmp_path_factory.getbasetemp() / "shared-adapter")


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer, and a LoRA with random (non-zero) B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from triplesmith.models import resolve

    root = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2").path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    base = LlamaForCausalLM.from_pretrained(root / "base")
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(root / "adapter")
    return root / "adapter"


# --- the embedded SmolLM2 ----------------------------------------------------------------------


@pytest.mark.slow
def test_export_cli_writes_a_merged_folder_and_a_gguf_that_load_to_the_adapted_logits(
    trained, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected, input_ids = adapted_logits(trained.adapter)
    merged_dir, gguf_file = tmp_path / "merged", tmp_path / "gguf" / "smollm2-triples.gguf"
    args = ["export", str(trained.adapter), "--merged", str(merged_dir)]
    args += ["--gguf", str(gguf_file), "--gguf-type", "f32", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout.strip().splitlines()[-1])
    assert (written["merged"], written["gguf"]) == (str(merged_dir), str(gguf_file))

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert torch.allclose(logits_of(merged, input_ids), expected, atol=1e-4)
    assert AutoTokenizer.from_pretrained(merged_dir)(SENTENCE)["input_ids"] == input_ids[0].tolist()
    record = json.loads((merged_dir / EXPORT_RECORD).read_text())
    assert record["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert record["base_model_sha256"] and record["adapter_hash"]
    for file in merged_dir.glob("*.json"):  # nothing names a folder of this machine's cache
        assert (
            str(trained.cache) not in file.read_text() and "/models/smollm2" not in file.read_text()
        )

    from_gguf = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    assert torch.allclose(logits_of(from_gguf, input_ids), expected, atol=1e-3)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    assert tokenizer(SENTENCE)["input_ids"] == input_ids[0].tolist()
    assert "im_start" in tokenizer.chat_template  # the template's chat template came along


@pytest.mark.slow
def test_a_q8_gguf_is_smaller_and_close_to_the_adapted_logits(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    expected, input_ids = adapted_logits(trained.adapter)
    adapted = merge_adapter(str(trained.adapter))
    f16 = export_gguf(adapted, tmp_path / "f16.gguf", "f16")
    q8 = export_gguf(adapted, tmp_path / "q8.gguf", "q8_0")
    assert q8.stat().st_size < 0.6 * f16.stat().st_size
    # Logits run to about 20: f16 keeps them to a few hundredths; 8-bit blocks move single
    # logits by up to about one unit on SmolLM2, a tenth on average, and keep the next token.
    for file, largest, mean in ((f16, 0.05, 0.01), (q8, 2.0, 0.2)):
        model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=file.name)
        got = logits_of(model, input_ids)
        error = (got - expected).abs()
        assert error.max() < largest and error.mean() < mean, (file.name, error.max(), error.mean())
        assert got[0, -1].argmax() == expected[0, -1].argmax(), file.name


# --- other bases, and refusals ----------------------------------------------------------------


def test_a_merged_export_of_a_local_base_gives_the_adapted_logits(tiny_adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    expected, input_ids = adapted_logits(tiny_adapter, base=str(tiny_adapter.parent / "base"))
    adapted = merge_adapter(str(tiny_adapter))  # the base comes from adapter_config.json
    out = export_merged(adapted, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert torch.allclose(logits_of(merged, input_ids), expected, atol=1e-5)
    assert not any(name.startswith("base_model.model") for name in merged.state_dict())


def test_a_gguf_of_a_base_without_template_or_converter_names_what_is_needed(
    tiny_adapter, tmp_path
):
    env = {**os.environ, "PATH": os.defpath, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLAMA_CPP_DIR", None)
    command = [sys.executable, "-m", "triplesmith.cli.app", "export", str(tiny_adapter)]
    done = subprocess.run(
        [*command, "--gguf", str(tmp_path / "x.gguf")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2
    # (bitsandbytes may log a warning of its own when peft imports it)
    [line] = [text for text in done.stderr.splitlines() if not text.startswith("WARNING")]
    assert (
        line.startswith("error:")
        and "convert_hf_to_gguf.py" in line
        and "LLAMA_CPP_DIR" in line
        and "--merged" in line
    )
    assert not (tmp_path / "x.gguf").exists()


def test_export_refuses_a_full_target_folder_and_no_output(tiny_adapter, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    adapted = merge_adapter(str(tiny_adapter))
    with pytest.raises(ModelError, match="already exists and is not an empty folder"):
        export_merged(adapted, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    result = CliRunner().invoke(app, ["export", str(tiny_adapter)])
    assert isinstance(result.exception, ModelError)
    assert "--merged DIR, --gguf FILE, or both" in str(result.exception)
