"""nnU-Net's naming and folder rules in one place: dataset ids and folders, model folders, trainer names, planners.

nnU-Net finds datasets, trainers and models by these names alone, so every part of this package that builds or
reads one goes through here. Standard library only: the trainers and the benchmark both import it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

#: the trainer every comparison is against
BASELINE_TRAINER = "nnUNetTrainer"
DEFAULT_PLANS = "nnUNetPlans"
#: plans identifier -> nnU-Net experiment planner that writes it
PLANNERS: Dict[str, str] = {
    "nnUNetPlans": "ExperimentPlanner",
    "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
    "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL",
    "nnUNetResEncUNetXLPlans": "nnUNetPlannerResEncXL",
}
#: what nnU-Net writes into a fold folder, newest state first
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
#: the final checkpoint's training curves (nnU-Net's logging) as JSON: what a benchmark archive keeps of a model
TRAINING_CURVES = "training_curves.json"
#: nnU-Net's cross-validation split of a dataset, in its nnUNet_preprocessed folder (nnUNetTrainer.do_split)
SPLITS_FILE = "splits_final.json"
#: the benchmark's self-training arm: not a trainer class but a student ``BASELINE_TRAINER`` trained on its teacher's
#: (the ``BASELINE_TRAINER`` of the same label budget and fold) pseudo-labels; the name its results are reported under
SELF_TRAINING = "nnUNetSelfTraining"
#: first dataset id of each kind of dataset a benchmark derives (each kind has the 100 ids up to the next)
LABEL_BUDGET_IDS = 700
PSEUDO_LABEL_IDS = 800
NOISY_IDS = 900
#: the evaluations of a benchmark job: nnU-Net's own validation (TTA), the labelled test split (TTA), and the
#: validation cases predicted clean and under each noise condition (no TTA; ``noise.condition_name`` names those)
VALIDATION = "validation"
TEST = "test"
CLEAN = "clean"
_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")


# ---------------------------------------------------------------------------------------------- datasets
def check_dataset_id(dataset_id: int) -> None:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset ids have three digits; {dataset_id} is not in 1-999.")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """4, ``Hippocampus`` -> ``Dataset004_Hippocampus``."""
    check_dataset_id(dataset_id)
    return f"Dataset{dataset_id:03d}_{name}"


def parse_dataset_folder(folder_name: str) -> Tuple[int, str]:
    """``Dataset004_Hippocampus`` -> ``(4, "Hippocampus")``."""
    match = _DATASET_FOLDER.match(folder_name)
    if match is None:
        raise ValueError(f"{folder_name!r} is not an nnU-Net dataset folder name (DatasetXXX_Name); pass the "
                         f"dataset's folder in nnUNet_raw.")
    return int(match.group(1)), match.group(2)


def dataset_id(folder_name: str) -> int:
    """``Dataset004_Hippocampus`` -> 4."""
    return parse_dataset_folder(folder_name)[0]


def dataset_folders(root: Path, dataset_id: int) -> List[Path]:
    """Every folder of ``root`` that carries ``dataset_id`` (nnU-Net needs exactly one), sorted."""
    root = Path(root)
    return sorted(root.glob(f"Dataset{dataset_id:03d}_*")) if root.is_dir() else []


def find_dataset_folder(root: Path, dataset_id: int) -> Path:
    """The folder of ``dataset_id`` in an nnU-Net raw or preprocessed ``root``."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"The dataset folder {root} does not exist. Pass the nnU-Net raw folder that holds "
                                f"dataset {dataset_id} (--raw, or $nnUNet_raw).")
    matches = dataset_folders(root, dataset_id)
    if not matches:
        raise FileNotFoundError(f"No dataset with id {dataset_id} (a folder Dataset{dataset_id:03d}_<name>) in "
                                f"{root}. Pass the nnU-Net raw folder that holds it (--raw, or $nnUNet_raw).")
    return matches[0]


def lookup_dataset_folder(root: Path, dataset: str) -> Optional[Path]:
    """``4``, ``004`` or ``Dataset004_Hippocampus`` (as ``nnUNetv2_train`` takes it) -> its folder, if any."""
    if dataset.startswith("Dataset"):
        return Path(root) / dataset if (Path(root) / dataset).is_dir() else None
    try:
        number = int(dataset)
    except ValueError:
        raise ValueError(f"Dataset {dataset!r} is neither an id (e.g. 4) nor a name like "
                         f"Dataset004_Hippocampus.") from None
    matches = dataset_folders(root, number)
    return matches[0] if matches else None


def snr_text(snr: float) -> str:
    """10 -> ``10``, 2.5 -> ``2p5``: an SNR that fits in file and dataset names."""
    return str(int(snr)) if float(snr).is_integer() else repr(float(snr)).replace(".", "p")


