"""Every candidate arm against the baseline, and the extra reference pairs (every regularised arm against its weight-0
control, the unlabelled IMNet arm against nnU-Net self-training), per task and metric, with the case and with the
fold as the unit; the Dice each arm loses to test-time noise, for the same comparisons; and one arm against itself
on the next smaller label budget (the positive control of a label-budget study).

Holm's adjustment runs over one call, i.e. one table of the report: every comparison made there (candidate x
reference x metric x task) is one family, separately for the case-level Wilcoxon and the fold-level sign-flip
p-values.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import pandas as pd

from nnunetv2_imnet.benchmark.spec import LabelBudget
from nnunetv2_imnet.benchmark.stats import fold_comparison, holm, paired_comparison
from nnunetv2_imnet.naming import CLEAN, TEST, VALIDATION

COLUMNS = ["dataset", "configuration", "method", "reference", "metric", "folds", "fold_differences", "cases",
           "reference_mean", "method_mean", "case_difference", "case_ci_low", "case_ci_high", "wilcoxon_p",
           "wilcoxon_p_holm", "fold_difference", "fold_ci_low", "fold_ci_high", "sign_flip_p", "sign_flip_p_holm",
           "smallest_p"]


def per_case_means(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Mean over classes per (method, fold, case): the per-case number the comparisons pair up."""
    return frame.groupby(["method", "fold", "case"])[metric].mean()


def compare_arms(frame: pd.DataFrame, baseline: str, metrics: Sequence[str],
                 pairs: Sequence[Tuple[str, str]] = ()) -> pd.DataFrame:
    """One row per task, metric (a column of ``frame``) and pair (``COLUMNS``); differences are method - reference.

    Pairs: every method against ``baseline``, then every ``(method, reference)`` of ``pairs``, where the task has
    both. Only the (fold, case) pairs both arms have enter, so a fold that one arm has not finished is
    left out of both analyses; ``folds`` lists the folds compared.
    """
    rows = []
    for (dataset, configuration), group in frame.groupby(["dataset", "configuration"], sort=False):
        for metric in metrics:
            per_case = per_case_means(group, metric)
            methods = list(dict.fromkeys(per_case.index.get_level_values("method")))
            compared = [(method, baseline) for method in methods if baseline in methods and method != baseline]
            compared += [(arm, reference) for arm, reference in pairs if arm in methods and reference in methods]
            rows += [[dataset, configuration, method, reference, metric,
                      *_both_levels(per_case.loc[reference], per_case.loc[method])] for method, reference in compared]
    return _with_holm(rows)


def _with_holm(rows: list) -> pd.DataFrame:
    """The table of ``rows`` (``COLUMNS`` without Holm's) with Holm's adjustment over all of it, per level."""
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if not c.endswith("_holm")])
    table.insert(COLUMNS.index("wilcoxon_p_holm"), "wilcoxon_p_holm", holm(table["wilcoxon_p"]))
    table.insert(COLUMNS.index("sign_flip_p_holm"), "sign_flip_p_holm", holm(table["sign_flip_p"]))
    return table


def compare_budgets(frame: pd.DataFrame, budgets: Sequence[LabelBudget], method: str,
                    metrics: Sequence[str]) -> pd.DataFrame:
    """``method`` on each label budget against itself on the next smaller budget of the same source dataset and
    configuration, paired by fold and validation case (nested budgets share every fold's validation cases): what
    more labels give one arm, the positive control that shows what size of effect the design can see.

    One row per source, configuration, metric and pair of budgets, with ``compare_arms``'s columns; ``method`` and
    ``reference`` name the budgets (``"<method> @ N labelled"``); Holm's adjustment over this table.
    """
    by_dataset = {budget.dataset: budget for budget in budgets}
    arm = frame[(frame["method"] == method) & frame["dataset"].isin(by_dataset)]
    arm = arm.assign(source=arm["dataset"].map(lambda dataset: by_dataset[dataset].source))
    rows = []
    for (source, configuration), group in arm.groupby(["source", "configuration"], sort=False):
        present = sorted({by_dataset[dataset] for dataset in group["dataset"]}, key=lambda b: b.labeled_cases)
        for smaller, larger in zip(present, present[1:]):
            for metric in metrics:
                fewer, more = (per_case_means(group[group["dataset"] == budget.dataset], metric).loc[method]
                               for budget in (smaller, larger))
                rows.append([source, configuration, budget_label(method, larger.labeled_cases),
                             budget_label(method, smaller.labeled_cases), metric, *_both_levels(fewer, more)])
    return _with_holm(rows)


def budget_label(method: str, labeled_cases: int) -> str:
    """How the budget comparisons name a method trained on a label budget."""
    return f"{method} @ {labeled_cases} labelled"


def noise_drops(cases: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per task, method, fold, case and class: ``metric`` under each noise condition minus the same case's clean
    prediction (both without TTA), one column per condition; negative = lost to noise. Comparing these between arms
    asks whether one arm loses less, which is what IM-Net claims, apart from how well it segments clean images."""
    keys = ["dataset", "configuration", "method", "fold", "case", "class"]
    noisy = cases[~cases["evaluation"].isin([VALIDATION, TEST, CLEAN])]
    clean = cases[cases["evaluation"] == CLEAN].set_index(keys)[metric]
    if noisy.empty or clean.empty:
        return pd.DataFrame(columns=keys)
    wide = noisy.set_index(keys + ["evaluation"])[metric].unstack("evaluation")
    drops = wide.sub(clean.reindex(wide.index), axis=0)
    return drops[list(dict.fromkeys(noisy["evaluation"]))].reset_index()


def _both_levels(reference: pd.Series, candidate: pd.Series) -> list:
    """The columns from ``folds`` on (Holm's excepted) for one pair of per-case series indexed by (fold, case)."""
    common = reference.index.intersection(candidate.index)
    cases = paired_comparison(reference.loc[common].to_numpy(), candidate.loc[common].to_numpy())
    folds = fold_comparison(reference, candidate)
    return [folds.folds, folds.fold_differences, cases.n, cases.baseline_mean, cases.candidate_mean,
            cases.mean_difference, cases.ci_low, cases.ci_high, cases.p_value, folds.mean_difference, folds.ci_low,
            folds.ci_high, folds.p_value, folds.smallest_p]
