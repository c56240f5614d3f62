"""Which code and which machine made a result: package versions, the git commit of this package's checkout, and
each training attempt's machine (a run's seconds per step depend on the CPU's vector instructions as much as on
the method, and a resumed run may continue on another machine)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Dict, List, Optional

#: a fold folder's record of its training attempts (a resumed run has several): when each started, whether it
#: continued from a checkpoint, and on which machine
ATTEMPTS = "attempts.json"


def versions() -> Dict[str, str]:
    """The versions of this package, nnU-Net, torch and MONAI, and the commit of a development install."""
    found = {name: version(name) for name in ("nnunetv2-imnet", "nnunetv2", "torch", "monai")}
    commit = source_commit()
    return {**found, "nnunetv2-imnet commit": commit} if commit else found


def source_commit(root: Path = Path(__file__).resolve().parent.parent) -> Optional[str]:
    """The git commit of the checkout ``root`` (this package's, by default), '-dirty' if tracked files changed; None
    when it is no checkout (installed from a wheel) or git is missing. The version alone cannot say which code of a
    development install made a result."""
    if not (root / ".git").exists():
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def machine() -> Dict[str, object]:
    """What the speed of this machine's runs depends on: the CPU model, the vector instructions torch dispatches to
    (AVX2 or AVX512 on x86), the CPU count and the GPU, if any."""
    import torch  # only here: the rest of this module is read without torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "gpu": gpu}


def machine_name(record: Dict[str, object]) -> str:
    """A machine record as one line, e.g. "AMD EPYC (AVX2), 2 CPUs" or "..., NVIDIA H200"."""
    name = f"{record.get('cpu') or 'unknown CPU'} ({record.get('cpu_capability') or '?'}), " \
           f"{record.get('cpu_count') or '?'} CPUs"
    return name + (f", {record['gpu']}" if record.get("gpu") else "")


def record_attempt(fold: Path, resumed: bool) -> None:
    """Add this training attempt (now, on this machine) to ``fold``'s ``ATTEMPTS`` record."""
    path = fold / ATTEMPTS
    attempts = json.loads(path.read_text()) if path.is_file() else []
    attempts.append({"started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "resumed": resumed, "machine": machine()})
    path.write_text(json.dumps(attempts, indent=1))


def attempt_machines(fold: Path) -> List[str]:
    """The machines ``fold``'s training attempts ran on, each once, in order; empty where no attempt was recorded
    (a run from before the record existed)."""
    path = fold / ATTEMPTS
    attempts = json.loads(path.read_text()) if path.is_file() else []
    return list(dict.fromkeys(machine_name(attempt["machine"]) for attempt in attempts))


def _cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo on Linux (platform.processor() says only "x86_64" there)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
