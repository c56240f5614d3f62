"""End to end through nnU-Net's own command-line tools on real Hippocampus cases (3d_fullres and 2d).

The 3d_fullres IMNet model is the one ``nnUNetv2_train`` trained inside the smoke benchmark (see conftest).
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from cli_helpers import nnunet_env, requires_real_data, run
from nnunetv2_imnet.training.imnet_trainer import MI_HEALTH_KEYS, MI_KEYS

pytestmark = [requires_real_data, pytest.mark.integration]
TRAINER = "nnUNetTrainerIMNet_smoke"
DATASET = "Dataset004_Hippocampus"


def model_folder(workspace: Path, configuration: str) -> Path:
    return workspace / "nnUNet_results" / DATASET / f"{TRAINER}__nnUNetPlans__{configuration}"


def validation_inputs(workspace: Path, folder: Path) -> Path:
    """Links to the images of fold 0's validation cases, as nnUNetv2_predict's input folder."""
    splits = json.loads((workspace / "nnUNet_preprocessed" / DATASET / "splits_final.json").read_text())
    folder.mkdir(parents=True)
    for case in splits[0]["val"]:
        name = f"{case}_0000.nii.gz"
        (folder / name).symlink_to(workspace / "nnUNet_raw" / DATASET / "imagesTr" / name)
    return folder


def predict_and_evaluate(workspace: Path, configuration: str, inputs: Path, out: Path) -> dict:
    env = nnunet_env(workspace)
    model = model_folder(workspace, configuration)
    run(["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", "4", "-c", configuration, "-tr", TRAINER,
         "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--save_probabilities"], env)
    run(["nnUNetv2_evaluate_folder", str(workspace / "nnUNet_raw" / DATASET / "labelsTr"), str(out), "-djfile",
         str(model / "dataset.json"), "-pfile", str(model / "plans.json"), "-np", "1", "--chill"], env)
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def workspace_3d(smoke_benchmark) -> Path:
    return smoke_benchmark["work"]


def test_network_weights_are_exactly_a_plain_nnunet_network(workspace_3d):
    model = model_folder(workspace_3d, "3d_fullres")
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    plans = PlansManager(str(model / "plans.json"))
    configuration = plans.get_configuration("3d_fullres")
    dataset_json = json.loads((model / "dataset.json").read_text())
    plain = nnUNetTrainer.build_network_architecture(
        plans, configuration, determine_num_input_channels(plans, configuration, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, True)
    expected = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in checkpoint["network_weights"].items()} == expected
    assert checkpoint["trainer_name"] == TRAINER
    assert checkpoint["imnet"]["config"]["estimator"] == "jsd"
    assert set(checkpoint["imnet"]["mi_head"]) == {"critic.weight", "critic.bias"}


def test_mi_metrics_in_log_progress_png_and_checkpoint_logging(workspace_3d):
    fold = model_folder(workspace_3d, "3d_fullres") / "fold_0"
    logging = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    epochs = len(logging["train_losses"])
    assert epochs == 2
    for key in MI_KEYS + MI_HEALTH_KEYS:
        assert len(logging[key]) == epochs, key
    assert all(np.isfinite(logging["mi_estimate"]))
    assert (fold / "progress.png").stat().st_size > 10_000
    log_text = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "MI estimate" in log_text and "IMNet: MI head freshly initialised" in log_text


def test_predict_evaluate_and_share_as_a_plain_nnunet_model(workspace_3d, tmp_path):
    inputs = validation_inputs(workspace_3d, tmp_path / "inputs")
    summary = predict_and_evaluate(workspace_3d, "3d_fullres", inputs, tmp_path / "imnet")
    assert set(summary["mean"]) == {"1", "2"}
    assert all(0.0 <= summary["mean"][label]["Dice"] <= 1.0 for label in ("1", "2"))

    # the same model folder with trainer_name set to nnUNetTrainer predicts identically without this package
    shared = tmp_path / "shared_model"
    shutil.copytree(model_folder(workspace_3d, "3d_fullres"), shared,
                    ignore=shutil.ignore_patterns("validation", "*.png", "*.txt"))
    checkpoint_file = shared / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    checkpoint["trainer_name"] = "nnUNetTrainer"
    torch.save(checkpoint, checkpoint_file)
    env = nnunet_env(workspace_3d)
    env.pop("nnUNet_extTrainer", None)
    env["NNUNETV2_IMNET_NO_AUTOREGISTER"] = "1"
    run(["nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(tmp_path / "plain"), "-m", str(shared),
         "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--save_probabilities"], env)
    predictions = sorted((tmp_path / "imnet").glob("*.npz"))
    assert predictions
    for prediction in predictions:
        ours, plain = np.load(prediction), np.load(tmp_path / "plain" / prediction.name)
        assert np.array_equal(ours["probabilities"], plain["probabilities"])
        segmentation = prediction.name.replace(".npz", ".nii.gz")
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "imnet" / segmentation))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / segmentation))))


def test_find_best_configuration_and_export_to_zip(workspace_3d, tmp_path):
    env = nnunet_env(workspace_3d)
    result = run(["nnUNetv2_find_best_configuration", "4", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                  "--disable_ensembling", "-np", "1"], env)
    assert TRAINER in result.stdout
    instructions = workspace_3d / "nnUNet_results" / DATASET / "inference_instructions.txt"
    assert TRAINER in instructions.read_text()
    archive = tmp_path / "model.zip"
    run(["nnUNetv2_export_model_to_zip", "-d", "4", "-o", str(archive), "-c", "3d_fullres", "-tr", TRAINER,
         "-f", "0"], env)
    with zipfile.ZipFile(archive) as zipped:
        assert any(n.endswith(f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth")
                   for n in zipped.namelist())


def test_2d_train_predict_evaluate(hippocampus_2d, tmp_path):
    run(["nnUNetv2_train", "4", "2d", "0", "-tr", TRAINER, "-device", "cpu"], nnunet_env(hippocampus_2d, training=True))
    model = model_folder(hippocampus_2d, "2d")
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["imnet"]["mi_head"]["critic.weight"].ndim == 2
    inputs = validation_inputs(hippocampus_2d, tmp_path / "inputs")
    summary = predict_and_evaluate(hippocampus_2d, "2d", inputs, tmp_path / "predictions")
    assert set(summary["mean"]) == {"1", "2"}
