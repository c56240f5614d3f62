"""``nnUNetTrainerIMNet``: nnU-Net's Dice+CE plus IM-Net's mutual-information term.

Everything else (planning, preprocessing, augmentation, schedule, validation, inference) is nnU-Net's own.
"""
from __future__ import annotations

import functools
import os
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn

from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.mi.head import MIOutput, build_mi_head, warmup_weight
from nnunetv2_imnet.mi.nodes import fp32
from nnunetv2_imnet.training.checkpoint import peek_checkpoint_entry
from nnunetv2_imnet.training.clipping import clip_grad_norms_
from nnunetv2_imnet.training.measured import nnUNetTrainerMeasured
from nnunetv2_imnet.training.network import MIRegularisedNetwork, find_bottleneck

#: progress.png's MI panels, one unit per y-axis
MI_PANEL = {"nats": ("mi_estimate", "mi_loss"), "λ (MI weight)": ("mi_weight",)}
MI_HEALTH_PANEL = {"largest |critic score|": ("mi_max_abs_score",), "non-finite MI steps": ("mi_nonfinite_steps",)}
MI_KEYS = sum(MI_PANEL.values(), ())
MI_HEALTH_KEYS = sum(MI_HEALTH_PANEL.values(), ())
CHECKPOINT_KEY = "imnet"
CHECKPOINT_FORMAT = 1
SATURATION_WARNING = 30.0
#: "0" runs the MI head eagerly where nnU-Net runs the network eagerly (default "1": compile the head alone)
COMPILE_MI_HEAD_VARIABLE = "NNUNETV2_IMNET_COMPILE_MI_HEAD"
#: nnUNetTrainer.train_step's clip_grad_norm_ max norm (nnU-Net 2.8.1)
NNUNET_GRADIENT_CLIP = 12


class MITermDiverged(RuntimeError):
    """The MI term was non-finite for too many steps in a row."""


