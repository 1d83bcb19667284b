"""Variable-length FlashAttention for padding-free (packed) training batches, and when to use it.

With packing, TRL's collator puts a batch's examples end to end in one row and passes their
boundaries (`cu_seq_lens_*`). transformers' `sdpa` runs such a row as one long sequence under a
block-diagonal mask, so attention costs the square of the whole batch's length; PyTorch's
`torch.nn.attention.varlen.varlen_attn` (FlashAttention, CUDA only) attends within each example.
`register_varlen()` makes it a transformers attention implementation named `VARLEN`.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

from triplesmith.errors import TrainingError

if TYPE_CHECKING:
    from triplesmith.training.machine import Machine, ModelShape

VARLEN = "triplesmith_varlen"
# FlashAttention's kernels need an Ampere-or-newer GPU.
FLASH_CAPABILITY = (8, 0)
# Attention implementations that attend within each packed example (so packing pays).
PACKED_ATTENTION = (VARLEN, "flash_attention_2", "flash_attention_3", "flash_attention_4")


def varlen_available() -> bool:
    """Whether this torch has `torch.nn.attention.varlen.varlen_attn` (2.10 and later)."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def attends_within_examples(attention: str) -> bool:
    """Whether `attention` reads packed sequences as separate examples (varlen kernels)."""
    return attention in PACKED_ATTENTION or "flash" in attention


def _varlen_blockers(machine: Machine) -> str | None:
    """Why the varlen kernel cannot run on `machine`, or None when it can."""
    if machine.device != "cuda":
        return f"varlen FlashAttention needs a CUDA GPU (this run is on {machine.device})"
    if not machine.varlen:
        return "this torch has no torch.nn.attention.varlen (torch 2.10 or later has it)"
    if machine.capability is not None and machine.capability < FLASH_CAPABILITY:
        major, minor = machine.capability
        return f"{machine.name} (compute capability {major}.{minor}) has no FlashAttention (8.0+)"
    if not machine.bf16:
        return f"FlashAttention computes in bf16/fp16 and {machine.name} trains in fp32"
    return None


def choose_attention(
    requested: str | None,
    packing: bool | None,
    group_by_length: bool,
    shape: ModelShape,
    machine: Machine,
) -> tuple[str, str]:
    """The attention implementation, and why: varlen FlashAttention when batches can be packed.

    Packing is decided afterwards from this choice (`choose_packing`): it pays only with an
    implementation that attends within each packed example.
    """
    if requested is not None:
        if requested == VARLEN:
            blocker = _varlen_blockers(machine)
            if blocker:
                raise TrainingError(f"attention {VARLEN!r} cannot run here: {blocker}; use 'sdpa'")
            if packing is False or group_by_length:
                raise TrainingError(
                    f"attention {VARLEN!r} reads padding-free packed batches only; turn packing "
                    "on (and group_by_length off), or use 'sdpa'"
                )
        return requested, f"{requested} as configured"
    if packing is False:
        return "sdpa", "sdpa: packing is off as configured, so batches are padded"
    if group_by_length:
        return "sdpa", "sdpa: group_by_length pads batches of similar lengths instead of packing"
    if not shape.supports_packing:
        return "sdpa", "sdpa: this model class does not read packed sequences from position_ids"
    blocker = _varlen_blockers(machine)
    if blocker:
        return "sdpa", f"sdpa: {blocker}"
    return VARLEN, (
        f"{VARLEN}: FlashAttention within each packed example (torch.nn.attention.varlen), so "
        "padding-free batches cost no attention across examples (measured on an H100, with "
        "Liger: 63.9 s to 30.2 s per epoch together)"
    )


@functools.cache
def _varlen_options() -> dict[str, bool]:
    """Which keyword arguments this torch's `varlen_attn` takes (they changed in 2.11 and 2.12)."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    return {"window_size": "window_size" in params, "enable_gqa": "enable_gqa" in params}


def varlen_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention interface over `varlen_attn`, for padding-free batches.

    `query` is (1, heads, tokens, head_dim) and `key`/`value` (1, kv_heads, tokens, head_dim),
    with the examples' boundaries in `cu_seq_lens_q`/`cu_seq_lens_k` (from TRL's collator).
    Returns the (1, tokens, heads, head_dim) output and no attention weights.
    """
    import torch
    from torch.nn.attention.varlen import varlen_attn

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1:
        raise TrainingError(
            f"attention {VARLEN!r} needs padding-free packed batches (packing on); "
            "padded batches need attention 'sdpa'"
        )
    if dropout:
        raise TrainingError(
            f"attention {VARLEN!r} has no attention dropout (the model asks for {dropout}); "
            "use attention 'sdpa'"
        )
    options = _varlen_options()
    dtype = query.dtype if query.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    q, k, v = (t[0].transpose(0, 1).to(dtype).contiguous() for t in (query, key, value))
    extra: dict[str, Any] = {}
    if k.shape[1] != q.shape[1]:  # grouped-query attention: fewer key/value heads
        if options["enable_gqa"]:
            extra["enable_gqa"] = True
        else:
            repeats = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
    if options["window_size"]:
        extra["window_size"] = (sliding_window - 1, 0) if sliding_window else (-1, 0)
    elif sliding_window:
        raise TrainingError(
            f"attention {VARLEN!r}: this torch's varlen_attn has no sliding window, which this "
            "model uses; use attention 'sdpa'"
        )
    else:
        extra["is_causal"] = True
    out = varlen_attn(
        q,
        k,
        v,
        cu_q.to(torch.int32),
        cu_k.to(torch.int32),
        int(kwargs["max_length_q"]),
        int(kwargs["max_length_k"]),
        scale=scaling,
        **extra,
    )
    return out.unsqueeze(0).to(query.dtype), None


def register_varlen() -> None:
    """Make `varlen_attention` the transformers attention implementation named `VARLEN`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    # Like FlashAttention, it takes no mask: the examples' boundaries come as cu_seq_lens.
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)
