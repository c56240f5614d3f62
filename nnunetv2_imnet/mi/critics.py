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


class BilinearCritic(nn.Module):
    """``score = f^T W g + b`` per location, as in Deep Graph Infomax's discriminator (IM-Net's default)."""

    def __init__(self, feature_channels: int, view_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(feature_channels, view_channels))
        self.bias = nn.Parameter(torch.zeros(()))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, features: torch.Tensor, views: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        projected = features @ self.weight  # (B, N, Cv): f^T W once per anchor, not once per pair
        return torch.einsum("bnc,bnkc->bnk", projected, gather_candidates(views, candidates)) + self.bias


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
