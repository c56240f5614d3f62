"""The MI head: bottleneck features and input image in, MI loss and estimate out."""
from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.mi.critics import BilinearCritic, ConcatCritic
from nnunetv2_imnet.mi.estimators import ESTIMATORS
from nnunetv2_imnet.mi.negatives import NegativeSampler
from nnunetv2_imnet.mi.nodes import Estimate, LocationMajor, fp32
from nnunetv2_imnet.mi.views import InterpolateView, PatchView, PointwiseEmbedding


class MIOutput(NamedTuple):
    """``loss`` is 0 where the raw loss was not finite (see ``finite``); the rest are detached diagnostics.
    ``logged`` holds the four values as one fp32 vector, so the trainer copies them to the host in one go."""

    loss: torch.Tensor
    estimate: torch.Tensor
    finite: torch.Tensor
    max_abs_score: torch.Tensor
    logged: torch.Tensor


def _zero_nonfinite(grad: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


class MIHead(nn.Module):
    """Estimates the MI between bottleneck features ``(B, Cf, *S)`` and the input image ``(B, Ci, *spatial)``.

    The computation runs in fp32 with autocast off: critic scores and their exponentials overflow fp16 long
    before they stop being informative.
    """

    def __init__(self, view: nn.Module, critic: nn.Module, estimator: str, sampler: NegativeSampler,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"Unknown estimator {estimator!r}; use one of {list(ESTIMATORS)}.")
        self.view = view
        self.critic = critic
        self.estimator_name = estimator
        self.estimator = ESTIMATORS[estimator]
        self.sampler = sampler
        self.temperature = temperature
        # lambda for the gradient into the network; a buffer so that changing it needs no recompilation
        self.register_buffer("gradient_weight", torch.ones(()), persistent=False)
        self._gradient_weight_value = 1.0
        self._compiled_estimate: Optional[Callable[[torch.Tensor, torch.Tensor], MIOutput]] = None
        self._guard_parameter_gradients()

    def _guard_parameter_gradients(self) -> None:
        """Zero NaN/Inf gradient entries of the head's own parameters before they are accumulated (and
        all-reduced under DDP): a step whose MI term is not finite must leave the critic as it was. Modules that
        zero them in their own backward (``guards_own_gradients``) need no hook."""
        for module in self.modules():
            if not getattr(module, "guards_own_gradients", False):
                for parameter in module.parameters(recurse=False):
                    parameter.register_hook(_zero_nonfinite)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_compiled_estimate": None}  # copies run eagerly until compiled again

    def __setstate__(self, state: dict) -> None:
        # copies (copy.deepcopy, pickling) get new parameter tensors, which carry no hooks
        super().__setstate__(state)
        self._guard_parameter_gradients()

    def set_gradient_weight(self, weight: float) -> None:
        """Set lambda; writes the buffer only when the value changes (most steps after the warm-up)."""
        if weight != self._gradient_weight_value:
            self.gradient_weight.fill_(weight)
            self._gradient_weight_value = weight

    def compile_alone(self, backend: Union[str, Callable] = "inductor") -> None:
        """Compile this head on its own, for when nnU-Net runs the network eagerly.

        Eagerly, every operator of the head is one dispatch (a kernel launch on a GPU), and nnU-Net's small
        steps are bound by dispatch, so they would cost wall time one for one (issue 8); compiled, the head is a
        handful of fused kernels. If compiling fails (no C++ compiler or Triton, say), the head warns once and
        runs eagerly, with the same results.
        """
        self._compiled_estimate = torch.compile(self._estimate, backend=backend, dynamic=False)

    @property
    def is_compiled_alone(self) -> bool:
        return self._compiled_estimate is not None

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> MIOutput:
        if features.ndim not in (4, 5) or image.ndim != features.ndim or image.shape[0] != features.shape[0]:
            raise ValueError(f"MIHead expects features (B, C, *S) and image (B, C_in, *spatial) with the same batch "
                             f"size and 2 or 3 spatial axes; got {tuple(features.shape)} and {tuple(image.shape)}.")
        if self._compiled_estimate is not None:
            try:
                return self._compiled_estimate(features, image)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                self._compiled_estimate = None
                cause = getattr(error, "inner_exception", None) or error
                warnings.warn(f"Compiling the MI head failed, so it runs eagerly (same results, more operators per "
                              f"step): {type(cause).__name__}: {cause}", RuntimeWarning, stacklevel=2)
        return self._estimate(features, image)

    def _estimate(self, features: torch.Tensor, image: torch.Tensor) -> MIOutput:
        with torch.autocast(device_type=features.device.type, enabled=False):
            grid = features.shape[2:]
            anchors = LocationMajor.apply(features, self.gradient_weight)  # (B, N, Cf), fp32
            views = self.view(fp32(image), grid)
            views = views.flatten(2).transpose(1, 2)  # (B, N, Cv)
            candidates = self.sampler(features.shape[0], math.prod(grid), features.device)
            scores = self.critic(anchors, views, candidates)
            return MIOutput(*Estimate.apply(scores, self.estimator_name, self.temperature))


def build_mi_head(config: MIConfig, feature_channels: int, image_channels: int,
                  stride: Sequence[int]) -> MIHead:
    """Build the head that ``config`` describes for a bottleneck of ``feature_channels`` at ``stride``."""
    config.validate()
    if config.view == "interpolate":
        view: nn.Module = InterpolateView(image_channels, config.interpolation)
    else:
        view = PatchView(image_channels, stride)
    if config.embedding_channels:
        view = PointwiseEmbedding(view, config.embedding_channels)
    if config.critic == "bilinear":
        critic: nn.Module = BilinearCritic(feature_channels, view.out_channels)
    else:
        critic = ConcatCritic(feature_channels, view.out_channels, config.critic_hidden_channels)
    sampler = NegativeSampler(config.batch_negatives, config.location_negatives)
    return MIHead(view, critic, config.estimator, sampler, config.temperature)


def warmup_weight(config: MIConfig, iteration: int, total_iterations: int) -> float:
    """lambda at ``iteration``: linear from 0 to ``config.weight`` over the first ``warmup_fraction``."""
    warmup_iterations = config.warmup_fraction * total_iterations
    if warmup_iterations <= 0:
        return config.weight
    return config.weight * min(1.0, iteration / warmup_iterations)
