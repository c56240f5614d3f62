"""Every candidate against the baseline and every arm against its control: the rows made, the folds paired and
Holm's family, by construction."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnunetv2_imnet.benchmark.comparisons import compare_arms, noise_drops
from nnunetv2_imnet.benchmark.metrics import METRICS
from nnunetv2_imnet.benchmark.stats import holm

SHIFTS = {"base": 0.0, "better": 0.05, "same": 0.0}


def _cases(folds_per_method: dict, dataset: str = "Dataset004_Hippocampus") -> pd.DataFrame:
    """Two classes, 4 cases per fold; every method is the baseline plus its shift."""
    rng = np.random.default_rng(0)
    values = {(fold, case): rng.uniform(0.6, 0.8) for fold in range(5) for case in range(4)}
    return pd.DataFrame([{"dataset": dataset, "configuration": "3d_fullres", "method": method, "fold": fold,
                          "case": f"c{fold}_{case}", "class": cls, "dice": values[fold, case] + SHIFTS[method],
                          "nsd": values[fold, case]}
                         for method, folds in folds_per_method.items() for fold in folds for case in range(4)
                         for cls in ("Anterior", "Posterior")])


def test_one_row_per_candidate_and_metric_with_holm_over_the_table() -> None:
    table = compare_arms(_cases({"base": range(5), "better": range(5), "same": range(5)}), "base", list(METRICS))
    assert list(zip(table["method"], table["metric"])) == [("better", "dice"), ("same", "dice"), ("better", "nsd"),
                                                           ("same", "nsd")]
    better_dice = table.iloc[0]
    assert better_dice["fold_difference"] == pytest.approx(0.05)
    assert better_dice["case_difference"] == pytest.approx(0.05)
    assert better_dice["sign_flip_p"] == pytest.approx(0.0625) and better_dice["cases"] == 20
    np.testing.assert_allclose(better_dice["fold_differences"], [0.05] * 5)  # each fold's own, for the plot
    # family of 4: the one p of 0.0625 is multiplied by 4, the three p = 1 stay 1
    np.testing.assert_allclose(table["sign_flip_p_holm"], [0.25, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(table["wilcoxon_p_holm"], holm(table["wilcoxon_p"]))


def test_only_folds_both_arms_finished_are_paired() -> None:
    table = compare_arms(_cases({"base": [0, 1, 2], "better": [1, 2, 3, 4]}), "base", ["dice"])
    [row] = table.itertuples()
    assert row.folds == (1, 2) and row.cases == 8 and row.smallest_p == 0.5


def test_a_task_without_its_baseline_is_not_compared() -> None:
    frame = pd.concat([_cases({"base": [0], "better": [0]}),
                       _cases({"better": [0]}, dataset="Dataset900_HippocampusRician5")])
    table = compare_arms(frame, "base", ["dice"])
    assert list(table["dataset"]) == ["Dataset004_Hippocampus"]
    assert compare_arms(frame.iloc[:0], "base", ["dice"]).empty


def test_an_arm_is_also_compared_against_its_control_in_the_same_holm_family() -> None:
    frame = _cases({"base": range(5), "better": range(5), "same": range(5)})
    table = compare_arms(frame, "base", ["dice"], pairs=[("better", "same"), ("absent", "same")])
    assert list(zip(table["method"], table["reference"])) == [("better", "base"), ("same", "base"), ("better", "same")]
    against_control = table.iloc[2]
    assert against_control["fold_difference"] == pytest.approx(0.05)
    assert against_control["reference_mean"] == pytest.approx(table.iloc[1]["method_mean"])
    # family of 3: the two p of 0.0625 become 3 x 0.0625 and then (step-down, monotone) the same
    np.testing.assert_allclose(table["sign_flip_p_holm"], [0.1875, 1.0, 0.1875])


def test_a_control_without_a_finished_fold_is_not_compared() -> None:
    table = compare_arms(_cases({"base": range(2), "better": range(2)}), "base", ["dice"],
                         pairs=[("better", "same")])
    assert list(table["reference"]) == ["base"]


def test_noise_drops_are_each_condition_minus_the_clean_prediction_of_the_same_case() -> None:
    dice = {"validation": 0.95, "clean": 0.9, "gaussian_snr5": 0.7, "rician_snr5": 0.6}
    frame = pd.DataFrame([{"dataset": "D", "configuration": "3d_fullres", "method": method, "fold": 0,
                           "case": case, "class": "Anterior", "evaluation": evaluation,
                           "dice": value - 0.1 * (case == "b") + 0.05 * (method == "m" and evaluation != "clean")}
                          for method in ("base", "m") for case in ("a", "b") for evaluation, value in dice.items()])
    drops = noise_drops(frame).set_index(["method", "case"])
    assert list(drops.columns[-2:]) == ["gaussian_snr5", "rician_snr5"]  # validation (TTA) and clean are not drops
    assert drops.loc[("base", "a"), "gaussian_snr5"] == pytest.approx(-0.2)
    assert drops.loc[("base", "b"), "rician_snr5"] == pytest.approx(-0.3)  # the case's own clean Dice
    assert drops.loc[("m", "b"), "rician_snr5"] == pytest.approx(-0.25)
    assert noise_drops(frame[frame["evaluation"] != "clean"]).empty  # nothing to subtract from
