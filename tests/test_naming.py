"""nnU-Net's naming and folder rules (``nnunetv2_imnet.naming``), with known values."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from nnunetv2_imnet import naming


def test_dataset_folder_names_round_trip() -> None:
    assert naming.dataset_folder_name(4, "Hippocampus") == "Dataset004_Hippocampus"
    assert naming.parse_dataset_folder("Dataset004_Hippocampus") == (4, "Hippocampus")
    assert naming.parse_dataset_folder("Dataset900_Hippocampus_Rician5") == (900, "Hippocampus_Rician5")
    assert naming.dataset_id("Dataset990_IMNetDemo") == 990
    for bad in ("Hippocampus", "Dataset4_Hippocampus", "Task004_Hippocampus", "Dataset004"):
        with pytest.raises(ValueError, match=f"'{bad}' is not an nnU-Net dataset folder name"):
            naming.dataset_id(bad)
    with pytest.raises(ValueError, match="1000 is not in 1-999"):
        naming.dataset_folder_name(1000, "Hippocampus")


def test_noisy_dataset_names() -> None:
    assert naming.noisy_dataset_name("Dataset004_Hippocampus", 904, "rician", 10.0) == "Dataset904_HippocampusRician10"
    assert naming.noisy_dataset_name("Dataset202_DRIVE", 7, "gaussian", 2.5) == "Dataset007_DRIVEGaussian2p5"
    with pytest.raises(ValueError, match="'Hippocampus' is not an nnU-Net dataset folder name"):
        naming.noisy_dataset_name("Hippocampus", 904, "rician", 10)
    with pytest.raises(ValueError, match="1000"):
        naming.noisy_dataset_name("Dataset004_Hippocampus", 1000, "rician", 10)


def test_dataset_folder_lookup(tmp_path: Path) -> None:
    for name in ("Dataset004_Hippocampus", "Dataset040_Other", "Dataset900_HippocampusRician5"):
        (tmp_path / name).mkdir()
    assert naming.find_dataset_folder(tmp_path, 4).name == "Dataset004_Hippocampus"
    assert naming.dataset_folders(tmp_path, 40) == [tmp_path / "Dataset040_Other"]
    assert naming.dataset_folders(tmp_path / "missing", 4) == []
    for text in ("4", "004", "Dataset004_Hippocampus"):
        assert naming.lookup_dataset_folder(tmp_path, text) == tmp_path / "Dataset004_Hippocampus"
    assert naming.lookup_dataset_folder(tmp_path, "5") is None
    assert naming.lookup_dataset_folder(tmp_path, "Dataset005_None") is None
    with pytest.raises(ValueError, match="neither an id"):
        naming.lookup_dataset_folder(tmp_path, "Hippocampus")
    with pytest.raises(FileNotFoundError, match=r"No dataset with id 5 \(a folder Dataset005_<name>\)"):
        naming.find_dataset_folder(tmp_path, 5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        naming.find_dataset_folder(tmp_path / "missing", 4)


def test_model_layout_and_trainer_names(tmp_path: Path) -> None:
    assert naming.budget_trainer_name("nnUNetTrainerIMNet", "cpu") == "nnUNetTrainerIMNet_cpu"
    model = naming.model_folder(tmp_path, "Dataset004_Hippocampus", "nnUNetTrainer_smoke", "nnUNetPlans", "2d")
    assert model == tmp_path / "Dataset004_Hippocampus" / "nnUNetTrainer_smoke__nnUNetPlans__2d"
    fold = naming.fold_folder(model, 3)
    assert fold == model / "fold_3"
    (fold / "validation").mkdir(parents=True)
    (fold / "checkpoint_final.pth").touch()
    assert not naming.training_done(fold)
    (fold / "validation" / "summary.json").touch()
    assert naming.training_done(fold)


def test_importable_without_the_benchmark_package_or_nnunet() -> None:
    code = ("import sys, nnunetv2_imnet.naming; "
            "print(sorted(m for m in sys.modules if m.startswith(('nnunetv2.', 'nnunetv2_imnet.', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # _exttrainer is the start-up hook that registers the trainers folder
    assert set(ast.literal_eval(out)) <= {"nnunetv2_imnet.naming", "nnunetv2_imnet._exttrainer"}


def test_label_budget_and_self_training_names() -> None:
    assert naming.label_budget_dataset_name("Dataset004_Hippocampus", 700, 1) == "Dataset700_HippocampusL1"
    assert naming.pseudo_label_dataset_name("Dataset004_Hippocampus", 800, 1, 0, "3d_fullres", "nnUNetPlans") == \
        "Dataset800_HippocampusL1F0Pseudo"
    # another teacher gives other pseudo-labels, so its student's dataset is named apart
    assert naming.pseudo_label_dataset_name("Dataset004_Hippocampus", 801, 5, 3, "2d", "nnUNetResEncUNetMPlans") == \
        "Dataset801_HippocampusL5F3Pseudo2dnnUNetResEncUNetMPlans"
    assert naming.nnunet_trainer(naming.SELF_TRAINING) == naming.BASELINE_TRAINER
    assert naming.nnunet_trainer("nnUNetTrainerIMNet") == "nnUNetTrainerIMNet"
