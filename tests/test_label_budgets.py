"""Label budgets and nnU-Net self-training in the benchmark, without training: the draw of the labelled cases, the
derived datasets' layout, the jobs a spec lists, the SLURM dependencies, the learning curve and the cost of
self-training, with known values."""
from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fake_runs import finish_run
from nnunetv2_imnet import cli
from nnunetv2_imnet.benchmark.archive import archive_job, archive_pseudo_labels, restore_pseudo_labels
from nnunetv2_imnet.benchmark.collect import collect
from nnunetv2_imnet.benchmark.comparisons import compare_arms, compare_budgets
from nnunetv2_imnet.benchmark.label_budgets import (budget_splits, check_budgets, draw_labelled, link_preprocessed,
                                                    link_raw_dataset, source_splits)
from nnunetv2_imnet.benchmark.learning_curve import THIS_RUN, full_label_differences, label_gap, learning_curve
from nnunetv2_imnet.benchmark.report import shown_path, write_report
from nnunetv2_imnet.benchmark.report_budgets import label_gap_section
from nnunetv2_imnet.benchmark import report_plots
from nnunetv2_imnet.benchmark.report_plots import clip_to_range, dodged, learning_curve_plot
from nnunetv2_imnet.benchmark.runner import BenchmarkRunner
from nnunetv2_imnet.benchmark.self_training import PREDICTED_MARKER, build_student_dataset
from nnunetv2_imnet.benchmark.slurm import index_ranges
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, LabelBudget
from nnunetv2_imnet.naming import TRAINING_CURVES

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal argument
CASES = [f"c{i}" for i in range(10)]
SOURCE = "Dataset990_IMNetDemo"
NAMES = {990: SOURCE}
BASE, IMNET, UNLABELLED, SELF = "nnUNetTrainer", "nnUNetTrainerIMNet", "nnUNetTrainerIMNet_Unlabelled", \
    "nnUNetSelfTraining"
L1, L2 = "Dataset700_IMNetDemoL1", "Dataset701_IMNetDemoL2"


def _spec(tmp_path: Path, work: str = "work", **fields) -> BenchmarkSpec:
    values = {"raw": str(tmp_path / "raw"), "work": str(tmp_path / work), "datasets": [990], "budget": "smoke",
              "device": "cpu", "eval_noise": [], "folds": [0], "trainers": [BASE, SELF], "labeled_cases": [1],
              "full_labels": False, **fields}
    return BenchmarkSpec(**values).validate()


def _source(tmp_path: Path) -> tuple:
    """A raw dataset of ``CASES`` (empty files with nnU-Net's names) and its preprocessed folder as nnU-Net plans it."""
    raw, preprocessed = tmp_path / "raw" / SOURCE, tmp_path / "preprocessed" / SOURCE
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / folder).mkdir(parents=True)
    for case in CASES:
        (raw / "imagesTr" / f"{case}_0000.nii.gz").touch()
        (raw / "labelsTr" / f"{case}.nii.gz").touch()
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0, "a": 1}}))
    for folder in ("nnUNetPlans_3d_fullres", "gt_segmentations"):
        (preprocessed / folder).mkdir(parents=True)
    plans = {"dataset_name": SOURCE, "plans_name": "nnUNetPlans",
             "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}}}
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(plans))
    for name in ("dataset.json", "dataset_fingerprint.json"):
        (preprocessed / name).write_text(json.dumps({"file": name}))
    return raw, preprocessed


# ---------------------------------------------------------------------------------------------- the draw
def test_labelled_cases_are_seeded_nested_and_independent_of_the_order_given() -> None:
    assert draw_labelled(CASES, 1, seed=0, fold=0) == ["c4"]
    assert draw_labelled(CASES, 4, seed=0, fold=0) == ["c2", "c4", "c6", "c7"]
    assert draw_labelled(list(reversed(CASES)), 4, seed=0, fold=0) == ["c2", "c4", "c6", "c7"]
    assert draw_labelled(CASES, 2, seed=0, fold=1) == ["c1", "c9"]  # each fold its own draw
    assert draw_labelled(CASES, 2, seed=1, fold=0) == ["c4", "c8"]  # and each seed
    for n in range(1, 10):
        assert set(draw_labelled(CASES, n, 0, 0)) < set(draw_labelled(CASES, n + 1, 0, 0))


def test_the_source_split_is_nnunets_and_is_written_only_when_asked(tmp_path: Path) -> None:
    raw, preprocessed = _source(tmp_path)
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    expected = generate_crossval_split(CASES, seed=12345, n_splits=5)
    splits = source_splits(raw, preprocessed, write=False)
    assert [(s["train"], s["val"]) for s in splits] == [(list(e["train"]), list(e["val"])) for e in expected]
    assert not (preprocessed / "splits_final.json").exists()
    source_splits(raw, preprocessed, write=True)
    assert json.loads((preprocessed / "splits_final.json").read_text()) == splits
    custom = [{"train": CASES[2:], "val": CASES[:2]}] * 5  # a split the user gave nnU-Net is the one used
    (preprocessed / "splits_final.json").write_text(json.dumps(custom))
    assert source_splits(raw, preprocessed, write=True) == custom


