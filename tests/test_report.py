"""Collection and the report on hand-written finished runs: a metric added in one place, partial results, specs
that train only noisy copies or on ResEnc plans, and the fold-level numbers known by construction."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fake_runs import finish_run
from nnunetv2_imnet.benchmark import metrics
from nnunetv2_imnet.benchmark.collect import collect
from nnunetv2_imnet.benchmark.metrics import Metric
from nnunetv2_imnet.benchmark.report import write_report
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec
from nnunetv2_imnet import provenance
from nnunetv2_imnet.provenance import record_attempt, source_commit

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal argument
NAMES = {4: "Dataset004_Hippocampus", 900: "Dataset900_HippocampusRician5"}
BASE, IMNET, CONTROL = "nnUNetTrainer", "nnUNetTrainerIMNet", "nnUNetTrainerIMNet_lambda0"
#: a baseline curve that ends at 0.8 (targets 0.72 and 0.76) and a faster one
SLOW, FAST = [0.1, 0.5, 0.7, 0.8], [0.73, 0.77, 0.8, 0.8]


def _spec(tmp_path: Path, **fields) -> BenchmarkSpec:
    values = {"raw": str(tmp_path / "raw"), "work": str(tmp_path / "work"), "datasets": [4], "budget": "cpu1k",
              "device": "cpu", "eval_noise": [], **fields}
    return BenchmarkSpec(**values).validate()


def _report(spec: BenchmarkSpec, tmp_path: Path) -> tuple:
    jobs = spec.jobs(NAMES)
    path = write_report(spec, collect(spec, jobs), tmp_path / "results", "test")
    return path.read_text(), pd.read_csv(path.parent / "results.csv")


def _row(text: str, *cells: str) -> str:
    """The markdown table row that starts with ``cells``."""
    [row] = [line for line in text.splitlines() if line.startswith("| " + " | ".join(cells) + " |")]
    return row


def _section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next section."""
    return text.split(f"\n## {heading}\n")[1].split("\n## ")[0]


def _false_positives(case: metrics.EvaluatedCase) -> dict:
    return {key: float(values["FP"]) for key, values in case.nnunet_metrics.items()}


def test_a_metric_added_to_the_registry_reaches_csv_report_and_ranking(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(metrics.METRICS, "fp", Metric("fp", "FP voxels", False, _false_positives))
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1])
    for job in spec.jobs(NAMES):
        better = job.method.trainer == BASE  # higher Dice, but more false positives
        finish_run(spec, job, dice=[0.9 + 0.001 * i if better else 0.8 + 0.002 * i for i in range(3)],
                   false_positives=[10 + i if better else 2 + 2 * i for i in range(3)], curve=SLOW)
    text, csv = _report(spec, tmp_path)
    assert list(csv.columns[-3:]) == ["dice", "nsd", "fp"]
    assert set(csv.loc[csv["method"] == IMNET, "fp"]) == {2.0, 4.0, 6.0}
    assert "FP voxels ↓ Anterior" in text and "mean FP voxels ↓" in text
    # ranks per (class, metric): Dice -> base, NSD tie, FP (lower is better) -> IMNet: both (1+1+1+1+2+2)/6
    assert _row(text, f"`{BASE}`", "6").endswith("| 1.33 |")
    assert _row(text, f"`{IMNET}`", "6").endswith("| 1.33 |")
    # FP differences per case: (2 + 2i) - (10 + i) = -8, -7, -6 in both folds
    assert "| 0, 1 | -7.0000 |" in _row(text, NAMES[4] + "/3d_fullres", f"`{IMNET}`", f"`{BASE}`", "FP voxels ↓",
                                        "0, 1")


