"""A label-budget benchmark end to end on the generated dataset (no real data needed): two budgets, the four arms
(nnUNetTrainer, nnUNetTrainerIMNet, nnUNetTrainerIMNet_Unlabelled, nnU-Net self-training), fold 0, the smoke budget
on CPU, the full-label point from an earlier run's results.csv; run once for the module (a few minutes)."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from cli_helpers import benchmark_in_process
from nnunetv2_imnet import cli
from nnunetv2_imnet.benchmark.collect import case_columns

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal argument
ARMS = ["nnUNetTrainer", "nnUNetTrainerIMNet", "nnUNetTrainerIMNet_Unlabelled", "nnUNetSelfTraining"]
BUDGETS = {1: "Dataset700_IMNetDemoL1", 2: "Dataset701_IMNetDemoL2"}
STUDENT = "Dataset800_IMNetDemoL1F0Pseudo"
ARGUMENTS = ["-d", "990", "--folds", "0", "--labeled-cases", "1", "2", "--trainers", *ARMS, "--no-full-labels",
             "--budget", "smoke", "--device", "cpu", "--eval-noise"]


@pytest.fixture(scope="module")
def budget_benchmark(synthetic_raw, tmp_path_factory) -> dict:
    """The benchmark CLI in this process with an archive; the full-label point comes from a hand-written results.csv
    of an earlier run (nnUNetTrainer on all labels, Dice 0.9 and NSD 0.95 on fold 0's validation cases)."""
    root = tmp_path_factory.mktemp("label_budget_benchmark")
    earlier = root / "earlier_results.csv"
    rows = [{"dataset": "Dataset990_IMNetDemo", "configuration": "3d_fullres", "plans": "nnUNetPlans",
             "trainer": "nnUNetTrainer", "method": "nnUNetTrainer", "labeled_cases": None, "fold": 0,
             "evaluation": "validation", "case": case, "class": cls, "label": label, "dice": 0.9, "nsd": 0.95}
            for case in ("demo_000", "demo_007") for label, cls in ((1, "anterior"), (2, "posterior"))]
    pd.DataFrame(rows, columns=case_columns()).to_csv(earlier, index=False)
    work, archive = root / "work", root / "archive"
    arguments = ["benchmark", "--raw", str(synthetic_raw), "--work", str(work), *ARGUMENTS,
                 "--full-label-results", str(earlier), "--archive", str(archive)]
    return {"work": work, "archive": archive, "arguments": arguments, "stdout": benchmark_in_process(arguments),
            "earlier": earlier}


def test_every_row_of_results_csv_says_how_many_labelled_cases_trained_it(budget_benchmark) -> None:
    frame = pd.read_csv(budget_benchmark["work"] / "results" / "results.csv")
    assert set(frame["method"]) == set(ARMS) and set(frame["evaluation"]) == {"validation", "clean"}
    assert {(n, d) for n, d in zip(frame["labeled_cases"], frame["dataset"])} == set(BUDGETS.items())
    assert len(frame) == 2 * 4 * 2 * 2 * 2  # budgets x arms x evaluations x 2 validation cases x classes


def test_each_budget_has_its_leaderboard_and_the_unlabelled_arm_meets_self_training(budget_benchmark) -> None:
    text = (budget_benchmark["work"] / "results" / "results.md").read_text()
    for n, dataset in BUDGETS.items():
        leaderboard = text.split(f"### {dataset} / 3d_fullres ({n} labelled training case(s) a fold)\n")[1]
        leaderboard = leaderboard.split("\n### ")[0]
        assert all(f"| `{arm}` | 2 |" in leaderboard for arm in ARMS)
        fold_level = text.split("### Fold level")[1].split("### Case level")[0]
        for metric in ("Dice ↑", "NSD ↑"):
            assert f"| {dataset}/3d_fullres | `nnUNetTrainerIMNet_Unlabelled` | `nnUNetSelfTraining` | {metric} | 0 |" \
                in fold_level
            assert f"| {dataset}/3d_fullres | `nnUNetSelfTraining` | `nnUNetTrainer` | {metric} | 0 |" in fold_level
    assert "compared against nnU-Net self-training on the same label budget" in text
    splits = json.loads((budget_benchmark["work"] / "nnUNet_preprocessed" / BUDGETS[2] / "splits_final.json")
                        .read_text())
    assert f"| {BUDGETS[2]} | 2 | 0 | {', '.join(splits[0]['train'])} | 6 | 2 |" in text
    assert re.search(rf"\| Dataset990_IMNetDemo/3d_fullres \| `nnUNetTrainer` \| all: 8 \(from "
                     rf"{re.escape(str(budget_benchmark['earlier']))}\) \| 0 \| 0.9000 \| 0.9500 \|", text)
    # the cost with its teacher's, every run on this machine
    assert re.search(r"\| `nnUNetSelfTraining` \| 1 \| A \| \d+ \| \d+ \|", text) and "A = " in text
    control = text.split("### Positive control")[1].split("Case level")[0]
    assert ("| Dataset990_IMNetDemo/3d_fullres | `nnUNetTrainer @ 2 labelled` | `nnUNetTrainer @ 1 labelled` | "
            "Dice ↑ | 0 |") in control
    gap = text.split("### Distance from the full-label baseline")[1].split("###")[0]
    assert re.search(r"\| Dataset990_IMNetDemo/3d_fullres \| `nnUNetTrainerIMNet_Unlabelled` \| 2 \| 0 \| Dice \| "
                     r"[\d.]+ \| [\d.]+ \| 0.9000 \|", gap)  # the earlier run's full-label nnUNetTrainer


def test_the_learning_curve_plot_is_written(budget_benchmark) -> None:
    plot = budget_benchmark["work"] / "results" / "learning_curve_Dataset990_IMNetDemo_3d_fullres.png"
    assert plot.stat().st_size > 5_000
    assert f"![learning_curve_Dataset990_IMNetDemo_3d_fullres]({plot.name})" in \
        (budget_benchmark["work"] / "results" / "results.md").read_text()


def test_the_student_learned_from_its_teachers_pseudo_labels_and_the_unlabelled_arm_from_prepared_images(
        budget_benchmark) -> None:
    work = budget_benchmark["work"]
    student = work / "nnUNet_results" / STUDENT / "nnUNetTrainer_smoke__nnUNetPlans__3d_fullres" / "fold_0"
    assert (student / "checkpoint_final.pth").is_file()
    unlabelled = json.loads((work / "nnUNet_preprocessed" / BUDGETS[1] / "splits_final.json").read_text())[0][
        "unlabelled"]
    predictions = work / "pseudo_labels" / STUDENT / "predictions"
    for case in unlabelled:
        assert (work / "nnUNet_raw" / STUDENT / "labelsTr" / f"{case}.nii.gz").resolve() == \
            predictions / f"{case}.nii.gz"
    manifest = work / "nnUNet_preprocessed" / BUDGETS[1] / "imnet_unlabelled" / "nnUNetPlans_3d_fullres"
    assert len(json.loads((manifest / "unlabelled.json").read_text())["cases"]) == 10
    timings = json.loads((work / "timings.json").read_text())
    assert f"predict pseudo-labels {BUDGETS[1]}/3d_fullres nnUNetSelfTraining fold 0" in timings


def test_the_archive_keeps_the_pseudo_labels_and_each_budgets_split(budget_benchmark) -> None:
    archive = budget_benchmark["archive"]
    assert len(list((archive / "pseudo_labels" / STUDENT / "predictions").glob("*.nii.gz"))) == 7
    assert (archive / "nnUNet_preprocessed" / BUDGETS[2] / "splits_final.json").is_file()
    assert not list(archive.rglob("*.pth"))


def test_a_dry_run_after_the_run_marks_every_command_done(budget_benchmark, capsys) -> None:
    cli.main([*budget_benchmark["arguments"], "--dry-run"])
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if "nnUNetv2_" in line]
    assert commands and all(line.startswith("# [done] ") for line in commands), out
    assert "# [done] nnUNetv2_train 801 3d_fullres 0 -tr nnUNetTrainer_smoke -p nnUNetPlans -device cpu" in out