def test_a_budget_split_keeps_the_folds_validation_and_lists_the_other_training_cases_as_unlabelled() -> None:
    source = [{"train": [c for c in CASES if c not in CASES[2 * f:2 * f + 2]], "val": CASES[2 * f:2 * f + 2]}
              for f in range(5)]
    budget = budget_splits(source, 2, seed=0)
    assert len(budget) == 5
    for fold, entry in enumerate(budget):
        assert set(entry) == {"train", "val", "unlabelled", "cv_fold", "labeled_cases", "label_seed"}
        assert entry["train"] == draw_labelled(source[fold]["train"], 2, 0, fold) and len(entry["train"]) == 2
        assert entry["val"] == source[fold]["val"]
        assert sorted(entry["train"] + entry["unlabelled"]) == sorted(source[fold]["train"])
        assert (entry["cv_fold"], entry["labeled_cases"], entry["label_seed"]) == (fold, 2, 0)
    check_budgets(source, [1, 7], "D")
    with pytest.raises(ValueError, match=r"Label budget\(s\) \[8\] of D are not below every fold's number of "
                                         r"training cases \(the smallest fold has 8\); use budgets from 1 to 7"):
        check_budgets(source, [1, 8], "D")


# ---------------------------------------------------------------------------------------------- derived datasets
def test_a_budget_dataset_links_its_sources_files_and_has_its_own_plans_name_and_split(tmp_path: Path) -> None:
    raw, preprocessed = _source(tmp_path)
    target_raw, target = tmp_path / "raw" / L1, tmp_path / "preprocessed" / L1
    splits = budget_splits(source_splits(raw, preprocessed, write=False), 1, seed=0)
    for _ in range(2):  # running it again changes nothing
        link_raw_dataset(raw, target_raw)
        link_preprocessed(preprocessed, target, "nnUNetPlans", "3d_fullres", splits)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        assert (target_raw / folder).is_symlink() and (target_raw / folder).resolve() == raw / folder
    assert not (target_raw / "labelsTs").exists()  # the source has none
    for folder in ("nnUNetPlans_3d_fullres", "gt_segmentations"):  # the same preprocessed data, not a copy
        assert (target / folder).is_symlink() and (target / folder).resolve() == preprocessed / folder
    plans = json.loads((target / "nnUNetPlans.json").read_text())
    assert plans == {**json.loads((preprocessed / "nnUNetPlans.json").read_text()), "dataset_name": L1}
    assert json.loads((target / "dataset_fingerprint.json").read_text()) == {"file": "dataset_fingerprint.json"}
    assert json.loads((target / "splits_final.json").read_text()) == splits


def test_a_students_dataset_has_true_labels_for_labelled_and_validation_cases_and_pseudo_labels_else(
        tmp_path: Path) -> None:
    raw, preprocessed = _source(tmp_path)
    budget_raw, budget = tmp_path / "raw" / L2, tmp_path / "preprocessed" / L2
    link_raw_dataset(raw, budget_raw)
    link_preprocessed(preprocessed, budget, "nnUNetPlans", "3d_fullres",
                      budget_splits(source_splits(raw, preprocessed, write=False), 2, seed=0))
    entry = json.loads((budget / "splits_final.json").read_text())[1]
    pseudo = tmp_path / "pseudo" / "predictions"
    pseudo.mkdir(parents=True)
    student_raw, student = tmp_path / "raw" / "Dataset801_IMNetDemoL2F1Pseudo", \
        tmp_path / "preprocessed" / "Dataset801_IMNetDemoL2F1Pseudo"
    with pytest.raises(FileNotFoundError, match=r"lack 6 case\(s\)"):
        build_student_dataset(budget_raw, budget, pseudo, student_raw, student, "nnUNetPlans", 1)
    for case in entry["unlabelled"]:
        (pseudo / f"{case}.nii.gz").touch()
    build_student_dataset(budget_raw, budget, pseudo, student_raw, student, "nnUNetPlans", 1)
    labels = {path.name: path.resolve() for path in (student_raw / "labelsTr").iterdir()}
    assert labels == {f"{c}.nii.gz": raw / "labelsTr" / f"{c}.nii.gz" for c in entry["train"] + entry["val"]} | \
        {f"{c}.nii.gz": pseudo / f"{c}.nii.gz" for c in entry["unlabelled"]}
    assert len(list((student_raw / "imagesTr").iterdir())) == 10
    assert json.loads((student_raw / "dataset.json").read_text())["numTraining"] == 10
    splits = json.loads((student / "splits_final.json").read_text())
    assert len(splits) == 5 and all(s == splits[1] for s in splits)  # nnU-Net reads entry 1 only
    assert splits[1]["train"] == sorted(entry["train"] + entry["unlabelled"]) and splits[1]["val"] == entry["val"]
    assert json.loads((student / "nnUNetPlans.json").read_text())["dataset_name"] == student.name
    assert (student / "dataset_fingerprint.json").is_file()  # nnUNetv2_train copies it to the model folder