def test_fold_level_comparison_of_a_known_shift(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1, 2, 3, 4])
    rng = np.random.default_rng(0)
    baseline = {fold: rng.uniform(0.6, 0.8, 4) for fold in range(5)}
    for job in spec.jobs(NAMES):
        shift = 0.05 if job.method.trainer == IMNET else 0.0
        finish_run(spec, job, dice=baseline[job.fold] + shift, curve=SLOW)
    text, _ = _report(spec, tmp_path)
    row = _row(text, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", f"`{BASE}`", "Dice ↑", "0, 1, 2, 3, 4")
    # difference, CI (a constant shift has no spread), sign-flip p = 2/2^5, Holm over Dice and NSD, smallest p
    assert row.endswith("| +0.0500 | [+0.0500, +0.0500] | 0.0625 | 0.125 | 0.0625 |")
    nsd = _row(text, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", f"`{BASE}`", "NSD ↑", "0, 1, 2, 3, 4")
    assert nsd.endswith("| +0.0000 | [+0.0000, +0.0000] | 1 | 1 | 0.0625 |")
    assert "0.0625 with 5 folds" in text and "Trust the fold level" in text
    assert "The methods cover different folds" not in text


def test_the_mi_arm_is_compared_against_its_weight_zero_control_in_one_holm_family(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET, CONTROL], folds=[0, 1, 2, 3, 4])
    rng = np.random.default_rng(0)
    baseline = {fold: rng.uniform(0.6, 0.8, 4) for fold in range(5)}
    shifts = {BASE: 0.0, IMNET: 0.05, CONTROL: 0.02}  # the MI gradient alone: +0.03
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=baseline[job.fold] + shifts[job.method.trainer], curve=SLOW)
    text = _section(_report(spec, tmp_path)[0], "Paired differences against the baseline and the control")
    task = "Dataset004_Hippocampus/3d_fullres"
    # 6 comparisons (IMNet and control vs base, IMNet vs control; Dice and NSD); three sign-flip p of 0.0625:
    # Holm's 6, 5 and 4 x 0.0625, made monotone, give 0.375 for each
    assert "Holm's adjustment over the 6 comparison(s)" in text and "every arm vs its control" in text
    assert f"(`{IMNET}` vs `{CONTROL}`)" in text
    assert _row(text, task, f"`{IMNET}`", f"`{CONTROL}`", "Dice ↑", "0, 1, 2, 3, 4").endswith(
        "| +0.0300 | [+0.0300, +0.0300] | 0.0625 | 0.375 | 0.0625 |")
    assert _row(text, task, f"`{IMNET}`", f"`{BASE}`", "Dice ↑", "0, 1, 2, 3, 4").endswith(
        "| +0.0500 | [+0.0500, +0.0500] | 0.0625 | 0.375 | 0.0625 |")
    assert _row(text, task, f"`{CONTROL}`", f"`{BASE}`", "NSD ↑", "0, 1, 2, 3, 4").endswith("| 1 | 1 | 0.0625 |")
    case_row = _row(text, task, f"`{IMNET}`", f"`{CONTROL}`", "Dice ↑", "20")
    assert f"| {np.mean(list(baseline.values())) + 0.02:.4f} | {np.mean(list(baseline.values())) + 0.05:.4f} | " \
           "+0.0300 |" in case_row
    assert not [line for line in text.splitlines() if line.startswith(f"| {task} | `{CONTROL}` | `{IMNET}`")]
    assert (tmp_path / "results" / "paired_differences_Dataset004_Hippocampus_3d_fullres.png").stat().st_size > 5_000


