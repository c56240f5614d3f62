"""Input views: the network input brought down to the grid of the encoder bottleneck.

The MI critic compares, at every bottleneck location, the feature vector with what the input image holds
there. A view turns the image ``(B, C, *spatial)`` into ``(B, view_channels, *grid)``. Every view works for 2D
and 3D inputs alike.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INTERPOLATION_MODES = ("linear", "area")


def space_to_depth(image: torch.Tensor, factor: Sequence[int]) -> torch.Tensor:
    """Move every ``factor``-sized block of ``image`` into channels: ``(B, C, *S)`` -> ``(B, C*prod(f), *S/f)``."""
    batch, channels, *spatial = image.shape
    if len(factor) != len(spatial):
        raise ValueError(f"space_to_depth: factor {tuple(factor)} has {len(factor)} axes but the image has "
                         f"{len(spatial)} spatial axes (shape {tuple(image.shape)}).")
    if any(size % f for size, f in zip(spatial, factor)):
        raise ValueError(f"space_to_depth: image spatial size {tuple(spatial)} is not divisible by the block "
                         f"{tuple(factor)}. The patch size must be a multiple of the network's total stride.")
    grid = [size // f for size, f in zip(spatial, factor)]
    interleaved = [v for g, f in zip(grid, factor) for v in (g, f)]
    ndim = len(spatial)
    block_axes = [3 + 2 * i for i in range(ndim)]
    grid_axes = [2 + 2 * i for i in range(ndim)]
    blocks = image.reshape(batch, channels, *interleaved).permute(0, 1, *block_axes, *grid_axes)
    return blocks.reshape(batch, channels * math.prod(factor), *grid)


class InterpolateView(nn.Module):
    """The image resampled to the bottleneck grid (IM-Net's reading).

    ``mode="linear"`` is bi/trilinear interpolation as in the paper; ``"area"`` averages each block, which
    avoids aliasing when the bottleneck is many times coarser than the input.
    """

    def __init__(self, in_channels: int, mode: str = "linear") -> None:
        super().__init__()
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f"Unknown interpolation mode {mode!r}; use one of {INTERPOLATION_MODES}.")
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.mode = mode

    def forward(self, image: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        _check_image(image, self.in_channels, len(grid))
        if self.mode == "area":
            return F.adaptive_avg_pool2d(image, grid) if len(grid) == 2 else F.adaptive_avg_pool3d(image, grid)
        mode = "bilinear" if len(grid) == 2 else "trilinear"
        return F.interpolate(image, size=tuple(grid), mode=mode, align_corners=False)


class PatchView(nn.Module):
    """The whole input block under each bottleneck cell, flattened into channels (space-to-depth).

    Unlike interpolation nothing is averaged away, so the critic sees the fine texture that the bottleneck cell
    summarises. ``factor`` is the input-to-bottleneck stride per axis.
    """

    def __init__(self, in_channels: int, factor: Sequence[int]) -> None:
        super().__init__()
        if not factor or any(int(f) < 1 for f in factor):
            raise ValueError(f"PatchView needs a positive stride per spatial axis, got {tuple(factor)}.")
        self.in_channels = in_channels
        self.factor = tuple(int(f) for f in factor)
        self.out_channels = in_channels * math.prod(self.factor)

    def forward(self, image: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        _check_image(image, self.in_channels, len(grid))
        expected = tuple(g * f for g, f in zip(grid, self.factor))
        if tuple(image.shape[2:]) != expected:
            raise ValueError(f"PatchView: image spatial size {tuple(image.shape[2:])} is not the bottleneck grid "
                             f"{tuple(grid)} times the stride {self.factor} (= {expected}). Train with the patch "
                             f"size the MI head was built for, or use the 'interpolate' view.")
        return space_to_depth(image, self.factor)


class PointwiseEmbedding(nn.Module):
    """A small learned embedding applied per location (a 1x1 convolutional MLP) on top of a view."""

    def __init__(self, view: nn.Module, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"Embedding channels must be >= 1, got {channels}.")
        self.view = view
        self.in_channels = view.in_channels
        self.out_channels = channels
        self.mlp = nn.Sequential(nn.Linear(view.out_channels, channels), nn.LeakyReLU(0.01),
                                 nn.Linear(channels, channels))

    def forward(self, image: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        viewed = self.view(image, grid)
        return self.mlp(viewed.movedim(1, -1)).movedim(-1, 1)


def _check_image(image: torch.Tensor, channels: int, spatial_dims: int) -> None:
    if image.ndim != spatial_dims + 2 or image.shape[1] != channels:
        raise ValueError(f"Expected an image of shape (B, {channels}, <{spatial_dims} spatial axes>), got "
                         f"{tuple(image.shape)}. The MI head was built for {channels} input channel(s) and "
                         f"{spatial_dims}D inputs.")
