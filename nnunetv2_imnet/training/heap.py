"""Give the C heap's free pages back to the operating system.

glibc's malloc keeps memory that a program has freed for reuse. A training step frees and reallocates
hundreds of MB of activations and augmentation buffers; as the heap fragments, more and more of it stays
resident although nothing uses it, and the process's RSS creeps up over a long run (measured with
``benchmarks/memory_soak.py``: the growth was malloc's free memory, while the memory in use stayed flat).
``malloc_trim(0)`` returns free pages anywhere in the heap, not only at its top. Other C libraries have no
such call; there this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Callable, Optional


@lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    function = getattr(libc, "malloc_trim", None)
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


def release_free_heap_memory() -> bool:
    """Return free heap pages to the OS; True if the C library can (glibc) and released anything."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
