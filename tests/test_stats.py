"""Paired comparisons (case and fold level), Holm's correction and MSD-style ranking on inputs whose answers are
known by construction."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from nnunetv2_imnet.benchmark import stats
from nnunetv2_imnet.benchmark.stats import (fold_comparison, hierarchical_bootstrap_ci, holm, msd_ranking,
                                            paired_comparison, sign_flip_p, significance_rank)

CASES = [f"case_{i:02d}" for i in range(10)]
BASE = np.linspace(0.5, 0.8, len(CASES))
#: a clear improvement with distinct per-case sizes: tie-free differences keep scipy on its fast exact test
STEP = 0.1 + np.linspace(0.0, 0.009, len(CASES))
#: both test metrics are higher-is-better
DIRECTIONS = {"Dice": True, "NSD": True}


def test_identical_trainers_show_no_difference() -> None:
    result = paired_comparison(BASE, BASE)
    assert result.n == len(BASE)
    assert result.mean_difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert result.confidence == 0.95


def test_constant_shift_has_a_point_interval_and_a_small_p() -> None:
    baseline = np.random.default_rng(1).uniform(0.4, 0.8, 30)
    result = paired_comparison(baseline, baseline + 0.1)
    assert result.n == 30
    assert result.mean_difference == pytest.approx(0.1)
    assert result.ci_low == pytest.approx(0.1) and result.ci_high == pytest.approx(0.1)
    assert result.candidate_mean - result.baseline_mean == pytest.approx(0.1)
    assert result.p_value < 1e-6


def test_noisy_shift_interval_covers_the_shift_and_excludes_zero() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.uniform(0.6, 0.85, 40)
    candidate = baseline + 0.05 + rng.normal(0.0, 0.03, 40)
    result = paired_comparison(baseline, candidate, seed=3)
    assert 0.0 < result.ci_low < 0.05 < result.ci_high
    assert result.ci_low < result.mean_difference < result.ci_high
    assert result.p_value < 0.05


def test_seed_makes_the_interval_reproducible() -> None:
    rng = np.random.default_rng(0)
    baseline, candidate = rng.uniform(size=20), rng.uniform(size=20)
    first = paired_comparison(baseline, candidate, n_resamples=2000, seed=5)
    assert first == paired_comparison(baseline, candidate, n_resamples=2000, seed=5)


def test_pairs_with_a_nan_are_dropped() -> None:
    result = paired_comparison([0.5, math.nan, 0.7, 0.6], [0.6, 0.8, math.nan, 0.7])
    assert result.n == 2
    assert result.baseline_mean == pytest.approx(0.55)
    assert result.candidate_mean == pytest.approx(0.65)
    assert result.mean_difference == pytest.approx(0.1)


def test_no_complete_pair_gives_nan_everywhere() -> None:
    result = paired_comparison([math.nan, 0.5], [0.4, math.nan])
    assert result.n == 0
    numbers = [result.baseline_mean, result.candidate_mean, result.mean_difference, result.ci_low, result.ci_high,
               result.p_value]
    assert all(math.isnan(x) for x in numbers)


def test_unequal_lengths_name_both_lengths() -> None:
    with pytest.raises(ValueError, match="baseline has 3 values but candidate has 2"):
        paired_comparison([0.1, 0.2, 0.3], [0.1, 0.2])


def test_bad_confidence_is_rejected() -> None:
    with pytest.raises(ValueError, match="95"):
        paired_comparison(BASE, BASE, confidence=95)


def test_degenerate_bca_falls_back_to_percentile(monkeypatch: pytest.MonkeyPatch) -> None:
    methods = []

    def fake_bootstrap(data, statistic, **kwargs):
        methods.append(kwargs["method"])
        if kwargs["method"] == "BCa":
            return SimpleNamespace(confidence_interval=SimpleNamespace(low=math.nan, high=math.nan))
        return scipy.stats.bootstrap(data, statistic, **kwargs)

    monkeypatch.setattr(stats, "bootstrap", fake_bootstrap)
    result = paired_comparison(BASE, BASE + np.linspace(0.0, 0.1, len(BASE)), n_resamples=1000)
    assert methods == ["BCa", "percentile"]
    assert 0.0 <= result.ci_low < result.mean_difference < result.ci_high <= 0.1


def _per_case(values: np.ndarray) -> dict:
    return dict(zip(CASES, values))


def test_clearly_better_trainer_ranks_first_and_ties_share_a_rank() -> None:
    ranks = significance_rank({"better": _per_case(BASE + STEP), "a": _per_case(BASE), "b": _per_case(BASE)})
    assert ranks == {"better": 1.0, "a": 2.0, "b": 2.0}


def test_lower_is_better_reverses_the_ranking() -> None:
    ranks = significance_rank({"low": _per_case(BASE - STEP), "high": _per_case(BASE)}, higher_is_better=False)
    assert ranks == {"low": 1.0, "high": 2.0}


def test_three_significantly_different_trainers_rank_1_2_3() -> None:
    ranks = significance_rank({"c": _per_case(BASE), "a": _per_case(BASE + 2 * STEP), "b": _per_case(BASE + STEP)})
    assert ranks == {"a": 1.0, "b": 2.0, "c": 3.0}


def test_single_trainer_ranks_first() -> None:
    assert significance_rank({"only": _per_case(BASE)}) == {"only": 1.0}


def test_only_shared_non_nan_cases_are_compared() -> None:
    better = _per_case(BASE + STEP)
    worse = _per_case(BASE)
    worse["case_00"] = math.nan  # dropped pair
    worse["extra"] = 1.0  # case the other trainer lacks
    assert significance_rank({"better": better, "worse": worse}) == {"better": 1.0, "worse": 2.0}


def _rows(dataset: str, configuration: str, metric: str, values: dict) -> list:
    return [{"dataset": dataset, "configuration": configuration, "trainer": trainer, "case": case, "class": "1",
             "metric": metric, "value": value}
            for trainer, trainer_values in values.items() for case, value in zip(CASES, trainer_values)]


def _two_task_frame() -> pd.DataFrame:
    # task 1 (one metric): a > b > c                           -> a 1, b 2, c 3
    # task 2, Dice: c > a == b -> c 1, a 2, b 2; NSD: a > b == c -> a 1, b 2, c 2
    #        task rank (mean over metrics)                      -> a 1.5, b 2, c 1.5
    # mean rank over tasks                                      -> a 1.25, b 2, c 2.25
    rows = (_rows("Dataset001_X", "2d", "Dice", {"a": BASE + 2 * STEP, "b": BASE + STEP, "c": BASE})
            + _rows("Dataset002_Y", "3d_fullres", "Dice", {"a": BASE, "b": BASE, "c": BASE + STEP})
            + _rows("Dataset002_Y", "3d_fullres", "NSD", {"a": BASE + STEP, "b": BASE, "c": BASE}))
    return pd.DataFrame(rows)


def test_msd_ranking_averages_ranks_per_task_then_over_tasks() -> None:
    leaderboard = msd_ranking(_two_task_frame(), DIRECTIONS)
    assert list(leaderboard.columns) == ["trainer", "Dataset001_X/2d", "Dataset002_Y/3d_fullres", "mean_rank"]
    assert list(leaderboard["trainer"]) == ["a", "b", "c"]
    assert list(leaderboard["Dataset001_X/2d"]) == [1.0, 2.0, 3.0]
    assert list(leaderboard["Dataset002_Y/3d_fullres"]) == [1.5, 2.0, 1.5]
    assert list(leaderboard["mean_rank"]) == [1.25, 2.0, 2.25]


def test_trainer_missing_a_task_sorts_last() -> None:
    frame = _two_task_frame()
    frame = frame[~((frame["trainer"] == "a") & (frame["dataset"] == "Dataset002_Y"))]
    leaderboard = msd_ranking(frame, DIRECTIONS)
    assert list(leaderboard["trainer"]) == ["b", "c", "a"]
    assert math.isnan(leaderboard["mean_rank"].iloc[-1])


def test_msd_ranking_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="'metric'"):
        msd_ranking(_two_task_frame().drop(columns="metric"), DIRECTIONS)


def test_msd_ranking_rejects_repeated_cases() -> None:
    frame = _two_task_frame()
    with pytest.raises(ValueError, match="one value per case"):
        msd_ranking(pd.concat([frame, frame.iloc[:1]]), DIRECTIONS)


def test_msd_ranking_follows_each_metrics_direction() -> None:
    frame = _two_task_frame()
    leaderboard = msd_ranking(frame, {"Dice": True, "NSD": False})
    # task 2, NSD now lower-is-better: b and c beat a -> a 3, b 1, c 1; with Dice (a 2, b 2, c 1): a 2.5, b 1.5, c 1
    assert dict(zip(leaderboard["trainer"], leaderboard["Dataset002_Y/3d_fullres"])) == {"a": 2.5, "b": 1.5, "c": 1.0}


def test_msd_ranking_needs_a_direction_for_every_metric() -> None:
    with pytest.raises(ValueError, match=r"\['NSD'\] have no direction"):
        msd_ranking(_two_task_frame(), {"Dice": True})


# ---------------------------------------------------------------------------------------------- fold level
def _by_fold_case(values_per_fold: dict) -> pd.Series:
    """Per-case values indexed by (fold, case) from {fold: [values]}."""
    index = pd.MultiIndex.from_tuples([(fold, f"case_{fold}_{i}") for fold, values in values_per_fold.items()
                                       for i in range(len(values))], names=["fold", "case"])
    return pd.Series(np.concatenate([np.asarray(v, float) for v in values_per_fold.values()]), index=index)


FIVE_FOLDS = {fold: np.random.default_rng(fold).uniform(0.6, 0.9, 8) for fold in range(5)}


def test_identical_arms_differ_by_zero_at_the_fold_level() -> None:
    baseline = _by_fold_case(FIVE_FOLDS)
    result = fold_comparison(baseline, baseline.copy())
    assert result.folds == (0, 1, 2, 3, 4)
    assert result.fold_differences == (0.0,) * 5
    assert result.mean_difference == 0.0
    assert result.p_value == 1.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


@pytest.mark.parametrize("folds, smallest_p", [(1, 1.0), (2, 0.5), (3, 0.25), (4, 0.125), (5, 0.0625)])
def test_constant_shift_gives_the_shift_and_the_smallest_sign_flip_p(folds: int, smallest_p: float) -> None:
    baseline = _by_fold_case({f: FIVE_FOLDS[f] for f in range(folds)})
    result = fold_comparison(baseline, baseline + 0.05)
    assert result.mean_difference == pytest.approx(0.05)
    assert result.fold_differences == pytest.approx((0.05,) * folds)
    assert result.p_value == pytest.approx(2 / 2 ** folds) and result.p_value == pytest.approx(smallest_p)
    assert result.smallest_p == pytest.approx(smallest_p)
    assert result.ci_low == pytest.approx(0.05) and result.ci_high == pytest.approx(0.05)


def test_sign_flip_p_counts_sign_patterns_by_hand() -> None:
    # |mean| of the 8 patterns of (1, 2, 3): 2, 4/3, 2/3, 0 (twice each) -> observed 2: p = 2/8; observed 0: 8/8
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    assert sign_flip_p([1.0, 2.0, -3.0]) == pytest.approx(1.0)
    # (1, 2, 3) with one sign flipped to -1: |mean| 4/3 is reached by 4 patterns of 8
    assert sign_flip_p([-1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert math.isnan(sign_flip_p([]))


def test_only_folds_both_arms_finished_are_compared() -> None:
    baseline = _by_fold_case({0: [0.5, 0.6], 1: [0.7, 0.8], 2: [0.4, 0.4]})
    candidate = _by_fold_case({0: [0.6, 0.7], 1: [0.7, 0.8]})
    candidate.loc[(1, "case_1_0")] = math.nan  # a missing case in fold 1: its pair is dropped, the fold stays
    result = fold_comparison(baseline, candidate)
    assert result.folds == (0, 1)
    assert result.fold_differences == pytest.approx((0.1, 0.0))
    assert result.mean_difference == pytest.approx(0.05)


def test_no_common_fold_gives_nan() -> None:
    result = fold_comparison(_by_fold_case({0: [0.5]}), _by_fold_case({1: [0.6]}))
    assert result.folds == () and math.isnan(result.mean_difference) and math.isnan(result.p_value)


def test_resampling_folds_turns_one_outlying_fold_into_a_known_interval() -> None:
    # no case variance: only the fold draw matters. The mean of 5 folds drawn from (0, 0, 0, 0, 1) is k/5 with
    # k ~ Binomial(5, 0.2): P(k = 0) = 0.33 > 2.5 % and P(k <= 2) = 0.94 < 97.5 % <= P(k <= 3) = 0.99
    groups = [np.zeros(10)] * 4 + [np.ones(10)]
    assert hierarchical_bootstrap_ci(groups, 0.95, 10000, seed=0) == pytest.approx((0.0, 0.6))


def test_training_variance_widens_the_fold_level_interval() -> None:
    rng = np.random.default_rng(3)
    case_noise = [rng.normal(0.0, 0.02, 40) for _ in range(5)]
    equal_folds = hierarchical_bootstrap_ci([0.02 + noise for noise in case_noise])
    spread_folds = hierarchical_bootstrap_ci([shift + noise for shift, noise in
                                              zip([-0.06, -0.02, 0.02, 0.06, 0.1], case_noise)])
    assert equal_folds[0] < 0.02 < equal_folds[1]
    assert spread_folds[1] - spread_folds[0] > 5 * (equal_folds[1] - equal_folds[0])
    # the case-level interval of the same pooled differences ignores the folds and stays narrow
    pooled = paired_comparison(np.zeros(200), np.concatenate([shift + noise for shift, noise in
                                                              zip([-0.06, -0.02, 0.02, 0.06, 0.1], case_noise)]))
    assert pooled.ci_high - pooled.ci_low < 0.5 * (spread_folds[1] - spread_folds[0])


def test_one_fold_bootstraps_only_its_cases() -> None:
    low, high = hierarchical_bootstrap_ci([np.array([0.0, 1.0])], 0.95, 4000, seed=1)
    assert (low, high) == (0.0, 1.0)  # means of two draws from {0, 1}: 0, 0.5 or 1


def test_hierarchical_bootstrap_rejects_an_empty_fold() -> None:
    with pytest.raises(ValueError, match=r"sizes \[2, 0\]"):
        hierarchical_bootstrap_ci([np.ones(2), np.ones(0)])


@pytest.mark.parametrize("p_values, expected", [
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.5, 0.9], [1.0, 1.0]),  # capped at 1
    ([0.01, math.nan, 0.02], [0.02, math.nan, 0.02]),  # NaN is not a test: family of 2
    ([0.0625], [0.0625]),
    ([], []),
])
def test_holm_matches_hand_computed_values(p_values: list, expected: list) -> None:
    np.testing.assert_allclose(holm(p_values), expected)
