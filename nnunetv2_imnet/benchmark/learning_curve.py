"""The learning curve of a label-budget benchmark: each arm's validation score against the number of labelled
training cases a fold, mean over folds with a fold-level 95 % t-interval, and a full-label point where there is one.

The unit is the fold, as in the report's fold-level comparisons: each fold trains its own model, so the spread of the
fold means includes training variance. A fold's score is the mean over its validation cases of the mean over classes.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats

from nnunetv2_imnet.benchmark.comparisons import per_case_means
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, LabelBudget

COLUMNS = ["source", "configuration", "method", "labeled_cases", "origin", "folds", "metric", "mean", "ci_low",
           "ci_high"]
GAP_COLUMNS = ["source", "configuration", "metric", "method", "labeled_cases", "folds", "mean", "supervised",
               "full_label", "distance", "share_closed"]
#: the origin of the points drawn from the budgets, and of full-label points from this run
BUDGET, THIS_RUN = "label budget", "this run"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """Student's t-interval of the mean of ``values``; NaN for fewer than 2 values (no spread to estimate)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def fold_means(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Per (method, fold): the mean over the fold's cases of the mean over classes."""
    return per_case_means(frame, metric).groupby(level=["method", "fold"]).mean()


def training_cases(spec: BenchmarkSpec, budgets: Sequence[LabelBudget]) -> Dict[str, Dict[int, int]]:
    """Source dataset -> fold -> its number of training cases (labelled + unlabelled in a budget's split): the x of
    the full-label point. Budgets whose split is not there yet are skipped."""
    counts: Dict[str, Dict[int, int]] = {}
    for budget in budgets:
        path = spec.splits_file(budget.dataset)
        if path.is_file():
            counts[budget.source] = {fold: len(entry["train"]) + len(entry["unlabelled"])
                                     for fold, entry in enumerate(json.loads(path.read_text()))}
    return counts


def learning_curve(validation: pd.DataFrame, budgets: Sequence[LabelBudget], metrics: Sequence[str],
                   cases: Mapping[str, Mapping[int, int]], full_label: Optional[pd.DataFrame] = None,
                   full_label_origin: str = "") -> pd.DataFrame:
    """One row (``COLUMNS``) per source dataset, configuration, method, number of labelled cases and metric.

    ``validation``: results.csv's validation rows of this run, whose order of methods the rows keep. A budget's point
    comes from its dataset's rows; the full-label point from this run's rows on the source dataset itself or, for a
    method this run has none of, from ``full_label`` (another run's results.csv validation rows;
    ``full_label_origin`` names it), on the folds the budgets have (an earlier run may have more), at x = the mean
    over its folds of their number of training cases (``cases``: source -> fold -> count).
    """
    rows: List[list] = []
    by_dataset = {budget.dataset: budget for budget in budgets}
    tasks: Dict[Tuple[str, str], set] = {}  # source and configuration -> the folds of its budgets
    for (dataset, configuration), group in validation.groupby(["dataset", "configuration"], sort=False):
        if dataset in by_dataset:
            budget = by_dataset[dataset]
            tasks.setdefault((budget.source, configuration), set()).update(group["fold"])
            rows += _points(group, budget.source, configuration, metrics, lambda folds: budget.labeled_cases, BUDGET)
    for (source, configuration), folds in tasks.items():
        if source not in cases:
            continue

        def x(folds: List[int]) -> float:
            return float(np.mean([cases[source][f] for f in folds]))

        here = validation[(validation["dataset"] == source) & (validation["configuration"] == configuration)
                          & validation["fold"].isin(folds)]
        rows += _points(here, source, configuration, metrics, x, THIS_RUN)
        if full_label is not None:
            other = full_label[(full_label["dataset"] == source) & (full_label["configuration"] == configuration)
                               & full_label["fold"].isin(folds) & ~full_label["method"].isin(here["method"].unique())]
            rows += _points(other, source, configuration, metrics, x, full_label_origin)
    curve = pd.DataFrame(rows, columns=COLUMNS)
    order = {method: index for index, method in enumerate(dict.fromkeys(validation["method"]))}
    return curve.sort_values(["source", "configuration", "method", "labeled_cases"], kind="stable",
                             key=lambda column: column.map(order) if column.name == "method" else column,
                             ignore_index=True)


def _points(frame: pd.DataFrame, source: str, configuration: str, metrics: Sequence[str],
            x: Callable[[List[int]], float], origin: str) -> List[list]:
    """Per metric and method of ``frame``: the mean over its folds and their t-interval, at ``x(folds)``."""
    rows = []
    for metric in metrics:
        if frame.empty:
            break
        for method, means in fold_means(frame, metric).groupby(level="method", sort=False):
            folds = sorted(int(f) for f in means.index.get_level_values("fold"))
            rows.append([source, configuration, method, x(folds), origin, folds, metric, float(means.mean()),
                         *t_interval(means.to_numpy())])
    return rows


def label_gap(curve: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per budget point of ``curve`` (``GAP_COLUMNS``): its distance below ``baseline``'s full-label point, and the
    share of the label gap it closes.

    The label gap at N labelled cases is the full-label baseline minus the baseline on the same N; an arm's share is
    (arm - baseline on N) / gap: 0 = no better than the supervised baseline on the same labels, 1 = as good as the
    baseline with every label, below 0 = worse than the supervised baseline. NaN where the gap is not positive, or
    where a point is missing or covers other folds than the arm's (shares of different folds would not compare).
    """
    keys = ["source", "configuration", "metric"]
    full = curve[(curve["origin"] != BUDGET) & (curve["method"] == baseline)].set_index(keys)
    points = curve[curve["origin"] == BUDGET]
    supervised = points[points["method"] == baseline].set_index(keys + ["labeled_cases"])
    rows = []
    for point in points.itertuples():
        key = (point.source, point.configuration, point.metric)
        top = _on_folds(full, key, point.folds)
        low = _on_folds(supervised, key + (point.labeled_cases,), point.folds)
        gap = top - low
        rows.append([*key, point.method, point.labeled_cases, point.folds, point.mean, low, top, top - point.mean,
                     (point.mean - low) / gap if gap > 0 else math.nan])
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _on_folds(points: pd.DataFrame, key: tuple, folds: List[int]) -> float:
    """The mean of the point at ``key`` if it covers exactly ``folds``; NaN otherwise."""
    if key not in points.index:
        return math.nan
    point = points.loc[key]
    return float(point["mean"]) if list(point["folds"]) == list(folds) else math.nan