def test_partial_results_report_what_exists_and_compare_common_folds(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET, CONTROL], folds=[0, 1, 2, 3, 4])
    finished = {BASE: [0, 1, 2, 3], IMNET: [1, 2, 4], CONTROL: []}
    for job in spec.jobs(NAMES):
        if job.fold in finished[job.method.trainer]:
            faster = job.method.trainer == IMNET
            finish_run(spec, job, dice=[0.7 + 0.1 * faster + 0.01 * i for i in range(3)],
                       curve=FAST if faster else SLOW, mi=[0.1] * 4 if faster else None)
    text, csv = _report(spec, tmp_path)
    assert "**Incomplete:** 8 run(s) have not finished" in text
    runs = _section(text, "Runs")  # finished, not finished
    assert _row(runs, "Dataset004_Hippocampus/3d_fullres", f"`{BASE}`", "0, 1, 2, 3", "4")
    assert _row(runs, "Dataset004_Hippocampus/3d_fullres", f"`{CONTROL}`", "none", "0, 1, 2, 3, 4")
    assert set(csv["method"]) == {BASE, IMNET}
    assert "The methods cover different folds (see Runs)" in _section(text, "Leaderboard (cross-validation cases, "
                                                                            "nnU-Net's own validation with TTA)")
    # only folds 1 and 2 have both arms: 2 folds, smallest p 2/4
    fold_row = _row(text, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", f"`{BASE}`", "Dice ↑", "1, 2",
                    "+0.1000")
    assert fold_row.endswith("| 0.5 |")
    case_row = _row(text, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", f"`{BASE}`", "Dice ↑", "6")
    assert "| 0.7100 | 0.8100 | +0.1000 |" in case_row
    assert CONTROL not in _section(text, "Paired differences against the baseline and the control")
    # convergence: the baseline ends at 0.8 in each of its folds; IMNet reaches 90 % after 50 steps, 95 % after 100;
    # IMNet's fold 4 has no baseline run on it, so no target
    assert ("| `nnUNetTrainerIMNet` | 90% | 2 of 2 | 50 | 50 – 50 | 1: 50 (target 0.7200), 2: 50 (target 0.7200) |"
            in text)
    assert "| `nnUNetTrainerIMNet` | 95% | 2 of 2 | 100 | 100 – 100 |" in text
    assert "| `nnUNetTrainer` | 95% | 4 of 4 | 200 | 200 – 200 |" in text
    assert (tmp_path / "results" / "training_curves_Dataset004_Hippocampus_3d_fullres.png").stat().st_size > 5_000


def test_cost_ratios_from_the_median_and_the_fastest_epoch(tmp_path) -> None:
    """A baseline slowed by other work in two of its epochs: the median ratio flatters IMNet, the fastest does not."""
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0])
    seconds = {BASE: [9.0, 3.0, 1.0, 3.0], IMNET: [9.0, 1.1, 1.05, 1.1]}  # the first epoch (start-up) is left out
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=[0.8, 0.8], curve=SLOW, seconds=seconds[job.method.trainer])
    cost = _section(_report(spec, tmp_path)[0], "Training cost (measured in the same runs)")
    assert _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{BASE}`").endswith(
        "| 1 | 13 | 3.000 | 1.000 | 0: 1.00 | 1.000 | 1.000 | 100 | 1.000 |")  # training: (9+3+1+3) x 50 s
    assert _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`").endswith(
        "| 1 | 10 | 1.100 | 0.367 | 0: 0.37 | 1.050 | 1.050 | 100 | 1.000 |")
    assert "the fastest epoch is then the better estimate" in cost


def test_the_cost_table_names_each_runs_machines_and_marks_ratios_across_machines(tmp_path, monkeypatch) -> None:
    """Baseline fold 0 on A; IMNet fold 0 on A; IMNet fold 1 started on A and continued on B; baseline fold 1 has
    no record."""
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1])
    machines = {"A": {"cpu": "EPYC 9654", "cpu_capability": "AVX512", "cpu_count": 2, "gpu": None},
                "B": {"cpu": "EPYC", "cpu_capability": "AVX2", "cpu_count": 2, "gpu": None}}
    attempts = {(BASE, 0): "A", (IMNET, 0): "A", (IMNET, 1): "AB"}
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=[0.8, 0.8], curve=SLOW)
        for letter in attempts.get((job.method.trainer, job.fold), ""):
            monkeypatch.setattr(provenance, "machine", lambda letter=letter: machines[letter])
            record_attempt(spec.fold_dir(job), resumed=letter == "B")
    cost = _section(_report(spec, tmp_path)[0], "Training cost (measured in the same runs)")
    assert _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{BASE}`", "2", "A, ?")
    assert "| 0: 1.00, 1: 1.00 |" in _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{BASE}`")
    assert "| 0: 1.00, 1: 1.00† |" in _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", "2", "A, B")
    assert "A = EPYC 9654 (AVX512), 2 CPUs; B = EPYC (AVX2), 2 CPUs." in cost


