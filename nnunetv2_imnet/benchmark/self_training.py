"""nnU-Net self-training, the semi-supervised baseline nnU-Net's maintainers recommend (nnU-Net issues #451, #2338):
per label budget and fold, the supervised ``nnUNetTrainer`` (the teacher, an arm of its own) predicts the fold's
unlabelled cases with ``nnUNetv2_predict`` (TTA on), and a student ``nnUNetTrainer`` trains from scratch on the
labelled plus the pseudo-labelled cases and validates on the fold's validation cases.

The student's data is a derived dataset per budget, fold, configuration and plans (ids 800+): its raw folder links
the images of the labelled, unlabelled and validation cases, the true labels of the labelled and validation cases and
the teacher's predictions as labels of the unlabelled ones; its plans are the source's, so it is preprocessed (not
planned) again. The runner's stages (``runner.py``) call the functions here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from nnunetv2_imnet.benchmark.label_budgets import NNUNET_FOLDS, Splits, copy_plans, symlink
from nnunetv2_imnet.naming import SPLITS_FILE, channel_files

#: the stage (and timings.json key prefix) of the teacher's prediction of the pseudo-labels
PSEUDO_LABEL_STAGE = "predict pseudo-labels"
#: written into the pseudo-label folder once the teacher's prediction finished
PREDICTED_MARKER = ".predicted.json"
#: written into the student's raw dataset once it is complete
BUILT_MARKER = ".pseudo_labels_complete.json"


def student_splits(entry: Dict[str, object], fold: int) -> Splits:
    """The student dataset's ``splits_final.json``: entry ``fold`` trains on the labelled and the pseudo-labelled cases
    and validates on the fold's validation cases. nnU-Net reads entry ``fold`` only; each student dataset belongs to
    one fold, so the other entries repeat it to give nnU-Net its 5 folds and are never used."""
    student = {"train": sorted([*entry["train"], *entry["unlabelled"]]), "val": list(entry["val"]),
               "labelled": list(entry["train"]), "pseudo_labelled": list(entry["unlabelled"]), "cv_fold": fold,
               "labeled_cases": entry["labeled_cases"], "label_seed": entry["label_seed"]}
    return [dict(student) for _ in range(NNUNET_FOLDS)]


def build_student_dataset(budget_raw: Path, budget_preprocessed: Path, pseudo_labels: Path, student_raw: Path,
                          student_preprocessed: Path, plans: str, fold: int) -> None:
    """The student's raw dataset (links) and its preprocessed folder with plans, dataset.json and split, ready for
    ``nnUNetv2_preprocess``; ``budget_*``: the label budget's folders, ``pseudo_labels``: the teacher's predictions
    of fold ``fold``'s unlabelled cases."""
    entry = json.loads((budget_preprocessed / SPLITS_FILE).read_text())[fold]
    dataset_json = json.loads((budget_raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    missing = [case for case in entry["unlabelled"] if not (pseudo_labels / f"{case}{ending}").is_file()]
    if missing:
        raise FileNotFoundError(f"The teacher's pseudo-labels in {pseudo_labels} lack {len(missing)} case(s) "
                                f"({missing[:3]}); delete {pseudo_labels.parent} so that the teacher predicts them "
                                f"again.")
    labels: Dict[str, Path] = {case: budget_raw / "labelsTr" / f"{case}{ending}"
                               for case in [*entry["train"], *entry["val"]]}
    labels.update({case: pseudo_labels / f"{case}{ending}" for case in entry["unlabelled"]})
    for folder in ("imagesTr", "labelsTr"):
        (student_raw / folder).mkdir(parents=True, exist_ok=True)
    for case, label in labels.items():
        symlink(student_raw / "labelsTr" / label.name, label.resolve())
        for image in channel_files(budget_raw / "imagesTr", case, ending):
            symlink(student_raw / "imagesTr" / image.name, image.resolve())
    settings = {"teacher_predictions": str(pseudo_labels), "fold": fold, "labelled": len(entry["train"]),
                "pseudo_labelled": len(entry["unlabelled"]), "validation": len(entry["val"])}
    description = (f"Self-training data of fold {fold}: {len(entry['train'])} labelled and {len(entry['val'])} "
                   f"validation cases with their labels, {len(entry['unlabelled'])} cases labelled by the teacher "
                   f"({pseudo_labels}). Source: {dataset_json.get('description', budget_raw.name)}")
    (student_raw / "dataset.json").write_text(json.dumps(
        {**dataset_json, "numTraining": len(labels), "description": description, "self_training": settings},
        indent=4))
    copy_plans(budget_preprocessed, student_preprocessed, plans)
    for name in ("dataset.json", "dataset_fingerprint.json"):  # nnUNetv2_train copies the fingerprint to its model
        (student_preprocessed / name).write_text((budget_preprocessed / name).read_text())
    (student_preprocessed / SPLITS_FILE).write_text(json.dumps(student_splits(entry, fold), indent=4))
    (student_raw / BUILT_MARKER).write_text(json.dumps(settings, indent=1))

