"""Liger's Triton kernels (RMSNorm, SwiGLU/GeGLU, RoPE) for training on a CUDA GPU, and when to use them.

liger-kernel is optional: without it (or on CPU, where Triton does not run) training uses the
model's own layers. Its cross-entropy kernels are left out: TRL already computes the loss
through a fused, chunked LM head, and Liger's fused version would replace the model's forward.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any

from triplesmith.errors import TrainingError

if TYPE_CHECKING:
    from triplesmith.training.machine import Machine, ModelShape

log = logging.getLogger(__name__)

# Passed to liger's per-architecture `apply_liger_kernel_to_<type>`, which takes the ones it has.
LIGER_OPTIONS: dict[str, bool] = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "geglu": True,
    "layer_norm": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}
PIP_HINT = "pip install liger-kernel"


def liger_support() -> tuple[str | None, frozenset[str]]:
    """The installed liger-kernel version and the model types it patches; (None, {}) without it.

    Importing liger imports Triton, so call this on CUDA machines only.
    """
    try:
        version = metadata.version("liger-kernel")
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except metadata.PackageNotFoundError:
        return None, frozenset()
    except Exception as exc:  # a broken install (Triton, transformers version) = no kernels
        log.warning("liger-kernel is installed but cannot be imported: %s", exc)
        return None, frozenset()
    return version, frozenset(MODEL_TYPE_TO_APPLY_LIGER_FN)


def choose_kernels(requested: bool | None, shape: ModelShape, machine: Machine) -> tuple[bool, str]:
    """Liger's kernels, and why: on when CUDA, liger-kernel and the model type allow it."""
    blocker = None
    if machine.device != "cuda":
        blocker = f"Liger's Triton kernels need a CUDA GPU (this run is on {machine.device})"
    elif machine.liger is None:
        blocker = f"liger-kernel is not installed ({PIP_HINT})"
    elif shape.model_type not in machine.liger_model_types:
        blocker = f"liger-kernel {machine.liger} has no kernels for model type {shape.model_type!r}"
    if requested is False:
        return False, "kernels off as configured"
    if requested is True:
        if blocker:
            raise TrainingError(f"kernels cannot be used: {blocker}; turn kernels off")
        return True, f"Liger kernels for {shape.model_type} as configured"
    if blocker:
        return False, f"off: {blocker}"
    return True, (
        f"on: liger-kernel {machine.liger}'s RMSNorm, SwiGLU/GeGLU and RoPE kernels for "
        f"{shape.model_type} (not its cross-entropy: TRL fuses the LM head)"
    )


def _transformers_modules() -> dict[str, dict[str, Any]]:
    return {
        name: dict(vars(module))
        for name, module in list(sys.modules.items())
        if name.startswith("transformers.models.") and module is not None
    }


@contextmanager
def liger_kernels(model: Any, enabled: bool) -> Iterator[None]:
    """Liger's kernels on `model` for the duration of the block.

    Liger binds its forwards to the model's layers, and for RoPE (and the layer classes) it also
    replaces functions in transformers' modeling modules, which would reach every model built
    later in the process; those module-level replacements are undone when the block ends.
    """
    if not enabled:
        yield
        return
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    before = _transformers_modules()
    _apply_liger_kernel_to_instance(model=model, **LIGER_OPTIONS)
    replaced = {
        (name, key): (saved[key], value)
        for name, saved in before.items()
        for key, value in vars(sys.modules[name]).items()
        if key in saved and saved[key] is not value
    }
    try:
        yield
    finally:
        for (name, key), (original, patched) in replaced.items():
            module = sys.modules[name]
            if getattr(module, key, None) is patched:
                setattr(module, key, original)