# ---------------------------------------------------------------------------------------------- the spec's jobs
def test_every_arm_trains_at_every_budget_each_fold_with_its_student_without_touching_the_disk(tmp_path) -> None:
    spec = _spec(tmp_path, trainers=[BASE, IMNET, UNLABELLED, SELF], labeled_cases=[1, 2], folds=[0, 1],
                 full_labels=True)
    jobs = spec.jobs(NAMES)
    assert not (tmp_path / "work").exists()
    full = [(j.task.dataset, j.method.trainer, j.fold) for j in jobs if j.label_budget is None]
    assert full == [(SOURCE, BASE, 0), (SOURCE, IMNET, 0), (SOURCE, BASE, 1), (SOURCE, IMNET, 1)]  # supervised only
    budgets = [(j.task.dataset, j.labeled_cases, j.fold, j.method.trainer) for j in jobs[4:]]
    # a budget's fold complete before the next; the student right after its teacher, whose model makes its labels
    assert budgets == [(name, n, fold, arm) for name, n in ((L1, 1), (L2, 2)) for fold in (0, 1)
                       for arm in (BASE, SELF, IMNET, UNLABELLED)]
    students = [job for job in jobs if job.is_student]
    assert [(j.task.dataset, j.model_dataset, j.fold) for j in students] == [
        (L1, "Dataset800_IMNetDemoL1F0Pseudo", 0), (L1, "Dataset801_IMNetDemoL1F1Pseudo", 1),
        (L2, "Dataset802_IMNetDemoL2F0Pseudo", 0), (L2, "Dataset803_IMNetDemoL2F1Pseudo", 1)]
    student = students[0]
    assert student.is_student and student.method.label == SELF and student.trainer_class == "nnUNetTrainer_smoke"
    assert spec.model_dir(student) == tmp_path / "work" / "nnUNet_results" / "Dataset800_IMNetDemoL1F0Pseudo" / \
        "nnUNetTrainer_smoke__nnUNetPlans__3d_fullres"
    assert spec.teacher(student) == jobs[4] and jobs[4].method.trainer == BASE  # the baseline of its budget and fold
    assert spec.reference_pairs() == [(UNLABELLED, SELF)]
    assert len(_spec(tmp_path, trainers=[BASE, IMNET], labeled_cases=[1, 2], folds=[0, 1]).jobs(NAMES)) == 8


