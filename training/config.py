"""What an adapter training run asks for (`TrainConfig`, presets) and what the machine decides.

The decisions (LoRA or QLoRA, precision, gradient checkpointing, packing) are made from the
model's shape and the device's free memory before anything is loaded, each with a reason that
goes into the adapter manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from triplesmith.errors import TrainingError

log = logging.getLogger(__name__)

Method = Literal["auto", "lora", "qlora"]
Preset = Literal["default", "reference"]
Format = Literal["chat", "llama2"]

GIB = 1024**3
# Share of the free memory a plan may use: the rest is left for the allocator, the CUDA
# context, the optimizer's small state and the tokenizer/data pipeline.
USABLE_SHARE = 0.85
# Measured on an H100 with a Llama-2-7B shape (issue 6): why LoRA wins whenever it fits.
LORA_VS_QLORA = "bf16 LoRA 8,700 tokens/s vs QLoRA 6,400 on an H100 with a Llama-2-7B shape"


class LoraSettings(BaseModel):
    """The peft `LoraConfig` fields triplesmith sets."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainConfig(BaseModel):
    """One `triplesmith train` run. `None` on a decision field means: decide from the machine."""

    model_config = ConfigDict(extra="forbid")

    base: str = "smollm2"
    dataset: str = "sample"
    out: Path
    method: Method = "auto"
    preset: Preset = "default"
    format: Format = "chat"
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_seq_len: int = Field(512, gt=8)
    save_steps: int = Field(50, gt=0)
    save_total_limit: int = Field(2, gt=0)
    logging_steps: int = Field(1, gt=0)
    seed: int = 0
    lora: LoraSettings = Field(default_factory=LoraSettings)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    optim: str = "adamw_torch"
    double_quant: bool = True
    group_by_length: bool = False
    gradient_checkpointing: bool | None = None
    packing: bool | None = None
    # Extra keyword arguments for `from_pretrained` (attn_implementation, use_kernels, ...).
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    resume: bool = False

    @classmethod
    def from_preset(cls, preset: Preset = "default", **overrides: Any) -> TrainConfig:
        """A config from a named preset, with the given fields overriding it (None values ignored)."""
        if preset not in PRESETS:
            raise TrainingError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls(**{**PRESETS[preset], **given, "preset": preset})

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that shape the adapter, as written to the manifest."""
        return self.model_dump(mode="json", exclude={"out", "resume", "base", "dataset"})


PRESETS: dict[str, dict[str, Any]] = {
    # Ours: LoRA on all linear layers, a LoRA-sized learning rate, the machine decides the rest.
    "default": {},
    # The reference workflow's "fine-tune Llama 2 in Colab" recipe, kept to compare cost and quality.
    "reference": {
        "method": "qlora",
        "lora": LoraSettings(r=64, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"]),
        "epochs": 1.0,
        "batch_size": 4,
        "learning_rate": 2e-4,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        "weight_decay": 0.001,
        "optim": "paged_adamw_32bit",
        "max_grad_norm": 0.3,
        "gradient_checkpointing": True,
        "group_by_length": True,
        "packing": False,
        "double_quant": False,
    },
}


@dataclass(frozen=True)
class Machine:
    """The device training will run on and the memory free there."""

    device: str  # "cpu" or "cuda"
    name: str
    free_bytes: int
    bf16: bool  # whether bf16 compute is fast here


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimates need to know about a causal LM, read from its config."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    supports_packing: bool


@dataclass(frozen=True)
class Plan:
    """The decisions for one run, each with the reason recorded in the manifest."""

    method: Literal["lora", "qlora"]
    method_reason: str
    dtype: Literal["float32", "bfloat16"]
    dtype_reason: str
    gradient_checkpointing: bool
    gradient_checkpointing_reason: str
    packing: bool
    packing_reason: str


def probe_machine() -> Machine:
    """The first CUDA device if there is one, else the CPU, with its free memory now."""
    import psutil
    import torch

    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return Machine(
            device="cuda",
            name=torch.cuda.get_device_name(),
            free_bytes=int(free),
            bf16=torch.cuda.is_bf16_supported(),
        )
    return Machine(
        device="cpu", name="cpu", free_bytes=int(psutil.virtual_memory().available), bf16=False
    )


def shape_of(hf_config: Any) -> ModelShape:
    """Parameter count (from an empty meta-device model: nothing is allocated) and layer sizes."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    text = hf_config.get_text_config()
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    return ModelShape(
        params=sum(p.numel() for p in model.parameters()),
        layers=int(getattr(text, "num_hidden_layers", 0) or 0),
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", 0) or 4 * hidden),
        # Models on transformers' attention interface read packed sequences from position_ids
        # (a block-diagonal mask for sdpa/eager, varlen kernels for FlashAttention).
        supports_packing=bool(getattr(type(model), "_supports_attention_backend", False)),
    )


def _bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def weight_bytes(shape: ModelShape, method: str, dtype_bytes: int) -> float:
    """The base weights in memory: full precision for LoRA, ~4.5 bits/parameter for NF4."""
    if method == "qlora":
        return shape.params * 0.5625
    return shape.params * dtype_bytes


def activation_bytes(
    shape: ModelShape, tokens: int, dtype_bytes: int, checkpointing: bool
) -> float:
    """Activations kept for the backward pass of one micro-batch of `tokens` tokens.

    A decoder block keeps ~10 hidden-sized and ~4 intermediate-sized vectors per token
    (norm inputs, q/k/v, attention output, gate/up/act); with checkpointing only each block's
    input is kept, plus one block recomputed at a time. The LM head is chunked by TRL.
    """
    per_block = 10 * shape.hidden + 4 * shape.intermediate
    if checkpointing:
        elements = tokens * (shape.layers * shape.hidden + per_block)
    else:
        elements = tokens * shape.layers * per_block
    return elements * dtype_bytes


