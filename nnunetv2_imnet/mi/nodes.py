"""The MI head's entry and exit as single autograd nodes with hand-written backwards.

The head runs every training step on a small bottleneck, where each dispatched operator costs more than its
arithmetic (issue 8); autograd's generic graph for the same expressions has several times as many nodes.
"""
from __future__ import annotations

import math

import torch

from nnunetv2_imnet.mi.estimators import ESTIMATORS_WITH_GRADIENT


class LocationMajor(torch.autograd.Function):
    """Features ``(B, C, *S)`` in, contiguous fp32 location-major features ``(B, N, C)`` out; backward multiplies
    by ``weight`` and zeroes non-finite entries.

    Sits where the bottleneck enters the MI head: it is the only path from the MI loss into the segmentation
    network, so the network receives ``weight`` times the MI gradient and never a NaN or Inf from it. One node
    for the cast, the reshaping and the guard keeps the per-step operator count down.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.shape, ctx.dtype = features.shape, features.dtype
        location_major = features.flatten(2).transpose(1, 2)
        # one copy, the cast included
        return location_major.new_empty(location_major.shape, dtype=torch.float32).copy_(location_major)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad = grad.transpose(1, 2).reshape(ctx.shape) * weight
        grad = grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        return (grad if grad.dtype == ctx.dtype else grad.to(ctx.dtype)), None


class Estimate(torch.autograd.Function):
    """Scores in; the MI loss (0 where it is not finite), the estimate, finiteness, the largest |score| and those
    four as one fp32 vector (for a single device-to-host copy per step) out.

    One autograd node: the loss's gradient with respect to the scores comes from ``ESTIMATORS_WITH_GRADIENT``,
    computed with the loss. A step whose loss is not finite passes no gradient into the network or the head's
    parameters, as before this node existed: its score gradient is NaN throughout, which the exits zero.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, estimator: str, temperature: float):
        ctx.set_materialize_grads(False)
        scaled = scores if temperature == 1.0 else scores / temperature
        loss, estimate, grad = ESTIMATORS_WITH_GRADIENT[estimator](scaled.reshape(-1, scaled.shape[-1]))
        # 0 where the loss is finite, NaN where not: exp() of it keeps the gradient or floods it with NaN, which
        # the exits into the network and the parameters zero, so a non-finite step passes no gradient at all
        nonfinite_marker = loss - loss
        finite = nonfinite_marker == nonfinite_marker  # torch.isfinite(loss) in 2 operators instead of 9
        grad = grad.mul_(nonfinite_marker.exp())
        ctx.save_for_backward((grad if temperature == 1.0 else grad.div_(temperature)).view(scores.shape))
        max_abs_score = torch.linalg.vector_norm(scaled, math.inf)
        loss = loss.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        logged = torch.stack((loss, estimate, finite.float(), max_abs_score))
        ctx.mark_non_differentiable(estimate, finite, max_abs_score, logged)
        return loss, estimate, finite, max_abs_score, logged

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, *unused: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None, None


def fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.float()`` without the no-op operator call for a tensor that already is fp32."""
    return tensor if tensor.dtype == torch.float32 else tensor.float()