@pytest.mark.parametrize("fields, message", [
    ({"labeled_cases": [2, 1]}, r"labeled_cases \[2, 1\] must be distinct whole numbers >= 1 in increasing order"),
    ({"labeled_cases": [0, 1]}, r"must be distinct whole numbers >= 1"),
    ({"labeled_cases": []}, r"\['nnUNetSelfTraining'\] learn from unlabelled cases, which only label budgets have"),
    ({"labeled_cases": [], "trainers": [BASE, UNLABELLED]}, r"\['nnUNetTrainerIMNet_Unlabelled'\] learn from"),
    ({"labeled_cases": [], "trainers": [BASE]}, "full_labels is off but there are no label budgets"),
    ({"folds": []}, r"Label budgets \[1\] train on --folds, and none is given"),
    ({"datasets": [700]}, r"Source dataset id\(s\) \[700\] collide with the ids 700\+ of the label budgets"),
])
def test_a_spec_with_label_budgets_refuses_what_cannot_run(tmp_path, fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(tmp_path, **fields).jobs({700: "Dataset700_X"})


def test_full_label_results_must_exist(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="full_label_results .*missing.csv is not a file"):
        _spec(tmp_path, full_label_results=str(tmp_path / "missing.csv"))


def test_a_budget_as_large_as_a_folds_training_cases_stops_before_anything_runs(synthetic_raw, tmp_path) -> None:
    with pytest.raises(SystemExit, match=r"error: Label budget\(s\) \[8\] of Dataset990_IMNetDemo are not below"):
        cli.main(["benchmark", "--raw", str(synthetic_raw), "--work", str(tmp_path / "work"), "-d", "990",
                  "--folds", "0", "--labeled-cases", "8", "--budget", "smoke", "--device", "cpu", "--dry-run"])


def test_dry_run_lists_the_students_commands_after_its_teachers(synthetic_raw, tmp_path, capsys) -> None:
    work = tmp_path / "work"
    cli.main(["benchmark", "--raw", str(synthetic_raw), "--work", str(work), "-d", "990", "--folds", "0",
              "--labeled-cases", "2", "1", "--trainers", BASE, SELF, "--budget", "smoke", "--device", "cpu",
              "--eval-noise", "--dry-run"])
    out = capsys.readouterr().out
    assert not work.exists()
    assert "# derive Dataset700_IMNetDemoL1: 1 labelled case(s) a fold of Dataset990_IMNetDemo (seed 0)" in out
    commands = [line for line in out.splitlines() if line.startswith("nnUNetv2_")]
    student = [c for c in commands if "Dataset800_IMNetDemoL1F0Pseudo" in c or " 800 " in c]
    teacher = commands.index("nnUNetv2_train 700 3d_fullres 0 -tr nnUNetTrainer_smoke -p nnUNetPlans -device cpu")
    assert student[0] == (f"nnUNetv2_predict -i {work}/pseudo_labels/Dataset800_IMNetDemoL1F0Pseudo/inputs -o "
                          f"{work}/pseudo_labels/Dataset800_IMNetDemoL1F0Pseudo/predictions -d 700 -c 3d_fullres -tr "
                          f"nnUNetTrainer_smoke -p nnUNetPlans -f 0 -device cpu -npp 1 -nps 1")  # with TTA
    assert student[1:3] == ["nnUNetv2_preprocess -d 800 -c 3d_fullres -plans_name nnUNetPlans -np 2",
                            "nnUNetv2_train 800 3d_fullres 0 -tr nnUNetTrainer_smoke -p nnUNetPlans -device cpu"]
    assert commands.index(student[0]) > teacher
    assert "# build Dataset800_IMNetDemoL1F0Pseudo: the 1 labelled and the validation cases" in out
    trainings = [c.split(" -p ")[0] for c in commands if c.startswith("nnUNetv2_train")]
    assert trainings == [f"nnUNetv2_train {d} 3d_fullres 0 -tr nnUNetTrainer_smoke" for d in (990, 700, 800, 701, 801)]


# ---------------------------------------------------------------------------------------------- SLURM
def test_slurm_submits_each_student_after_its_teachers_array_task(synthetic_raw, tmp_path, capsys) -> None:
    work, scripts, bin_folder = tmp_path / "work", tmp_path / "slurm", tmp_path / "bin"
    cli.main(["benchmark", "--raw", str(synthetic_raw), "--work", str(work), "-d", "990", "--folds", "0", "1",
              "--labeled-cases", "1", "2", "--trainers", BASE, SELF, "--no-full-labels", "--budget", "smoke",
              "--device", "cpu", "--eval-noise", "--slurm", str(scripts)])
    # per budget and fold the teacher, then its student: L1 fold 0 (0, 1), L1 fold 1 (2, 3), L2 fold 0 (4, 5), ...
    assert "#SBATCH --array=0,2,4,6\n" in (scripts / "train.sbatch").read_text()
    submit = (scripts / "submit.sh").read_text()
    for student, teacher in ((1, 0), (3, 2), (5, 4), (7, 6)):
        assert (f'students="$students:$(sbatch --parsable --array={student} --dependency=afterok:${{train}}_{teacher} '
                f'--kill-on-invalid-dep=yes train.sbatch)"') in submit
    assert "report=$(sbatch --parsable --dependency=afterany:$train$students report.sbatch)" in submit
    bin_folder.mkdir()  # a stand-in sbatch that records its arguments and answers job ids 100, 101, ...
    (bin_folder / "sbatch").write_text('#!/bin/bash\necho "$*" >> "$SBATCH_CALLS"\n'
                                       'n=$(wc -l < "$SBATCH_CALLS")\necho $((99 + n))\n')
    (bin_folder / "sbatch").chmod(0o755)
    calls = tmp_path / "calls"
    subprocess.run(["bash", str(scripts / "submit.sh")], check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{bin_folder}:{os.environ['PATH']}", "SBATCH_CALLS": str(calls)})
    lines = calls.read_text().splitlines()
    assert lines[1] == "--parsable --dependency=afterok:100 train.sbatch"
    assert lines[2] == "--parsable --array=1 --dependency=afterok:101_0 --kill-on-invalid-dep=yes train.sbatch"
    assert lines[-1] == "--parsable --dependency=afterany:101:102:103:104:105 report.sbatch"
    with pytest.raises(SystemExit, match="error: The teacher of Dataset700_IMNetDemoL1/3d_fullres nnUNetSelfTraining "
                                         "fold 0, .* has not finished training"):
        cli.main(["benchmark-job", "--spec", str(work / "spec.json"), "--index", "1"])


@pytest.mark.parametrize("indices, expected", [([0, 1, 2, 4, 5, 7], "0-2,4-5,7"), ([3], "3"), ([0, 2, 4], "0,2,4"),
                                               ([5, 4, 3], "3-5")])
def test_array_indices_are_written_as_ranges(indices, expected) -> None:
    assert index_ranges(indices) == expected


# ---------------------------------------------------------------------------------------------- self-training stages
def test_a_student_without_its_teachers_model_or_pseudo_labels_says_what_to_do(tmp_path) -> None:
    spec = _spec(tmp_path)
    teacher, student = spec.jobs(NAMES)
    runner = BenchmarkRunner(spec, out=io.StringIO())
    runner.raw_folders = {name: tmp_path / "raw" / name for name in NAMES.values()}  # what prepare_raw links
    with pytest.raises(FileNotFoundError, match=r"has not finished training .*Train it first"):
        runner.predict_pseudo_labels(student)
    finish_run(spec, teacher, dice=[0.5], curve=[0.5])
    fold = spec.fold_dir(teacher)
    (fold / TRAINING_CURVES).write_text("{}")
    (fold / "checkpoint_final.pth").unlink()  # as restored from an archive
    retrain = f"nnunetv2-imnet benchmark-job --spec {spec.work_path / 'spec.json'} --index 0 --retrain"
    with pytest.raises(FileNotFoundError, match=r"was restored from an archive, which keeps no model\. Retrain the "
                                                rf"teacher .*: {re.escape(retrain)}$"):
        runner.predict_pseudo_labels(student)


def test_retrain_sets_a_teachers_run_aside_and_names_the_student_it_taught(tmp_path, monkeypatch, capsys) -> None:
    """`benchmark-job --retrain`: the run leaves the work folder and the archive before the job runs, and a student
    whose pseudo-labels (here archived) came from the run set aside is named, as the baseline would no longer be its
    teacher."""
    archive = tmp_path / "archive"
    spec = _spec(tmp_path, archive=str(archive))
    teacher, student = spec.jobs(NAMES)
    finish_run(spec, teacher, dice=[0.5], curve=[0.5])
    archive_job(spec, teacher, archive)
    pseudo_labels = archive / spec.pseudo_label_dir(student).relative_to(spec.work_path)  # only in the archive
    pseudo_labels.mkdir(parents=True)
    (pseudo_labels / PREDICTED_MARKER).write_text("{}")
    spec.save()
    ran = []
    monkeypatch.setattr(BenchmarkSpec, "dataset_names", lambda self: NAMES)  # no raw data: nothing runs
    monkeypatch.setattr(BenchmarkRunner, "prepare_raw", lambda self: NAMES)
    monkeypatch.setattr(BenchmarkRunner, "describe", lambda self, job: job.label)
    monkeypatch.setattr(BenchmarkRunner, "run_job", lambda self, job, progress=None: ran.append(job))
    cli.main(["benchmark-job", "--spec", str(spec.work_path / "spec.json"), "--index", "0", "--retrain"])
    out = capsys.readouterr().out
    assert ran == [teacher]
    archived = archive / spec.fold_dir(teacher).relative_to(spec.work_path)
    assert not spec.fold_dir(teacher).exists() and not archived.exists()
    assert f"# set aside: removed {spec.fold_dir(teacher)}\n" in out and f"removed {archived}\n" in out
    assert (f"{student.label} learns from the pseudo-labels of the run set aside ({pseudo_labels}); to pair it with "
            f"the new run, delete them and retrain it (--index 1 --retrain)") in out


def test_pseudo_labels_are_archived_and_continue_a_student_on_a_fresh_machine(tmp_path) -> None:
    spec, archive = _spec(tmp_path), tmp_path / "archive"
    student = spec.jobs(NAMES)[-1]
    folder = spec.pseudo_label_dir(student)
    (folder / "predictions").mkdir(parents=True)
    (folder / "predictions" / "c1.nii.gz").write_text("label")
    archive_pseudo_labels(spec, student, archive)
    assert not (archive / "pseudo_labels").exists()  # unfinished predictions are not archived
    (folder / PREDICTED_MARKER).write_text("{}")
    stage = {f"predict pseudo-labels {student.label}": 424.3}  # the teacher's time, counted in the arm's cost
    (spec.work_path / "timings.json").write_text(json.dumps({**stage, "train other": 1.0}))
    archive_pseudo_labels(spec, student, archive)
    assert json.loads((archive / "timings.json").read_text()) == stage
    fresh = _spec(tmp_path, work="fresh")
    assert restore_pseudo_labels(fresh, student, archive)
    restored = fresh.pseudo_label_dir(student)
    assert (restored / "predictions" / "c1.nii.gz").read_text() == "label"
    assert json.loads((fresh.work_path / "timings.json").read_text()) == stage
    assert not restore_pseudo_labels(fresh, student, archive)
    assert not BenchmarkRunner(fresh, out=io.StringIO()).predict_pseudo_labels(student)  # no teacher needed


# ---------------------------------------------------------------------------------------------- the report
def _validation(rows: list) -> pd.DataFrame:
    """results.csv's validation rows from ``(dataset, method, fold, [Dice per case])``: NSD = Dice, both classes
    alike."""
    return pd.DataFrame([{"dataset": dataset, "configuration": "3d_fullres", "method": method, "fold": fold,
                          "case": f"{fold}_{i}", "class": cls, "evaluation": "validation", "dice": value,
                          "nsd": value}
                         for dataset, method, fold, values in rows for i, value in enumerate(values)
                         for cls in ("a", "b")])


def test_the_learning_curve_is_the_mean_of_the_fold_means_with_a_t_interval_and_full_label_points_on_its_folds(
        tmp_path) -> None:
    budgets = [LabelBudget(SOURCE, 1, L1), LabelBudget(SOURCE, 2, L2)]
    validation = _validation([(L1, "A", 0, [0.4, 0.6]), (L1, "A", 1, [0.6]), (L1, "A", 2, [0.65, 0.75]),
                              (L2, "A", 0, [0.8]), (SOURCE, "A", 0, [0.9]), (SOURCE, "A", 1, [0.95])])
    earlier = _validation([(SOURCE, "A", 0, [0.1]), (SOURCE, "B", 0, [0.85]), (SOURCE, "B", 1, [0.85]),
                           (SOURCE, "B", 3, [0.0])])  # fold 3: no budget has it, so it is left out
    cases = {SOURCE: {0: 8, 1: 7, 2: 8, 3: 8}}
    curve = learning_curve(validation, budgets, ["dice", "nsd"], cases, earlier, "from earlier.csv")
    dice = curve[curve["metric"] == "dice"].set_index(["method", "labeled_cases", "origin"])
    one = dice.loc[("A", 1, "label budget")]  # fold means 0.5, 0.6, 0.7: sd 0.1, t(0.975, 2) = 4.3027
    assert one["folds"] == [0, 1, 2] and one["mean"] == pytest.approx(0.6)
    assert (one["ci_low"], one["ci_high"]) == pytest.approx((0.6 - 0.2484138, 0.6 + 0.2484138))
    two = dice.loc[("A", 2, "label budget")]
    assert two["mean"] == pytest.approx(0.8) and math.isnan(two["ci_low"])  # one fold: no interval
    assert dice.loc[("A", 7.5, THIS_RUN), "mean"] == pytest.approx(0.925)  # x: folds 0 and 1 have 8 and 7 cases
    earlier_point = dice.loc[("B", 7.5, "from earlier.csv")]
    assert earlier_point["mean"] == pytest.approx(0.85) and earlier_point["folds"] == [0, 1]
    assert len(dice) == 4  # A's earlier full-label result gives way to this run's
    assert list(dict.fromkeys(curve["method"])) == ["A", "B"]
    path = learning_curve_plot(curve, tmp_path / "curve.png")
    assert path.stat().st_size > 5_000


def test_the_learning_curves_paired_row_shows_each_budgets_fold_level_difference_to_the_baseline(
        tmp_path, monkeypatch) -> None:
    budgets = [LabelBudget(SOURCE, 1, L1), LabelBudget(SOURCE, 2, L2), LabelBudget("Dataset991_Other", 1, "L1other")]
    validation = _validation([(L1, BASE, 0, [0.5]), (L1, BASE, 1, [0.6]), (L1, IMNET, 0, [0.6]),
                              (L1, IMNET, 1, [0.8]), (L2, BASE, 0, [0.7]), (L2, IMNET, 0, [0.75]),
                              ("L1other", BASE, 0, [0.1]), ("L1other", IMNET, 0, [0.9])])  # another source
    differences = compare_arms(validation, BASE, ["dice", "nsd"], [(BASE, IMNET)])  # a pair against another arm
    assert set(differences["reference"]) == {BASE, IMNET} and "L1other" in set(differences["dataset"])
    paired = report_plots.budget_differences(differences, budgets, SOURCE, "3d_fullres", BASE)
    assert set(paired["reference"]) == {BASE} and set(paired["dataset"]) == {L1, L2}
    dice = paired[paired["metric"] == "dice"].set_index("labeled_cases")
    assert dice.loc[1, "fold_difference"] == pytest.approx(0.15) and dice.loc[2, "fold_difference"] == \
        pytest.approx(0.05)
    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig) or path)
    curve = learning_curve(validation[validation["dataset"] != "L1other"], budgets[:2], ["dice", "nsd"],
                           {SOURCE: {0: 8, 1: 8}})
    learning_curve_plot(curve, tmp_path / "curve.png", paired, BASE)
    axes = figures[0].axes
    assert len(axes) == 4  # levels above, paired differences below, one column per metric
    (bars,) = axes[2].containers  # the baseline has no difference to itself
    assert bars.get_label() == IMNET
    assert bars.lines[0].get_xdata() == pytest.approx(np.array([1.0, 2.0]) * 10 ** 0.015)  # dodged as above
    assert bars.lines[0].get_ydata() == pytest.approx([0.15, 0.05])
    assert report_plots.budget_differences(differences, budgets, "Dataset992_None", "3d_fullres", BASE).empty


