"""The MI term's options in one place, with their defaults, the reasons for them, and validation."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict

from nnunetv2_imnet.mi.estimators import ESTIMATORS
from nnunetv2_imnet.mi.views import INTERPOLATION_MODES

VIEWS = ("interpolate", "patches")
CRITICS = ("bilinear", "concat")


@dataclass
class MIConfig:
    """Options of the IM-Net MI term. Trainer variants change these after ``super().__init__``.

    Attributes:
        view: how the input reaches the bottleneck grid: ``"interpolate"`` (IM-Net) or ``"patches"``
            (space-to-depth of the input block under each bottleneck cell).
        interpolation: ``"linear"`` (bi/trilinear, IM-Net) or ``"area"`` (block average); ``interpolate`` only.
        embedding_channels: width of a learned 2-layer per-location embedding after the view; 0 = none (IM-Net
            compares features with the resampled image itself). Needed for ``patches`` on large strides, where
            the raw block has thousands of channels.
        critic: ``"bilinear"`` (f^T W g, IM-Net / DGI) or ``"concat"`` (1x1 MLP over [f, g]).
        critic_hidden_channels: hidden width of the ``concat`` critic.
        estimator: ``"jsd"`` (BCE with logits, IM-Net), ``"infonce"`` or ``"dv"`` (Donsker-Varadhan / MINE).
        temperature: critic scores are divided by this before the estimator; > 1 softens saturated critics.
        batch_negatives: negatives per anchor from other images at the same location (needs batch size > 1).
        location_negatives: negatives per anchor from other locations of the same image (works at batch 1).
        weight: lambda, the weight of the MI gradient that reaches the segmentation network. The critic is
            always trained at full strength, so the MI estimate stays meaningful at any weight, also 0.
        warmup_fraction: lambda rises linearly from 0 over this fraction of all training iterations, so the
            critic is calibrated and the segmentation features have formed before the MI gradient is applied.
        max_consecutive_nonfinite: training stops after this many steps in a row with a non-finite MI term.
    """

    view: str = "interpolate"
    interpolation: str = "linear"
    embedding_channels: int = 0
    critic: str = "bilinear"
    critic_hidden_channels: int = 128
    estimator: str = "jsd"
    temperature: float = 1.0
    batch_negatives: int = 8
    location_negatives: int = 8
    weight: float = 0.1
    warmup_fraction: float = 0.05
    max_consecutive_nonfinite: int = 20

    def validate(self) -> "MIConfig":
        """Raise ``ValueError`` naming the bad option, its value and what to use instead."""
        _choice("view", self.view, VIEWS)
        _choice("interpolation", self.interpolation, INTERPOLATION_MODES)
        _choice("critic", self.critic, CRITICS)
        _choice("estimator", self.estimator, tuple(ESTIMATORS))
        _integer("embedding_channels", self.embedding_channels, low=0)
        _integer("critic_hidden_channels", self.critic_hidden_channels, low=1)
        _integer("batch_negatives", self.batch_negatives, low=0)
        _integer("location_negatives", self.location_negatives, low=0)
        _integer("max_consecutive_nonfinite", self.max_consecutive_nonfinite, low=1)
        if self.batch_negatives + self.location_negatives == 0:
            raise ValueError("MI option batch_negatives and location_negatives are both 0: the estimator needs "
                             "negative pairs. Set at least one of them to a positive count (default 8 each).")
        _number("weight", self.weight, low=0.0, high=100.0, low_inclusive=True,
                hint="0 trains and logs the critic without regularising the network")
        _number("temperature", self.temperature, low=0.0, high=100.0, low_inclusive=False,
                hint="1 leaves the learned critic scores unchanged")
        _number("warmup_fraction", self.warmup_fraction, low=0.0, high=1.0, low_inclusive=True,
                hint="0 applies the full weight from the first step")
        return self

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "MIConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown MI option(s) {unknown}; known options are {sorted(known)}.")
        return cls(**values)


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown MI option {name}={value!r}. Use one of {list(allowed)}.")


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"MI option {name}={value!r} must be an integer >= {low}.")


def _number(name: str, value: Any, low: float, high: float, low_inclusive: bool, hint: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low) and value <= high
    if not ok:
        bracket = "[" if low_inclusive else "("
        raise ValueError(f"MI option {name}={value!r} is out of range {bracket}{low}, {high}]; {hint}.")
