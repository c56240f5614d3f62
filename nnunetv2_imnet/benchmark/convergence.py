"""Training efficiency: validation pseudo Dice against training steps, and the steps each arm needs to reach a
fraction of the baseline's final pseudo Dice on the same fold (IM-Net's first claim is faster training).

The curve is nnU-Net's per-epoch ``mean_fg_dice`` (pseudo Dice on the epoch's validation batches, kept in the
checkpoint's logging), not the EMA: with 20 epochs nnU-Net's EMA (weight 0.9) lags the curve by about 10 epochs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from nnunetv2_imnet.training.budgets import BUDGETS, NNUNET_ITERATIONS_PER_EPOCH
#: fractions of the baseline's final pseudo Dice the report asks every arm to reach
FRACTIONS = (0.9, 0.95)
CURVE = "mean_fg_dice"
TASK = ["dataset", "configuration"]


def iterations_per_epoch(budget: str) -> int:
    """Training steps (batches) per epoch of a budget."""
    return BUDGETS[budget].iterations_per_epoch or NNUNET_ITERATIONS_PER_EPOCH


def with_steps(training: pd.DataFrame, iterations: int) -> pd.DataFrame:
    """``training`` with a ``steps`` column: epoch e's pseudo Dice is measured after (e + 1) x iterations steps."""
    return training.assign(steps=(training["epoch"] + 1) * iterations)


def steps_to_reach(steps: Sequence[int], values: Sequence[float], target: float) -> Optional[int]:
    """The first step at which ``values`` reaches ``target`` (>=); None if it never does (NaN never counts)."""
    reached = np.flatnonzero(np.asarray(values, dtype=float) >= target)
    return int(np.asarray(steps)[reached[0]]) if reached.size else None


def final_values(training: pd.DataFrame) -> pd.DataFrame:
    """The last logged epoch of every run (one row per task, method and fold)."""
    last = training.groupby(TASK + ["method", "fold"])["epoch"].transform("max")
    return training[training["epoch"] == last]


def baseline_final(training: pd.DataFrame, baseline: str) -> pd.Series:
    """Per task and fold: the baseline's pseudo Dice at its last epoch (the level a fold's targets are fractions of)."""
    final = final_values(training)
    return final[final["method"] == baseline].set_index(TASK + ["fold"])[CURVE]


def late_gain(training: pd.DataFrame) -> pd.DataFrame:
    """Per run: the pseudo Dice's mean over the last quarter of its epochs minus its mean over the quarter before.

    A measured distance from the plateau: near zero, more steps of the same schedule would not pay; clearly
    positive, the budget stops the run while it still learns. Quarters, not single epochs, because each epoch's
    pseudo Dice comes from a few validation batches and is noisy. Runs of fewer than 4 epochs give NaN.
    """
    rows = []
    for (dataset, configuration, method, fold), run in training.sort_values("epoch").groupby(
            TASK + ["method", "fold"], sort=False):
        values = run[CURVE].to_numpy(dtype=float)
        quarter = len(values) // 4
        gain = (np.nanmean(values[-quarter:]) - np.nanmean(values[-2 * quarter:-quarter])) if quarter else np.nan
        rows.append([dataset, configuration, method, fold, quarter, float(gain)])
    return pd.DataFrame(rows, columns=TASK + ["method", "fold", "quarter_epochs", "late_gain"])


def steps_to_target(training: pd.DataFrame, baseline: str, iterations: int,
                    fractions: Sequence[float] = FRACTIONS) -> pd.DataFrame:
    """Per task, method and fraction: steps each fold needed to reach ``fraction`` x the baseline's final pseudo
    Dice on the same fold, and their median and range over folds.

    Targets are per fold, paired like the fold-level comparisons: with few labels the folds' levels differ by up to
    0.1 Dice (which case is labelled decides the room), and one pooled target would time the folds' difficulty
    instead of the arms' speed. A fold that never reaches its target counts as infinitely slow, so it is kept: the
    median is infinite (not reached) when half or more of the folds miss it, and so is the upper end of the range
    when any fold does. Folds without a finished baseline run have no target and are left out (no rows for a method
    without any).
    """
    columns = TASK + ["method", "fraction", "folds", "targets", "steps", "reached", "median", "fastest", "slowest"]
    references = baseline_final(training, baseline)
    curves = with_steps(training, iterations).sort_values("epoch")
    rows = []
    for (dataset, configuration, method), group in curves.groupby(TASK + ["method"], sort=False):
        paired = {int(fold): curve for fold, curve in group.groupby("fold")
                  if (dataset, configuration, fold) in references.index}
        if not paired:
            continue
        for fraction in fractions:
            targets = {fold: fraction * float(references.loc[(dataset, configuration, fold)]) for fold in paired}
            steps = [steps_to_reach(curve["steps"], curve[CURVE], targets[fold]) for fold, curve in paired.items()]
            needed = np.array([np.inf if s is None else s for s in steps], dtype=float)
            rows.append([dataset, configuration, method, fraction, tuple(paired), tuple(targets.values()),
                         tuple(steps), int(np.isfinite(needed).sum()), float(np.median(needed)),
                         float(needed.min()), float(needed.max())])
    return pd.DataFrame(rows, columns=columns)