@pytest.mark.parametrize("this_run, origin", [
    ([], "from earlier.csv"),  # both arms from the earlier run
    ([(SOURCE, BASE, 0, [0.7]), (SOURCE, BASE, 1, [0.9])], "from earlier.csv"),  # a pair across the two runs
    ([(SOURCE, BASE, 0, [0.7]), (SOURCE, BASE, 1, [0.9]), (SOURCE, IMNET, 0, [0.75]), (SOURCE, IMNET, 1, [0.85])],
     THIS_RUN),
])
def test_the_paired_row_shows_the_full_label_difference_where_the_full_label_points_come_from(
        tmp_path, monkeypatch, this_run, origin) -> None:
    budgets = [LabelBudget(SOURCE, 1, L1)]
    validation = _validation([(L1, BASE, 0, [0.5]), (L1, BASE, 1, [0.6]), (L1, IMNET, 0, [0.6]),
                              (L1, IMNET, 1, [0.8])] + this_run)
    earlier = _validation([(SOURCE, BASE, 0, [0.7]), (SOURCE, BASE, 1, [0.9]), (SOURCE, BASE, 3, [0.0]),
                           (SOURCE, IMNET, 0, [0.75]), (SOURCE, IMNET, 1, [0.85]), (SOURCE, IMNET, 3, [1.0])])
    cases = {SOURCE: {0: 8, 1: 7, 3: 8}}
    full = full_label_differences(validation, budgets, BASE, ["dice", "nsd"], cases, earlier, "from earlier.csv")
    (row,) = full[full["metric"] == "dice"].itertuples()  # IMNet against the baseline; fold 3 has no budget
    assert (row.method, row.reference, row.origin, list(row.folds)) == (IMNET, BASE, origin, [0, 1])
    assert row.labeled_cases == pytest.approx(7.5) and row.fold_differences == pytest.approx([0.05, -0.05])
    assert row.fold_difference == pytest.approx(0.0)
    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig) or path)
    differences = compare_arms(validation, BASE, ["dice", "nsd"])
    paired = pd.concat([report_plots.budget_differences(differences, budgets, SOURCE, "3d_fullres", BASE), full])
    curve = learning_curve(validation, budgets, ["dice", "nsd"], cases, earlier, "from earlier.csv")
    learning_curve_plot(curve, tmp_path / "curve.png", paired, BASE)
    budget_bars, star = figures[0].axes[2].containers
    assert budget_bars.lines[0].get_xdata() == pytest.approx([1.0 * 10 ** 0.015])
    assert star.get_label() == f"{IMNET}, all labels"
    assert star.lines[0].get_marker() == figures[0].axes[0].containers[-1].lines[0].get_marker()  # its origin's
    assert star.lines[0].get_xdata() == pytest.approx([7.5 * 10 ** 0.015])  # the first row's x and dodge
    assert figures[0].axes[2].get_xlim() == figures[0].axes[0].get_xlim()  # the rows share their x axis
    assert all(label.get_visible() for label in figures[0].axes[0].get_xticklabels())  # and both show its ticks


