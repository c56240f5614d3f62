"""The benchmark, its report, SLURM scripts and the CLI end to end on the generated dataset: no real data needed."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from nnunetv2_imnet import cli

NOISY = "Dataset900_IMNetDemoRician5"


def test_dry_run_after_a_real_run_marks_every_finished_job(synthetic_benchmark, capsys) -> None:
    cli.main([*synthetic_benchmark["arguments"], "--dry-run"])
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if "nnUNetv2_" in line]
    assert commands and all(line.startswith("# [done] ") for line in commands), out
    for trainer in ("nnUNetTrainer_smoke", "nnUNetTrainerIMNet_smoke"):
        assert f"# [done] nnUNetv2_train 900 3d_fullres 0 -tr {trainer} -p nnUNetPlans -device cpu" in out
    assert out.count("nnUNetv2_predict") == 2 and out.count("nnUNetv2_evaluate_folder") == 2
    assert f"nnUNet_raw/{NOISY}/labelsTr" in out


def test_progress_is_printed_while_a_job_trains(synthetic_benchmark) -> None:
    out = synthetic_benchmark["stdout"]
    label = f"{NOISY}/3d_fullres nnUNetTrainerIMNet fold 0"
    lines = re.findall(rf"^    \[\dh\d\dm\d\ds\] {re.escape(label)}: (.*)$", out, flags=re.M)
    assert lines, out
    assert all(re.match(r"starting|epoch [12]/2|trained 2/2 epochs", line) for line in lines), lines
    assert re.search(r"still running$", out, flags=re.M)  # predictions and evaluations too


def test_results_and_report(synthetic_benchmark) -> None:
    results = synthetic_benchmark["work"] / "results"
    text = (results / "results.md").read_text()
    assert re.findall(r"^## (.+)$", text, flags=re.M)[0].startswith("Leaderboard")
    assert "| `nnUNetTrainer` |" in text and "| `nnUNetTrainerIMNet` |" in text
    frame = pd.read_csv(results / "results.csv")
    assert set(frame["method"]) == {"nnUNetTrainer", "nnUNetTrainerIMNet"}
    assert set(frame["dataset"]) == {NOISY}
    assert set(frame["evaluation"]) == {"validation", "clean"}
    assert set(frame["class"]) == {"anterior", "posterior"}
    assert len(frame) == 2 * 2 * 2 * 2  # methods x evaluations x 2 validation cases x classes
    assert {p.name.split("_Dataset")[0] for p in results.glob("*.png")} == {"dice_boxplot", "paired_differences",
                                                                            "training_curves"}


def test_report_and_job_commands_on_the_saved_spec(synthetic_benchmark, capsys) -> None:
    spec = synthetic_benchmark["work"] / "spec.json"
    timings = (synthetic_benchmark["work"] / "timings.json").read_text()
    cli.main(["benchmark-job", "--spec", str(spec), "--index", "1"])  # finished: nothing runs again
    assert (synthetic_benchmark["work"] / "timings.json").read_text() == timings
    cli.main(["report", "--spec", str(spec)])
    assert "report written" in capsys.readouterr().out


def test_check_a_preprocessed_dataset(synthetic_benchmark, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    work = synthetic_benchmark["work"]
    monkeypatch.setenv("nnUNet_preprocessed", str(work / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_raw", str(work / "nnUNet_raw"))
    cli.main(["check", "900", "3d_fullres", "-tr", "nnUNetTrainerIMNet_DV"])
    out = capsys.readouterr().out
    assert f"OK: dataset {NOISY}, plans nnUNetPlans, configuration 3d_fullres" in out and "'estimator': 'dv'" in out
    with pytest.raises(SystemExit, match=r"error: Dataset 990 \(Dataset990_IMNetDemo\) is in nnUNet_raw but not "
                                         r"preprocessed"):
        cli.main(["check", "990", "3d_fullres"])


def test_dry_run_on_a_new_work_folder_runs_nothing(synthetic_raw, tmp_path, capsys) -> None:
    work = tmp_path / "work"
    cli.main(["benchmark", "--raw", str(synthetic_raw), "--work", str(work), "-d", "990", "--folds", "0", "1",
              "--budget", "cpu", "--device", "cpu", "--train-noise", "rician:5", "--plans", "nnUNetPlans",
              "nnUNetResEncUNetMPlans", "--dry-run"])
    out = capsys.readouterr().out
    assert not work.exists()
    assert "nnUNetv2_plan_and_preprocess -d 990 -c 3d_fullres -pl nnUNetPlannerResEncM -np 2" in out
    assert "# derive rician noise at SNR 5 from Dataset990_IMNetDemo as dataset 900" in out
    trainings = re.findall(r"^nnUNetv2_train .*$", out, flags=re.M)
    assert len(trainings) == 12  # (2 clean folds + 1 noisy fold) x 2 trainers x 2 plans
    assert "nnUNetv2_train 900 3d_fullres 0 -tr nnUNetTrainer_cpu -p nnUNetPlans -device cpu" in out
    assert f"nnUNet_raw/{NOISY}/labelsTr" in out  # the name the real run gives the noisy copy


def test_slurm_scripts(synthetic_raw, tmp_path, capsys) -> None:
    work, scripts = tmp_path / "work", tmp_path / "slurm"
    cli.main(["benchmark", "--raw", str(synthetic_raw), "--work", str(work), "-d", "990", "--folds", "0", "1",
              "--train-noise", "gaussian:10", "--budget", "full", "--device", "cuda", "--slurm", str(scripts),
              "--slurm-option=--gpus=1"])
    assert "submit with: bash" in capsys.readouterr().out
    train = (scripts / "train.sbatch").read_text()
    assert "#SBATCH --array=0-5" in train and "#SBATCH --gpus=1" in train  # (2 clean + 1 noisy fold) x 2 trainers
    assert f"benchmark-job --spec {work / 'spec.json'} --index \"$SLURM_ARRAY_TASK_ID\"" in train
    assert "--dependency=afterok:$prepare train.sbatch" in (scripts / "submit.sh").read_text()
    assert json.loads((work / "spec.json").read_text())["train_noise"] == [["gaussian", 10.0]]


def test_make_noisy(synthetic_raw, tmp_path, capsys) -> None:
    cli.main(["make-noisy", "-d", "990", "--raw", str(synthetic_raw), "--noise", "gaussian:10", "--id", "905", "-o",
              str(tmp_path)])
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "Dataset905_IMNetDemoGaussian10"
    assert len(list((folder / "imagesTr").iterdir())) == len(list((folder / "labelsTr").iterdir())) == 10
