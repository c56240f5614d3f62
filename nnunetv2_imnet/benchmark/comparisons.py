"""Every candidate arm against the baseline, per task and metric, with the case and with the fold as the unit.

Holm's adjustment runs over one call, i.e. one table of the report (one evaluation split): every candidate arm x
metric x task compared there, separately for the case-level Wilcoxon and the fold-level sign-flip p-values.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from nnunetv2_imnet.benchmark.metrics import Metric
from nnunetv2_imnet.benchmark.stats import fold_comparison, holm, paired_comparison

COLUMNS = ["dataset", "configuration", "method", "metric", "folds", "cases", "baseline_mean", "method_mean",
           "case_difference", "case_ci_low", "case_ci_high", "wilcoxon_p", "wilcoxon_p_holm", "fold_difference",
           "fold_ci_low", "fold_ci_high", "sign_flip_p", "sign_flip_p_holm", "smallest_p"]


def per_case_means(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Mean over classes per (method, fold, case): the per-case number the comparisons pair up."""
    return frame.groupby(["method", "fold", "case"])[metric].mean()


def compare_with_baseline(frame: pd.DataFrame, baseline: str, metrics: Sequence[Metric]) -> pd.DataFrame:
    """One row per task, candidate method and metric (``COLUMNS``); differences are candidate - baseline.

    Only the (fold, case) pairs both arms have enter, so a fold that one arm has not finished is left out of both
    analyses; ``folds`` lists the folds compared.
    """
    rows = []
    for (dataset, configuration), group in frame.groupby(["dataset", "configuration"], sort=False):
        for metric in metrics:
            per_case = per_case_means(group, metric.name)
            methods = list(dict.fromkeys(per_case.index.get_level_values("method")))
            if baseline not in methods:
                continue
            reference = per_case.loc[baseline]
            for method in methods:
                if method != baseline:
                    rows.append([dataset, configuration, method, metric.name,
                                 *_both_levels(reference, per_case.loc[method])])
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if not c.endswith("_holm")])
    table.insert(COLUMNS.index("wilcoxon_p_holm"), "wilcoxon_p_holm", holm(table["wilcoxon_p"]))
    table.insert(COLUMNS.index("sign_flip_p_holm"), "sign_flip_p_holm", holm(table["sign_flip_p"]))
    return table


def _both_levels(reference: pd.Series, candidate: pd.Series) -> list:
    """The columns from ``folds`` on (Holm's excepted) for one pair of per-case series indexed by (fold, case)."""
    common = reference.index.intersection(candidate.index)
    cases = paired_comparison(reference.loc[common].to_numpy(), candidate.loc[common].to_numpy())
    folds = fold_comparison(reference, candidate)
    return [folds.folds, cases.n, cases.baseline_mean, cases.candidate_mean, cases.mean_difference, cases.ci_low,
            cases.ci_high, cases.p_value, folds.mean_difference, folds.ci_low, folds.ci_high, folds.p_value,
            folds.smallest_p]
