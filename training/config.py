"""What a training run asks for (`TrainConfig`, presets) and what the machine decides.

The decisions are made from the model's shape and the device (its free memory, and what the
speed levers can use there) before anything is loaded, each with a reason that goes into the
manifest: LoRA or QLoRA (or full fine-tuning, when asked for), precision, gradient checkpointing,
and the GPU speed levers:
the attention implementation (varlen FlashAttention for packed batches, `training.attention`),
packing, Liger's kernels (`training.kernels`) and the adapters' dtype. Under `accelerate launch`
each process plans for its own device (`LOCAL_RANK`), with the base's weights split over the
processes when they are sharded (FSDP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from triplesmith.errors import TrainingError
from triplesmith.training.attention import (
    attends_within_examples,
    choose_attention,
    varlen_available,
)
from triplesmith.training.format import Nary
from triplesmith.training.kernels import choose_kernels, liger_support
from triplesmith.training.machine import Machine, ModelShape, local_rank, world_size

log = logging.getLogger(__name__)

# `auto` picks LoRA or QLoRA; full fine-tuning (all weights, no adapter) only when asked for.
Method = Literal["auto", "lora", "qlora", "full"]
Preset = Literal["default", "reference"]
Format = Literal["chat", "llama2"]
DType = Literal["float32", "bfloat16"]
# How several processes share a run: a copy of the base on each (DDP), or its weights sharded
# over them (FSDP, for a base that does not fit one device). One process ignores it.
Distributed = Literal["ddp", "fsdp"]

GIB = 1024**3
# Share of the free memory a plan may use: the rest is left for the allocator, the CUDA
# context, the optimizer's small state and the tokenizer/data pipeline.
USABLE_SHARE = 0.85
# Measured on an H100 with a Llama-2-7B shape and plain transformers + peft (issue 6): why LoRA
# wins whenever it fits.
LORA_VS_QLORA = "bf16 LoRA 8,700 tokens/s vs QLoRA 6,400 on an H100 with a Llama-2-7B shape"
# The profile behind bf16 adapters on GPU (benchmarks/RESULTS.md).
FP32_ADAPTER_COST = "~130 ms of a ~630 ms step on an H100 with a Llama-2-7B shape"
# Full fine-tuning's default learning rate: every weight moves, so it is ten times below the carb
# preset's LoRA (1e-3) and half the default LoRA's (2e-4). On the CaRB validation split (8 epochs,
# batch 16, SmolLM2-135M) 1e-4 beat 5e-5 (under-trained: 87 % of answers cut by a loop rule) and
# 2e-4 (over-fitted: last loss 0.07): benchmarks/RESULTS.md, "Full fine-tuning (issue 20)".
FULL_LEARNING_RATE = 1e-4
# Full fine-tuning keeps fp32 weights, their fp32 gradients and AdamW's two fp32 moments.
FULL_BYTES_PER_PARAM = 16


class LoraSettings(BaseModel):
    """The peft `LoraConfig` fields triplesmith sets."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