@pytest.mark.parametrize("index, count, factor", [
    (0, 1, 1.0),  # a single arm stays where it is
    (0, 3, 10 ** -0.03), (1, 3, 1.0), (2, 3, 10 ** 0.03),
    (0, 2, 10 ** -0.015), (1, 2, 10 ** 0.015),
])
def test_arms_are_dodged_symmetrically_on_the_log_axis(index: int, count: int, factor: float) -> None:
    assert dodged(np.array([1.0, 2.0, 160.0]), index, count) == pytest.approx(np.array([1.0, 2.0, 160.0]) * factor)


def test_the_arms_under_noise_are_dodged_around_the_true_snr(tmp_path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig) or path)
    rows = [[SOURCE, "3d_fullres", method, evaluation, 0, case, 0.8]
            for method in (BASE, IMNET) for evaluation in ("clean", "gaussian_snr5", "gaussian_snr10")
            for case in ("c0", "c1")]
    frame = pd.DataFrame(rows, columns=["dataset", "configuration", "method", "evaluation", "fold", "case", "dice"])
    conditions = {"clean": None, "gaussian_snr5": ("gaussian", 5.0), "gaussian_snr10": ("gaussian", 10.0)}
    report_plots._dice_vs_snr(frame, conditions, tmp_path / "snr.png")
    ax = figures[0].axes[0]
    xs = {bars.get_label(): bars.lines[0].get_xdata() for bars in ax.containers}
    assert xs[BASE] == pytest.approx(np.array([5.0, 10.0, 20.0]) * 10 ** -0.015)  # clean drawn at twice the top SNR
    assert xs[IMNET] == pytest.approx(np.array([5.0, 10.0, 20.0]) * 10 ** 0.015)
    assert list(ax.get_xticks()) == pytest.approx([5.0, 10.0, 20.0])  # the ticks stay at the true SNRs


