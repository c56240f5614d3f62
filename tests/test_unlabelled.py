"""Unlabelled images for the MI term (``nnUNetTrainerIMNet_Unlabelled``) on a generated dataset: preparation, the
trainer's refusals before training, labels never read, nnU-Net's labelled sampling untouched, the unlabelled stream
continued by ``--c``, and unlabelled patches kept out of the segmentation loss."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.utilities.crossval_split import generate_crossval_split
from torch import nn

from cli_helpers import nnunet_env, run
from nnunetv2_imnet import cli
from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.mi.head import build_mi_head
from nnunetv2_imnet.training.catalogue import ALL_TRAINERS
from nnunetv2_imnet.training.imnet_trainer import COMPILE_MI_HEAD_VARIABLE
from nnunetv2_imnet.training.network import MIRegularisedNetwork, find_bottleneck
from nnunetv2_imnet.training.unlabelled_loader import rank_batch_size
from nnunetv2_imnet.unlabelled import MANIFEST, Manifest, find_image_cases, prepare_unlabelled, unlabelled_folder

DATASET = "Dataset990_IMNetDemo"
TRAINER = "nnUNetTrainerIMNet_Unlabelled_smoke"
LABELLED = 3  # labelled training cases of fold 0; its other training cases are the unlabelled ones


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def prepared(synthetic_raw, tmp_path_factory) -> Path:
    """A workspace: the generated dataset (a copy, so its labels can be spoilt) planned and preprocessed, every
    training image prepared as unlabelled, and fold 0 of splits_final.json cut to 3 labelled cases plus an
    ``unlabelled`` list of its other training cases."""
    root = tmp_path_factory.mktemp("unlabelled")
    shutil.copytree(synthetic_raw / DATASET, root / "nnUNet_raw" / DATASET, symlinks=False)
    run(["nnUNetv2_plan_and_preprocess", "-d", "990", "-c", "3d_fullres", "-np", "2"], nnunet_env(root))
    preprocessed = root / "nnUNet_preprocessed" / DATASET
    prepare_unlabelled(root / "nnUNet_raw" / DATASET / "imagesTr", preprocessed, "nnUNetPlans", "3d_fullres", 2)
    cases = sorted(p.name[:-len(".nii.gz")] for p in (root / "nnUNet_raw" / DATASET / "labelsTr").iterdir())
    splits = [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
              for s in generate_crossval_split(cases, seed=12345, n_splits=5)]
    splits[0] = {"train": splits[0]["train"][:LABELLED], "val": splits[0]["val"],
                 "unlabelled": splits[0]["train"][LABELLED:]}
    (preprocessed / "splits_final.json").write_text(json.dumps(splits))
    return root


@pytest.fixture
def workspace(prepared, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the prepared workspace, with nnU-Net's folder variables pointing at it, augmentation in
    this process and the MI head eager (fast and deterministic)."""
    root = tmp_path / "ws"
    shutil.copytree(prepared, root, symlinks=True)
    for name, value in nnunet_env(root, training=True).items():
        if name.startswith("nnUNet_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv(COMPILE_MI_HEAD_VARIABLE, "0")
    return root


def _preprocessed(root: Path) -> Path:
    return root / "nnUNet_preprocessed" / DATASET


def _unlabelled(root: Path) -> Path:
    return unlabelled_folder(_preprocessed(root), "nnUNetPlans_3d_fullres")


def _trainer(root: Path, name: str = TRAINER, seed: int = 0):
    """A trainer of fold 0 as nnUNetv2_train builds it, with every random state seeded."""
    from nnunetv2.run.run_training import get_trainer_from_args
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return get_trainer_from_args("990", "3d_fullres", 0, name, "nnUNetPlans", device=torch.device("cpu"))


def _train(trainer, steps: int) -> None:
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    for _ in range(steps):
        trainer.train_step(next(trainer.dataloader_train))


# ------------------------------------------------------------------------------------------------ preparation
def test_prepared_cases_are_images_with_their_nonzero_mask(prepared) -> None:
    folder = _unlabelled(prepared)
    manifest = Manifest.read(folder)
    plans = json.loads((_preprocessed(prepared) / "nnUNetPlans.json").read_text())
    assert manifest.spacing == plans["configurations"]["3d_fullres"]["spacing"]
    assert (manifest.plans_identifier, manifest.configuration, manifest.num_channels) == ("nnUNetPlans",
                                                                                         "3d_fullres", 1)
    assert len(manifest.cases) == 10 and not list(folder.glob(".partial_*"))
    import blosc2
    mask = blosc2.open(str(folder / f"{manifest.cases[0]}_seg.b2nd"), mode="r")[:]
    assert set(np.unique(mask)) <= {-1, 0}, "the prepared _seg must be the nonzero mask, never a label"


def test_preparing_again_only_adds_what_is_missing(prepared, tmp_path) -> None:
    folder = _unlabelled(prepared)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != MANIFEST}
    prepare_unlabelled(prepared / "nnUNet_raw" / DATASET / "imagesTr", _preprocessed(prepared), "nnUNetPlans",
                       "3d_fullres", 1)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != MANIFEST} == before


