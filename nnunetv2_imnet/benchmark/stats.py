"""Paired statistics for comparing trainers on the same cases, and an MSD-challenge style significance ranking.

Trainers are evaluated on identical cases, so every comparison is paired per case: this removes the (large)
case-to-case variation and leaves only the difference the trainer makes. Two units of analysis:

- the case (``paired_comparison``): one trained model per arm and fold, taken as fixed;
- the fold (``fold_comparison``): each fold's model is one draw of the training process, so the spread between
  folds includes training variance (initialisation, sampling order), which decides whether a method helps.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap, permutation_test, wilcoxon

#: columns ``msd_ranking`` needs, one row per (trainer, case, class, metric)
RANKING_COLUMNS = ("dataset", "configuration", "trainer", "case", "class", "metric", "value")
#: columns that make one ranking group: a single task, class and metric
_GROUP_COLUMNS = ["dataset", "configuration", "class", "metric"]


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs baseline on the same cases; ``mean_difference`` is candidate - baseline."""

    n: int
    baseline_mean: float
    candidate_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float


def paired_comparison(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95,
                      n_resamples: int = 10000, seed: int = 0) -> PairedComparison:
    """Bootstrap CI of the mean paired difference and a two-sided Wilcoxon signed-rank p-value.

    ``baseline[i]`` and ``candidate[i]`` must belong to the same case; pairs with a NaN on either side (e.g. a
    class absent from both prediction and reference) are dropped, so ``n`` counts the pairs actually compared.
    """
    if len(baseline) != len(candidate):
        raise ValueError(f"baseline has {len(baseline)} values but candidate has {len(candidate)}; pass one value "
                         f"per case for both, in the same case order")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    base, cand = _complete_pairs(baseline, candidate)
    if base.size == 0:
        return PairedComparison(0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, confidence)
    differences = cand - base
    ci_low, ci_high = _bootstrap_ci(differences, confidence, n_resamples, seed)
    return PairedComparison(n=int(base.size), baseline_mean=float(base.mean()), candidate_mean=float(cand.mean()),
                            mean_difference=float(differences.mean()), ci_low=ci_low, ci_high=ci_high,
                            p_value=_wilcoxon_p(differences, "two-sided"), confidence=confidence)


