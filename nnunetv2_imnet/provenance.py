"""Which code made a result: package versions and the git commit of this package's checkout."""
from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Dict, Optional


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
