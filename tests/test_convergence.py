"""Convergence summary on hand-made pseudo Dice curves whose crossing points are known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nnunetv2_imnet.benchmark.convergence import (NNUNET_ITERATIONS_PER_EPOCH, baseline_final, iterations_per_epoch,
                                                  late_gain, steps_to_reach, steps_to_target, with_steps)

TASK = {"dataset": "Dataset004_Hippocampus", "configuration": "3d_fullres"}


def _training(curves: dict) -> pd.DataFrame:
    """Rows like ``collect``'s training frame from {(method, fold): [pseudo Dice per epoch]}."""
    return pd.DataFrame([{**TASK, "method": method, "fold": fold, "epoch": epoch, "mean_fg_dice": value}
                         for (method, fold), values in curves.items() for epoch, value in enumerate(values)])


@pytest.mark.parametrize("values, target, expected", [
    ([0.1, 0.5, 0.8, 0.9], 0.8, 300),  # reaching the target exactly counts
    ([0.1, 0.5, 0.79, 0.9], 0.8, 400),
    ([0.9, 0.1, 0.1, 0.1], 0.8, 100),  # the first crossing, even if the curve drops again
    ([0.1, math.nan, 0.85, 0.9], 0.8, 300),
    ([0.1, 0.2, 0.3, 0.4], 0.8, None),  # never reached
])
def test_steps_to_reach(values: list, target: float, expected) -> None:
    assert steps_to_reach([100, 200, 300, 400], values, target) == expected


def test_steps_count_the_epochs_trained_before_each_validation() -> None:
    frame = with_steps(_training({("a", 0): [0.1, 0.2, 0.3]}), iterations=50)
    assert list(frame["steps"]) == [50, 100, 150]


def test_budget_iterations_per_epoch() -> None:
    assert iterations_per_epoch("cpu1k") == 50
    assert iterations_per_epoch("full") == NNUNET_ITERATIONS_PER_EPOCH == 250


def test_baseline_final_is_each_folds_last_epoch() -> None:
    training = _training({("base", 0): [0.1, 0.6, 0.8], ("base", 1): [0.2, 0.7, 0.6], ("other", 0): [0.9, 0.9, 0.9]})
    final = baseline_final(training, "base")
    assert final.to_dict() == pytest.approx({("Dataset004_Hippocampus", "3d_fullres", 0): 0.8,
                                             ("Dataset004_Hippocampus", "3d_fullres", 1): 0.6})


def test_steps_to_target_summarises_folds_and_keeps_the_ones_that_never_reach() -> None:
    # every baseline fold ends at 0.8: 90 % = 0.72, 95 % = 0.76 on each fold
    training = _training({
        ("base", 0): [0.2, 0.5, 0.73, 0.8], ("base", 1): [0.3, 0.74, 0.77, 0.8], ("base", 2): [0.1, 0.2, 0.5, 0.8],
        ("fast", 0): [0.75, 0.8, 0.8, 0.8], ("fast", 1): [0.5, 0.77, 0.8, 0.8], ("fast", 2): [0.1, 0.1, 0.1, 0.1],
    })
    summary = steps_to_target(training, "base", iterations=10).set_index(["method", "fraction"])
    base90, base95, fast90, fast95 = (summary.loc[key] for key in
                                      [("base", 0.9), ("base", 0.95), ("fast", 0.9), ("fast", 0.95)])
    assert base90["targets"] == pytest.approx((0.72,) * 3) and base95["targets"] == pytest.approx((0.76,) * 3)
    assert base90["folds"] == (0, 1, 2) and base90["steps"] == (30, 20, 40)
    assert (base90["reached"], base90["median"], base90["fastest"], base90["slowest"]) == (3, 30, 20, 40)
    assert base95["steps"] == (40, 30, 40) and base95["median"] == 40
    assert fast90["steps"] == (10, 20, None)
    assert (fast90["reached"], fast90["median"], fast90["fastest"]) == (2, 20, 10)
    assert fast90["slowest"] == np.inf
    assert fast95["steps"] == (20, 20, None) and fast95["median"] == 20


