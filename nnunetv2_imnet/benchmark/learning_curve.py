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

from nnunetv2_imnet.benchmark.comparisons import compare_arms, per_case_means
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
    for (dataset, configuration), group in validation.groupby(["dataset", "configuration"], sort=False):
        if dataset in by_dataset:
            budget = by_dataset[dataset]
            rows += _points(group, budget.source, configuration, metrics, lambda folds: budget.labeled_cases, BUDGET)
    for (source, configuration), folds in _budget_folds(validation, budgets).items():
        if source not in cases:
            continue
        for frame, origin in _full_label_rows(validation, full_label, full_label_origin, source, configuration,
                                              folds):
            rows += _points(frame, source, configuration, metrics, _mean_cases(cases[source]), origin)
    curve = pd.DataFrame(rows, columns=COLUMNS)
    order = {method: index for index, method in enumerate(dict.fromkeys(validation["method"]))}
    return curve.sort_values(["source", "configuration", "method", "labeled_cases"], kind="stable",
                             key=lambda column: column.map(order) if column.name == "method" else column,
                             ignore_index=True)


def full_label_differences(validation: pd.DataFrame, budgets: Sequence[LabelBudget], baseline: str,
                           metrics: Sequence[str], cases: Mapping[str, Mapping[int, int]],
                           full_label: Optional[pd.DataFrame] = None, full_label_origin: str = "") -> pd.DataFrame:
    """The fold-level comparisons against ``baseline`` with every label (``comparisons.COLUMNS`` plus
    ``labeled_cases``, the learning curve's full-label x, and ``origin``), from the rows ``learning_curve`` takes its
    full-label points from: the paired row's reference for what the budgets' differences would be with every label.
    A pair of arms from this run and ``full_label`` is compared on the folds both have, like any pair."""
    tables = []
    for (source, configuration), folds in _budget_folds(validation, budgets).items():
        if source not in cases:
            continue
        parts = _full_label_rows(validation, full_label, full_label_origin, source, configuration, folds)
        if not parts:
            continue
        here = set(parts[0][0]["method"]) if parts[0][1] == THIS_RUN else set()
        table = compare_arms(pd.concat([frame for frame, _ in parts]), baseline, metrics)
        table = table[table["reference"] == baseline]
        tables.append(table.assign(
            labeled_cases=table["folds"].map(_mean_cases(cases[source])),
            origin=[THIS_RUN if {method, baseline} <= here else full_label_origin for method in table["method"]]))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _budget_folds(validation: pd.DataFrame, budgets: Sequence[LabelBudget]) -> Dict[Tuple[str, str], List[int]]:
    """(source dataset, configuration) -> the folds its budgets have validation rows for."""
    sources = {budget.dataset: budget.source for budget in budgets}
    tasks: Dict[Tuple[str, str], set] = {}
    for (dataset, configuration), group in validation.groupby(["dataset", "configuration"], sort=False):
        if dataset in sources:
            tasks.setdefault((sources[dataset], configuration), set()).update(int(f) for f in group["fold"])
    return {task: sorted(folds) for task, folds in tasks.items()}


def _full_label_rows(validation: pd.DataFrame, full_label: Optional[pd.DataFrame], full_label_origin: str,
                     source: str, configuration: str, folds: List[int]) -> List[Tuple[pd.DataFrame, str]]:
    """The full-label rows on ``folds`` with their origin: this run's on ``source`` itself, then ``full_label``'s for
    the methods this run has none of there. Non-empty frames only."""
    def on(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["dataset"] == source) & (frame["configuration"] == configuration)
                     & frame["fold"].isin(folds)]

    here = on(validation)
    parts = [(here, THIS_RUN)]
    if full_label is not None:
        other = on(full_label)
        parts.append((other[~other["method"].isin(here["method"].unique())], full_label_origin))
    return [(frame, origin) for frame, origin in parts if not frame.empty]


def _mean_cases(cases: Mapping[int, int]) -> Callable[[Sequence[int]], float]:
    """The x of a full-label point on ``folds``: the mean over them of their number of training cases."""
    return lambda folds: float(np.mean([cases[f] for f in folds]))


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
