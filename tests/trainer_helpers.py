"""Tiny but complete nnU-Net plans, dataset.json, trainers and batches for in-process trainer tests.

Nothing here needs preprocessed data: ``make_trainer`` leaves the one file nnU-Net needs to infer its dataset
class in ``$nnUNet_preprocessed/<dataset>/<data_identifier>``, and ``synthetic_batches`` builds batches as
nnU-Net's data loader does (per sample through nnU-Net's own validation transforms, which turn label maps into
region channels and downsample them for deep supervision), so no data loader is started.

The nnU-Net folders are read from ``os.environ`` when a trainer is created; tests point them at ``tmp_path``
(see ``nnunet_folders``).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_imnet.training.catalogue import ALL_TRAINERS

DATASET_NAME = "Dataset999_Tiny"
ARCHITECTURES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}
#: label sets by name; "regions" is BraTS-like (overlapping regions), "ignore" has an ignore label on top
LABEL_SETS: Dict[str, Dict[str, Any]] = {
    "plain": {"labels": {"background": 0, "left": 1, "right": 2}},
    "regions": {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]},
    "ignore": {"labels": {"background": 0, "left": 1, "right": 2, "ignore": 3}},
    "regions_ignore": {"labels": {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3},
                       "regions_class_order": [1, 2]},
}


def nnunet_folders(root: Union[str, Path]) -> Dict[str, str]:
    """The three nnU-Net folder variables under ``root`` (set them with ``monkeypatch.setenv``)."""
    return {name: str(Path(root) / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}


def tiny_plans(ndim: int = 3, patch_size: Optional[Sequence[int]] = None,
               strides: Optional[Sequence[Sequence[int]]] = None, features: Sequence[int] = (4, 8, 16),
               batch_size: int = 2, num_channels: int = 1, architecture: str = "PlainConvUNet",
               convs_per_stage: int = 1, labels: Union[str, Dict[str, Any]] = "plain", norm: str = "InstanceNorm",
               dataset_name: str = DATASET_NAME) -> Tuple[dict, dict, str]:
    """A tiny nnU-Net v2 plans dict, its dataset.json and the configuration name ("2d" or "3d_fullres").

    The structure is that of a real ``nnUNetPlans.json`` / ``nnUNetResEncUNet*Plans.json`` (one configuration).
    ``strides`` are per stage (the first usually all ones) and may be anisotropic; ``labels`` is a name from
    ``LABEL_SETS`` or a dict with ``labels`` (and ``regions_class_order`` for regions); ``norm`` is
    ``"InstanceNorm"`` (nnU-Net's default) or ``"BatchNorm"``.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    stages = len(features)
    strides = [list(s) for s in strides] if strides is not None else [[1] * ndim] + [[2] * ndim] * (stages - 1)
    if len(strides) != stages or any(len(s) != ndim for s in strides):
        raise ValueError(f"need {stages} strides of {ndim} axes, got {strides}")
    if patch_size is None:
        total = [1] * ndim
        for stride in strides:
            total = [t * s for t, s in zip(total, stride)]
        patch_size = [2 * t for t in total]  # a 2-cell bottleneck grid per axis
    patch_size = [int(p) for p in patch_size]
    configuration = "2d" if ndim == 2 else "3d_fullres"
    plans_name = "nnUNetPlans" if architecture == "PlainConvUNet" else "nnUNetResEncUNetMPlans"
    norm_modules = {"InstanceNorm": "instancenorm", "BatchNorm": "batchnorm"}
    if norm not in norm_modules:
        raise ValueError(f"norm must be one of {list(norm_modules)}, got {norm!r}")
    arch_kwargs: Dict[str, Any] = {
        "n_stages": stages,
        "features_per_stage": list(features),
        "conv_op": f"torch.nn.modules.conv.Conv{ndim}d",
        "kernel_sizes": [[3] * ndim for _ in range(stages)],
        "strides": strides,
    }
    if architecture == "PlainConvUNet":
        arch_kwargs["n_conv_per_stage"] = [convs_per_stage] * stages
    elif architecture == "ResidualEncoderUNet":
        arch_kwargs["n_blocks_per_stage"] = [convs_per_stage] * stages
    else:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}, got {architecture!r}")
    arch_kwargs.update({
        "n_conv_per_stage_decoder": [convs_per_stage] * (stages - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.{norm_modules[norm]}.{norm}{ndim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    })
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    plans = {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": [1.0] * 3,
        "original_median_shape_after_transp": [max(patch_size)] * 3,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {configuration: {
            "data_identifier": f"{plans_name}_{configuration}",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": batch_size,
            "patch_size": patch_size,
            "median_image_size_in_voxels": [float(p) for p in patch_size],
            "spacing": [1.0] * ndim,
            "normalization_schemes": ["ZScoreNormalization"] * num_channels,
            "use_mask_for_norm": [False] * num_channels,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resampling,
            "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
            "architecture": {
                "network_class_name": ARCHITECTURES[architecture],
                "arch_kwargs": arch_kwargs,
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": ndim == 2,
        }},
        "experiment_planner_used": "ExperimentPlanner" if architecture == "PlainConvUNet" else "nnUNetPlannerResEncM",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 4.0, "mean": 0.0, "median": 0.0, "min": -4.0, "percentile_00_5": -3.0,
                     "percentile_99_5": 3.0, "std": 1.0} for c in range(num_channels)},
    }
    label_set = copy.deepcopy(LABEL_SETS[labels] if isinstance(labels, str) else labels)
    dataset_json = {
        "name": dataset_name[len("Dataset000_"):],
        "channel_names": {str(c): f"modality{c}" for c in range(num_channels)},
        **label_set,
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    return plans, dataset_json, configuration


def make_trainer(name: Union[str, type], plans: dict, dataset_json: dict, configuration: str,
                 initialize: bool = True, before_initialize: Optional[Callable[[nnUNetTrainer], None]] = None,
                 fold: int = 0) -> nnUNetTrainer:
    """An nnU-Net trainer (a name from ``ALL_TRAINERS`` or a class) on the CPU, initialised unless told not to.

    Creates the placeholder file from which nnU-Net infers the (never used) dataset class. ``before_initialize``
    may change options (``trainer.mi``, ``enable_deep_supervision``) the way a trainer variant's ``__init__`` does.
    The nnU-Net folder variables must already be set.
    """
    data_identifier = PlansManager(copy.deepcopy(plans)).get_configuration(configuration).data_identifier
    folder = Path(os.environ["nnUNet_preprocessed"]) / plans["dataset_name"] / data_identifier
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placeholder.b2nd").touch()
    plans = copy.deepcopy(plans)
    plans["continue_training"] = False
    trainer_class = ALL_TRAINERS[name] if isinstance(name, str) else name
    trainer = trainer_class(plans, configuration, fold, copy.deepcopy(dataset_json), torch.device("cpu"))
    if before_initialize is not None:
        before_initialize(trainer)
    if initialize:
        trainer.initialize()
    return trainer


def synthetic_batches(trainer: nnUNetTrainer, count: int, seed: int = 0) -> List[dict]:
    """``count`` batches shaped as nnU-Net's training data loader delivers them to ``train_step``.

    Label maps (int16, with the ignore label where there is one) go per sample through nnU-Net's own
    validation transforms for this trainer: regions become one bool channel per foreground region (plus a last
    channel for the ignore label), and with deep supervision the target is a list, one downsampled copy per
    output. Images are standard normal.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = trainer.label_manager
    patch = [int(p) for p in trainer.configuration_manager.patch_size]
    values = torch.tensor(list(labels.all_labels) + ([labels.ignore_label] if labels.has_ignore_label else []),
                          dtype=torch.int16)
    transforms = trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales(), is_cascaded=False, foreground_labels=labels.foreground_labels,
        regions=labels.foreground_regions if labels.has_regions else None, ignore_label=labels.ignore_label)
    channels = determine_input_channels(trainer)
    batches = []
    for _ in range(count):
        images, targets = [], []
        for _ in range(trainer.configuration_manager.batch_size):
            image = torch.randn([channels] + patch, generator=generator)
            segmentation = values[torch.randint(0, len(values), [1] + patch, generator=generator)]
            sample = transforms(image=image, segmentation=segmentation)
            images.append(sample["image"])
            targets.append(sample["segmentation"])
        target = [torch.stack(level) for level in zip(*targets)] if isinstance(targets[0], list) \
            else torch.stack(targets)
        batches.append({"data": torch.stack(images), "target": target, "keys": []})
    return batches


def determine_input_channels(trainer: nnUNetTrainer) -> int:
    """The network's input channels (``trainer.num_input_channels`` is only set by ``initialize``)."""
    if trainer.num_input_channels is not None:
        return trainer.num_input_channels
    return len(trainer.dataset_json["channel_names"])


def run_epoch(trainer: nnUNetTrainer, batches: Sequence[dict]) -> List[dict]:
    """nnU-Net's training part of one epoch: ``on_train_epoch_start``, the steps, ``on_train_epoch_end``."""
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(batch) for batch in batches]
    trainer.on_train_epoch_end(outputs)
    return outputs


def run_full_epoch(trainer: nnUNetTrainer, batches: Sequence[dict]) -> None:
    """One epoch of nnU-Net's ``run_training`` without its data loaders: training on ``batches``, validation on
    the first, and ``on_epoch_end`` (logging, checkpoints, progress.png)."""
    trainer.on_epoch_start()
    run_epoch(trainer, batches)
    trainer.on_validation_epoch_start()
    trainer.on_validation_epoch_end([trainer.validation_step(batch) for batch in batches[:1]])
    trainer.on_epoch_end()