def choose_method(
    requested: Method, shape: ModelShape, machine: Machine, tokens_per_step: int
) -> tuple[Literal["lora", "qlora"], str]:
    """LoRA or QLoRA, and why: QLoRA only when the full-precision base would not fit.

    The base counts as fitting when its weights plus the (checkpointed) activations of one
    micro-batch take at most 85 % of the free memory.
    """
    if requested != "auto":
        return requested, f"--method {requested} was requested"
    dtype_bytes = 2 if machine.bf16 else 4
    precision = "bf16" if machine.bf16 else "fp32"
    usable = machine.free_bytes * USABLE_SHARE
    lora_need = weight_bytes(shape, "lora", dtype_bytes) + activation_bytes(
        shape, tokens_per_step, dtype_bytes, checkpointing=True
    )
    where = f"{_bytes(machine.free_bytes)} free on {machine.name}"
    if lora_need <= usable:
        return "lora", (
            f"the {precision} base needs ~{_bytes(lora_need)} of {where}, so LoRA "
            f"(faster than QLoRA when it fits: {LORA_VS_QLORA})"
        )
    qlora_need = weight_bytes(shape, "qlora", dtype_bytes) + activation_bytes(
        shape, tokens_per_step, dtype_bytes, checkpointing=True
    )
    if qlora_need <= usable:
        return "qlora", (
            f"the {precision} base needs ~{_bytes(lora_need)} but only {where}; "
            f"the 4-bit NF4 base needs ~{_bytes(qlora_need)}"
        )
    raise TrainingError(
        f"the base model ({shape.params / 1e9:.2f} B parameters) does not fit {where} even in "
        f"4-bit (~{_bytes(qlora_need)} needed); lower --batch-size or --max-seq-len, or use a "
        "machine with more memory"
    )


def choose_checkpointing(
    requested: bool | None,
    method: str,
    shape: ModelShape,
    machine: Machine,
    tokens_per_step: int,
) -> tuple[bool, str]:
    """Gradient checkpointing only when the activations would not fit without it (~50 % more compute)."""
    if requested is not None:
        return requested, f"gradient checkpointing {'on' if requested else 'off'} as configured"
    dtype_bytes = 2 if machine.bf16 else 4
    need = weight_bytes(shape, method, dtype_bytes) + activation_bytes(
        shape, tokens_per_step, dtype_bytes, checkpointing=False
    )
    usable = machine.free_bytes * USABLE_SHARE
    if need <= usable:
        return False, (
            f"off: weights and activations need ~{_bytes(need)} of {_bytes(machine.free_bytes)} "
            "free, and checkpointing costs ~50 % more compute"
        )
    return True, (
        f"on: weights and activations would need ~{_bytes(need)}, more than the "
        f"{_bytes(usable)} usable of {_bytes(machine.free_bytes)} free"
    )


def choose_packing(
    requested: bool | None,
    shape: ModelShape,
    group_by_length: bool,
    attn_implementation: str | None = None,
) -> tuple[bool, str]:
    """Best-fit-decreasing packing (TRL's padding-free batching) when it pays: varlen attention.

    With FlashAttention's varlen kernels each packed example attends only to itself. With
    sdpa or eager attention (the default) transformers turns a packed batch into one long
    sequence under a block-diagonal mask, so attention grows with the square of the whole
    batch's length: measured on this project's 2-core CPU with SmolLM2, 70 tokens/s packed
    vs 94 padded.
    """
    if requested is not None:
        return requested, f"packing {'on' if requested else 'off'} as configured"
    if group_by_length:
        return False, "off: group_by_length batches similar lengths instead"
    if not shape.supports_packing:
        return False, "off: this model class does not read packed sequences from position_ids"
    attention = attn_implementation or "sdpa"
    if "flash" in attention:
        return True, (
            f"on: packing_strategy='bfd' with padding-free batches ({attention} attends within "
            "each packed example)"
        )
    return False, (
        f"off: with {attention} attention a packed batch is one sequence under a block-diagonal "
        "mask, slower than padding (SmolLM2 on CPU: 70 vs 94 tokens/s); packing pays with "
        "FlashAttention (model_kwargs attn_implementation='flash_attention_2')"
    )


def choose_dtype(machine: Machine) -> tuple[Literal["float32", "bfloat16"], str]:
    if machine.bf16:
        return "bfloat16", f"bf16 on {machine.name}"
    if machine.device == "cpu":
        return "float32", "fp32 on CPU (bf16 matrix multiplication is ~400x slower on these CPUs)"
    return "float32", f"fp32: {machine.name} has no fast bf16"


def plan_training(config: TrainConfig, shape: ModelShape, machine: Machine) -> Plan:
    """All the machine-dependent decisions for `config`, made before anything is loaded."""
    tokens_per_step = config.batch_size * config.max_seq_len
    method, method_reason = choose_method(config.method, shape, machine, tokens_per_step)
    dtype, dtype_reason = choose_dtype(machine)
    checkpointing, checkpointing_reason = choose_checkpointing(
        config.gradient_checkpointing, method, shape, machine, tokens_per_step
    )
    packing, packing_reason = choose_packing(
        config.packing,
        shape,
        config.group_by_length,
        config.model_kwargs.get("attn_implementation"),
    )
    return Plan(
        method=method,
        method_reason=method_reason,
        dtype=dtype,
        dtype_reason=dtype_reason,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_reason=checkpointing_reason,
        packing=packing,
        packing_reason=packing_reason,
    )