# `--lora-targets attention`: the attention projections of Llama-family bases (SmolLM2's too).
ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def lora_settings(
    r: int | None = None,
    alpha: int | None = None,
    targets: str | None = None,
    base: LoraSettings | None = None,
) -> LoraSettings:
    """`base` (default: `LoraSettings()`) with a new rank, alpha (default: twice the rank when
    the rank is given) and targets: `all-linear`, `attention` (`ATTENTION_MODULES`) or module
    names separated by commas."""
    base = base or LoraSettings()
    update: dict[str, Any] = {}
    if r is not None:
        update["r"] = r
        update["alpha"] = 2 * r
    if alpha is not None:
        update["alpha"] = alpha
    if targets is not None:
        if targets == "all-linear":
            update["target_modules"] = "all-linear"
        elif targets == "attention":
            update["target_modules"] = list(ATTENTION_MODULES)
        else:
            names = [name.strip() for name in targets.split(",") if name.strip()]
            if not names:
                raise TrainingError("--lora-targets: give all-linear, attention or module names")
            update["target_modules"] = names
    return LoraSettings(**{**base.model_dump(), **update})


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
    # CaRB's n-ary tuples as training targets: joined into the object, extra arguments dropped,
    # or one triple per extra argument (training/format.py).
    nary: Nary = "join"
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    optim: str = "adamw_torch"
    double_quant: bool = True
    group_by_length: bool = False
    gradient_checkpointing: bool | None = None
    packing: bool | None = None
    # The GPU speed levers (None: decide from the machine, see `plan_training`).
    kernels: bool | None = None  # Liger's Triton kernels
    attention: str | None = Field(None, min_length=1)  # a transformers attn_implementation
    adapter_dtype: DType | None = None  # the LoRA weights' dtype
    # Extra keyword arguments for `from_pretrained` (attn_implementation, device_map, ...).
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    distributed: Distributed = "ddp"
    resume: bool = False

    @model_validator(mode="after")
    def _full_fine_tuning(self) -> TrainConfig:
        """Full fine-tuning's own learning rate unless one was given; no adapter dtype."""
        if self.method != "full":
            return self
        if "learning_rate" not in self.model_fields_set:
            self.learning_rate = FULL_LEARNING_RATE
        if self.adapter_dtype is not None:
            raise ValueError(
                "adapter_dtype sets the LoRA weights' dtype; full fine-tuning trains no adapter "
                "(its weights stay fp32); leave adapter_dtype unset"
            )
        return self

    @model_validator(mode="after")
    def _one_attention(self) -> TrainConfig:
        given = self.model_kwargs.get("attn_implementation")
        if self.attention and given and given != self.attention:
            raise ValueError(
                f"attention {self.attention!r} and model_kwargs attn_implementation {given!r} "
                "disagree; set only attention"
            )
        return self

    @property
    def requested_attention(self) -> str | None:
        """The attention implementation asked for, by `attention` or in `model_kwargs`."""
        return self.attention or self.model_kwargs.get("attn_implementation")

    @classmethod
    def from_preset(cls, preset: Preset = "default", **overrides: Any) -> TrainConfig:
        """A config from a named preset, with the given fields overriding it (None values ignored)."""
        if preset not in PRESETS:
            raise TrainingError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls(**{**PRESETS[preset], **given, "preset": preset})

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that shape the adapter (or fully fine-tuned model), as written to the
        manifest; full fine-tuning leaves out the LoRA settings it does not use."""
        exclude = {"out", "resume", "base", "dataset"} | (
            {"lora"} if self.method == "full" else set()
        )
        return self.model_dump(mode="json", exclude=exclude)


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
class Plan:
    """The decisions for one run, each with the reason recorded in the manifest."""

    method: Literal["lora", "qlora", "full"]
    method_reason: str
    dtype: Literal["float32", "bfloat16"]
    dtype_reason: str
    gradient_checkpointing: bool
    gradient_checkpointing_reason: str
    packing: bool
    packing_reason: str
    attention: str
    attention_reason: str
    kernels: bool
    kernels_reason: str
    adapter_dtype: DType
    adapter_dtype_reason: str


def probe_machine() -> Machine:
    """This process's CUDA device (`LOCAL_RANK`, the first one alone) if there is one, else the
    CPU, with its free memory now."""
    import psutil
    import torch

    if torch.cuda.is_available():
        index = local_rank()
        free, _total = torch.cuda.mem_get_info(index)
        liger, liger_types = liger_support()
        return Machine(
            device="cuda",
            name=torch.cuda.get_device_name(index),
            free_bytes=int(free),
            bf16=torch.cuda.is_bf16_supported(),
            liger=liger,
            liger_model_types=liger_types,
            varlen=varlen_available(),
            capability=tuple(torch.cuda.get_device_capability(index)),
            processes=world_size(),
        )
    return Machine(
        device="cpu",
        name="cpu",
        free_bytes=int(psutil.virtual_memory().available),
        bf16=False,
        processes=world_size(),
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
        model_type=str(hf_config.model_type),
    )


def _bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def weight_bytes(shape: ModelShape, method: str, dtype_bytes: int, shards: int = 1) -> float:
    """What grows with the parameter count on one device: the base weights at full precision
    for LoRA, ~4.5 bits/parameter for NF4, and for full fine-tuning fp32 weights, gradients and
    AdamW's moments (16 bytes/parameter); split over `shards` devices when FSDP shards them."""
    if method == "qlora":
        return shape.params * 0.5625 / shards
    if method == "full":
        return shape.params * FULL_BYTES_PER_PARAM / shards
    return shape.params * dtype_bytes / shards


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
    requested: Method,
    shape: ModelShape,
    machine: Machine,
    tokens_per_step: int,
    shards: int = 1,
) -> tuple[Literal["lora", "qlora", "full"], str]:
    """LoRA or QLoRA, and why: QLoRA only when the full-precision base would not fit.

    The base counts as fitting when its weights (this device's share of them under FSDP) plus
    the (checkpointed) activations of one micro-batch take at most 85 % of the free memory.
    `auto` never picks full fine-tuning: it is a recipe choice (validated on data), not a
    memory one; asked for, it is refused when its fp32 state would not fit.
    """
    if requested == "full":
        return "full", _full_reason(shape, machine, tokens_per_step, shards)
    if requested != "auto":
        return requested, f"--method {requested} was requested"
    dtype_bytes = 2 if machine.bf16 else 4
    precision = "bf16" if machine.bf16 else "fp32"
    usable = machine.free_bytes * USABLE_SHARE
    lora_need = weight_bytes(shape, "lora", dtype_bytes, shards) + activation_bytes(
        shape, tokens_per_step, dtype_bytes, checkpointing=True
    )
    where = f"{_bytes(machine.free_bytes)} free on {machine.name}"
    if shards > 1:
        where += f" (weights sharded over {shards} processes)"
    elif machine.processes > 1:
        where += f" (a full copy in each of {machine.processes} processes)"
    if lora_need <= usable:
        return "lora", (
            f"the {precision} base needs ~{_bytes(lora_need)} of {where}, so LoRA "
            f"(faster than QLoRA when it fits: {LORA_VS_QLORA})"
        )
    qlora_need = weight_bytes(shape, "qlora", dtype_bytes, shards) + activation_bytes(
        shape, tokens_per_step, dtype_bytes, checkpointing=True
    )
    if qlora_need <= usable:
        return "qlora", (
            f"the {precision} base needs ~{_bytes(lora_need)} but only {where}; "
            f"the 4-bit NF4 base needs ~{_bytes(qlora_need)}"
        )
    raise TrainingError(
        f"the base model ({shape.params / 1e9:.2f} B parameters) does not fit {where} even in "
        f"4-bit (~{_bytes(qlora_need)} needed); lower --batch-size or --max-seq-len, shard it "
        "over several GPUs (--num-processes N --fsdp), or use a machine with more memory"
    )


