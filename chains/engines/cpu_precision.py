"""A local model's linear layers in bf16 on a CPU with native bf16 instructions (opt-in).

On a CPU a decode step of a small model is its matrix products on fp32 weights (SmolLM2-135M on
2 cores: 85 of 112 ms a step at 20 rows, 63 ms a step at one row, bound by reading the weights).
`TRIPLESMITH_CPU_PRECISION=bf16` keeps the weights of every linear layer (the LM head included)
in bf16 and runs those products in bf16, everything else in fp32 (norms, rotary embeddings,
attention, the KV cache): 1.6-1.75x faster batches and one sentence in 3.2-3.8 s instead of
4.9-5.8 s on this project's CPU, but it changes 35-40 % of few-shot and fine-tuned answers
(benchmarks/RESULTS.md, "a preallocated KV cache, and the CPU targets again"). So it is not the
default, it is part of an experiment's key, and it is refused on a CPU without bf16 instructions
(AVX512-BF16 or AMX), where it would be slower than fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from triplesmith.chains.engines.base import env_choice
from triplesmith.errors import ChainError
from triplesmith.memory import trim_heap

PRECISIONS = ("fp32", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_precision() -> str:
    """The precision asked for by `TRIPLESMITH_CPU_PRECISION` (default fp32)."""
    return env_choice(
        "TRIPLESMITH_CPU_PRECISION",
        PRECISIONS,
        "fp32",
        "fp32 is the default; bf16 runs the linear layers in bf16 on a CPU with bf16 "
        "instructions: faster, and some answers change",
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
    if cpu_precision() != "bf16":
        return None
    if not cpu_has_bf16():
        raise ChainError(
            "TRIPLESMITH_CPU_PRECISION=bf16 needs a CPU with bf16 instructions (AVX512-BF16 or "
            "AMX), where it is faster than fp32; this one has none: unset it"
        )
    to_bf16_linears(model)
    trim_heap()  # the fp32 weights go back to the OS
    return "bf16"