@pytest.mark.parametrize("cwd, expected", [("repo", "results/cpu1k/results.csv"), ("elsewhere", None)])
def test_the_full_label_origin_is_named_relative_to_where_the_report_runs(tmp_path, monkeypatch, cwd: str,
                                                                          expected) -> None:
    csv = tmp_path / "repo" / "results" / "cpu1k" / "results.csv"
    (tmp_path / cwd).mkdir()
    monkeypatch.chdir(tmp_path / cwd)
    assert shown_path(str(csv)) == (str(Path(expected)) if expected else str(csv))  # outside: as given


@pytest.mark.parametrize("value_range, expected", [((0.0, 1.0), (0.0, 1.0)), (None, (-0.5, 1.5))])
def test_the_axis_is_clipped_to_the_values_a_metric_can_take(value_range, expected) -> None:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.set_ylim(-0.5, 1.5)  # what a t-interval over 2 folds can span
    clip_to_range(ax, value_range)
    assert ax.get_ylim() == pytest.approx(expected)
    plt.close(fig)


def test_the_report_of_a_budget_shows_its_labelled_cases_and_what_self_training_costs_with_its_teacher(
        tmp_path) -> None:
    spec = _spec(tmp_path)
    teacher, student = spec.jobs(NAMES)
    for job, dice in ((teacher, [0.5, 0.7]), (student, [0.6, 0.8])):
        finish_run(spec, job, dice=dice, curve=[0.2, 0.4, 0.6], seconds=[2.0, 2.0, 2.0])  # 5 min of training
    splits = spec.nnunet_preprocessed() / L1 / "splits_final.json"
    splits.parent.mkdir(parents=True)
    splits.write_text(json.dumps([{"train": ["c4"], "val": ["c0", "c1"], "unlabelled": CASES[2:4] + CASES[5:]}] * 5))
    timings = {f"predict pseudo-labels {student.label}": 60.0}
    path = write_report(spec, collect(spec, [teacher, student]), tmp_path / "results", "test", timings)
    text, frame = path.read_text(), pd.read_csv(path.parent / "results.csv")
    assert set(frame["labeled_cases"]) == {1} and set(frame["method"]) == {BASE, SELF}
    assert f"### {L1} / 3d_fullres (1 labelled training case(s) a fold)" in text
    assert f"| {L1} | 1 | 0 | c4 | 7 | 2 |" in text and "Seed: 0." in text
    assert "| training (min) | incl. teacher (min) |" in text
    assert f"| {L1}/3d_fullres | `{SELF}` | 1 | 5 | 11 |" in text  # 5 + the teacher's 5 + 1 of pseudo-labelling
    assert f"| {L1}/3d_fullres | `{BASE}` | 1 | 5 |  |" in text
    assert f"| {L1}/3d_fullres | `{SELF}` | `{BASE}` | Dice ↑ | 0 | +0.1000 |" in text
    assert (path.parent / f"learning_curve_{SOURCE}_3d_fullres.png").is_file()
    assert "### Distance from the full-label baseline" in text  # no full-label point here: every share n/a
    assert f"| {SOURCE}/3d_fullres | `{SELF}` | 1 | 0 | Dice | 0.7000 | 0.6000 | n/a | n/a | n/a |" in text


