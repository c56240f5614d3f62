"""Returning the C heap's free pages to the OS (``nnunetv2_imnet.training.heap``), its use after each epoch, and
malloc's in-use and free memory as the memory soak samples them."""
from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def fragmented_heap(block_size: int = 64 * 1024, count: int = 4000) -> Iterator[None]:
    """``count`` resident heap blocks (below glibc's mmap threshold; 250 MB in all) of which 15 in 16 are then
    freed: the kept ones pin the heap, so free() alone cannot shrink it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(block_size) for _ in range(count)]
    assert all(blocks)
    try:
        for block in blocks:
            ctypes.memset(block, 1, block_size)  # make the pages resident
        for index, block in enumerate(blocks):
            if index % 16:
                libc.free(block)
        yield
    finally:
        for block in blocks[::16]:
            libc.free(block)


def test_fragmented_free_memory_is_returned() -> None:
    """malloc_trim(0) gives back the free pages between the pinning blocks."""
    with fragmented_heap():
        pinned = anonymous_rss_mb()
        assert heap.release_free_heap_memory()
        released = pinned - anonymous_rss_mb()
        assert released > 150, f"only {released:.0f} MB of ~234 MB of free heap were returned"


def test_malloc_usage_tells_memory_in_use_from_free_memory() -> None:
    in_use_before, free_before = heap.malloc_usage_mb()
    with fragmented_heap():
        in_use, free = heap.malloc_usage_mb()
        # 250 kept blocks of 64 KB in use (16 MB), the 3750 freed ones (234 MB) held free
        assert in_use - in_use_before == pytest.approx(250 * 64 / 1024, abs=8)
        assert free - free_before > 200


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


def test_a_child_dies_with_its_parent(tmp_path: Path) -> None:
    """The benchmark runner's children get SIGKILL when it dies (no orphaned training)."""
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, time\n"
        "from nnunetv2_imnet.training.heap import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '600'], preexec_fn=die_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n")])
    deadline = time.monotonic() + 120
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _running(child):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """Alive and not a zombie (the killed child is reparented, and reaped later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
