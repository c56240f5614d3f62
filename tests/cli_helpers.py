"""Helpers for tests that run nnU-Net's commands on a few real Hippocampus cases."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NNUNETV2_IMNET_TEST_DATA", REPO.parent / "shared" / "data"))
HIPPOCAMPUS = SHARED_DATA / "Dataset004_Hippocampus"
NUM_CASES = 10

requires_real_data = pytest.mark.skipif(
    not (HIPPOCAMPUS / "dataset.json").is_file(),
    reason=f"real Hippocampus data not found at {HIPPOCAMPUS} (set NNUNETV2_IMNET_TEST_DATA)")


def nnunet_env(root: Path, training: bool = False) -> Dict[str, str]:
    """Environment for nnU-Net's commands with its folders under ``root``, named as the benchmark names them."""
    env = dict(os.environ)
    env.pop("nnUNet_n_proc_DA", None)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"), nnUNet_def_n_proc="2",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    if training:
        env["nnUNet_n_proc_DA"] = "0"  # fastest on 2 CPU cores; breaks planning, so only for training
    return env


def run(command: Sequence[str], env: Dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command; on failure show its output's end in the assertion message."""
    result = subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(command)} exited with {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_hippocampus_subset(raw_root: Path, num_cases: int = NUM_CASES) -> Path:
    """The first ``num_cases`` real training cases (and the unlabelled test image) as links in ``raw_root``.

    Only links and a new dataset.json are written; ../shared stays untouched.
    """
    target = raw_root / HIPPOCAMPUS.name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    labels = sorted((HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))[:num_cases]
    for label in labels:
        case = label.name[:-len(".nii.gz")]
        (target / "labelsTr" / label.name).symlink_to(label)
        (target / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz")
    for image in (HIPPOCAMPUS / "imagesTs").glob("*.nii.gz"):
        (target / "imagesTs" / image.name).symlink_to(image)
    dataset_json = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    dataset_json["numTraining"] = len(labels)
    (target / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    return target


def benchmark_in_process(arguments: Sequence[str]) -> str:
    """``nnunetv2-imnet`` run in this process with nnU-Net's worker count for 2 cores and a progress line every 2 s;
    returns what it printed."""
    import io
    from contextlib import redirect_stdout

    from nnunetv2_imnet import cli
    from nnunetv2_imnet.benchmark.runner import BenchmarkRunner

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_def_n_proc", "2")
        patch.setattr(BenchmarkRunner, "progress_seconds", 2.0)
        with redirect_stdout(out):
            cli.main(list(arguments))
    return out.getvalue()