def _full_reason(shape: ModelShape, machine: Machine, tokens_per_step: int, shards: int) -> str:
    """Why full fine-tuning fits here, or `TrainingError` when it does not."""
    dtype_bytes = 2 if machine.bf16 else 4
    need = weight_bytes(shape, "full", dtype_bytes, shards) + activation_bytes(
        shape, tokens_per_step, dtype_bytes, checkpointing=True
    )
    where = f"{_bytes(machine.free_bytes)} free on {machine.name}"
    if need > machine.free_bytes * USABLE_SHARE:
        raise TrainingError(
            f"full fine-tuning of the base ({shape.params / 1e9:.2f} B parameters: fp32 weights, "
            f"gradients and AdamW state, {FULL_BYTES_PER_PARAM} bytes each) needs "
            f"~{_bytes(need)}, more than the {where} allow; use --method lora or qlora, shard it "
            "over several GPUs (--num-processes N --fsdp), or use a machine with more memory"
        )
    return (
        f"--method full was requested: all weights train (fp32 weights, gradients and AdamW "
        f"state, {FULL_BYTES_PER_PARAM} bytes a parameter), ~{_bytes(need)} of {where}"
    )


def choose_checkpointing(
    requested: bool | None,
    method: str,
    shape: ModelShape,
    machine: Machine,
    tokens_per_step: int,
    shards: int = 1,
) -> tuple[bool, str]:
    """Gradient checkpointing only when the activations would not fit without it (~50 % more compute)."""
    if requested is not None:
        return requested, f"gradient checkpointing {'on' if requested else 'off'} as configured"
    dtype_bytes = 2 if machine.bf16 else 4
    need = weight_bytes(shape, method, dtype_bytes, shards) + activation_bytes(
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

    With FlashAttention's varlen kernels (`triplesmith_varlen`, `flash_attention_*`) each packed
    example attends only to itself. With sdpa or eager attention transformers turns a packed
    batch into one long sequence under a block-diagonal mask, so attention grows with the
    square of the whole batch's length: measured on this project's 2-core CPU with SmolLM2,
    70 tokens/s packed vs 94 padded.
    """
    if requested is not None:
        return requested, f"packing {'on' if requested else 'off'} as configured"
    if group_by_length:
        return False, "off: group_by_length batches similar lengths instead"
    if not shape.supports_packing:
        return False, "off: this model class does not read packed sequences from position_ids"
    attention = attn_implementation or "sdpa"
    if attends_within_examples(attention):
        return True, (
            f"on: packing_strategy='bfd' with padding-free batches ({attention} attends within "
            "each packed example)"
        )
    return False, (
        f"off: with {attention} attention a packed batch is one sequence under a block-diagonal "
        "mask, slower than padding (SmolLM2 on CPU: 70 vs 94 tokens/s); packing pays with "
        "varlen FlashAttention, which needs a CUDA GPU"
    )


def choose_dtype(machine: Machine) -> tuple[Literal["float32", "bfloat16"], str]:
    if machine.bf16:
        return "bfloat16", f"bf16 on {machine.name}"
    if machine.device == "cpu":
        return "float32", "fp32 on CPU (bf16 matrix multiplication is ~400x slower on these CPUs)"
    return "float32", f"fp32: {machine.name} has no fast bf16"


def choose_adapter_dtype(
    requested: DType | None, dtype: DType, method: str = "lora"
) -> tuple[DType, str]:
    """The trained weights' dtype: for LoRA the base's compute dtype, so LoRA inputs are never
    cast; for full fine-tuning fp32 master weights.

    With fp32 adapters on a bf16 base, peft casts each LoRA layer's input to fp32 and runs
    dropout, scaling and the add in fp32. TRL keeps QLoRA adapters in bf16 for the same reason
    (the QLoRA paper's recipe); on CPU everything trains in fp32. Full fine-tuning updates
    weights of ~1e-2 by steps of ~lr (5e-5): in bf16 (8 bits of mantissa) most such steps round
    to nothing, so its weights stay fp32 and a GPU computes under bf16 autocast.
    """
    if method == "full":
        where = " under bf16 autocast" if dtype == "bfloat16" else ""
        return "float32", (
            f"full fine-tuning: no adapter; the model's own weights train as fp32 master "
            f"weights{where} (bf16 weights would round most updates of a small learning rate "
            "away)"
        )
    if requested is not None:
        return requested, f"{requested} adapters as configured"
    if dtype == "bfloat16":
        return "bfloat16", (
            "bf16 like the base, so LoRA inputs stay bf16 (fp32 adapters make peft cast every "
            f"LoRA input to fp32: {FP32_ADAPTER_COST}); TRL does the same for QLoRA"
        )
    return "float32", "fp32 like the base (fp32 training)"


def plan_training(config: TrainConfig, shape: ModelShape, machine: Machine) -> Plan:
    """All the machine-dependent decisions for `config`, made before anything is loaded.

    Raises `TrainingError` when a lever is forced on where it cannot run (kernels without CUDA
    or liger-kernel, varlen attention without a FlashAttention GPU or without packing).
    Under several processes it is this process's plan: its device, its micro-batch, and its
    share of the weights (all of them with DDP, 1/N with FSDP).
    """
    tokens_per_step = config.batch_size * config.max_seq_len
    shards = machine.processes if config.distributed == "fsdp" else 1
    method, method_reason = choose_method(config.method, shape, machine, tokens_per_step, shards)
    dtype, dtype_reason = choose_dtype(machine)
    checkpointing, checkpointing_reason = choose_checkpointing(
        config.gradient_checkpointing, method, shape, machine, tokens_per_step, shards
    )
    attention, attention_reason = choose_attention(
        config.requested_attention, config.packing, config.group_by_length, shape, machine
    )
    packing, packing_reason = choose_packing(
        config.packing, shape, config.group_by_length, attention
    )
    kernels, kernels_reason = choose_kernels(config.kernels, shape, machine)
    adapter_dtype, adapter_dtype_reason = choose_adapter_dtype(config.adapter_dtype, dtype, method)
    return Plan(
        method=method,
        method_reason=method_reason,
        dtype=dtype,
        dtype_reason=dtype_reason,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_reason=checkpointing_reason,
        packing=packing,
        packing_reason=packing_reason,
        attention=attention,
        attention_reason=attention_reason,
        kernels=kernels,
        kernels_reason=kernels_reason,
        adapter_dtype=adapter_dtype,
        adapter_dtype_reason=adapter_dtype_reason,
    )
