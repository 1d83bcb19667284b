"""The GPU speed levers of `triplesmith train`: varlen FlashAttention for packed batches, Liger's
kernels, bf16 adapters; how the plan decides them (and why), the config fields that force them,
the varlen attention function, and the cached base-model hash.

The decisions are tested for CPU and GPU machines described as data; the kernels themselves
only run on CUDA (those tests skip elsewhere).
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from triplesmith.cli.app import app
from triplesmith.errors import TrainingError
from triplesmith.models import ModelRef, model_hash
from triplesmith.training.attention import VARLEN, varlen_attention
from triplesmith.training.base_model import base_model_hash, load_base
from triplesmith.training.config import (
    GIB,
    Machine,
    ModelShape,
    TrainConfig,
    plan_training,
    probe_machine,
)

LLAMA = ModelShape(
    params=6_738_415_616,
    layers=32,
    hidden=4096,
    intermediate=11008,
    supports_packing=True,
    model_type="llama",
)
CPU = Machine(device="cpu", name="cpu", free_bytes=16 * GIB, bf16=False)
H100 = Machine(
    device="cuda",
    name="NVIDIA H100 80GB HBM3",
    free_bytes=79 * GIB,
    bf16=True,
    liger="0.8.5",
    liger_model_types=frozenset({"llama", "qwen2"}),
    varlen=True,
    capability=(9, 0),
)
NO_CUDA = "the varlen kernel (aten::_flash_attention_forward) and Liger's Triton kernels need CUDA"


def _config(tmp_path: Path, **fields) -> TrainConfig:
    return TrainConfig(out=tmp_path / "out", **fields)


# --- the plan -----------------------------------------------------------------------------


def test_on_cpu_every_gpu_lever_is_off_and_says_why(tmp_path):
    plan = plan_training(_config(tmp_path), LLAMA, CPU)
    assert (plan.attention, plan.packing, plan.kernels) == ("sdpa", False, False)
    assert "needs a CUDA GPU" in plan.attention_reason
    assert plan.kernels_reason.startswith("off: ") and "CUDA" in plan.kernels_reason
    assert plan.adapter_dtype == "float32" and "fp32" in plan.adapter_dtype_reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="describes a machine without CUDA")
def test_the_probe_on_a_cpu_machine_offers_no_lever(tmp_path):
    machine = probe_machine()
    assert (machine.liger, machine.varlen, machine.capability) == (None, False, None)


def test_on_an_h100_every_lever_is_on_with_its_reason(tmp_path):
    plan = plan_training(_config(tmp_path), LLAMA, H100)
    assert plan.attention == VARLEN and "FlashAttention" in plan.attention_reason
    assert plan.packing is True and VARLEN in plan.packing_reason
    assert plan.kernels is True and "liger-kernel 0.8.5" in plan.kernels_reason
    assert plan.adapter_dtype == "bfloat16" and "bf16" in plan.adapter_dtype_reason


@pytest.mark.parametrize(
    ("machine", "shape", "off", "why"),
    [
        (
            replace(H100, liger=None, liger_model_types=frozenset()),
            LLAMA,
            "kernels",
            "not installed",
        ),
        (H100, replace(LLAMA, model_type="gpt2"), "kernels", "model type 'gpt2'"),
        (replace(H100, capability=(7, 5)), LLAMA, "attention", "compute capability 7.5"),
        (replace(H100, varlen=False), LLAMA, "attention", "torch.nn.attention.varlen"),
        (H100, replace(LLAMA, supports_packing=False), "attention", "position_ids"),
    ],
)
def test_a_gpu_lever_the_machine_or_model_cannot_use_falls_back(tmp_path, machine, shape, off, why):
    plan = plan_training(_config(tmp_path), shape, machine)
    if off == "kernels":
        assert plan.kernels is False and why in plan.kernels_reason
        assert plan.attention == VARLEN  # the other levers are unaffected
    else:
        assert plan.attention == "sdpa" and why in plan.attention_reason
        assert plan.packing is False and plan.kernels is True


def test_levers_forced_off_on_a_gpu_are_kept_as_configured(tmp_path):
    config = _config(tmp_path, kernels=False, attention="sdpa", adapter_dtype="float32")
    plan = plan_training(config, LLAMA, H100)
    assert (plan.kernels, plan.attention, plan.packing, plan.adapter_dtype) == (
        False,
        "sdpa",
        False,
        "float32",
    )
    assert plan.kernels_reason == "kernels off as configured"
    assert plan.adapter_dtype_reason == "float32 adapters as configured"


def test_padded_batches_keep_sdpa_on_a_gpu(tmp_path):
    unpacked = plan_training(_config(tmp_path, packing=False), LLAMA, H100)
    assert unpacked.attention == "sdpa" and "packing is off" in unpacked.attention_reason
    reference = plan_training(TrainConfig.from_preset("reference", out=tmp_path), LLAMA, H100)
    assert (reference.attention, reference.packing) == ("sdpa", False)
    assert reference.adapter_dtype == "bfloat16"  # QLoRA's adapters in bf16, as TRL does


@pytest.mark.parametrize(
    ("fields", "machine", "message"),
    [
        ({"kernels": True}, CPU, "need a CUDA GPU"),
        ({"kernels": True}, replace(H100, liger=None), "pip install liger-kernel"),
        ({"attention": VARLEN}, CPU, "needs a CUDA GPU"),
        ({"attention": VARLEN, "packing": False}, H100, "padding-free packed batches only"),
    ],
)
def test_a_lever_forced_on_where_it_cannot_run_is_refused(tmp_path, fields, machine, message):
    with pytest.raises(TrainingError, match=message):
        plan_training(_config(tmp_path, **fields), LLAMA, machine)


def test_an_explicit_attention_implementation_decides_packing(tmp_path):
    plan = plan_training(_config(tmp_path, attention="flash_attention_2"), LLAMA, H100)
    assert plan.attention == "flash_attention_2" and plan.packing is True
    via_kwargs = _config(tmp_path, model_kwargs={"attn_implementation": "eager"})
    assert plan_training(via_kwargs, LLAMA, H100).attention == "eager"


# --- config validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"attention": ""},
        {"adapter_dtype": "float16"},
        {"kernels": "sometimes"},
        {"attention": "sdpa", "model_kwargs": {"attn_implementation": "eager"}},
    ],
)
def test_bad_lever_settings_are_refused_by_the_config(tmp_path, fields):
    with pytest.raises(ValidationError):
        _config(tmp_path, **fields)


def test_cli_refuses_a_lever_this_machine_cannot_run_without_a_traceback(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine the varlen attention may run")
    out = tmp_path / "o"
    for flag in (["--attention", VARLEN], ["--kernels"]):
        result = CliRunner().invoke(app, ["train", "--out", str(out), *flag])
        assert result.exit_code == 2, result.output
        assert "CUDA GPU" in result.output and "Traceback" not in result.output
    assert not out.exists()
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--attention", ""])
    assert result.exit_code == 2 and "attention" in result.output


# --- the varlen attention function --------------------------------------------------------


def _reference_varlen_attn(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """torch's varlen_attn computed with sdpa one example at a time (it has no CPU kernel)."""
    outputs = []
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist(), strict=True):
        q, k, v = (t[start:end].transpose(0, 1).float() for t in (query, key, value))
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=tuple(window_size) == (-1, 0), scale=scale, enable_gqa=enable_gqa
        )
        outputs.append(out.transpose(0, 1).to(query.dtype))
    return torch.cat(outputs)