def test_without_machine_records_the_cost_table_has_no_machines_column(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE], folds=[0])
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=[0.8, 0.8], curve=SLOW)
    cost = _section(_report(spec, tmp_path)[0], "Training cost (measured in the same runs)")
    assert "| task | method | folds | training (min) |" in cost and "Machines" not in cost


def test_training_time_sums_the_epochs_and_is_na_without_timestamps(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1])
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=[0.8, 0.8], curve=SLOW, seconds=[1.2 * (1 + job.fold)] * 4)  # 4 min, 8 min
    checkpoint = spec.fold_dir(spec.jobs(NAMES)[-1]) / "checkpoint_final.pth"  # IMNet fold 1: an older nnU-Net
    saved = torch.load(checkpoint, weights_only=False)
    del saved["logging"]["epoch_start_timestamps"]
    torch.save(saved, checkpoint)
    cost = _section(_report(spec, tmp_path)[0], "Training cost (measured in the same runs)")
    assert _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{BASE}`", "2", "6 (4–8)")
    assert _row(cost, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", "2", "n/a")


def test_noise_table_says_which_folds_each_mean_covers(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1], eval_noise=[("rician", 5.0)])
    for job in spec.jobs(NAMES):
        if job.fold == 0 or job.method.trainer == BASE:
            finish_run(spec, job, dice=[0.8, 0.9], curve=SLOW,
                       conditions={"clean": [0.8, 0.9], "rician_snr5": [0.6 + 0.1 * job.fold, 0.8]})
    noise = _section(_report(spec, tmp_path)[0], "Noise robustness (validation cases corrupted at test time, no TTA)")
    assert "| task | method | folds | clean | rician_snr5 |" in noise
    assert _row(noise, "Dataset004_Hippocampus/3d_fullres", f"`{BASE}`", "0, 1", "0.8500", "0.7250")
    assert _row(noise, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", "0", "0.8500", "0.7000")


def test_the_dice_lost_to_noise_is_compared_between_arms(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1, 2, 3, 4], eval_noise=[("rician", 5.0)])
    rng = np.random.default_rng(0)
    clean = {fold: rng.uniform(0.7, 0.9, 4) for fold in range(5)}
    lost = {BASE: 0.1, IMNET: 0.05}  # IMNet loses half as much Dice to noise
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=clean[job.fold], curve=SLOW,
                   conditions={"clean": clean[job.fold], "rician_snr5": clean[job.fold] - lost[job.method.trainer]})
    noise = _section(_report(spec, tmp_path)[0], "Noise robustness (validation cases corrupted at test time, no TTA)")
    task, metric = "Dataset004_Hippocampus/3d_fullres", "Dice change at rician_snr5 ↑"
    assert _row(noise, task, f"`{IMNET}`", f"`{BASE}`", metric, "0, 1, 2, 3, 4").endswith(
        "| +0.0500 | [+0.0500, +0.0500] | 0.0625 | 0.0625 | 0.0625 |")  # one comparison: Holm changes nothing
    assert _row(noise, task, f"`{IMNET}`", f"`{BASE}`", metric, "20", "-0.1000", "-0.0500", "+0.0500")


def test_convergence_table_shows_the_gain_in_the_last_quarter(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1])
    curves = {BASE: [0.1, 0.5, 0.7, 0.8], IMNET: [0.8, 0.8, 0.8, 0.8]}  # quarters of one epoch: +0.1 and 0
    for job in spec.jobs(NAMES):
        finish_run(spec, job, dice=[0.8, 0.8], curve=curves[job.method.trainer])
    text = _section(_report(spec, tmp_path)[0], "Convergence")
    assert "| 4 | 200 | 0.8000 ± 0.0000 | 0.1000 ± 0.0000 |" in _row(text, "Dataset004_Hippocampus/3d_fullres",
                                                                       f"`{BASE}`", "0, 1")
    assert "| 4 | 200 | 0.8000 ± 0.0000 | 0.0000 ± 0.0000 |" in _row(text, "Dataset004_Hippocampus/3d_fullres",
                                                                       f"`{IMNET}`", "0, 1")


def test_a_fold_that_never_reaches_the_target_is_reported_as_not_reached(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1])
    for job in spec.jobs(NAMES):
        stuck = job.method.trainer == IMNET and job.fold == 1
        finish_run(spec, job, dice=[0.7, 0.71], curve=[0.1, 0.1, 0.1, 0.1] if stuck else SLOW)
    text, _ = _report(spec, tmp_path)
    row = _row(text, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}`", "90%")
    assert row.endswith("| 1 of 2 | not reached | 200 – not reached | 0: 200 (target 0.7200), 1: not reached "
                        "(target 0.7200) |")


