"""Paired statistics for comparing trainers on the same cases, and an MSD-challenge style significance ranking.

Trainers are evaluated on identical cases, so every comparison is paired per case: this removes the (large)
case-to-case variation and leaves only the difference the trainer makes.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap, wilcoxon

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


def msd_ranking(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Leaderboard: one row per trainer, a rank column per task ("<dataset>/<configuration>") and ``mean_rank``.

    Each (dataset, configuration, class, metric) is ranked with ``significance_rank``; a task rank is the mean
    over its classes and metrics, and ``mean_rank`` the mean over tasks. Values must be higher-is-better (Dice,
    NSD). A trainer missing a task gets a NaN ``mean_rank`` and sorts last, instead of a flattering average.
    """
    _check_ranking_frame(frame)
    task_ranks = _group_ranks(frame, alpha).groupby(["trainer", "task"])["rank"].mean().unstack("task")
    task_ranks["mean_rank"] = task_ranks.mean(axis=1, skipna=False)
    leaderboard = task_ranks.reset_index().sort_values(["mean_rank", "trainer"], na_position="last")
    leaderboard.columns.name = None
    return leaderboard.reset_index(drop=True)


def _group_ranks(frame: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Columns task, trainer, rank: one row per trainer and (dataset, configuration, class, metric)."""
    rows = []
    for (dataset, configuration, _, _), group in frame.groupby(_GROUP_COLUMNS, sort=True):
        ranks = significance_rank(_per_case(group), alpha)
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
