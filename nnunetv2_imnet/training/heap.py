"""Give the C heap's free pages back to the operating system.

glibc's malloc keeps memory that a program has freed for reuse. A training step frees and reallocates
hundreds of MB of activations and augmentation buffers; as the heap fragments, more and more of it stays
resident although nothing uses it, and the process's RSS creeps up over a long run (measured with
``benchmarks/memory_soak.py``: the growth was malloc's free memory, while the memory in use stayed flat).
``malloc_trim(0)`` returns free pages anywhere in the heap, not only at its top. Other C libraries have no
such call; there this does nothing.

This is the one module that loads the C library; the benchmark runner's ``die_with_parent`` lives here too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import signal
from functools import lru_cache
from typing import Any, Callable, Optional, Tuple


@lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _libc_function(name: str, argtypes: list, restype: Any) -> Optional[Callable[..., Any]]:
    """The C library's ``name``, typed; None where it has none (not glibc, or glibc too old)."""
    function = getattr(_libc(), name, None) if _libc() is not None else None
    if function is not None:
        function.argtypes, function.restype = argtypes, restype
    return function


def _malloc_trim() -> Optional[Callable[[int], int]]:
    return _libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def release_free_heap_memory() -> bool:
    """Return free heap pages to the OS; True if the C library can (glibc) and released anything."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing.

    Called in a child before it runs a command, so a killed benchmark runner leaves no orphaned training.
    """
    prctl = _libc_function("prctl", [ctypes.c_int, ctypes.c_ulong], ctypes.c_int)
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def malloc_usage_mb() -> Optional[Tuple[float, float]]:
    """(memory malloc has handed out, memory it holds free) in MB, all arenas, from glibc's ``mallinfo2`` (2.33
    and later); None elsewhere. RSS that grows while the first stays flat is the second: fragmentation."""
    mallinfo2 = _libc_function("mallinfo2", [], _MallInfo2)
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20
