"""``nnUNetTrainerIMNet_Unlabelled``: IM-Net's MI term also learns from unlabelled images.

nnU-Net trains on fully labelled cases only. The MI term needs no labels, so here every step keeps nnU-Net's
labelled batch exactly as ``nnUNetTrainerIMNet`` has it (Dice+CE and the MI term) and adds unlabelled patches that
pass the encoder and enter the MI term only. The unlabelled images are prepared once with the dataset's own plans
(``nnunetv2-imnet prepare-unlabelled``); their labels, if any exist, are never read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunetv2_imnet.mi.head import MIOutput
from nnunetv2_imnet.training.checkpoint import peek_checkpoint_entry
from nnunetv2_imnet.training.imnet_trainer import nnUNetTrainerIMNet
from nnunetv2_imnet.training.unlabelled_loader import UnlabelledDataLoader, UnlabelledDataset, rank_batch_size
from nnunetv2_imnet.unlabelled import MANIFEST, SPLIT_KEY, Manifest, unlabelled_folder

CHECKPOINT_KEY = "imnet_unlabelled"
CHECKPOINT_FORMAT = 1
#: unlabelled patches per step over all DDP ranks, for a run; default: the labelled batch size
BATCH_SIZE_VARIABLE = "NNUNETV2_IMNET_UNLABELLED_BATCH_SIZE"


class nnUNetTrainerIMNet_Unlabelled(nnUNetTrainerIMNet):
    """IMNet whose MI term also sees unlabelled images (prepare them with `nnunetv2-imnet prepare-unlabelled`)."""

    #: unlabelled patches per step over all DDP ranks; None: as many as the labelled batch (also over all ranks)
    unlabelled_batch_size: ClassVar[Optional[int]] = None
    #: seed of the unlabelled stream (which cases, where to crop, augmentation); nnU-Net's own sampling is untouched
    unlabelled_seed: ClassVar[int] = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.unlabelled_manifest: Optional[Manifest] = None
        self.unlabelled_cases: List[str] = []
        self.dataloader_unlabelled = None
        #: the unlabelled patches per step asked for (environment or class attribute); None: the labelled batch's
        self.requested_unlabelled_batch_size = _batch_size_from_environment(type(self).unlabelled_batch_size)
        #: unlabelled batches this rank has taken, over every attempt of the run (saved in the checkpoint)
        self.unlabelled_batches_drawn = 0
        self._restored_unlabelled: Optional[Dict[str, Any]] = None
        self._validation_keys: List[str] = []

    @property
    def unlabelled_folder(self) -> Path:
        return unlabelled_folder(Path(self.preprocessed_dataset_folder_base),
                                 self.configuration_manager.data_identifier)

    def initialize(self) -> None:
        """Check the prepared unlabelled images before anything is built, then initialise as IMNet does."""
        if not self.was_initialized:
            self.unlabelled_manifest = self._checked_manifest()
        super().initialize()

    def _checked_manifest(self) -> Manifest:
        if self.is_cascaded:
            raise ValueError(f"{type(self).__name__} cannot train a cascade stage ({self.configuration_name}): its "
                             f"input includes the previous stage's segmentation, which unlabelled images lack.")
        folder = self.unlabelled_folder
        command = (f"nnunetv2-imnet prepare-unlabelled -d {self.plans_manager.dataset_name} -c "
                   f"{self.configuration_name} -p {self.plans_manager.plans_name} -i IMAGES_FOLDER")
        if not (folder / MANIFEST).is_file():
            raise FileNotFoundError(f"{type(self).__name__} found no prepared unlabelled images in {folder}. Prepare "
                                    f"them with: {command}")
        manifest = Manifest.read(folder)
        prepare = f"Prepare them again for these plans: {command}"
        expected = {"plans_identifier": self.plans_manager.plans_name, "configuration": self.configuration_name,
                    "num_channels": self.num_image_channels,
                    "spacing": [float(s) for s in self.configuration_manager.spacing]}
        wrong = {key: (getattr(manifest, key), value) for key, value in expected.items()
                 if getattr(manifest, key) != value}
        if wrong:
            described = ", ".join(f"{key} {theirs!r} (this training: {mine!r})" for key, (theirs, mine) in wrong.items())
            raise ValueError(f"The unlabelled images in {folder} were prepared with {described}. {prepare}.")
        if not manifest.cases:
            raise ValueError(f"{folder} holds no prepared unlabelled case. {prepare}.")
        return manifest

    # ----------------------------------------------------------------------------------------------- data
    def do_split(self) -> Tuple[List[str], List[str]]:
        training_keys, validation_keys = super().do_split()
        self._validation_keys = [str(key) for key in validation_keys]
        return training_keys, validation_keys

    def get_dataloaders(self):
        """nnU-Net's loaders as they are, then the unlabelled one beside them."""
        loaders = super().get_dataloaders()
        self.unlabelled_cases = self._select_cases()
        self.dataloader_unlabelled = self._unlabelled_augmenter(self.unlabelled_cases)
        self.print_to_log_file(
            f"IMNet: {len(self.unlabelled_cases)} unlabelled cases from {self.unlabelled_folder}; "
            f"{self.global_unlabelled_batch_size()} unlabelled patches per step over all ranks; the unlabelled stream "
            f"starts at its batch {self.unlabelled_batches_drawn}")
        return loaders

    def _select_cases(self) -> List[str]:
        """The fold's ``"unlabelled"`` list in splits_final.json if it has one, else every prepared case; never a
        case of the fold's validation set."""
        cases = list(self.unlabelled_manifest.cases)
        splits_file = Path(self.preprocessed_dataset_folder_base) / "splits_final.json"
        if self.fold != "all" and splits_file.is_file():
            splits = json.loads(splits_file.read_text())
            if self.fold < len(splits) and SPLIT_KEY in splits[self.fold]:
                listed = list(splits[self.fold][SPLIT_KEY])
                missing = sorted(set(listed) - set(cases))
                if missing:
                    raise FileNotFoundError(
                        f"Fold {self.fold} of {splits_file} lists {len(missing)} unlabelled case(s) that are not "
                        f"prepared in {self.unlabelled_folder} (e.g. {missing[:3]}). Prepare them with nnunetv2-imnet "
                        f"prepare-unlabelled, or remove them from the fold's {SPLIT_KEY!r} list.")
                cases = listed
        leaked = sorted(set(cases) & set(self._validation_keys))
        if leaked:
            raise ValueError(
                f"{len(leaked)} unlabelled case(s) are validation cases of fold {self.fold} (e.g. {leaked[:3]}): the "
                f"MI term would train on the images it is validated on. List the fold's unlabelled cases under "
                f"{SPLIT_KEY!r} in its splits_final.json entry, or prepare only images outside the validation set.")
        if not cases:
            raise ValueError(f"Fold {self.fold} has no unlabelled case to train with (its {SPLIT_KEY!r} list in "
                             f"splits_final.json is empty). Use nnUNetTrainerIMNet for a run without unlabelled images.")
        if self._restored_unlabelled is not None and self._restored_unlabelled["cases"] != sorted(cases):
            raise ValueError(
                f"The checkpoint was trained with {len(self._restored_unlabelled['cases'])} unlabelled cases, this "
                f"run would use {len(cases)} others: continuing would change the experiment. Restore the unlabelled "
                f"images it was trained with, or start a new run with -pretrained_weights.")
        return sorted(cases)

    def global_unlabelled_batch_size(self) -> int:
        """Unlabelled patches per step over all DDP ranks."""
        return self.requested_unlabelled_batch_size or self.configuration_manager.batch_size

    def _unlabelled_augmenter(self, cases: List[str]):
        """nnU-Net's training augmentation without the label-only steps (deep-supervision targets, regions), in worker
        processes as ``nnUNet_n_proc_DA`` says, as nnU-Net runs its labelled loader."""
        rank, world = (dist.get_rank(), dist.get_world_size()) if self.is_ddp else (0, 1)
        patch_size = self.configuration_manager.patch_size
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels, regions=None, ignore_label=None)
        loader = UnlabelledDataLoader(
            UnlabelledDataset(str(self.unlabelled_folder), cases),
            rank_batch_size(self.global_unlabelled_batch_size(), world, rank), initial_patch_size, patch_size,
            self.label_manager, transforms, seed=[type(self).unlabelled_seed, rank],
            first_batch=self.unlabelled_batches_drawn)
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            return SingleThreadedAugmenter(loader, None)
        return NonDetMultiThreadedAugmenter(loader, None, num_processes=processes, num_cached=max(6, processes // 2),
                                            seeds=None, pin_memory=self.device.type == "cuda", wait_time=0.002)

    # ----------------------------------------------------------------------------------------------- training
    def training_forward(self, data: torch.Tensor) -> Tuple[Any, MIOutput]:
        unlabelled = next(self.dataloader_unlabelled)["data"].to(self.device, non_blocking=True)
        self.unlabelled_batches_drawn += 1
        return self.network(data, unlabelled)

    def on_train_end(self) -> None:
        super().on_train_end()
        if isinstance(self.dataloader_unlabelled, NonDetMultiThreadedAugmenter):
            self.dataloader_unlabelled._finish()

    # ----------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_extras(self) -> Dict[str, Any]:
        return {**super().checkpoint_extras(), CHECKPOINT_KEY: {
            "format": CHECKPOINT_FORMAT,
            "cases": self.unlabelled_cases,
            "global_batch_size": self.global_unlabelled_batch_size(),
            "seed": type(self).unlabelled_seed,
            "batches_drawn": self.unlabelled_batches_drawn,
        }}

    def load_checkpoint(self, filename_or_checkpoint: str) -> None:
        """IMNet's checkpoint plus where the unlabelled stream stood; refuses a checkpoint without it."""
        state = peek_checkpoint_entry(filename_or_checkpoint, CHECKPOINT_KEY) \
            if isinstance(filename_or_checkpoint, str) else None
        if state is None:
            raise ValueError(
                f"{filename_or_checkpoint} holds no unlabelled-data state: it was not written by "
                f"{type(self).__name__}, which cannot continue it. To start from its network weights, use "
                f"nnUNetv2_train ... -tr {type(self).__name__} -pretrained_weights {filename_or_checkpoint}")
        super().load_checkpoint(filename_or_checkpoint)
        if state["global_batch_size"] != self.global_unlabelled_batch_size():
            raise ValueError(
                f"{filename_or_checkpoint} was trained with {state['global_batch_size']} unlabelled patches per step, "
                f"this run would use {self.global_unlabelled_batch_size()}; set {BATCH_SIZE_VARIABLE}="
                f"{state['global_batch_size']} to continue it.")
        self.unlabelled_batches_drawn = int(state["batches_drawn"])
        self._restored_unlabelled = state


class nnUNetTrainerIMNet_Unlabelled_lambda1(nnUNetTrainerIMNet_Unlabelled):
    """Unlabelled images at weight 1, ten times the default: the MI term as strong as the segmentation loss."""

    mi_options = {"weight": 1.0}


class nnUNetTrainerIMNet_Unlabelled_lambda0(nnUNetTrainerIMNet_Unlabelled):
    """Unlabelled images at weight 0: the critic trains on them, the network is not regularised (the control)."""

    mi_options = {"weight": 0.0}


def _batch_size_from_environment(default: Optional[int]) -> Optional[int]:
    value = os.environ.get(BATCH_SIZE_VARIABLE)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{BATCH_SIZE_VARIABLE}={value!r} must be a positive whole number of unlabelled patches per "
                         f"step (over all GPUs), or unset for as many as the labelled batch.")
    return int(value)