def test_a_spec_training_only_noisy_copies(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[], train_noise=[("rician", 5.0)], noise_folds=[0, 1, 2])
    for job in spec.jobs(NAMES):
        assert job.task.dataset == NAMES[900]
        if job.fold < 2:
            finish_run(spec, job, dice=[0.5, 0.6], curve=SLOW)
    text, csv = _report(spec, tmp_path)
    assert set(csv["dataset"]) == {NAMES[900]}
    assert "datasets trained under noise: folds 0, 1, 2" in text
    assert _row(_section(text, "Runs"), f"{NAMES[900]}/3d_fullres", f"`{IMNET}`", "0, 1", "2")
    assert _row(text, f"{NAMES[900]}/3d_fullres", f"`{IMNET}`", f"`{BASE}`", "Dice ↑", "0, 1").endswith("| 0.5 |")


def test_nothing_finished_still_writes_a_report(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0])
    text, csv = _report(spec, tmp_path)
    assert csv.empty and list(csv.columns)[-2:] == ["dice", "nsd"]
    assert "**Incomplete:** 2 run(s)" in text
    assert "(no method to compare with the baseline `nnUNetTrainer` yet" in text
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections[:3] == ["Leaderboard (cross-validation cases, nnU-Net's own validation with TTA)", "Runs",
                            "Paired differences against the baseline and the control"]


def test_the_stage_table_ends_with_the_benchmarks_total_compute(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE], folds=[0])
    timings = {"train a": 5400.0, "predict clean a": 1800.4, "evaluate clean a": 0.2}
    text = write_report(spec, collect(spec, spec.jobs(NAMES)), tmp_path / "results", "test", timings).read_text()
    assert "| predict clean a | 1800 |" in text
    assert text.splitlines()[-1] == "| all stages (the benchmark's compute, last attempts) | 7201 (2.0 h) |"


def test_a_spec_on_resenc_plans_compares_against_its_own_baseline(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET], folds=[0, 1], plans=["nnUNetResEncUNetMPlans"])
    for job in spec.jobs(NAMES):
        if job.fold == 0 or job.method.trainer == BASE:
            finish_run(spec, job, dice=[0.8, 0.82] if job.method.trainer == IMNET else [0.7, 0.72], curve=SLOW)
    text, _ = _report(spec, tmp_path)
    assert "paired comparisons below use only the cases both methods have" in text
    row = _row(text, "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}@nnUNetResEncUNetMPlans`",
               f"`{BASE}@nnUNetResEncUNetMPlans`", "Dice ↑", "0")
    assert row.endswith("| +0.1000 | [+0.1000, +0.1000] | 1 | 1 | 1 |")
    assert _row(_section(text, "Runs"), "Dataset004_Hippocampus/3d_fullres", f"`{IMNET}@nnUNetResEncUNetMPlans`",
                "0", "1")


def test_source_commit_names_the_checkout_and_its_uncommitted_changes(tmp_path) -> None:
    assert source_commit(tmp_path) is None  # no checkout: a wheel install
    git = ["git", "-C", str(tmp_path), "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "tracked.py").write_text("a = 1\n")
    subprocess.run([*git, "add", "tracked.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "untracked.py").write_text("")
    assert source_commit(tmp_path) == head and len(head) == 40
    (tmp_path / "tracked.py").write_text("a = 2\n")
    assert source_commit(tmp_path) == head + "-dirty"

