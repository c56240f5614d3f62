"""Variational MI estimators over critic scores.

Every estimator takes ``scores (..., 1 + K)`` whose first entry along the last axis is the positive pair and the
other ``K`` are negatives, and returns ``(loss, mi)``: the loss to minimise and the MI lower-bound estimate in
nats (detached, for logging).

- ``jsd``: binary cross-entropy with logits, positives labelled 1 and negatives 0, each class averaged on its
  own. This equals ``-1/2`` of Deep InfoMax's Jensen-Shannon bound
  ``E_P[-softplus(-T)] - E_N[softplus(T)]``, which lower-bounds ``2 JS(P||N) - 2 log 2``. The reported estimate
  ``log 2 - loss`` is therefore a lower bound on the Jensen-Shannon MI in nats: 0 for independent pairs, at most
  ``log 2``. Bounded and stable; IM-Net's choice.
- ``infonce``: softmax cross-entropy picking the positive among ``1 + K`` pairs; ``log(1 + K) - loss`` lower-
  bounds the MI (van den Oord et al. 2018), so it saturates at ``log(1 + K)``.
- ``dv``: the Donsker-Varadhan bound ``E_P[T] - log E_N[exp T]`` (MINE, Belghazi et al. 2018), tight but with
  high variance and a biased mini-batch gradient. MINE's moving-average bias correction is not applied.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

Estimator = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
#: ``scores (M, 1 + K)`` -> ``(loss, mi, d loss / d scores)``, the same loss and MI as the estimator of that name
EstimatorWithGradient = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _split(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if scores.ndim < 1 or scores.shape[-1] < 2:
        raise ValueError(f"Scores must have shape (..., 1 + K) with K >= 1 negatives, got {tuple(scores.shape)}.")
    return scores[..., 0], scores[..., 1:]


def jensen_shannon_bound(scores: torch.Tensor) -> torch.Tensor:
    """Deep InfoMax's JSD MI bound ``E_P[-softplus(-T)] - E_N[softplus(T)]`` (in ``[-2 log 2, 0]``)."""
    positive, negative = _split(scores)
    return -F.softplus(-positive).mean() - F.softplus(negative).mean()


def jsd(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    positive, negative = _split(scores)
    loss = 0.5 * (F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive))
                  + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative)))
    return loss, (math.log(2.0) - loss).detach()


def infonce(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    positive, _ = _split(scores)
    loss = (torch.logsumexp(scores, dim=-1) - positive).mean()
    return loss, (math.log(scores.shape[-1]) - loss).detach()


def donsker_varadhan(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    positive, negative = _split(scores)
    log_mean_exp = torch.logsumexp(negative.reshape(-1), dim=0) - math.log(negative.numel())
    bound = positive.mean() - log_mean_exp
    return -bound, bound.detach()


ESTIMATORS: Dict[str, Estimator] = {"jsd": jsd, "infonce": infonce, "dv": donsker_varadhan}


# ----------------------------------------------------------------------------------------------- with gradients
# The MI head evaluates the estimator as one autograd node (see ``head.py``): each function below returns the
# estimator's loss and MI together with the loss's gradient with respect to the scores, in a few operators.
_JSDConstants = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_JSD_CONSTANTS: Dict[Tuple[int, int, torch.device], _JSDConstants] = {}


def _jsd_constants(anchors: int, pairs: int, device: torch.device) -> _JSDConstants:
    """Per column: the sign that makes both BCE terms a softplus, each class's averaging weight, and both; log 2.

    Kept per shape and device (not while torch.compile traces, which folds them into the graph anyway)."""
    key = (anchors, pairs, device)
    if key in _JSD_CONSTANTS and not torch.compiler.is_compiling():
        return _JSD_CONSTANTS[key]
    sign = torch.ones(pairs, device=device)
    sign[0] = -1.0
    weights = torch.full((pairs,), 0.5 / (anchors * (pairs - 1)), device=device)
    weights[0] = 0.5 / anchors
    constants = (sign, weights, sign * weights, torch.tensor(math.log(2.0), device=device))
    if not torch.compiler.is_compiling():
        _JSD_CONSTANTS[key] = constants
    return constants


def jsd_with_gradient(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``jsd``: BCE(p, 1) = softplus(-p) and BCE(n, 0) = softplus(n), so one softplus over sign-flipped scores."""
    sign, weights, signed_weights, log_2 = _jsd_constants(scores.shape[0], scores.shape[1], scores.device)
    flipped = scores * sign
    loss = (F.softplus(flipped) * weights).sum()
    return loss, log_2 - loss, torch.sigmoid(flipped).mul_(signed_weights)


def infonce_with_gradient(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, mi = infonce(scores)
    grad = torch.softmax(scores, dim=-1)
    grad[:, 0] -= 1.0
    return loss, mi, grad.div_(scores.shape[0])


def donsker_varadhan_with_gradient(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, mi = donsker_varadhan(scores)
    grad = torch.empty_like(scores)
    grad[:, 0] = -1.0 / scores.shape[0]
    grad[:, 1:] = torch.softmax(scores[:, 1:].reshape(-1), dim=0).view(scores.shape[0], -1)
    return loss, mi, grad


ESTIMATORS_WITH_GRADIENT: Dict[str, EstimatorWithGradient] = {
    "jsd": jsd_with_gradient, "infonce": infonce_with_gradient, "dv": donsker_varadhan_with_gradient}