@pytest.fixture(scope="module")
def tiny_gqa_llama(tmp_path_factory) -> Path:
    """A 2-layer random Llama with grouped-query attention (4 query heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-gqa-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _packed_batch(lengths: list[int], device: str) -> dict:
    """A padding-free batch as TRL's collator builds it: one row, boundaries in cu_seq_lens."""
    generator = torch.Generator().manual_seed(1)
    ids = [torch.randint(0, 128, (n,), generator=generator) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return {
        "input_ids": torch.cat(ids)[None].to(device),
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None].to(device),
        "cu_seq_lens_q": cu.to(device),
        "cu_seq_lens_k": cu.to(device),
        "max_length_q": max(lengths),
        "max_length_k": max(lengths),
    }


def _packed_matches_one_example_at_a_time(base: Path, device: str) -> None:
    from transformers import AutoModelForCausalLM

    from triplesmith.models import resolve

    ref = resolve(str(base))
    machine = H100 if device == "cuda" else CPU
    config = TrainConfig(out=base / "unused", method="lora")
    plan = replace(plan_training(config, LLAMA, machine), attention=VARLEN)
    packed_model = load_base(ref, plan, machine)
    assert packed_model.config._attn_implementation == VARLEN
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attn_implementation="sdpa")
    plain.to(device)
    lengths = [5, 9, 3]
    batch = _packed_batch(lengths, device)
    with torch.no_grad():
        packed = packed_model(**batch).logits[0].float()
        starts = batch["cu_seq_lens_q"].tolist()
        separate = torch.cat(
            [
                plain(input_ids=batch["input_ids"][:, a:b]).logits[0].float()
                for a, b in zip(starts[:-1], starts[1:], strict=True)
            ]
        )
        as_one_sequence = plain(input_ids=batch["input_ids"]).logits[0].float()
    scale = separate.abs().max()
    # FlashAttention computes in bf16, hence the tolerance.
    assert (packed - separate).abs().max() <= 0.02 * scale
    # ...and the boundaries matter: without them the later examples attend to the earlier ones.
    assert (as_one_sequence[5:] - separate[5:]).abs().max() > 0.05 * scale


