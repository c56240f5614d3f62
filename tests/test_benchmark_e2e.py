"""The benchmark end to end on real Hippocampus cases: killed mid-training, resumed, reported; dry run; SLURM."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import requires_real_data
from conftest import SMOKE_BENCHMARK_ARGS
from nnunetv2_imnet import cli

pytestmark = [requires_real_data, pytest.mark.integration]
IMNET_FOLD = Path("nnUNet_results/Dataset004_Hippocampus/nnUNetTrainerIMNet_smoke__nnUNetPlans__3d_fullres/fold_0")


def test_killed_run_resumes_without_retraining_finished_folds(smoke_benchmark):
    work = smoke_benchmark["work"]
    assert not smoke_benchmark["killed"]["imnet_final_existed"], "the kill came too late to test resuming"
    baseline = work / "nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer_smoke__nnUNetPlans__3d_fullres/fold_0"
    assert (baseline / "checkpoint_final.pth").stat().st_mtime == smoke_benchmark["killed"]["baseline_mtime"]
    assert "continuing Dataset004_Hippocampus/3d_fullres nnUNetTrainerIMNet fold 0" in smoke_benchmark["second_stdout"]
    train_log = (work / "logs" / "train_Dataset004_Hippocampus_3d_fullres_nnUNetTrainerIMNet_fold_0.log").read_text()
    assert re.search(r"nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainerIMNet_smoke .* --c", train_log)
    assert "MI head and its optimizer state restored" in "".join(
        p.read_text() for p in (work / IMNET_FOLD).glob("training_log_*.txt"))
    assert (work / IMNET_FOLD / "checkpoint_final.pth").is_file()


def test_report_has_the_leaderboard_first_and_every_section(smoke_benchmark):
    results = smoke_benchmark["work"] / "results"
    text = (results / "results.md").read_text()
    sections = re.findall(r"^###? (.+)$", text, flags=re.M)
    assert sections[0].startswith("Leaderboard")
    for expected in ("Runs", "Paired differences against the baseline and the control",
                     "Fold level (unit: one trained model per arm and fold)",
                     "Case level (unit: case; each arm's trained models taken as fixed)",
                     "Per fold (mean over each fold's validation cases)", "Training cost (measured in the same runs)",
                     "Convergence", "Steps to reach 90% and 95% of the baseline's final pseudo Dice, per fold",
                     "Noise robustness (validation cases corrupted at test time, no TTA)", "Plots", "Provenance"):
        assert expected in sections
    assert "| `nnUNetTrainer` |" in text and "| `nnUNetTrainerIMNet` |" in text
    assert "rician_snr5" in text
    for plot in ("dice_boxplot", "paired_differences", "training_curves", "dice_vs_snr"):
        assert (results / f"{plot}_Dataset004_Hippocampus_3d_fullres.png").stat().st_size > 5_000


def test_results_csv_has_one_row_per_trainer_case_class_and_evaluation(smoke_benchmark):
    work = smoke_benchmark["work"]
    frame = pd.read_csv(work / "results" / "results.csv")
    splits = json.loads((work / "nnUNet_preprocessed/Dataset004_Hippocampus/splits_final.json").read_text())
    cases = len(splits[0]["val"])
    assert set(frame["method"]) == {"nnUNetTrainer", "nnUNetTrainerIMNet"}
    assert set(frame["evaluation"]) == {"validation", "clean", "rician_snr5"}
    assert set(frame["class"]) == {"Anterior", "Posterior"}
    assert len(frame) == 2 * 3 * cases * 2
    assert not frame.duplicated(["method", "fold", "evaluation", "case", "class"]).any()
    assert frame["dice"].between(0, 1).all() and frame["nsd"].dropna().between(0, 1).all()


def test_stage_timings_are_recorded(smoke_benchmark):
    timings = json.loads((smoke_benchmark["work"] / "timings.json").read_text())
    assert any(k.startswith("plan and preprocess") for k in timings)
    assert any(k.startswith("train ") and "IMNet" in k for k in timings)
    assert any(k.startswith("predict rician_snr5") for k in timings)


def test_dry_run_prints_every_command_and_marks_finished_ones(smoke_benchmark, hippocampus_raw, capsys):
    cli.main(["benchmark", "--raw", str(hippocampus_raw), "--work", str(smoke_benchmark["work"]),
              *SMOKE_BENCHMARK_ARGS, "--dry-run"])
    out = capsys.readouterr().out
    assert "# [done] nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainer_smoke -p nnUNetPlans -device cpu" in out
    assert "# [done] nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainerIMNet_smoke -p nnUNetPlans -device cpu" in out
    assert out.count("nnUNetv2_predict") == 4 and out.count("nnUNetv2_evaluate_folder") == 4


def test_dry_run_on_a_new_work_folder_runs_nothing(hippocampus_raw, tmp_path, capsys):
    work = tmp_path / "work"
    cli.main(["benchmark", "--raw", str(hippocampus_raw), "--work", str(work), "-d", "4", "--folds", "0", "1",
              "--budget", "cpu", "--device", "cpu", "--train-noise", "rician:5", "--plans", "nnUNetPlans",
              "nnUNetResEncUNetMPlans", "--dry-run"])
    out = capsys.readouterr().out
    assert not work.exists()
    assert "nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres -pl nnUNetPlannerResEncM -np 2" in out
    assert "# derive rician noise at SNR 5 from Dataset004_Hippocampus as dataset 900" in out
    trainings = re.findall(r"^nnUNetv2_train .*$", out, flags=re.M)
    # (2 clean folds + 1 noisy fold) x 2 trainers x 2 plans
    assert len(trainings) == 12
    assert "nnUNetv2_train 4 3d_fullres 1 -tr nnUNetTrainerIMNet_cpu -p nnUNetResEncUNetMPlans -device cpu" in out
    assert "nnUNetv2_train 900 3d_fullres 0 -tr nnUNetTrainer_cpu -p nnUNetPlans -device cpu" in out


def test_slurm_scripts(hippocampus_raw, tmp_path, capsys):
    work, scripts = tmp_path / "work", tmp_path / "slurm"
    cli.main(["benchmark", "--raw", str(hippocampus_raw), "--work", str(work), "-d", "4", "--folds", "0", "1", "2",
              "--budget", "full", "--device", "cuda", "--slurm", str(scripts), "--slurm-option=--gpus=1",
              "--slurm-option=--time=48:00:00"])
    assert "submit with: bash" in capsys.readouterr().out
    train = (scripts / "train.sbatch").read_text()
    assert "#SBATCH --array=0-5" in train  # 3 folds x 2 trainers
    assert "#SBATCH --gpus=1" in train and "#SBATCH --time=48:00:00" in train
    assert f"benchmark-job --spec {work / 'spec.json'} --index \"$SLURM_ARRAY_TASK_ID\"" in train
    assert "prepare --spec" in (scripts / "prepare.sbatch").read_text()
    assert "report --spec" in (scripts / "report.sbatch").read_text()
    submit = (scripts / "submit.sh").read_text()
    assert "--dependency=afterok:$prepare train.sbatch" in submit
    assert "--dependency=afterany:$train report.sbatch" in submit
    assert json.loads((work / "spec.json").read_text())["folds"] == [0, 1, 2]
    with pytest.raises(SystemExit, match="out of range: the spec has 6 jobs"):
        cli.main(["benchmark-job", "--spec", str(work / "spec.json"), "--index", "6"])
