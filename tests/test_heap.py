"""Returning the C heap's free pages to the OS (``nnunetv2_imnet.training.heap``) and its use after each epoch."""
from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from nnunetv2_imnet.training import heap, measured
from trainer_helpers import make_trainer, nnunet_folders, tiny_plans

pytestmark = pytest.mark.skipif(heap._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")


def anonymous_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def test_fragmented_free_memory_is_returned() -> None:
    """Free 15 of every 16 heap blocks: the kept ones pin the heap, so free() alone cannot shrink it (RSS stays);
    malloc_trim(0) gives the free pages between them back."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 4000  # below glibc's mmap threshold: from the heap; 250 MB in all
    blocks = [libc.malloc(size) for _ in range(count)]
    assert all(blocks)
    try:
        for block in blocks:
            ctypes.memset(block, 1, size)  # make the pages resident
        for index, block in enumerate(blocks):
            if index % 16:
                libc.free(block)
        pinned = anonymous_rss_mb()
        assert heap.release_free_heap_memory()
        released = pinned - anonymous_rss_mb()
        assert released > 150, f"only {released:.0f} MB of ~234 MB of free heap were returned"
    finally:
        for block in blocks[::16]:
            libc.free(block)


@pytest.mark.parametrize("enabled", [True, False])
def test_measured_trainers_release_the_heap_after_every_epoch(enabled: bool, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in nnunet_folders(tmp_path).items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(measured, "release_free_heap_memory", lambda: calls.append(True))
    monkeypatch.setattr(measured.nnUNetTrainer, "on_epoch_end", lambda self: None)  # no checkpoint or plot needed
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer("nnUNetTrainerIMNet_smoke", plans, dataset_json, configuration, initialize=False)
    trainer.release_heap_every_epoch = enabled
    trainer.on_epoch_end()
    trainer.on_epoch_end()
    assert len(calls) == (2 if enabled else 0)
