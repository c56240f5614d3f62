"""``nnunetv2-imnet check``: find what would stop ``nnUNetv2_train`` before any training work, and say how to fix it.

nnU-Net reports some of these itself, some obscurely (a plans file that was never written is a bare
``FileNotFoundError``); this walks the same path nnU-Net takes (environment, dataset, plans, configuration,
preprocessed data, trainer, network and MI head) and stops at the first problem with an actionable message.
"""
from __future__ import annotations

import difflib
import json
import os
import tempfile
from pathlib import Path
from typing import List, Optional

from nnunetv2_imnet.naming import BASELINE_TRAINER, DEFAULT_PLANS, PLANNERS, lookup_dataset_folder


class PreflightError(RuntimeError):
    """What is wrong, with the value, and what to do."""


def _folder_for(root: Path, dataset: str) -> Optional[Path]:
    try:
        return lookup_dataset_folder(root, dataset)
    except ValueError as error:
        raise PreflightError(str(error)) from None


def _environment(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise PreflightError(f"{name} is not set. Export it to the folder nnU-Net should use, e.g. "
                             f"`export {name}=/data/{name}` (see nnU-Net's documentation/setting_up_paths.md).")
    return Path(value)


def check(dataset: str, configuration: str, trainer: str = "nnUNetTrainerIMNet",
          plans: str = DEFAULT_PLANS) -> List[str]:
    """Raise ``PreflightError`` for the first problem; otherwise return lines describing what would run."""
    preprocessed = _environment("nnUNet_preprocessed")
    folder = _folder_for(preprocessed, dataset)
    if folder is None:
        raw = os.environ.get("nnUNet_raw")
        in_raw = _folder_for(Path(raw), dataset) if raw else None
        if in_raw is not None:
            raise PreflightError(f"Dataset {dataset} ({in_raw.name}) is in nnUNet_raw but not preprocessed in "
                                 f"{preprocessed}. Run: nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration}")
        raise PreflightError(f"No dataset {dataset} in nnUNet_preprocessed ({preprocessed}) nor in nnUNet_raw "
                             f"({raw or 'not set'}). Check the id and the nnUNet_* variables.")
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file():
        available = sorted(p.stem for p in folder.glob("*Plans*.json"))
        planner = PLANNERS.get(plans)
        how = (f"Run: nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration} -pl {planner}" if planner
               else "Create it with the planner that writes it")
        raise PreflightError(f"Plans '{plans}' do not exist for {folder.name} (no {plans_file}). Available: "
                             f"{available}. {how}.")
    plans_dict = json.loads(plans_file.read_text())
    if configuration not in plans_dict["configurations"]:
        raise PreflightError(f"Configuration '{configuration}' is not in {plans_file.name}; available: "
                             f"{sorted(plans_dict['configurations'])}. (nnU-Net drops 3d_lowres when the images are "
                             f"small enough for 3d_fullres.)")
    trainer_class = _find_trainer(trainer)
    return [f"dataset {folder.name}, plans {plans}, configuration {configuration}",
            f"trainer {trainer} from {trainer_class.__module__}"] + _initialize(trainer_class, plans_dict, folder,
                                                                                configuration)


def _find_trainer(name: str):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunetv2_imnet.training.catalogue import ALL_TRAINERS
    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        close = difflib.get_close_matches(name, list(ALL_TRAINERS) + [BASELINE_TRAINER], n=3)
        raise PreflightError(f"nnU-Net cannot find the trainer '{name}'. "
                             + (f"Did you mean {close}? " if close else "")
                             + f"nnUNet_extTrainer={os.environ.get('nnUNet_extTrainer', '')!r}; `nnunetv2-imnet "
                               f"trainers` lists this package's trainers.") from None


def _initialize(trainer_class, plans: dict, folder: Path, configuration: str) -> List[str]:
    """Build the trainer exactly as nnUNetv2_train would (network, loss, MI head), writing nothing that lasts."""
    import torch
    dataset_json = json.loads((folder / "dataset.json").read_text())
    previous = os.environ.get("nnUNet_results")
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["nnUNet_results"] = scratch
        try:
            trainer = trainer_class(dict(plans, continue_training=False), configuration, 0, dataset_json,
                                    torch.device("cpu"))
            trainer.initialize()
        except (ValueError, TypeError, FileNotFoundError) as error:
            raise PreflightError(str(error)) from None
        finally:
            if previous is None:
                os.environ.pop("nnUNet_results", None)
            else:
                os.environ["nnUNet_results"] = previous
    manager = trainer.configuration_manager
    lines = [f"patch {manager.patch_size}, batch {trainer.batch_size}, {trainer.num_input_channels} input channel(s)"]
    mi = getattr(trainer, "mi", None)
    if mi is not None:
        lines.append(f"MI options {mi.as_dict()}")
    return lines
