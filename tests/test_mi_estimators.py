"""Known-value and behavioural tests of the MI estimators in ``nnunetv2_imnet.mi.estimators``."""
from __future__ import annotations

import math

import pytest
import torch

from nnunetv2_imnet.mi.critics import BilinearCritic
from nnunetv2_imnet.mi.estimators import (ESTIMATORS, _split, donsker_varadhan, infonce, jensen_shannon_bound,
                                          jsd)
from nnunetv2_imnet.mi.negatives import NegativeSampler

pytestmark = pytest.mark.usefixtures("single_thread")

LOG2 = math.log(2.0)




def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ------------------------------------------------------------------------------------------------ jsd vs bound
@pytest.mark.parametrize("shape", [(1, 2), (7, 2), (5, 9), (2, 3, 4), (2, 6, 5, 17)])
def test_jsd_loss_is_minus_half_the_jensen_shannon_bound(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    scores = 3.0 * torch.randn(*shape, generator=generator, dtype=torch.float64)
    loss, estimate = jsd(scores)
    bound = jensen_shannon_bound(scores)
    torch.testing.assert_close(loss, -0.5 * bound, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(estimate, LOG2 - loss, rtol=1e-12, atol=1e-12)
    # the bound lies in [-2 log 2, 0] only in expectation over a well-trained critic; the loss itself is >= 0
    assert loss.item() > 0


def test_jensen_shannon_bound_is_at_most_zero_and_approaches_it_for_a_perfect_critic():
    perfect = torch.tensor([[40.0, -40.0, -40.0]], dtype=torch.float64)
    assert abs(jensen_shannon_bound(perfect).item()) < 1e-12
    loss, estimate = jsd(perfect)
    assert loss.item() < 1e-12
    assert estimate.item() == pytest.approx(LOG2, abs=1e-12)


# ------------------------------------------------------------------------------------------------ known values
@pytest.mark.parametrize("num_negatives", [1, 2, 7, 16])
@pytest.mark.parametrize("leading", [(3,), (2, 5), (1, 4, 3)])
def test_all_zero_scores(num_negatives, leading):
    scores = torch.zeros(*leading, 1 + num_negatives)

    loss, estimate = jsd(scores)
    assert loss.item() == pytest.approx(LOG2, abs=1e-6)
    assert estimate.item() == pytest.approx(0.0, abs=1e-6)
    assert jensen_shannon_bound(scores).item() == pytest.approx(-2 * LOG2, abs=1e-6)

    loss, estimate = infonce(scores)
    assert loss.item() == pytest.approx(math.log(1 + num_negatives), abs=1e-6)
    assert estimate.item() == pytest.approx(0.0, abs=1e-6)

    loss, estimate = donsker_varadhan(scores)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert estimate.item() == pytest.approx(0.0, abs=1e-6)


def test_constant_scores_give_zero_estimate_for_shift_invariant_estimators():
    scores = torch.full((4, 6), 3.7, dtype=torch.float64)
    assert infonce(scores)[1].item() == pytest.approx(0.0, abs=1e-12)
    assert donsker_varadhan(scores)[1].item() == pytest.approx(0.0, abs=1e-12)
    # jsd is not shift invariant: a constant score c gives loss (softplus(-c) + softplus(c)) / 2
    expected = 0.5 * (softplus(-3.7) + softplus(3.7))
    assert jsd(scores)[0].item() == pytest.approx(expected, rel=1e-12)


def test_hand_computed_single_row():
    scores = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)

    expected_bound = -softplus(-2.0) - (softplus(-1.0) + softplus(0.5)) / 2
    assert jensen_shannon_bound(scores).item() == pytest.approx(expected_bound, rel=1e-12)

    loss, estimate = jsd(scores)
    expected_jsd = 0.5 * (softplus(-2.0) + (softplus(-1.0) + softplus(0.5)) / 2)
    assert loss.item() == pytest.approx(expected_jsd, rel=1e-12)
    assert estimate.item() == pytest.approx(LOG2 - expected_jsd, rel=1e-12)

    loss, estimate = infonce(scores)
    expected_nce = math.log(math.exp(2.0) + math.exp(-1.0) + math.exp(0.5)) - 2.0
    assert loss.item() == pytest.approx(expected_nce, rel=1e-12)
    assert estimate.item() == pytest.approx(math.log(3) - expected_nce, rel=1e-12)

    loss, estimate = donsker_varadhan(scores)
    expected_dv = 2.0 - math.log((math.exp(-1.0) + math.exp(0.5)) / 2)
    assert estimate.item() == pytest.approx(expected_dv, rel=1e-12)
    assert loss.item() == pytest.approx(-expected_dv, rel=1e-12)


def test_hand_computed_two_rows():
    """Positives and negatives are averaged over all rows; DV pools all negatives into one log-mean-exp."""
    scores = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]], dtype=torch.float64)

    loss, _ = jsd(scores)
    positive_term = (softplus(-2.0) + softplus(0.0)) / 2
    negative_term = (softplus(-1.0) + softplus(0.5) + softplus(1.0) + softplus(-2.0)) / 4
    assert loss.item() == pytest.approx(0.5 * (positive_term + negative_term), rel=1e-12)

    loss, estimate = infonce(scores)
    row0 = math.log(math.exp(2.0) + math.exp(-1.0) + math.exp(0.5)) - 2.0
    row1 = math.log(math.exp(0.0) + math.exp(1.0) + math.exp(-2.0)) - 0.0
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)
    assert estimate.item() == pytest.approx(math.log(3) - (row0 + row1) / 2, rel=1e-12)

    _, estimate = donsker_varadhan(scores)
    negatives = [-1.0, 0.5, 1.0, -2.0]
    expected = (2.0 + 0.0) / 2 - math.log(sum(math.exp(n) for n in negatives) / len(negatives))
    assert estimate.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimate_is_detached_and_loss_differentiable(name):
    scores = torch.randn(3, 4, 5, requires_grad=True)
    loss, estimate = ESTIMATORS[name](scores)
    assert loss.ndim == 0 and estimate.ndim == 0
    assert loss.requires_grad and not estimate.requires_grad
    loss.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_better_separated_scores_give_a_higher_estimate(name):
    weak = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    strong = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    assert ESTIMATORS[name](strong)[1] > ESTIMATORS[name](weak)[1] > 0


