"""Giving freed memory back to the operating system, so one process can train and then evaluate.

PyTorch's CPU tensors come from the C allocator. glibc keeps what they free in its heap for
reuse instead of returning it, and a trained model's garbage sits in reference cycles until the
collector runs: after `triplesmith train`'s demo run the process still held 2.2 GB, 0.7 GB once
collected and trimmed (benchmarks/RESULTS.md, "Demo memory and time").
"""

import ctypes
import ctypes.util
import gc
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    """glibc, or None where there is none (macOS, musl, Windows): `malloc_trim` is glibc's."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim_heap() -> None:
    """Return the C heap's free pages to the OS (glibc's `malloc_trim`; elsewhere nothing)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def release_memory() -> None:
    """Collect Python's reference cycles (a trainer, its model and optimizer), then trim."""
    gc.collect()
    trim_heap()
