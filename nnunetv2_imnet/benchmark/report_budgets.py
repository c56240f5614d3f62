"""The report's sections of a label-budget benchmark: which cases were labelled, and the learning curve."""
from __future__ import annotations

import json
import math
from typing import List, Sequence

import pandas as pd

from nnunetv2_imnet.benchmark.learning_curve import BUDGET
from nnunetv2_imnet.benchmark.markdown import table
from nnunetv2_imnet.benchmark.metrics import METRICS
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, LabelBudget
from nnunetv2_imnet.naming import SELF_TRAINING

LABELLED_CASES = (
    "Per fold, N labelled training cases are drawn from the fold's training cases of nnU-Net's 5-fold split of the "
    "source: one permutation of the fold's sorted training cases from `numpy.random.default_rng([seed, fold])`, of "
    "which each budget takes the first N, so the budgets are nested and every arm gets the same cases. Supervised "
    "arms train on these only; the fold's other training cases are the unlabelled ones (images only, for "
    "`nnUNetTrainerIMNet_Unlabelled` arms and for the pseudo-labels of `{self_training}`); validation is the fold's "
    "full validation set. Each budget is a dataset of its own (ids 700+), so its leaderboard and comparisons above "
    "are those of its task, all against `nnUNetTrainer` trained on the same labelled cases.")
LEARNING_CURVE = (
    "Mean over folds of each fold's mean over its validation cases (mean over classes per case), against the number "
    "of labelled training cases a fold; 95% CI: t-interval over the fold means (none with 1 fold). The full-label "
    "points are on the same folds as the budgets, at the mean number of training cases of those folds.")
LABEL_GAP = (
    "How far each arm is from `{baseline}` with every label (its full-label point of the learning curve, same "
    "folds), and the share of the label gap it closes: gap = full-label `{baseline}` - `{baseline}` on the same "
    "labelled cases; share = (arm - `{baseline}` on the same labelled cases) / gap. 0: no better than supervised "
    "nnU-Net on the same labels; 1: as good as nnU-Net with all labels; below 0: worse than supervised. From the "
    "fold means; a small gap makes the share noisy, so read it with the paired differences (n/a: no full-label "
    "point, no positive gap, or points over different folds).")


def label_budget_section(spec: BenchmarkSpec, budgets: Sequence[LabelBudget]) -> List[str]:
    """The labelled case ids of every budget and fold the spec trains, with the seed, from each budget's split."""
    rows = []
    for budget in budgets:
        path = spec.splits_file(budget.dataset)
        if not path.is_file():
            rows.append([budget.dataset, str(budget.labeled_cases), "", "(not prepared yet)", "", ""])
            continue
        splits = json.loads(path.read_text())
        rows += [[budget.dataset, str(budget.labeled_cases), str(fold), ", ".join(splits[fold]["train"]),
                  str(len(splits[fold]["unlabelled"])), str(len(splits[fold]["val"]))] for fold in spec.folds]
    return [LABELLED_CASES.format(self_training=SELF_TRAINING), "", f"Seed: {spec.label_seed}.", "",
            *table(["dataset", "labelled cases", "fold", "labelled case ids", "unlabelled cases",
                        "validation cases"], rows)]


def learning_curve_section(curve: pd.DataFrame) -> List[str]:
    """The learning curve's points as a table: one row per task, arm and number of labelled cases."""
    if curve.empty:
        return ["(no finished run on a label budget yet)"]
    wide = curve.set_index(["source", "configuration", "method", "labeled_cases", "origin", "metric"])
    rows = []
    for (source, configuration, method, labeled, origin), group in curve.groupby(
            ["source", "configuration", "method", "labeled_cases", "origin"], sort=False):
        folds = group["folds"].iloc[0]
        cells = [_mean_ci(wide.loc[(source, configuration, method, labeled, origin, metric)])
                 if metric in set(group["metric"]) else "n/a" for metric in METRICS]
        rows.append([f"{source}/{configuration}", f"`{method}`", f"{labeled:g}" if origin == BUDGET else
                     f"all: {labeled:g} ({origin})", ", ".join(map(str, folds))] + cells)
    return [LEARNING_CURVE, "", *table(["task", "method", "labelled cases", "folds"]
                                           + [f"{m.title} [95% CI]" for m in METRICS.values()], rows)]


def label_gap_section(gap: pd.DataFrame, baseline: str) -> List[str]:
    """``learning_curve.label_gap``'s rows as a table."""
    if gap.empty:
        return ["(no finished run on a label budget yet)"]
    rows = [[f"{r.source}/{r.configuration}", f"`{r.method}`", f"{r.labeled_cases:g}", ", ".join(map(str, r.folds)),
             METRICS[r.metric].title, f"{r.mean:.4f}", _value(r.supervised), _value(r.full_label),
             _value(r.distance), "n/a" if math.isnan(r.share_closed) else f"{r.share_closed:.0%}"]
            for r in gap.itertuples()]
    return [LABEL_GAP.format(baseline=baseline), "",
            *table(["task", "method", "labelled cases", "folds", "metric", "mean", f"`{baseline}` on them",
                    f"`{baseline}`, all labels", "below all labels", "share of the gap closed"], rows)]


def _value(number: float) -> str:
    return "n/a" if math.isnan(number) else f"{number:.4f}"


def _mean_ci(row: pd.Series) -> str:
    interval = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
    return f"{row['mean']:.4f}{interval}"