def test_estimator_registry():
    assert ESTIMATORS == {"jsd": jsd, "infonce": infonce, "dv": donsker_varadhan}


# ------------------------------------------------------------------------------------------------ _split errors
@pytest.mark.parametrize("shape", [(5, 1), (2, 3, 1), (1,), (0,)])
def test_split_rejects_scores_without_negatives(shape):
    scores = torch.zeros(shape)
    with pytest.raises(ValueError, match=r"K >= 1 negatives"):
        _split(scores)
    for estimator in (jsd, infonce, donsker_varadhan, jensen_shannon_bound):
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 1 \+ K\)"):
            estimator(scores)


def test_split_rejects_zero_dim_scores():
    with pytest.raises(ValueError, match=r"got \(\)"):
        _split(torch.tensor(1.0))


def test_split_returns_positive_and_negatives():
    scores = torch.arange(12.0).reshape(2, 2, 3)
    positive, negative = _split(scores)
    assert torch.equal(positive, scores[..., 0])
    assert torch.equal(negative, scores[..., 1:])


# ------------------------------------------------------------------------------------------------ trained critics
DIM = 4
NUM_NEGATIVES = 16
MAXIMUM = {"jsd": LOG2, "infonce": math.log(1 + NUM_NEGATIVES), "dv": None}


def _gaussian_pairs(generator, batch, locations, dim, noise, dependent):
    x = torch.randn(batch, locations, dim, generator=generator)
    if dependent:
        y = x + noise * torch.randn(batch, locations, dim, generator=generator)
    else:
        y = torch.randn(batch, locations, dim, generator=generator)
    return x, y


def _train_and_estimate(name, dim, noise, dependent, steps=300, seed=0):
    """Train a bilinear critic on fresh (B, N, C) samples each step; return the estimate on a large held-out set."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    critic = BilinearCritic(dim, dim)
    sampler = NegativeSampler(batch_negatives=0, location_negatives=NUM_NEGATIVES)
    optimizer = torch.optim.Adam(critic.parameters(), lr=0.05)
    estimator = ESTIMATORS[name]
    for _ in range(steps):
        x, y = _gaussian_pairs(generator, 4, 64, dim, noise, dependent)
        loss, _ = estimator(critic(x, y, sampler(4, 64, x.device, generator=generator)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, y = _gaussian_pairs(generator, 16, 256, dim, noise, dependent)
        _, estimate = estimator(critic(x, y, sampler(16, 256, x.device, generator=generator)))
    return estimate.item()


def _gaussian_mi(dim, noise):
    rho_squared = 1.0 / (1.0 + noise ** 2)  # corr(x, x + noise * eps) per axis
    return -0.5 * dim * math.log(1.0 - rho_squared)


@pytest.mark.parametrize("name", ["jsd", "infonce", "dv"])
def test_trained_critic_separates_dependent_from_independent_pairs(name):
    dependent = _train_and_estimate(name, DIM, noise=0.3, dependent=True)
    independent = _train_and_estimate(name, DIM, noise=0.3, dependent=False)
    true_mi = _gaussian_mi(DIM, 0.3)
    maximum = MAXIMUM[name]
    if maximum is not None:
        assert dependent > 0.3 * maximum, (name, dependent, maximum)
        assert dependent <= maximum + 1e-6
    else:
        assert dependent > 0.3, (name, dependent)
    assert abs(independent) < 0.05, (name, independent)
    if name in ("infonce", "dv"):  # lower bounds on the MI
        assert dependent < true_mi + 0.05, (name, dependent, true_mi)


@pytest.mark.parametrize("name", ["infonce", "dv"])
def test_trained_estimate_stays_below_a_small_true_mi(name):
    """With little MI (1 axis, SNR 1: 0.347 nats) the bound is nearly tight, so exceeding it would show."""
    true_mi = _gaussian_mi(1, 1.0)
    estimate = _train_and_estimate(name, 1, noise=1.0, dependent=True, steps=200)
    assert 0.1 < estimate < true_mi + 0.03, (name, estimate, true_mi)
