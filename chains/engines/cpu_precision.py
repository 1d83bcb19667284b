"""A local model's linear layers in bf16 on a CPU with native bf16 instructions.

On a CPU a decode step of a small model is its matrix products on fp32 weights (SmolLM2-135M on
2 cores: 85 of 112 ms a step at 20 rows, 63 ms a step at one row, bound by reading the weights).
In bf16 every linear layer (the LM head included) keeps its weights in bf16 and runs its
product in bf16, everything else stays fp32 (norms, rotary embeddings, attention, the KV
cache): 1.6-1.75x faster batches on this project's CPU. It changes some answers (a GPU runs the
whole model in bf16 anyway), and measured on all 634 CaRB test sentences with the fine-tuned
chain it scored what fp32 scores: CaRB F1 0.451 against 0.451, AUC 0.278 against 0.277, paired
per-sentence F1 p = 0.44 (benchmarks/RESULTS.md, "Guessed tokens checked in one call"). So
`TRIPLESMITH_CPU_PRECISION=auto`, the default, runs bf16 on a CPU with bf16 instructions
(AVX512-BF16 or AMX) and fp32 on one without (where bf16 would be slower); `fp32` and `bf16`
force one (bf16 is refused without the instructions). The precision is part of an experiment's
key, so a store never mixes the answers of the two.
"""

from __future__ import annotations

from pathlib import Path

import torch

from triplesmith.chains.engines.base import env_choice
from triplesmith.errors import ChainError
from triplesmith.memory import trim_heap

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_precision() -> str:
    """The precision asked for by `TRIPLESMITH_CPU_PRECISION` (default auto)."""
    return env_choice(
        "TRIPLESMITH_CPU_PRECISION",
        PRECISIONS,
        "auto",
        "auto, the default, runs the linear layers in bf16 on a CPU with bf16 instructions "
        "and in fp32 on one without; fp32 or bf16 forces one",
    )


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has native bf16 instructions (read from Linux's /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in BF16_FLAGS)


class BF16Linear(torch.nn.Module):
    """Stand-in for one `nn.Linear`: its weight (and bias) in bf16, fp32 in and out."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(
            linear.weight.detach().to(torch.bfloat16), requires_grad=False
        )
        bias = linear.bias
        self.bias = (
            None
            if bias is None
            else torch.nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias)
        return out.to(x.dtype)


def to_bf16_linears(model: torch.nn.Module) -> int:
    """Replace every `nn.Linear` of `model` (an inference copy: merged adapters, eval mode) with
    a bf16 one; the LM head gets its own bf16 copy even when tied to the embeddings, which stay
    fp32. Returns how many layers were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, BF16Linear(child))
                replaced += 1
    return replaced


def apply_cpu_precision(model: torch.nn.Module) -> str | None:
    """Put `model` (a CPU engine's inference copy) in the precision TRIPLESMITH_CPU_PRECISION
    asks for: None for fp32 (nothing done), "bf16" once its linear layers are converted."""
    precision = cpu_precision()
    if precision == "auto":
        precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp32":
        return None
    if not cpu_has_bf16():
        raise ChainError(
            "TRIPLESMITH_CPU_PRECISION=bf16 needs a CPU with bf16 instructions (AVX512-BF16 or "
            "AMX), where it is faster than fp32; this one has none: unset it (auto picks fp32 here)"
        )
    to_bf16_linears(model)
    # The loaded weights can be views of one buffer (the checkpoint as read): the fp32 tensors
    # left (embeddings, norms) get storage of their own, so that the buffer is freed once the
    # linear layers' fp32 weights are gone (on SmolLM2 0.4 GB less resident per engine).
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype != torch.bfloat16:
            tensor.data = tensor.data.clone()
    trim_heap()  # the fp32 weights go back to the OS
    return "bf16"
