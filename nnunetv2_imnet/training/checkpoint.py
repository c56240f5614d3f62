"""Crash-safe checkpoint files: a kill at any moment leaves either the old or the new file, never half of one."""
from __future__ import annotations

import os
from typing import Any, Optional

import torch


def atomic_torch_save(obj: Any, filename: str) -> None:
    """``torch.save`` to a temporary file beside ``filename``, fsync it, then rename it over ``filename``."""
    directory = os.path.dirname(os.path.abspath(filename))
    temporary = os.path.join(directory, f".{os.path.basename(filename)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, filename)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def peek_checkpoint_entry(filename: str, key: str) -> Optional[Any]:
    """Read one top-level entry of a checkpoint without loading the rest (memory-mapped, on the CPU)."""
    checkpoint = torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
    return checkpoint.get(key)