def test_each_fold_is_timed_against_the_baselines_level_on_that_fold() -> None:
    # fold 1's labelled case leaves less room: the baseline ends at 0.4 there, at 0.8 on fold 0. A pooled target
    # (90 % of 0.6 = 0.54) would call the arm's fold 1 never converged and its fold 0 converged at once.
    training = _training({("base", 0): [0.5, 0.7, 0.8], ("base", 1): [0.2, 0.3, 0.4],
                          ("arm", 0): [0.6, 0.75, 0.8], ("arm", 1): [0.37, 0.4, 0.45]})
    row = steps_to_target(training, "base", iterations=50, fractions=[0.9]).set_index("method").loc["arm"]
    assert row["targets"] == pytest.approx((0.72, 0.36))
    assert row["steps"] == (100, 50) and row["median"] == 75


def test_folds_without_a_baseline_run_have_no_target() -> None:
    training = _training({("base", 0): [0.5, 1.0], ("arm", 0): [0.95, 1.0], ("arm", 1): [0.1, 0.2]})
    row = steps_to_target(training, "base", iterations=1, fractions=[0.9]).set_index("method").loc["arm"]
    assert row["folds"] == (0,) and row["steps"] == (1,) and row["reached"] == 1


def test_median_is_not_reached_when_half_the_folds_miss_the_target() -> None:
    training = _training({("base", 0): [0.5, 1.0], ("base", 1): [0.5, 1.0],
                          ("slow", 0): [0.1, 0.95], ("slow", 1): [0.1, 0.2]})
    row = steps_to_target(training, "base", iterations=1, fractions=[0.9]).set_index("method").loc["slow"]
    assert row["steps"] == (2, None) and row["reached"] == 1
    assert row["median"] == np.inf and row["fastest"] == 2


@pytest.mark.parametrize("curves", [{("other", 0): [0.5, 0.9]}, {("base", 1): [0.5, 0.9], ("arm", 0): [0.5, 0.9]}])
def test_no_finished_baseline_on_the_folds_gives_no_target(curves: dict) -> None:
    targets = steps_to_target(_training(curves), "base", iterations=1)
    assert set(targets["method"]) == ({"base"} if ("base", 1) in curves else set())


@pytest.mark.parametrize("values, quarter, expected", [
    ([0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.7, 0.9], 2, 0.3),  # (0.7 + 0.9) / 2 - (0.5 + 0.5) / 2
    ([0.8] * 20, 5, 0.0),  # a plateau
    ([0.9, 0.1, 0.5, 0.6, 0.8, 0.7], 1, -0.1),  # quarters of 6 epochs are 1 epoch; a late drop is negative
    ([0.0, 0.2, 0.4, 0.6, math.nan, 0.8, 0.9, 0.9], 2, 0.1),  # a missing epoch is left out of its quarter
    ([0.1, 0.9, 0.9], 0, math.nan),  # fewer than 4 epochs: no quarter to compare
])
def test_late_gain_compares_the_last_two_quarters(values: list, quarter: int, expected: float) -> None:
    [row] = late_gain(_training({("a", 0): values})).itertuples()
    assert row.quarter_epochs == quarter
    assert row.late_gain == pytest.approx(expected, nan_ok=True)


def test_late_gain_has_one_row_per_run_in_epoch_order() -> None:
    training = _training({("a", 0): [0.1, 0.2, 0.3, 0.4], ("a", 1): [0.4, 0.4, 0.4, 0.4], ("b", 0): [0.5] * 4})
    gains = late_gain(training.sample(frac=1.0, random_state=0)).set_index(["method", "fold"])["late_gain"]
    assert gains.to_dict() == pytest.approx({("a", 0): 0.1, ("a", 1): 0.0, ("b", 0): 0.0})
