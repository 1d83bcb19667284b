"""The base model a training run starts from: the checks before loading it, loading it onto the
device in the plan's precision and attention, and its content hash for the manifest (cached).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from triplesmith.data.jsonl import write_lines_atomic
from triplesmith.errors import ModelError, TrainingError
from triplesmith.models import ModelRef, cache_dir, model_hash
from triplesmith.training.attention import VARLEN, register_varlen
from triplesmith.training.config import Plan
from triplesmith.training.machine import Machine, local_rank

log = logging.getLogger(__name__)


def check_causal_lm(ref: ModelRef) -> Any:
    """The base's transformers config, refusing anything that is not a causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        hf_config = AutoConfig.from_pretrained(ref.path)
    except (OSError, ValueError) as exc:
        hint = (
            ""
            if ref.local
            else " (a Hub id needs a network connection; offline, give a local directory)"
        )
        raise TrainingError(
            f"cannot read the config of base model {ref.name!r}: {exc}{hint}"
        ) from exc
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = hf_config.architectures or []
    if architectures:
        ok = any(arch in causal for arch in architectures)
    else:
        ok = hf_config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not ok:
        raise TrainingError(
            f"base model {ref.name!r} is not a causal language model (architectures: "
            f"{architectures or hf_config.model_type}); adapters are trained on decoder-only "
            "*ForCausalLM models"
        )
    return hf_config


def check_bitsandbytes(device: str) -> None:
    """Refuse QLoRA unless bitsandbytes can quantize to 4-bit NF4 on this device."""
    try:
        import torch
        from bitsandbytes.functional import quantize_4bit

        quantize_4bit(torch.randn(64, 64, device=device), quant_type="nf4")
    except Exception as exc:  # any failure here means 4-bit cannot run on this machine
        raise TrainingError(
            f"qlora needs bitsandbytes 4-bit kernels on {device}, which cannot run here "
            f"({type(exc).__name__}: {exc}); use --method lora, or install bitsandbytes>=0.48"
        ) from exc


def load_base(
    ref: ModelRef,
    plan: Plan,
    machine: Machine,
    model_kwargs: dict[str, Any] | None = None,
    double_quant: bool = True,
    sharded: bool = False,
) -> Any:
    """The base model in the plan's precision, 4-bit NF4 for QLoRA (compute in the same dtype),
    fp32 for full fine-tuning (its master weights; a GPU computes under bf16 autocast).

    On a GPU it is loaded straight onto this process's device (`LOCAL_RANK` under
    `accelerate launch`: one copy per process for DDP, QLoRA's included), with the plan's
    attention implementation (`triplesmith_varlen` is registered first). When FSDP will shard
    it (`sharded`) it stays in host memory for FSDP to split over the devices, and QLoRA's packed
    4-bit weights are stored in the compute dtype so that FSDP can shard them like the rest.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch.bfloat16 if plan.dtype == "bfloat16" else torch.float32
    kwargs: dict[str, Any] = {"dtype": torch.float32 if plan.method == "full" else dtype}
    if plan.attention != "sdpa":  # sdpa is transformers' default; eager for models without it
        kwargs["attn_implementation"] = plan.attention
    if plan.attention == VARLEN:
        register_varlen()
    if machine.device == "cuda" and not sharded:
        # One process per GPU under `accelerate launch`/torchrun: LOCAL_RANK names its device.
        kwargs["device_map"] = {"": local_rank()}
    elif plan.method == "qlora" and not sharded:
        kwargs["device_map"] = {"": "cpu"}
    if plan.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=double_quant,
            **({"bnb_4bit_quant_storage": dtype} if sharded else {}),
        )
    kwargs.update(model_kwargs or {})
    try:
        return AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load base model {ref.name!r}: {exc}") from exc


def _weight_files(root: Path) -> list[list[Any]]:
    """Name, size, mtime and inode of the files `model_hash` reads: what says they changed."""
    signature = []
    for file in sorted(root.glob("*.safetensors")) + [root / "config.json"]:
        if file.is_file():
            stat = file.stat()
            signature.append([file.name, stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return signature


def base_model_hash(ref: ModelRef) -> str:
    """`triplesmith.models.model_hash(ref)`, cached in the triplesmith cache directory.

    Hashing reads every weight file (13.5 GB for a 7B base in bf16), so the hash is kept with
    the files' names, sizes, modification times and inodes, and read again only when one of
    them changes.
    """
    if not ref.local:
        return model_hash(ref)
    root = Path(ref.path).resolve()
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    cache = cache_dir() / "model-hashes" / f"{key}.json"
    signature = _weight_files(root)
    try:
        saved = json.loads(cache.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("path") == str(root):
        if saved.get("files") == signature and isinstance(saved.get("hash"), str):
            return saved["hash"]
    digest = model_hash(ref)
    record = {"path": str(root), "files": signature, "hash": digest}
    try:
        write_lines_atomic(cache, [json.dumps(record)])
    except OSError as exc:  # a read-only cache only costs the next run a re-read
        log.warning("cannot cache the hash of %s in %s: %s", root, cache, exc)
    return digest