def _complete_pairs(baseline: Sequence[float], candidate: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are known."""
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    keep = ~(np.isnan(base) | np.isnan(cand))
    return base[keep], cand[keep]


def _bootstrap_ci(differences: np.ndarray, confidence: float, n_resamples: int, seed: int) -> Tuple[float, float]:
    """BCa interval of the mean; percentile where BCa is degenerate (it then yields NaN), (d, d) for constant d.

    A constant sample has no sampling variation to resample, so its interval is the value itself.
    """
    if np.ptp(differences) == 0:
        return float(differences[0]), float(differences[0])
    with warnings.catch_warnings():
        # BCa signals degeneracy by a warning plus NaN bounds; the NaN check below handles it
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = _bootstrap(differences, confidence, n_resamples, seed, "BCa")
    if np.isnan(interval).any():
        interval = _bootstrap(differences, confidence, n_resamples, seed, "percentile")
    return float(interval[0]), float(interval[1])


def _bootstrap(differences: np.ndarray, confidence: float, n_resamples: int, seed: int,
               method: str) -> Tuple[float, float]:
    result = bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                       method=method, rng=np.random.default_rng(seed))
    return result.confidence_interval.low, result.confidence_interval.high


def _wilcoxon_p(differences: np.ndarray, alternative: str) -> float:
    """Wilcoxon signed-rank p-value; 1.0 when every difference is 0 (no evidence either way, and scipy refuses)."""
    if not np.any(differences):
        return 1.0
    return float(wilcoxon(differences, alternative=alternative).pvalue)


@dataclass(frozen=True)
class FoldComparison:
    """Candidate vs baseline with the fold (one trained model per arm) as the unit; differences are candidate -
    baseline, ``mean_difference`` the mean over folds of the per-fold mean differences."""

    folds: Tuple[int, ...]
    fold_differences: Tuple[float, ...]
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    smallest_p: float  # the smallest two-sided p the sign-flip test can give with this many folds
    confidence: float


def fold_comparison(baseline: pd.Series, candidate: pd.Series, confidence: float = 0.95, n_resamples: int = 10000,
                    seed: int = 0) -> FoldComparison:
    """Exact sign-flip test on the per-fold mean differences and a hierarchical bootstrap CI of their mean.

    ``baseline`` and ``candidate`` are per-case values indexed by ``(fold, case)``; only cases both have (no NaN)
    are paired, so a fold that one arm has not finished is left out.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    by_fold = differences_by_fold(baseline, candidate)
    folds = tuple(sorted(by_fold))
    if not folds:
        return FoldComparison((), (), np.nan, np.nan, np.nan, np.nan, np.nan, confidence)
    fold_means = np.array([by_fold[f].mean() for f in folds])
    ci_low, ci_high = hierarchical_bootstrap_ci([by_fold[f] for f in folds], confidence, n_resamples, seed)
    return FoldComparison(folds=folds, fold_differences=tuple(float(m) for m in fold_means),
                          mean_difference=float(fold_means.mean()), ci_low=ci_low, ci_high=ci_high,
                          p_value=sign_flip_p(fold_means), smallest_p=min(1.0, 2.0 / 2 ** len(folds)),
                          confidence=confidence)


def differences_by_fold(baseline: pd.Series, candidate: pd.Series) -> Dict[int, np.ndarray]:
    """fold -> candidate - baseline on the (fold, case) pairs both have; folds without a complete pair dropped."""
    common = baseline.index.intersection(candidate.index)
    differences = (candidate.loc[common] - baseline.loc[common]).dropna()
    return {int(fold): group.to_numpy(dtype=float) for fold, group in differences.groupby(level=0)}


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip (paired permutation) p-value of the mean difference over all 2^n sign patterns.

    Under "no effect" each fold's difference is as likely positive as negative. With n folds the smallest
    possible p is 2 / 2^n (5 folds: 0.0625), so 5 folds can never reach p < 0.05 with this test.
    """
    values = np.asarray(differences, dtype=float)
    if values.size == 0:
        return np.nan
    if values.size == 1:  # the two patterns +d and -d: always p = 1 (and scipy needs two values)
        return 1.0
    result = permutation_test((values,), np.mean, permutation_type="samples", n_resamples=np.inf,
                              alternative="two-sided")
    return float(min(1.0, result.pvalue))


def hierarchical_bootstrap_ci(groups: Sequence[np.ndarray], confidence: float = 0.95, n_resamples: int = 10000,
                              seed: int = 0) -> Tuple[float, float]:
    """Percentile CI of the mean over groups of the group means: resample groups (folds) with replacement, then
    the members (cases) of each drawn group with replacement, independently for every draw.

    Resampling folds first carries the between-fold (training) variance into the interval; SciPy's ``bootstrap``
    resamples one level only, hence this small two-level version.
    """
    groups = [np.asarray(g, dtype=float) for g in groups]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError(f"every group needs at least one value; got sizes {[g.size for g in groups]}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(groups), size=(n_resamples, len(groups)))
    slot_means = np.empty(picks.shape)
    for index, values in enumerate(groups):
        drawn = picks == index
        cases = rng.integers(values.size, size=(int(drawn.sum()), values.size))
        slot_means[drawn] = values[cases].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(slot_means.mean(axis=1), [tail, 1 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values for one family of tests (SciPy has only BH/BY FDR control).

    NaN p-values (comparisons that could not be made) are not part of the family and stay NaN.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = (len(order) - np.arange(len(order))) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def significance_rank(per_case: Mapping[str, Mapping[str, float]], alpha: float = 0.05,
                      higher_is_better: bool = True) -> Dict[str, float]:
    """MSD-challenge rank of trainers for one task, class and metric: ``per_case`` is trainer -> {case -> value}.

    A trainer scores one point per other trainer it beats in a one-sided Wilcoxon signed-rank test (p < alpha) on
    the cases both have; rank = 1 + the number of trainers with a strictly higher score, so ties share a rank.
    Counting significant wins, rather than ranking means, keeps noise-level differences from reordering trainers.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    scores = {trainer: 0 for trainer in per_case}
    for better, worse in itertools.permutations(per_case, 2):
        differences = _paired_differences(per_case[better], per_case[worse])
        if not higher_is_better:
            differences = -differences
        if differences.size and _wilcoxon_p(differences, "greater") < alpha:
            scores[better] += 1
    return {trainer: float(1 + sum(other > score for other in scores.values())) for trainer, score in scores.items()}


def _paired_differences(first: Mapping[str, float], second: Mapping[str, float]) -> np.ndarray:
    """first - second on the cases both have, NaN pairs dropped."""
    cases = sorted(first.keys() & second.keys())
    first_values, second_values = _complete_pairs([first[c] for c in cases], [second[c] for c in cases])
    return first_values - second_values


def msd_ranking(frame: pd.DataFrame, higher_is_better: Mapping[str, bool], alpha: float = 0.05) -> pd.DataFrame:
    """Leaderboard: one row per trainer, a rank column per task ("<dataset>/<configuration>") and ``mean_rank``.

    Each (dataset, configuration, class, metric) is ranked with ``significance_rank`` in the direction
    ``higher_is_better[metric]`` declares; a task rank is the mean over its classes and metrics, and ``mean_rank``
    the mean over tasks. A trainer missing a task gets a NaN ``mean_rank`` and sorts last, instead of a
    flattering average.
    """
    _check_ranking_frame(frame)
    undeclared = sorted(set(frame["metric"]) - set(higher_is_better))
    if undeclared:
        raise ValueError(f"metric(s) {undeclared} have no direction; say in higher_is_better whether higher is better")
    task_ranks = _group_ranks(frame, higher_is_better, alpha).groupby(["trainer", "task"])["rank"].mean()
    task_ranks = task_ranks.unstack("task")
    task_ranks["mean_rank"] = task_ranks.mean(axis=1, skipna=False)
    leaderboard = task_ranks.reset_index().sort_values(["mean_rank", "trainer"], na_position="last")
    leaderboard.columns.name = None
    return leaderboard.reset_index(drop=True)


def _group_ranks(frame: pd.DataFrame, higher_is_better: Mapping[str, bool], alpha: float) -> pd.DataFrame:
    """Columns task, trainer, rank: one row per trainer and (dataset, configuration, class, metric)."""
    rows = []
    for (dataset, configuration, _, metric), group in frame.groupby(_GROUP_COLUMNS, sort=True):
        ranks = significance_rank(_per_case(group), alpha, higher_is_better[metric])
        rows += [{"task": f"{dataset}/{configuration}", "trainer": t, "rank": r} for t, r in ranks.items()]
    return pd.DataFrame(rows)


def _check_ranking_frame(frame: pd.DataFrame) -> None:
    missing = [column for column in RANKING_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"ranking frame lacks columns {missing}; it needs {list(RANKING_COLUMNS)}")
    if frame.empty:
        raise ValueError("ranking frame has no rows; evaluate at least one trainer before ranking")
    duplicated = frame.duplicated(subset=[c for c in RANKING_COLUMNS if c != "value"], keep=False)
    if duplicated.any():
        example = frame.loc[duplicated].iloc[0].to_dict()
        raise ValueError(f"{int(duplicated.sum())} rows repeat a (dataset, configuration, trainer, case, class, "
                         f"metric), e.g. {example}; keep one value per case (one fold per case)")


def _per_case(group: pd.DataFrame) -> Dict[str, Dict[str, float]]:
    """trainer -> {case -> value} for one ranking group."""
    return {trainer: dict(zip(rows["case"], rows["value"])) for trainer, rows in group.groupby("trainer")}