def test_the_label_gap_is_measured_from_the_baselines_full_label_point_on_the_same_folds() -> None:
    curve = pd.DataFrame(
        [[SOURCE, "3d_fullres", BASE, 1, "label budget", [0, 1], "dice", 0.70, 0, 0],
         [SOURCE, "3d_fullres", UNLABELLED, 1, "label budget", [0, 1], "dice", 0.76, 0, 0],
         [SOURCE, "3d_fullres", SELF, 1, "label budget", [0], "dice", 0.80, 0, 0],  # other folds: no share
         [SOURCE, "3d_fullres", IMNET, 1, "label budget", [0, 1], "dice", 0.64, 0, 0],
         [SOURCE, "3d_fullres", BASE, 2, "label budget", [0, 1], "dice", 0.90, 0, 0],  # above full labels: no gap
         [SOURCE, "3d_fullres", BASE, 160, "from cpu1k", [0, 1], "dice", 0.85, 0, 0]],
        columns=["source", "configuration", "method", "labeled_cases", "origin", "folds", "metric", "mean", "ci_low",
                 "ci_high"])
    gap = label_gap(curve, BASE).set_index(["method", "labeled_cases"])
    assert len(gap) == 5  # the budgets' points only
    assert gap.loc[(BASE, 1), "share_closed"] == pytest.approx(0.0)
    assert gap.loc[(UNLABELLED, 1), ["supervised", "full_label", "distance", "share_closed"]].tolist() == \
        pytest.approx([0.70, 0.85, 0.09, 0.4])
    assert gap.loc[(IMNET, 1), "share_closed"] == pytest.approx(-0.4)
    assert math.isnan(gap.loc[(SELF, 1), "share_closed"]) and math.isnan(gap.loc[(SELF, 1), "supervised"])
    assert math.isnan(gap.loc[(BASE, 2), "share_closed"]) and gap.loc[(BASE, 2), "distance"] == pytest.approx(-0.05)
    lines = "\n".join(label_gap_section(label_gap(curve, BASE), BASE))
    assert f"| {SOURCE}/3d_fullres | `{UNLABELLED}` | 1 | 0, 1 | Dice | 0.7600 | 0.7000 | 0.8500 | 0.0900 | 40% |" \
        in lines
    assert f"| {SOURCE}/3d_fullres | `{SELF}` | 1 | 0 | Dice | 0.8000 | n/a | n/a | n/a | n/a |" in lines


def test_the_positive_control_pairs_the_baseline_on_each_budget_with_the_next_smaller_by_fold_and_case() -> None:
    budgets = [LabelBudget(SOURCE, 1, L1), LabelBudget(SOURCE, 2, L2), LabelBudget(SOURCE, 5, "Dataset702_L5")]
    validation = _validation([(L1, BASE, 0, [0.5, 0.6]), (L1, BASE, 1, [0.4, 0.4]), (L1, BASE, 2, [0.3, 0.3]),
                              (L2, BASE, 0, [0.7, 0.6]), (L2, BASE, 1, [0.5, 0.7]),  # fold 2 not finished at 2
                              (L1, IMNET, 0, [0.0, 0.0]), (L2, IMNET, 0, [1.0, 1.0]),  # another arm: not compared
                              (SOURCE, BASE, 0, [0.9, 0.9])])  # the source itself is no budget
    table = compare_budgets(validation, budgets, BASE, ["dice"])
    assert len(table) == 1  # 1 -> 2 only: no run on 5 labelled cases
    row = table.iloc[0]
    assert (row["dataset"], row["method"], row["reference"]) == (SOURCE, f"{BASE} @ 2 labelled",
                                                                  f"{BASE} @ 1 labelled")
    assert row["folds"] == (0, 1) and row["fold_differences"] == pytest.approx((0.1, 0.2))
    assert row["fold_difference"] == pytest.approx(0.15) and row["sign_flip_p"] == pytest.approx(0.5)
    assert row["cases"] == 4 and row["case_difference"] == pytest.approx(0.15)
    assert compare_budgets(validation, budgets, "nnUNetTrainerNoSuchArm", ["dice"]).empty