def test_varlen_attention_keeps_packed_examples_apart(tiny_gqa_llama, monkeypatch):
    # torch has no CPU kernel for varlen_attn; a per-example sdpa stands in for it, so this
    # checks our layout, causality, scaling and grouped-query handling around the kernel.
    monkeypatch.setattr("torch.nn.attention.varlen.varlen_attn", _reference_varlen_attn)
    _packed_matches_one_example_at_a_time(tiny_gqa_llama, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_varlen_attention_on_cuda_matches_one_example_at_a_time(tiny_gqa_llama):
    _packed_matches_one_example_at_a_time(tiny_gqa_llama, "cuda")


def test_varlen_attention_refuses_a_padded_batch():
    query = torch.zeros(2, 4, 8, 16)
    with pytest.raises(TrainingError, match="padding-free packed batches"):
        varlen_attention(None, query, query, query, attention_mask=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_liger_kernels_apply_to_the_model_and_are_undone_after(tiny_gqa_llama):
    pytest.importorskip("liger_kernel", reason="liger-kernel is not installed")
    from transformers import AutoModelForCausalLM
    from transformers.models.llama import modeling_llama

    from triplesmith.training.kernels import liger_kernels

    model = AutoModelForCausalLM.from_pretrained(tiny_gqa_llama, dtype=torch.bfloat16).cuda()
    rope = modeling_llama.apply_rotary_pos_emb
    ids = torch.arange(12, device="cuda")[None]
    with torch.no_grad():
        before = model(input_ids=ids).logits.float()
        with liger_kernels(model, True):
            assert modeling_llama.apply_rotary_pos_emb is not rope
            patched = model(input_ids=ids).logits.float()
    assert modeling_llama.apply_rotary_pos_emb is rope
    assert (patched - before).abs().max() <= 0.02 * before.abs().max()


# --- the base model's hash ----------------------------------------------------------------


def test_the_base_hash_is_cached_until_a_weight_file_changes(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("TRIPLESMITH_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    weights = base / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    ref = ModelRef(name="base", path=str(base), local=True)

    first = base_model_hash(ref)
    assert first == model_hash(ref)
    cached = list((tmp_path / "cache" / "model-hashes").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["hash"] == first

    # Same size and modification time: the cached hash is trusted, the file is not re-read.
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert base_model_hash(ref) == first

    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert base_model_hash(ref) == model_hash(ref) != first


def test_a_hub_base_is_named_not_hashed():
    assert base_model_hash(ModelRef(name="a/b", path="a/b", local=False)) == "hub:a/b"
