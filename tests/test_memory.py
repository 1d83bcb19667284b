"""Freed C heap goes back to the operating system (glibc's malloc_trim)."""

import ctypes

import psutil
import pytest

from triplesmith.memory import _libc, release_memory, trim_heap


@pytest.mark.skipif(_libc() is None, reason="malloc_trim is glibc's")
def test_trim_heap_returns_freed_blocks_kept_below_a_live_one() -> None:
    libc = _libc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(2000)]  # 128 MB under the mmap threshold
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    pin = libc.malloc(64 * 1024)  # a live block above them: free() alone cannot shrink the heap
    process = psutil.Process()
    for block in blocks:
        libc.free(block)
    held = process.memory_info().rss
    trim_heap()
    assert held - process.memory_info().rss > 64 * 1024**2
    libc.free(pin)
    release_memory()  # collects and trims without complaint