class nnUNetTrainerIMNet(nnUNetTrainerMeasured):
    """Adds ``lambda * MI loss`` between the encoder bottleneck and the input; options live in ``self.mi``."""

    #: MI options that differ from ``MIConfig``'s defaults; variants declare theirs here (see ``variants.py``)
    mi_options: ClassVar[Dict[str, Any]] = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi = MIConfig.from_dict(self.mi_options)
        self.logger.local_logger.add_panel("mutual information and MI loss", MI_PANEL)
        self.logger.local_logger.add_panel("MI critic health", MI_HEALTH_PANEL)
        self._consecutive_nonfinite = 0
        self._iteration_in_epoch = 0
        self._mi_restored_from: Optional[str] = None
        #: compile the MI head on its own where nnU-Net does not compile the network (CPU, nnUNet_compile=f): run
        #: eagerly, each of its operators is a dispatch, which nnU-Net's small GPU steps pay for 1:1 (issue 8)
        self.compile_mi_head = _environment_flag(COMPILE_MI_HEAD_VARIABLE, default=True)

    # ----------------------------------------------------------------------------------------------- set-up
    def initialize(self) -> None:
        """Validate the MI options, then let nnU-Net initialise with the MI head attached to its network.

        nnU-Net builds, compiles and DDP-wraps the network in one method. Routing its
        ``build_network_architecture`` call through ``_attach_mi_head`` for the duration puts the MI head inside
        the compiled, DDP-wrapped module without copying that method. ``build_network_architecture`` itself is
        untouched, so prediction builds the plain nnU-Net network.
        """
        if self.was_initialized:
            return super().initialize()  # nnU-Net's own error for a second call
        self.mi.validate()
        build_plain = self.build_network_architecture

        @functools.wraps(build_plain)
        def build_with_mi_head(*args: Any, **kwargs: Any) -> nn.Module:
            return self._attach_mi_head(build_plain(*args, **kwargs))

        self.build_network_architecture = build_with_mi_head
        try:
            super().initialize()
        finally:
            del self.build_network_architecture
        self._compile_mi_head_alone()
        self.logger.update_config({"imnet": self.mi.as_dict()})

    def _compile_mi_head_alone(self) -> None:
        if self.network_is_compiled:
            self.print_to_log_file("IMNet: the MI head is compiled with the network.")
        elif self.compile_mi_head and self.device.type in ("cuda", "cpu"):
            self.unwrapped_network().mi_head.compile_alone()
            self.print_to_log_file(f"IMNet: nnU-Net runs the network eagerly; the MI head is compiled on its own "
                                   f"(set {COMPILE_MI_HEAD_VARIABLE}=0 to run it eagerly too).")

    @property
    def num_image_channels(self) -> int:
        """Image modalities only; a cascade's extra one-hot channels of the previous stage are not the image."""
        return len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))

    def _attach_mi_head(self, network: nn.Module) -> MIRegularisedNetwork:
        patch_size = self.configuration_manager.patch_size
        bottleneck = find_bottleneck(network, self.num_input_channels, patch_size)
        head = build_mi_head(self.mi, bottleneck.channels, self.num_image_channels, bottleneck.stride)
        if head.sampler.num_negatives(self.batch_size, bottleneck.num_locations) == 0:
            raise ValueError(
                f"The MI term has no negative pairs: batch negatives need a batch size > 1 (batch size "
                f"{self.batch_size}, mi.batch_negatives={self.mi.batch_negatives}) and location negatives more than "
                f"one bottleneck location (grid {bottleneck.grid}: {bottleneck.num_locations} location(s), "
                f"mi.location_negatives={self.mi.location_negatives}). Use a larger batch or patch size, or a "
                f"positive count for the kind of negatives that this batch and patch size allow.")
        self.print_to_log_file(
            f"IMNet: bottleneck {bottleneck.channels} channels on a {bottleneck.grid} grid (stride "
            f"{bottleneck.stride}); MI head {sum(p.numel() for p in head.parameters())} parameters; "
            f"options {self.mi.as_dict()}")
        return MIRegularisedNetwork(network, head, self.num_image_channels)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self._mi_restored_from is None:
            self.print_to_log_file("IMNet: MI head freshly initialised (no IMNet checkpoint was loaded; "
                                   "-pretrained_weights, if given, apply to the segmentation network only).")
        else:
            self.print_to_log_file(f"IMNet: MI head and its optimizer state restored from {self._mi_restored_from}")

    # ----------------------------------------------------------------------------------------------- training
    def current_mi_weight(self) -> float:
        iteration = self.current_epoch * self.num_iterations_per_epoch + self._iteration_in_epoch
        return warmup_weight(self.mi, iteration, self.num_epochs * self.num_iterations_per_epoch)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._iteration_in_epoch = 0

    def train_step(self, batch: dict) -> dict:
        # follows nnUNetTrainer.train_step of nnU-Net 2.8.1 (guarded: nnunet_followed.py), plus the MI term
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        weight = self.current_mi_weight()
        self.unwrapped_network().mi_head.set_gradient_weight(weight)

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output, mi = self.training_forward(data)
            segmentation_loss = self.loss(output, target)
        # the critic trains on the full MI loss; the network receives `weight` times its gradient (see MIHead)
        self._backward_and_step(segmentation_loss + mi.loss)

        # one device-to-host copy per step, as nnU-Net's own train_step makes for its loss (no_grad: no detaches)
        with torch.no_grad():
            logged = torch.cat((fp32(segmentation_loss).view(1), mi.logged))
        seg, mi_loss, estimate, finite, max_abs = logged.cpu().numpy()
        self._iteration_in_epoch += 1
        self._track_nonfinite(bool(finite), float(max_abs))
        nan = float("nan")
        return {"loss": seg, "mi_loss": mi_loss if finite else nan, "mi_estimate": estimate if finite else nan,
                "mi_finite": finite, "mi_max_abs_score": max_abs, "mi_weight": weight}

    def training_forward(self, data: torch.Tensor) -> Tuple[Any, MIOutput]:
        """The segmentation output and the MI term of one training batch; subclasses add inputs to the MI term."""
        return self.network(data)

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        # nnUNetTrainer.train_step's backward and optimizer step as in nnU-Net 2.8.1, clipping split in two
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            self._clip_gradients()
            self.optimizer.step()

    def _clip_gradients(self) -> None:
        """nnU-Net's clipping (norm 12) over the segmentation network's own gradient, the λ-scaled MI gradient
        included, and the MI head's on its own: a large critic gradient never shrinks the network's update, so at
        λ = 0 the network steps exactly as nnU-Net's."""
        network = self.unwrapped_network()
        clip_grad_norms_([network.segmentation_network.parameters(), network.mi_head.parameters()],
                         NNUNET_GRADIENT_CLIP)

    def _track_nonfinite(self, finite: bool, max_abs_score: float) -> None:
        self._consecutive_nonfinite = 0 if finite else self._consecutive_nonfinite + 1
        if self._consecutive_nonfinite >= self.mi.max_consecutive_nonfinite:
            raise MITermDiverged(
                f"The MI term was NaN/Inf for {self._consecutive_nonfinite} training steps in a row (epoch "
                f"{self.current_epoch}, iteration {self._iteration_in_epoch}; largest |critic score| "
                f"{max_abs_score:.3g}). Those steps skipped the MI term, so the weights are intact, but the critic "
                f"has diverged. Try: estimator 'jsd' (bounded) instead of 'dv', a temperature > 1, a smaller MI "
                f"weight, or a lower learning rate; then continue with --c from the last checkpoint. "
                f"The limit is mi.max_consecutive_nonfinite={self.mi.max_consecutive_nonfinite}.")

    def on_train_epoch_end(self, train_outputs: List[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        per_step = {key: np.array(_gather([o[key] for o in train_outputs], self.is_ddp), dtype=float).ravel()
                    for key in ("mi_loss", "mi_estimate", "mi_finite", "mi_max_abs_score")}
        nonfinite = int((per_step["mi_finite"] == 0).sum())
        values = {
            "mi_estimate": _nanmean(per_step["mi_estimate"]),
            "mi_loss": _nanmean(per_step["mi_loss"]),
            "mi_weight": train_outputs[-1]["mi_weight"] if train_outputs else self.current_mi_weight(),
            "mi_max_abs_score": float(np.max(per_step["mi_max_abs_score"], initial=0.0)),
            "mi_nonfinite_steps": nonfinite,
        }
        for key, value in values.items():
            self.logger.log(key, value, self.current_epoch)
        self.print_to_log_file(
            f"MI estimate {values['mi_estimate']:.4f} nats, MI loss {values['mi_loss']:.4f}, weight "
            f"{values['mi_weight']:.4g}, max |critic score| {values['mi_max_abs_score']:.3g}, "
            f"non-finite MI steps {nonfinite}")
        if values["mi_max_abs_score"] > SATURATION_WARNING:
            self.print_to_log_file(
                f"WARNING: the MI critic is saturating (|score| up to {values['mi_max_abs_score']:.3g}); its "
                f"gradients vanish there. Consider a temperature > 1 or the 'jsd' estimator.")

    # ----------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_extras(self) -> Dict[str, Any]:
        return {CHECKPOINT_KEY: {
            "format": CHECKPOINT_FORMAT,
            "trainer_name": self.__class__.__name__,
            "config": self.mi.as_dict(),
            "mi_head": self.unwrapped_network().mi_head.state_dict(),
        }}

    def load_checkpoint(self, filename_or_checkpoint: str) -> None:
        """nnU-Net's ``load_checkpoint`` plus the MI head. Refuses checkpoints without MI state (a baseline's: use
        ``-pretrained_weights`` to start from those weights) and MI state written with other MI options."""
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError(f"{type(self).__name__}.load_checkpoint takes a checkpoint file name, got "
                            f"{type(filename_or_checkpoint).__name__}.")
        if not self.was_initialized:
            self.initialize()
        state = peek_checkpoint_entry(filename_or_checkpoint, CHECKPOINT_KEY)
        if state is None:
            raise ValueError(
                f"{filename_or_checkpoint} holds no MI head state: it was not written by an IMNet trainer, so "
                f"{type(self).__name__} cannot continue it. To start an IMNet run from its network weights, use "
                f"nnUNetv2_train ... -tr {type(self).__name__} -pretrained_weights {filename_or_checkpoint}")
        self._check_compatible(state, filename_or_checkpoint)
        super().load_checkpoint(filename_or_checkpoint)
        self.unwrapped_network().mi_head.load_state_dict(state["mi_head"])
        self._mi_restored_from = filename_or_checkpoint

    def _check_compatible(self, state: Dict[str, Any], filename: str) -> None:
        mine = self.mi.as_dict()
        theirs = state.get("config", {})
        differences = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if differences:
            described = ", ".join(f"{k}: checkpoint {a!r} vs this trainer {b!r}" for k, (a, b) in differences.items())
            raise ValueError(
                f"{filename} was written by {state.get('trainer_name')} with different MI options ({described}); "
                f"{type(self).__name__} cannot continue it. Continue with -tr {state.get('trainer_name')}, or "
                f"start a new run with -pretrained_weights {filename} to take over the segmentation network only.")


def _environment_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "t", "yes"):
        return True
    if value.lower() in ("0", "false", "f", "no"):
        return False
    raise ValueError(f"{name}={value!r} is not a yes/no value; set it to 1 or 0.")


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _gather(values: List[float], is_ddp: bool) -> List[float]:
    """All ranks' per-step values (nnU-Net averages its train loss over ranks the same way)."""
    if not is_ddp:
        return values
    gathered: List[Optional[List[float]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, values)
    return [v for rank_values in gathered for v in rank_values]
