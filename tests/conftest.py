"""Session fixtures: nnU-Net's own commands on a few real Hippocampus cases, and the benchmark on a small generated
dataset (which runs without real data, e.g. in CI); each runs once and is shared by the tests."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import HIPPOCAMPUS, benchmark_in_process, make_hippocampus_subset, nnunet_env, run
from nnunetv2_imnet.benchmark.training_log import fold_status

#: seeds the moment of the resumability fixture's SIGKILL (a share of an epoch), so that a failure can be reproduced
KILL_DELAY_SEED = 0
#: tests that use these fixtures run nnU-Net's commands, trainings or torch.compile, and the tests of these modules
#: DDP, a SLURM cluster or pip: they are marked ``slow`` (``make test-fast`` runs the rest)
SLOW_FIXTURES = {"synthetic_raw", "synthetic_benchmark", "hippocampus_raw", "hippocampus_2d", "smoke_benchmark",
                 "fresh_dynamo"}
SLOW_MODULES = {"test_ddp", "test_discovery", "test_slurm"}
SMOKE_BENCHMARK_ARGS = ["-d", "4", "-c", "3d_fullres", "--folds", "0", "--budget", "smoke", "--device", "cpu",
                        "--eval-noise", "rician:5"]
#: the cheapest benchmark that derives a noisy dataset: only its fold 0 is trained, evaluated clean only
SYNTHETIC_BENCHMARK_ARGS = ["-d", "990", "--folds", "--train-noise", "rician:5", "--noise-folds", "0", "--budget",
                            "smoke", "--device", "cpu", "--eval-noise"]


@pytest.fixture(scope="session")
def hippocampus_raw(tmp_path_factory) -> Path:
    """An nnU-Net raw folder holding links to the first real Hippocampus cases."""
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"real Hippocampus data not found at {HIPPOCAMPUS}")
    raw = tmp_path_factory.mktemp("hippocampus_raw")
    make_hippocampus_subset(raw)
    return raw


@pytest.fixture(scope="session")
def hippocampus_2d(hippocampus_raw, tmp_path_factory) -> Path:
    """A workspace (raw, preprocessed, results) with the subset planned and preprocessed for 2d."""
    root = tmp_path_factory.mktemp("hippocampus_2d")
    (root / "nnUNet_raw").symlink_to(hippocampus_raw, target_is_directory=True)
    run(["nnUNetv2_plan_and_preprocess", "-d", "4", "-c", "2d", "-np", "2"], nnunet_env(root))
    return root


def _second_epoch_started(fold: Path, timeout: float) -> None:
    """Waits for nnU-Net's "Epoch 1" line: epoch 0's checkpoint is written and the last epoch has begun."""
    deadline = time.monotonic() + timeout
    while (epoch := fold_status(fold).epoch) is None or epoch < 1:
        assert time.monotonic() < deadline, f"the second epoch did not start in {fold} within {timeout} s"
        time.sleep(0.05)


def _kill_delay(baseline_fold: Path) -> float:
    """A seeded moment within the first half of the baseline's last epoch on this machine. The IMNet epoch does the
    same steps plus the MI term, so the kill lands inside IMNet's last epoch however fast the machine is (a fixed
    number of seconds came too late on a fast machine)."""
    epoch_seconds = fold_status(baseline_fold).epoch_seconds
    assert epoch_seconds, f"no finished epoch in the baseline's log in {baseline_fold}"
    return random.Random(KILL_DELAY_SEED).uniform(0.0, 0.5) * epoch_seconds[-1]


@pytest.fixture(scope="session")
def smoke_benchmark(hippocampus_raw, tmp_path_factory) -> dict:
    """The smoke benchmark (baseline and IMNet, 3d_fullres, fold 0), killed with SIGKILL while IMNet trains,
    then run again to the end. Returns the work folder and what was observed around the kill."""
    work = tmp_path_factory.mktemp("smoke_benchmark")
    command = [sys.executable, "-m", "nnunetv2_imnet.cli", "benchmark", "--raw", str(hippocampus_raw),
               "--work", str(work), *SMOKE_BENCHMARK_ARGS]
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env["nnUNet_def_n_proc"] = "2"
    results = work / "nnUNet_results" / "Dataset004_Hippocampus"
    baseline_fold = results / "nnUNetTrainer_smoke__nnUNetPlans__3d_fullres" / "fold_0"
    imnet_fold = results / "nnUNetTrainerIMNet_smoke__nnUNetPlans__3d_fullres" / "fold_0"
    with open(work / "first_run.log", "w") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _second_epoch_started(imnet_fold, timeout=900)
            delay = _kill_delay(baseline_fold)
            time.sleep(delay)  # a seeded moment of IMNet's last epoch (its training steps or its validation)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    time.sleep(1)  # the training child dies with its parent (PR_SET_PDEATHSIG)
    killed = {"delay_s": delay, "baseline_mtime": (baseline_fold / "checkpoint_final.pth").stat().st_mtime,
              "imnet_final_existed": (imnet_fold / "checkpoint_final.pth").is_file()}
    second = run(command, env, timeout=1500)
    return {"work": work, "second_stdout": second.stdout, "killed": killed, "command": command, "env": env}


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is fastest and avoids spinning on a busy second core."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A raw folder with a small generated dataset 990 (10 cases of 20x24x20 voxels: 2 validation cases a fold)."""
    from nnunetv2_imnet.benchmark.synthetic import make_synthetic_dataset

    raw = tmp_path_factory.mktemp("synthetic_raw")
    make_synthetic_dataset(raw, num_cases=10, shape=(20, 24, 20))
    return raw


@pytest.fixture(scope="session")
def synthetic_benchmark(synthetic_raw, tmp_path_factory) -> dict:
    """The benchmark CLI run in this process on the generated dataset: derives the noisy copy, preprocesses, trains
    baseline and IMNet on its fold 0, evaluates and reports. Progress is printed every 2 s. Returns the work folder,
    the arguments and what the run printed."""
    work = tmp_path_factory.mktemp("synthetic_benchmark")
    arguments = ["benchmark", "--raw", str(synthetic_raw), "--work", str(work), *SYNTHETIC_BENCHMARK_ARGS]
    return {"work": work, "arguments": arguments, "stdout": benchmark_in_process(arguments)}


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
