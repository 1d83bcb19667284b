"""Adapter training: the plan (method, precision, checkpointing), formatting, refusals, and real runs.

The runs that train are slow-marked. The CLI run on SmolLM2 is the acceptance path; QLoRA and
resume use a tiny random-weight Llama (2 layers, hidden 64) with SmolLM2's real tokenizer, so
the same code path runs in seconds per step on a CPU.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from model_shapes import LLAMA2_7B
from typer.testing import CliRunner

from triplesmith.chains.prompt import SYSTEM_PROMPT, answer_text, build_messages, user_text
from triplesmith.cli.app import app
from triplesmith.data.registry import load_dataset
from triplesmith.errors import TrainingError
from triplesmith.models import adapter_hash
from triplesmith.training.config import (
    GIB,
    LoraSettings,
    Machine,
    TrainConfig,
    choose_checkpointing,
    choose_dtype,
    choose_method,
    choose_packing,
    plan_training,
    shape_of,
)
from triplesmith.training.format import build_dataset, llama2_prompt, load_training_examples
from triplesmith.training.manifest import LossPoint, loss_ends, read_manifest
from triplesmith.training.sft import last_checkpoint, train

H100 = Machine(device="cuda", name="NVIDIA H100", free_bytes=79 * GIB, bf16=True)
TOKENS = 16 * 256  # batch 16 of 256 tokens


def _write_jsonl(path: Path, examples) -> Path:
    path.write_text("".join(e.model_dump_json() + "\n" for e in examples))
    return path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer random Llama saved with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from triplesmith.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2").path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- the plan ---------------------------------------------------------------------------


def test_auto_picks_lora_when_the_bf16_base_fits():
    method, reason = choose_method("auto", LLAMA2_7B, H100, TOKENS)
    assert method == "lora"
    assert "bf16" in reason and "H100" in reason


def test_auto_picks_qlora_only_when_the_bf16_base_does_not_fit():
    small_gpu = Machine(device="cuda", name="T4", free_bytes=14 * GIB, bf16=True)
    method, reason = choose_method("auto", LLAMA2_7B, small_gpu, TOKENS)
    assert method == "qlora"
    assert "4-bit" in reason


def test_a_base_too_big_even_in_4bit_is_refused():
    tiny_gpu = Machine(device="cuda", name="small", free_bytes=2 * GIB, bf16=True)
    with pytest.raises(TrainingError, match="does not fit"):
        choose_method("auto", LLAMA2_7B, tiny_gpu, TOKENS)


def test_a_requested_method_is_kept_with_its_reason():
    assert choose_method("qlora", LLAMA2_7B, H100, TOKENS) == (
        "qlora",
        "--method qlora was requested",
    )


def test_gradient_checkpointing_only_when_activations_would_not_fit():
    on_h100, _ = choose_checkpointing(None, "lora", LLAMA2_7B, H100, 4 * 256)
    assert on_h100 is False
    crowded = Machine(device="cuda", name="A10", free_bytes=22 * GIB, bf16=True)
    needed, reason = choose_checkpointing(None, "lora", LLAMA2_7B, crowded, 32 * 512)
    assert needed is True and reason.startswith("on:")


def test_cpu_trains_in_fp32_and_gpu_in_bf16():
    cpu = Machine(device="cpu", name="cpu", free_bytes=16 * GIB, bf16=False)
    assert choose_dtype(cpu)[0] == "float32"
    assert choose_dtype(H100)[0] == "bfloat16"


def test_packing_only_with_varlen_attention():
    assert choose_packing(None, LLAMA2_7B, False)[0] is False  # sdpa, the default
    packed, reason = choose_packing(None, LLAMA2_7B, False, "flash_attention_2")
    assert packed is True and "bfd" in reason
    assert choose_packing(None, LLAMA2_7B, True, "flash_attention_2")[0] is False
    assert choose_packing(True, LLAMA2_7B, False)[0] is True


def test_reference_preset_is_the_colab_qlora_recipe_and_flags_override_it(tmp_path):
    config = TrainConfig.from_preset("reference", out=tmp_path, learning_rate=None)
    assert config.method == "qlora"
    assert config.lora == LoraSettings(
        r=64, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"]
    )
    assert (config.optim, config.max_grad_norm, config.batch_size) == ("paged_adamw_32bit", 0.3, 4)
    assert config.gradient_checkpointing is True and config.group_by_length is True
    overridden = TrainConfig.from_preset("reference", out=tmp_path, method="lora", epochs=2)
    assert (overridden.method, overridden.epochs) == ("lora", 2)
    plan = plan_training(config, LLAMA2_7B, H100)
    assert plan.packing is False and plan.gradient_checkpointing is True


def test_default_preset_uses_lora_sized_learning_rate(tmp_path):
    config = TrainConfig.from_preset("default", out=tmp_path)
    assert config.learning_rate == 2e-4
    assert config.lora == LoraSettings(r=16, alpha=32, dropout=0.05, target_modules="all-linear")


def test_shape_counts_parameters_from_the_config_alone():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    shape = shape_of(config)
    assert shape.params == sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert (shape.layers, shape.hidden, shape.intermediate) == (2, 64, 128)
    assert shape.supports_packing is True


# --- formatting ---------------------------------------------------------------------------


def test_chat_records_are_prompt_completion_with_the_inference_messages():
    example = load_dataset("sample:train")[0]
    row = build_dataset([example], "chat")[0]
    assert row["prompt"] == build_messages(example.sentence)
    assert row["completion"] == [{"role": "assistant", "content": answer_text(example.triples)}]


def test_llama2_records_use_inst_and_sys_tokens():
    example = load_dataset("sample:train")[0]
    row = build_dataset([example], "llama2")[0]
    assert row["prompt"] == llama2_prompt(example.sentence)
    assert row["prompt"].startswith(f"[INST] <<SYS>>\n{SYSTEM_PROMPT}\n<</SYS>>\n\n")
    assert row["prompt"].endswith(f"{user_text(example.sentence)} [/INST]")
    assert row["completion"] == " " + answer_text(example.triples)


def test_sample_trains_on_its_train_split_only():
    data = load_training_examples("sample")
    test_ids = {e.id for e in load_dataset("sample:test")}
    assert data.split == "train"
    assert data.examples and not {e.id for e in data.examples} & test_ids


# --- refusals, each before any training step ---------------------------------------------


def test_an_empty_dataset_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TrainingError, match="no examples"):
        train(TrainConfig(dataset=str(empty), out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="no complete checkpoint"):
        train(TrainConfig(dataset="sample", out=tmp_path / "out", resume=True))


def test_a_base_that_is_not_a_causal_lm_is_refused(tmp_path):
    from transformers import BertConfig

    encoder = tmp_path / "bert"
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    config.architectures = ["BertModel"]
    config.save_pretrained(encoder)
    with pytest.raises(TrainingError, match="not a causal language model"):
        train(TrainConfig(base=str(encoder), dataset="sample", out=tmp_path / "out"))


def test_examples_longer_than_max_seq_len_are_refused_by_name(tmp_path, tiny_base):
    with pytest.raises(TrainingError, match=r"longer than --max-seq-len 64 .*sample-") as caught:
        train(
            TrainConfig(base=str(tiny_base), dataset="sample", out=tmp_path / "out", max_seq_len=64)
        )
    assert "raise --max-seq-len to at least" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_qlora_is_refused_where_bitsandbytes_cannot_run(tmp_path, tiny_base, monkeypatch):
    # An absent bitsandbytes (the import fails), as on a machine without it.
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(TrainingError, match="qlora needs bitsandbytes"):
        train(TrainConfig(base=str(tiny_base), method="qlora", out=tmp_path / "out"))


def test_cli_prints_bad_input_without_a_traceback(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(
        app, ["train", "--dataset", str(empty), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no examples" in result.output and "Traceback" not in result.output


def test_last_checkpoint_skips_one_cut_off_while_saving(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()  # killed before trainer_state.json was written
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_start_and_end_loss_are_window_means_over_a_fifth_of_the_curve():
    curve = [
        LossPoint(step=i + 1, loss=loss) for i, loss in enumerate([0.5, 0.9, 0.6, 0.7, 0.4] * 2)
    ]
    start, end, window = loss_ends(curve)
    assert window == 2
    assert (start, end) == pytest.approx((0.7, 0.55))
    assert loss_ends(curve[:1]) == (0.5, 0.5, 1)


def test_read_manifest_names_a_folder_without_one(tmp_path):
    with pytest.raises(TrainingError, match="no manifest.json"):
        read_manifest(tmp_path)


# --- real training runs -------------------------------------------------------------------


@pytest.mark.slow
def test_train_cli_lowers_loss_and_the_adapter_loads_and_generates(tmp_path):
    from peft import PeftModel

    from triplesmith.chains.engines.hf import adapter_hash as chain_adapter_hash
    from triplesmith.models import load

    # The shortest training sentence, seen at every step, so the loss must fall.
    shortest = sorted(load_dataset("sample:train"), key=lambda e: len(e.sentence))[:1]
    data = _write_jsonl(tmp_path / "one.jsonl", shortest)
    out = tmp_path / "adapter"
    args = ["train", "--base", "smollm2", "--dataset", str(data), "--out", str(out)]
    args += ["--max-steps", "4", "--batch-size", "1", "--max-seq-len", "256", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    print(result.output[-2000:])

    for name in ("adapter_config.json", "adapter_model.safetensors", "manifest.json"):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest.method == "lora" and manifest.dtype == "float32"
    assert manifest.steps == 4 and len(manifest.loss_curve) == 4
    assert manifest.loss_end < manifest.loss_start
    assert manifest.tokens_trained > 0 and manifest.tokens_per_s > 0
    assert manifest.adapter_hash == adapter_hash(out) == chain_adapter_hash(out)
    assert manifest.base_model_hash and manifest.dataset_split is None
    # On CPU the GPU speed levers are off, each with its reason.
    assert (manifest.attention, manifest.kernels, manifest.adapter_dtype) == (
        "sdpa",
        False,
        "float32",
    )
    assert "CUDA" in manifest.attention_reason and "CUDA" in manifest.kernels_reason

    model, tokenizer = load("smollm2")
    tuned = PeftModel.from_pretrained(model, str(out))
    inputs = tokenizer.apply_chat_template(
        build_messages(shortest[0].sentence),
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    import torch

    with torch.no_grad():
        adapted = tuned(**inputs).logits
        with tuned.disable_adapter():
            plain = tuned(**inputs).logits
        generated = tuned.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert not torch.allclose(adapted, plain)  # the trained adapter is applied
    answer = tokenizer.decode(
        generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert answer.strip()


@pytest.mark.slow
def test_qlora_on_cpu_produces_an_adapter(tmp_path, tiny_base):
    out = tmp_path / "qlora"
    result = train(
        TrainConfig(
            base=str(tiny_base),
            dataset="sample",
            out=out,
            method="qlora",
            max_steps=2,
            batch_size=1,
            max_seq_len=400,
        )
    )
    assert (out / "adapter_model.safetensors").is_file()
    assert result.manifest.method == "qlora" and result.manifest.steps == 2
    # TRL makes QLoRA adapters bf16; on CPU the plan keeps them fp32 like the rest.
    from safetensors.torch import load_file

    assert result.manifest.adapter_dtype == "float32"
    weights = load_file(out / "adapter_model.safetensors")
    assert {str(tensor.dtype) for tensor in weights.values()} == {"torch.float32"}
    assert read_manifest(out) == result.manifest


def _run_train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "triplesmith.cli.app", "train", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_checkpoint_to_the_requested_step(tmp_path, tiny_base):
    out = tmp_path / "adapter"
    args = ["--base", str(tiny_base), "--dataset", "sample", "--out", str(out)]
    args += ["--max-steps", "8", "--batch-size", "1", "--max-seq-len", "400", "--save-steps", "2"]
    first = _run_train(*args)
    deadline = time.monotonic() + 300
    while last_checkpoint(out / "checkpoints") is None:
        assert first.poll() is None, first.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    interrupted_at = last_checkpoint(out / "checkpoints")
    assert not (out / "manifest.json").exists(), "the run ended before it could be killed"

    second = _run_train(*args, "--resume")
    output = second.communicate(timeout=600)[0].decode()
    assert second.returncode == 0, output

    manifest = read_manifest(out)
    assert manifest.steps == 8
    assert manifest.resumed_from == interrupted_at.name
    state = json.loads((last_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    # The loss curve spans both runs: the steps before the kill come from the checkpoint.
    assert [point.step for point in manifest.loss_curve] == list(range(1, 9))