def _write_images(folder: Path, names: List[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


@pytest.mark.parametrize("names, channels, error, message", [
    ([], 1, FileNotFoundError, "No images named <case>_0000.nii.gz"),
    (["a.nii.gz", "b_0000.png"], 1, FileNotFoundError, "No images named <case>_0000.nii.gz"),
    (["a_0001.nii.gz"], 1, ValueError, "a: channels [1]"),
    (["a_0000.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"], 2, ValueError, "1 case(s)"),
    (["a_0000.nii.gz", "a_0001.nii.gz"], 1, ValueError, "dataset's 1 channel(s)"),
])
def test_image_folders_with_wrong_files_are_refused(tmp_path, names, channels, error, message) -> None:
    with pytest.raises(error) as raised:
        find_image_cases(_write_images(tmp_path / "images", names), ".nii.gz", channels)
    assert message in str(raised.value)


def test_a_missing_folder_and_a_cascade_are_refused(prepared, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_image_cases(tmp_path / "nowhere", ".nii.gz", 1)
    with pytest.raises(ValueError, match="not in nnUNetPlans.json"):
        prepare_unlabelled(tmp_path, _preprocessed(prepared), "nnUNetPlans", "3d_lowres", 1)
    with pytest.raises(FileNotFoundError, match="Plan the labelled dataset first"):
        prepare_unlabelled(tmp_path, _preprocessed(prepared), "nnUNetResEncUNetMPlans", "3d_fullres", 1)


def test_cli_prepares_and_says_how_to_train(workspace, capsys) -> None:
    shutil.rmtree(_unlabelled(workspace))
    cli.main(["prepare-unlabelled", "-d", "990", "-c", "3d_fullres", "-np", "1",
              "-i", str(workspace / "nnUNet_raw" / DATASET / "imagesTr")])
    out = capsys.readouterr().out
    assert "10 unlabelled cases prepared" in out and "-tr nnUNetTrainerIMNet_Unlabelled" in out


# ------------------------------------------------------------------------------------------------ refusals
def _edit_manifest(**changes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = _unlabelled(root) / MANIFEST
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return edit


def _edit_split(unlabelled) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = _preprocessed(root) / "splits_final.json"
        splits = json.loads(path.read_text())
        splits[0]["unlabelled"] = unlabelled(splits[0])
        path.write_text(json.dumps(splits))
    return edit


@pytest.mark.parametrize("spoil, error, message", [
    (lambda root: shutil.rmtree(_unlabelled(root)), FileNotFoundError,
     "prepare-unlabelled -d Dataset990_IMNetDemo -c 3d_fullres -p nnUNetPlans -i IMAGES_FOLDER"),
    (_edit_manifest(spacing=[2.0, 2.0, 2.0]), ValueError, "spacing [2.0, 2.0, 2.0]"),
    (_edit_manifest(num_channels=2), ValueError, "num_channels 2 (this training: 1)"),
    (_edit_manifest(cases=[]), ValueError, "holds no prepared unlabelled case"),
    (_edit_split(lambda fold: fold["val"][:1]), ValueError, "are validation cases of fold 0"),
    (_edit_split(lambda fold: ["not_prepared"]), FileNotFoundError, "not prepared in"),
    (_edit_split(lambda fold: []), ValueError, "no unlabelled case to train with"),
])
def test_bad_unlabelled_input_stops_before_training(workspace, spoil, error, message) -> None:
    spoil(workspace)
    trainer = _trainer(workspace)
    with pytest.raises(error) as raised:
        trainer.on_train_start()
    assert message in str(raised.value)
    assert trainer.dataloader_unlabelled is None and not list(Path(trainer.output_folder).glob("checkpoint_*"))


# ------------------------------------------------------------------------------------------------ labels never read
def _spoil_unlabelled_labels(root: Path) -> List[str]:
    """Garbage in every label file of the fold's unlabelled cases that nnU-Net keeps: the preprocessed
    segmentations become noise, the raw and ground-truth label files are deleted."""
    cases = json.loads((_preprocessed(root) / "splits_final.json").read_text())[0]["unlabelled"]
    for case in cases:
        (_preprocessed(root) / "nnUNetPlans_3d_fullres" / f"{case}_seg.b2nd").write_bytes(
            np.random.default_rng(0).bytes(4096))
        (_preprocessed(root) / "gt_segmentations" / f"{case}.nii.gz").unlink()
        (root / "nnUNet_raw" / DATASET / "labelsTr" / f"{case}.nii.gz").unlink()
    return cases


def test_labels_of_unlabelled_cases_are_never_read(workspace, tmp_path) -> None:
    weights = []
    for spoilt in (False, True):
        if spoilt:
            assert _spoil_unlabelled_labels(workspace)
        trainer = _trainer(workspace)
        _train(trainer, steps=3)
        assert trainer.unlabelled_batches_drawn == 3 and len(trainer.unlabelled_cases) > 0
        weights.append({k: v.clone() for k, v in trainer.unwrapped_network().state_dict().items()})
        shutil.rmtree(trainer.output_folder)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_unlabelled_stream_leaves_nnunets_labelled_sampling_as_it_is(workspace) -> None:
    batches = []
    for draw_unlabelled in (False, True):
        trainer = _trainer(workspace)
        trainer.on_train_start()
        drawn = []
        for _ in range(3):
            if draw_unlabelled:
                next(trainer.dataloader_unlabelled)
            drawn.append(next(trainer.dataloader_train))
        batches.append(drawn)
    for plain, beside_unlabelled in zip(*batches):
        assert plain["keys"].tolist() == beside_unlabelled["keys"].tolist()
        assert torch.equal(plain["data"], beside_unlabelled["data"])
        assert all(torch.equal(a, b) for a, b in zip(plain["target"], beside_unlabelled["target"]))


def test_unlabelled_batches_are_augmented_patches(workspace) -> None:
    trainer = _trainer(workspace)
    trainer.on_train_start()
    first, second = next(trainer.dataloader_unlabelled), next(trainer.dataloader_unlabelled)
    patch = [int(p) for p in trainer.configuration_manager.patch_size]
    assert list(first["data"].shape) == [trainer.configuration_manager.batch_size, 1, *patch]
    assert set(first) == {"data", "keys"}, "no target: unlabelled batches carry no labels"
    assert set(first["keys"]) <= set(trainer.unlabelled_cases)
    assert not torch.equal(first["data"], second["data"])


# ------------------------------------------------------------------------------------------------ checkpoints
def test_continuing_a_run_continues_its_unlabelled_stream(workspace) -> None:
    trainer = _trainer(workspace)
    _train(trainer, steps=2)
    checkpoint = Path(trainer.output_folder) / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(checkpoint))
    expected = next(trainer.dataloader_unlabelled)
    network = trainer.network.segmentation_network.state_dict()

    resumed = _trainer(workspace, seed=1)  # other global random states: the stream must not depend on them
    resumed.load_checkpoint(str(checkpoint))
    resumed.on_train_start()
    assert resumed.unlabelled_batches_drawn == 2
    following = next(resumed.dataloader_unlabelled)
    assert following["keys"].tolist() == expected["keys"].tolist() and torch.equal(following["data"],
                                                                                 expected["data"])
    loaded = torch.load(checkpoint, weights_only=False)["network_weights"]
    assert loaded.keys() == network.keys(), "checkpoints hold the plain nnU-Net network"


def test_a_checkpoint_without_unlabelled_state_is_refused(workspace) -> None:
    trainer = _trainer(workspace, name="nnUNetTrainerIMNet_smoke")
    trainer.on_train_start()
    checkpoint = Path(trainer.output_folder) / "imnet.pth"
    trainer.save_checkpoint(str(checkpoint))
    with pytest.raises(ValueError, match="holds no unlabelled-data state"):
        _trainer(workspace).load_checkpoint(str(checkpoint))


def test_worker_processes_deliver_unlabelled_batches(workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")
    trainer = _trainer(workspace)
    trainer.on_train_start()
    try:
        batches = [next(trainer.dataloader_unlabelled) for _ in range(3)]
        assert all(b["data"].shape[0] == trainer.configuration_manager.batch_size for b in batches)
    finally:
        trainer.dataloader_unlabelled._finish()
        trainer.dataloader_train._finish()
        trainer.dataloader_val._finish()


def test_the_trainer_is_listed_with_its_description(capsys) -> None:
    cli.main(["trainers"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("nnUNetTrainerIMNet_Unlabelled ")]
    assert lines and "unlabelled images" in lines[0]


# ------------------------------------------------------------------------------------------------ network
def _network(norm: str, ndim: int) -> MIRegularisedNetwork:
    torch.manual_seed(0)
    conv, norm_op = (nn.Conv3d, nn.InstanceNorm3d if norm == "instance" else nn.BatchNorm3d) if ndim == 3 else \
        (nn.Conv2d, nn.InstanceNorm2d if norm == "instance" else nn.BatchNorm2d)
    network = PlainConvUNet(1, 3, [4, 8, 16], conv, 3, [1, 2, 2], 1, 3, 1, conv_bias=True, norm_op=norm_op,
                            norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                            nonlin_kwargs={"inplace": True}, deep_supervision=True)
    patch = (8,) * ndim
    bottleneck = find_bottleneck(network, 1, patch)
    head = build_mi_head(MIConfig(batch_negatives=2, location_negatives=2), bottleneck.channels, 1, bottleneck.stride)
    return MIRegularisedNetwork(network, head, image_channels=1).train()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_unlabelled_patches_change_no_term_of_the_segmentation_loss(norm, ndim) -> None:
    generator = torch.Generator().manual_seed(0)
    labelled = torch.randn(2, 1, *(8,) * ndim, generator=generator)
    outputs: Dict[str, tuple] = {}
    for name in ("a", "b"):
        network = _network(norm, ndim)
        unlabelled = torch.randn(3, 1, *(8,) * ndim, generator=generator, requires_grad=True)
        torch.manual_seed(1)
        segmentation, mi = network(labelled, unlabelled)
        seg_loss = sum(output.square().mean() for output in segmentation)
        (gradient,) = torch.autograd.grad(seg_loss, unlabelled, allow_unused=True, retain_graph=True)
        assert gradient is None or not gradient.any(), "the segmentation loss must not reach unlabelled patches"
        assert torch.autograd.grad(mi.loss, unlabelled)[0].abs().sum() > 0, "the MI term must reach them"
        outputs[name] = (segmentation, mi.loss.detach().item())
    assert all(torch.equal(a, b) for a, b in zip(outputs["a"][0], outputs["b"][0]))
    assert outputs["a"][1] != outputs["b"][1]
    alone, _ = _network(norm, ndim)(labelled)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, outputs["a"][0]))
    assert len(outputs["a"][0]) == 2 and outputs["a"][0][0].shape[0] == 2, "decoder outputs for labelled only"


@pytest.mark.parametrize("global_batch, world, expected", [
    (2, 1, [2]), (2, 2, [1, 1]), (5, 2, [3, 2]), (7, 3, [3, 2, 2]), (4, 4, [1, 1, 1, 1])])
def test_ddp_splits_the_unlabelled_batch_as_nnunet_splits_the_labelled_one(global_batch, world, expected) -> None:
    assert [rank_batch_size(global_batch, world, rank) for rank in range(world)] == expected


def test_fewer_unlabelled_patches_than_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split over 4 DDP ranks"):
        rank_batch_size(3, 4, 0)


def test_trainer_names_say_unlabelled() -> None:
    unlabelled = [name for name in ALL_TRAINERS if "Unlabelled" in name]
    assert "nnUNetTrainerIMNet_Unlabelled" in unlabelled and "nnUNetTrainerIMNet_Unlabelled_cpu1k" in unlabelled