def noisy_dataset_name(source_name: str, dataset_id: int, kind: str, snr: float) -> str:
    """``Dataset004_Hippocampus``, 904, rician, 10 -> ``Dataset904_HippocampusRician10``."""
    _, name = parse_dataset_folder(source_name)
    return dataset_folder_name(dataset_id, f"{name}{kind.capitalize()}{snr_text(snr)}")


def label_budget_dataset_name(source_name: str, dataset_id: int, labeled_cases: int) -> str:
    """``Dataset004_Hippocampus``, 700, 1 -> ``Dataset700_HippocampusL1``: the source with 1 labelled case a fold."""
    _, name = parse_dataset_folder(source_name)
    return dataset_folder_name(dataset_id, f"{name}L{labeled_cases}")


def pseudo_label_dataset_name(source_name: str, dataset_id: int, labeled_cases: int, fold: int, configuration: str,
                              plans: str) -> str:
    """``Dataset004_Hippocampus``, 800, 1, 0, ``3d_fullres``, ``nnUNetPlans`` -> ``Dataset800_HippocampusL1F0Pseudo``:
    a self-training student's data, labelled by the teacher of that budget, fold, configuration and plans. Another
    configuration than 3d_fullres or other plans than nnUNetPlans are appended (``...Pseudo2d``), as each teacher
    gives other pseudo-labels."""
    _, name = parse_dataset_folder(source_name)
    teacher = ("" if configuration == "3d_fullres" else configuration.replace("_", "")) + \
        ("" if plans == DEFAULT_PLANS else plans)
    return dataset_folder_name(dataset_id, f"{name}L{labeled_cases}F{fold}Pseudo{teacher}")


# ---------------------------------------------------------------------------------------------- image files
def image_file_name(case: str, channel: int, file_ending: str) -> str:
    """nnU-Net's image file rule, one file per channel: ``case``, 0, ``.nii.gz`` -> ``case_0000.nii.gz``."""
    return f"{case}_{channel:04d}{file_ending}"


def parse_image_file_name(name: str, file_ending: str) -> Optional[Tuple[str, int]]:
    """``case_0001.nii.gz`` -> ``("case", 1)``; None for a name that does not follow the rule."""
    match = re.match(rf"^(.+)_(\d{{4}}){re.escape(file_ending)}$", name)
    return (match.group(1), int(match.group(2))) if match else None


def image_files_by_case(folder: Path, file_ending: str) -> Dict[str, Dict[int, Path]]:
    """case -> channel -> file, for the files of ``folder`` that follow the rule (others are not images)."""
    cases: Dict[str, Dict[int, Path]] = {}
    for path in sorted(Path(folder).iterdir()):
        parsed = parse_image_file_name(path.name, file_ending)
        if parsed is not None:
            cases.setdefault(parsed[0], {})[parsed[1]] = path
    return cases


def channel_files(images: Path, case: str, ending: str) -> List[Path]:
    """A case's image files ``<case>_XXXX<ending>`` in channel order."""
    files = sorted(Path(images).glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))
    if not files:
        raise FileNotFoundError(f"No image {image_file_name(case, 0, ending)} in {images}, though the dataset's split "
                                f"names the case. If the raw data changed, delete the benchmark's work folder for it.")
    return files


# ---------------------------------------------------------------------------------------------- trainers, models
def budget_trainer_name(trainer: str, budget: str) -> str:
    """``nnUNetTrainer`` + ``cpu`` -> ``nnUNetTrainer_cpu``: the class that trains ``trainer`` for that budget."""
    return f"{trainer}_{budget}"


def nnunet_trainer(trainer: str) -> str:
    """The trainer class (without budget suffix) that ``nnUNetv2_train`` runs for a benchmark arm: the self-training
    arm's student is a plain ``BASELINE_TRAINER``."""
    return BASELINE_TRAINER if trainer == SELF_TRAINING else trainer


def model_folder(results: Path, dataset_folder: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's model folder: ``nnUNet_results/Dataset.../{trainer}__{plans}__{configuration}``."""
    return Path(results) / dataset_folder / f"{trainer}__{plans}__{configuration}"


def fold_folder(model: Path, fold: int) -> Path:
    return Path(model) / f"fold_{fold}"


def training_done(fold: Path) -> bool:
    """nnU-Net wrote the final checkpoint (or, for a job restored from a benchmark archive, its training curves)
    and validated it."""
    trained = (fold / "checkpoint_final.pth").is_file() or (fold / TRAINING_CURVES).is_file()
    return trained and (fold / VALIDATION / "summary.json").is_file()


def latest_training_log(fold: Path) -> Optional[Path]:
    """The log of the newest start of ``nnUNetv2_train`` in a fold folder (``training_log_<date>_<time>.txt``)."""
    logs = list(Path(fold).glob("training_log_*.txt"))
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None
