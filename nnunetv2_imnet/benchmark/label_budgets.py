"""Label budgets: N labelled training cases per fold as a derived nnU-Net dataset that differs from its source only in
its ``splits_final.json``, so every arm still trains with plain ``nnUNetv2_train``.

The split is nnU-Net's own 5-fold split of the source (its ``splits_final.json``, or the one nnU-Net would write at
first training). Per fold one permutation of the fold's sorted training cases is drawn from
``numpy.random.default_rng([label_seed, fold])`` and each budget takes its first N cases: budgets are nested (the 1 is
among the 2) and the same for every arm. The fold's other training cases are listed as ``"unlabelled"`` (their labels
are never read by an arm that uses them); validation is the fold's full validation set. A budget dataset links to
the source's raw files and preprocessed data instead of copying them: same cases, same plans, no second preprocessing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from nnunetv2_imnet.naming import SPLITS_FILE, channel_files

#: nnU-Net's split of a dataset: a list of fold entries with "train" and "val" case ids
Splits = List[Dict[str, object]]
#: the seed and number of folds of nnU-Net's default split (nnUNetTrainer.do_split)
NNUNET_SPLIT_SEED = 12345
NNUNET_FOLDS = 5


def case_identifiers(raw_dataset: Path) -> List[str]:
    """The training case ids of a raw dataset, sorted, as nnU-Net's preprocessing names them."""
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder
    dataset_json = json.loads((Path(raw_dataset) / "dataset.json").read_text())
    if "dataset" in dataset_json:  # files listed in dataset.json instead of the imagesTr layout
        return sorted(dataset_json["dataset"])
    found = get_identifiers_from_splitted_dataset_folder(str(Path(raw_dataset) / "imagesTr"),
                                                         dataset_json["file_ending"])
    return sorted(str(case) for case in found)


def source_splits(raw_dataset: Path, preprocessed_dataset: Path, write: bool) -> Splits:
    """The source's ``splits_final.json``; if absent, the split nnU-Net writes at first training (its seed over the
    sorted case ids), saved there when ``write`` (so nnU-Net uses the same)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    path = Path(preprocessed_dataset) / SPLITS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    splits = generate_crossval_split(case_identifiers(raw_dataset), seed=NNUNET_SPLIT_SEED, n_splits=NNUNET_FOLDS)
    splits = [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]} for s in splits]
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(splits, indent=4))
    return splits


def check_budgets(splits: Splits, labeled_cases: Sequence[int], dataset: str) -> None:
    """Every budget must leave at least one unlabelled training case in every fold of ``splits``."""
    smallest = min(len(entry["train"]) for entry in splits)
    too_large = [n for n in labeled_cases if n >= smallest]
    if too_large:
        raise ValueError(f"Label budget(s) {too_large} of {dataset} are not below every fold's number of training "
                         f"cases (the smallest fold has {smallest}); use budgets from 1 to {smallest - 1} and the "
                         f"full-label run for all labels.")


def draw_labelled(train_cases: Sequence[str], labeled_cases: int, seed: int, fold: int) -> List[str]:
    """The ``labeled_cases`` labelled cases of a fold, sorted: the first of one permutation of the sorted training
    cases drawn with ``default_rng([seed, fold])``, so a larger budget holds every case of a smaller one."""
    order = np.random.default_rng([seed, fold]).permutation(sorted(train_cases))
    return sorted(str(case) for case in order[:labeled_cases])


def budget_splits(splits: Splits, labeled_cases: int, seed: int) -> Splits:
    """The budget dataset's ``splits_final.json``: per fold the drawn labelled cases to train on, the fold's other
    training cases as ``"unlabelled"``, its validation cases unchanged (nnU-Net ignores the extra keys)."""
    entries = []
    for fold, entry in enumerate(splits):
        labelled = draw_labelled(entry["train"], labeled_cases, seed, fold)
        entries.append({"train": labelled, "val": list(entry["val"]),
                        "unlabelled": sorted(set(entry["train"]) - set(labelled)), "cv_fold": fold,
                        "labeled_cases": labeled_cases, "label_seed": seed})
    return entries


# ---------------------------------------------------------------------------------------------- derived datasets
def link_raw_dataset(source: Path, target: Path) -> None:
    """``target`` as a raw dataset of the same files: a copy of dataset.json and links to the image and label
    folders (a labelled test split included)."""
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "dataset.json").is_file():
        (target / "dataset.json").write_text((source / "dataset.json").read_text())
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        if (source / folder).is_dir():
            symlink(target / folder, (source / folder).resolve())


def copy_plans(source: Path, target: Path, plans: str) -> None:
    """The source's plans in ``target`` (a preprocessed dataset folder) for the target's dataset, as
    ``nnUNetv2_move_plans_between_datasets`` writes them with the same plans identifier: only ``dataset_name``
    changes (same images, so the same reader and data identifiers)."""
    values = json.loads((source / f"{plans}.json").read_text())
    values["dataset_name"] = target.name
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{plans}.json").write_text(json.dumps(values, indent=4))


def link_preprocessed(source: Path, target: Path, plans: str, configuration: str, splits: Splits) -> None:
    """A budget dataset's nnUNet_preprocessed folder: the source's plans (renamed), dataset.json and fingerprint,
    links to the source's preprocessed data of ``configuration`` and its gt_segmentations, and its own split."""
    copy_plans(source, target, plans)
    for name in ("dataset.json", "dataset_fingerprint.json"):
        if (source / name).is_file():
            (target / name).write_text((source / name).read_text())
    data_identifier = json.loads((source / f"{plans}.json").read_text())["configurations"][configuration][
        "data_identifier"]
    for folder in (data_identifier, "gt_segmentations"):
        symlink(target / folder, (source / folder).resolve())
    (target / SPLITS_FILE).write_text(json.dumps(splits, indent=4))


def link_case_images(raw_dataset: Path, cases: Sequence[str], folder: Path) -> None:
    """Links to every channel file of ``cases`` in ``raw_dataset/imagesTr`` under their own names in ``folder``
    (images only: no label is linked)."""
    ending = json.loads((raw_dataset / "dataset.json").read_text())["file_ending"]
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for path in channel_files(raw_dataset / "imagesTr", case, ending):
            symlink(folder / path.name, path.resolve())


def symlink(link: Path, target: Path) -> None:
    """A symbolic link ``link`` -> ``target``, replacing a stale link (the work folder moved, say)."""
    if link.is_symlink() and link.resolve() == target:
        return
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target, target_is_directory=target.is_dir())
