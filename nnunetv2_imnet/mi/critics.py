"""Critics score (feature, view) pairs; a high score says "these come from the same image and place".

Both critics take location-major tensors, ``features (B, N, Cf)`` and ``views (B, N, Cv)`` with ``N`` the number
of bottleneck locations, plus ``candidates (B, N, K)``: for each anchor feature, the flat indices (into the
``B*N`` view vectors) of the views to score it against. They return scores ``(B, N, K)``. Scoring only the
sampled candidates keeps the cost at ``O(B*N*K)`` instead of the ``O((B*N)^2)`` of a full score matrix.
"""
from __future__ import annotations

import torch
from torch import nn


def gather_candidates(views: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``views (B, N, C)`` and flat indices ``candidates (B, N, K)`` -> ``(B, N, K, C)``."""
    return views.reshape(-1, views.shape[-1])[candidates]


def _finite(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` (a fresh tensor) with NaN/Inf entries zeroed in place."""
    return grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


class _BilinearScores(torch.autograd.Function):
    """``f^T W g + b`` for every candidate pair as one autograd node with a hand-written backward.

    The MI head runs every training step on a small bottleneck, where each dispatched operator costs more than
    its arithmetic; autograd's generic graph for the same expression has about five times as many nodes. The
    gradients of ``W`` and ``b`` leave with NaN/Inf entries zeroed (see ``MIHead``).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, views: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        batch, locations, pairs = candidates.shape
        anchors = features.reshape(batch * locations, -1)  # free for the contiguous features MIHead passes
        projected = torch.mm(anchors, weight)  # f^T W once per anchor, not once per pair: (B*N, Cv)
        gathered = gather_candidates(views, candidates).view(batch * locations, pairs, -1)
        scores = torch.bmm(gathered, projected.unsqueeze(-1)).view(batch, locations, pairs)
        ctx.save_for_backward(anchors, weight, gathered, projected, candidates)
        return scores.add_(bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        anchors, weight, gathered, projected, candidates = ctx.saved_tensors
        batch, locations, pairs = grad.shape
        view_channels = weight.shape[1]
        grad_projected = torch.bmm(grad.reshape(batch * locations, 1, pairs), gathered).view(-1, view_channels)
        grad_features = grad_views = None
        if ctx.needs_input_grad[0]:
            grad_features = torch.mm(grad_projected, weight.t()).view(batch, locations, -1)
        if ctx.needs_input_grad[1]:
            pair_grads = grad.unsqueeze(-1) * projected.view(batch, locations, 1, view_channels)  # (B, N, K, Cv)
            grad_views = projected.new_zeros(batch * locations, view_channels).index_add_(
                0, candidates.reshape(-1), pair_grads.view(-1, view_channels)).view(batch, locations, view_channels)
        grad_weight = _finite(torch.mm(anchors.t(), grad_projected))
        return grad_features, grad_views, grad_weight, _finite(grad.sum()), None


class BilinearCritic(nn.Module):
    """``score = f^T W g + b`` per location, as in Deep Graph Infomax's discriminator (IM-Net's default).

    ``guards_own_gradients``: the gradients of ``weight`` and ``bias`` arrive with NaN/Inf entries zeroed, so
    ``MIHead`` needs no hooks on them.
    """

    guards_own_gradients = True

    def __init__(self, feature_channels: int, view_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(feature_channels, view_channels))
        self.bias = nn.Parameter(torch.zeros(()))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, features: torch.Tensor, views: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return _BilinearScores.apply(features, views, self.weight, self.bias, candidates)


class ConcatCritic(nn.Module):
    """A 1x1 convolutional MLP over the concatenation ``[f, g]`` (Deep InfoMax's "concat" critic).

    The first layer is split into a feature part and a view part, which is the same linear map as on the
    concatenation but lets each part be computed once per location instead of once per pair.
    """

    def __init__(self, feature_channels: int, view_channels: int, hidden_channels: int = 128) -> None:
        super().__init__()
        if hidden_channels < 1:
            raise ValueError(f"ConcatCritic hidden_channels must be >= 1, got {hidden_channels}.")
        self.feature_in = nn.Linear(feature_channels, hidden_channels)
        self.view_in = nn.Linear(view_channels, hidden_channels, bias=False)
        self.activation = nn.LeakyReLU(0.01)
        self.out = nn.Linear(hidden_channels, 1)

    def forward(self, features: torch.Tensor, views: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        hidden = self.feature_in(features).unsqueeze(2) + gather_candidates(self.view_in(views), candidates)
        return self.out(self.activation(hidden)).squeeze(-1)
