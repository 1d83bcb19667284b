"""Full fine-tuning (`method="full"`, issue 20): only when asked for, its own learning rate, and a
real run on the embedded SmolLM2 that moves the weights and leaves a model folder the hf chain
loads as its model (`hf:OUT`)."""

import json
from pathlib import Path

import pytest
from model_shapes import LLAMA2_7B, SMOLLM2

from triplesmith.data.registry import load_dataset
from triplesmith.errors import TrainingError
from triplesmith.training.config import (
    FULL_LEARNING_RATE,
    GIB,
    Machine,
    TrainConfig,
    choose_method,
    plan_training,
)

MACHINES = [
    Machine(device="cpu", name="cpu", free_bytes=32 * GIB, bf16=False),
    Machine(device="cuda", name="T4", free_bytes=14 * GIB, bf16=True),
    Machine(device="cuda", name="NVIDIA H100", free_bytes=79 * GIB, bf16=True),
    Machine(device="cuda", name="NVIDIA H200", free_bytes=139 * GIB, bf16=True),
]


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
@pytest.mark.parametrize("shape", [SMOLLM2, LLAMA2_7B], ids=["smollm2", "llama2-7b"])
def test_auto_never_picks_full_fine_tuning(tmp_path, machine, shape):
    # Even where full fine-tuning would fit many times over (SmolLM2 on an H200).
    method, _ = choose_method("auto", shape, machine, 4 * 256)
    assert method in ("lora", "qlora")
    assert plan_training(TrainConfig(out=tmp_path), shape, machine).method != "full"


def test_full_fine_tuning_is_kept_when_asked_for_and_says_what_it_needs():
    method, reason = choose_method("full", SMOLLM2, MACHINES[-1], 16 * 1024)
    assert method == "full"
    assert "--method full was requested" in reason and "AdamW" in reason


def test_full_fine_tuning_that_would_not_fit_is_refused():
    # 6.7 B parameters x 16 bytes (fp32 weights, gradients, AdamW) is ~100 GiB.
    with pytest.raises(TrainingError, match="full fine-tuning .* --method lora"):
        choose_method("full", LLAMA2_7B, MACHINES[2], 4 * 256)


def test_full_fine_tuning_has_its_own_learning_rate_and_no_lora_settings(tmp_path):
    config = TrainConfig(out=tmp_path, method="full")
    assert config.learning_rate == FULL_LEARNING_RATE < TrainConfig(out=tmp_path).learning_rate
    assert TrainConfig(out=tmp_path, method="full", learning_rate=1e-4).learning_rate == 1e-4
    assert TrainConfig.from_preset("default", out=tmp_path, method="full").learning_rate == (
        FULL_LEARNING_RATE
    )
    assert "lora" not in config.hyperparameters()
    with pytest.raises(ValueError, match="trains no adapter"):
        TrainConfig(out=tmp_path, method="full", adapter_dtype="bfloat16")


def test_full_fine_tuning_on_a_gpu_keeps_fp32_master_weights(tmp_path):
    plan = plan_training(TrainConfig(out=tmp_path, method="full"), SMOLLM2, MACHINES[-1])
    assert (plan.method, plan.dtype, plan.adapter_dtype) == ("full", "bfloat16", "float32")
    assert "autocast" in plan.adapter_dtype_reason


@pytest.mark.slow
def test_full_fine_tuning_moves_the_weights_and_saves_a_model_the_hf_chain_loads(tmp_path):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from triplesmith.chains.registry import get_chain
    from triplesmith.cli.app import app
    from triplesmith.models import load, model_hash, resolve
    from triplesmith.training.manifest import read_manifest

    shortest = sorted(load_dataset("sample:train"), key=lambda e: len(e.sentence))[:1]
    data = tmp_path / "one.jsonl"
    data.write_text("".join(e.model_dump_json() + "\n" for e in shortest))
    out = tmp_path / "full"
    # Two optimizer steps through the command line (the warmup's one step runs at rate 0).
    args = ["train", "--method", "full", "--dataset", str(data), "--out", str(out)]
    args += ["--max-steps", "2", "--batch-size", "1", "--max-seq-len", "256", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)

    for name in ("model.safetensors", "config.json", "tokenizer.json", "manifest.json"):
        assert (out / name).is_file(), name
    assert not (out / "adapter_config.json").exists()
    printed = json.loads(result.stdout.strip().splitlines()[-1])  # --json prints the manifest
    assert printed == manifest.model_dump(mode="json")
    assert (manifest.method, manifest.steps, manifest.adapter_dtype) == ("full", 2, "float32")
    assert manifest.hyperparameters["learning_rate"] == FULL_LEARNING_RATE
    assert "lora" not in manifest.hyperparameters
    assert manifest.adapter_hash == model_hash(resolve(str(out)))

    base = load_file(Path(resolve("smollm2").path) / "model.safetensors")
    tuned = load_file(out / "model.safetensors")
    assert set(tuned) <= set(base)
    moved = [name for name in tuned if not tuned[name].equal(base[name].to(tuned[name].dtype))]
    assert len(moved) == len(tuned), sorted(set(tuned) - set(moved))  # every weight trained

    model, tokenizer = load(str(out), device="cpu")  # a model folder, loaded as a base model
    assert model.config.architectures == ["LlamaForCausalLM"] and tokenizer.chat_template
    chain = get_chain(f"hf:{out}+max_new_tokens=12")
    [answer] = chain.batch([{"sentence": shortest[0].sentence}])
    assert answer.error is None and answer.raw and answer.tokens_out > 0
    assert chain.metadata()["model"] == str(out) and answer.adapter_hash is None
