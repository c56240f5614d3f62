"""``nnUNetTrainerIMNet`` and ``nnUNetTrainerMeasured`` as nnU-Net drives them, on tiny plans and synthetic batches.

Edge-case configurations, bad options, a non-finite MI term, checkpoints (also a kill during a write), the MI
weight's warm-up and the cost logging. Every trainer is a real nnU-Net trainer built from a plans dict (see
``trainer_helpers``); networks have 3 stages of 4-16 channels and patches of a few hundred voxels.
"""
from __future__ import annotations

import copy
import gc
import math
import os
import signal
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunetv2_imnet.mi.head import MIHead
from nnunetv2_imnet.training import checkpoint as checkpoint_module
from nnunetv2_imnet.training.catalogue import ALL_TRAINERS
from nnunetv2_imnet.training.checkpoint import atomic_torch_save
from nnunetv2_imnet.training.imnet_trainer import MI_HEALTH_KEYS, MI_KEYS, MITermDiverged
from nnunetv2_imnet.training.measured import COST_KEYS
from nnunetv2_imnet.training.network import MIRegularisedNetwork, find_bottleneck
from trainer_helpers import (make_trainer, nnunet_folders, run_epoch, run_full_epoch, synthetic_batches,
                             tiny_plans)

REPO = Path(__file__).resolve().parents[1]
IMNET = "nnUNetTrainerIMNet_smoke"
pytestmark = pytest.mark.usefixtures("single_thread")
PLAIN = "nnUNetTrainer_smoke"  # nnUNetTrainerMeasured on the same budget
NUM_HEADS = {"plain": 3, "regions": 2, "ignore": 3, "regions_ignore": 2}


@pytest.fixture(autouse=True)
def _nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net reads its folders from the environment when a trainer is made: point them at ``tmp_path``."""
    for name, value in nnunet_folders(tmp_path / "nnunet").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("nnUNet_wandb_enabled", raising=False)


def short_budget(epochs: int = 2, iterations: int = 2) -> Callable[[nnUNetTrainer], None]:
    """A ``before_initialize`` that fixes the schedule (the MI warm-up depends on it)."""

    def configure(trainer: nnUNetTrainer) -> None:
        trainer.num_epochs = epochs
        trainer.num_iterations_per_epoch = iterations

    return configure


def momentum_buffer(trainer: nnUNetTrainer, parameter: nn.Parameter) -> Optional[torch.Tensor]:
    """SGD's momentum of ``parameter``; None for parameters that never had a gradient (the lowest deep
    supervision output has loss weight 0, so nnU-Net leaves it out of the graph)."""
    return trainer.optimizer.state[parameter].get("momentum_buffer")


def assert_same_momentum(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> None:
    assert (a is None) == (b is None)
    if a is not None:
        assert torch.equal(a, b)


def mi_head(trainer: nnUNetTrainer) -> MIHead:
    return trainer.unwrapped_network().mi_head


def segmentation_network(trainer: nnUNetTrainer) -> nn.Module:
    network = trainer.unwrapped_network()
    return network.segmentation_network if isinstance(network, MIRegularisedNetwork) else network


def cloned_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@contextmanager
def nan_critic_scores(trainer: nnUNetTrainer) -> Iterator[None]:
    """Every critic score is NaN while this is active (a diverged critic, with its parameters left finite)."""
    handle = mi_head(trainer).critic.register_forward_hook(lambda module, inputs, output: output + float("nan"))
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------------ 1. edge cases
EDGE_CASES = {
    "3d": (dict(), (2, 2, 2)),
    "batch_size_1": (dict(batch_size=1), (2, 2, 2)),
    "3_input_channels": (dict(num_channels=3), (2, 2, 2)),
    "2d": (dict(ndim=2), (2, 2)),
    "anisotropic_3d": (dict(strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], patch_size=[4, 16, 16]), (2, 4, 4)),
    "anisotropic_2d_batch_size_1": (dict(ndim=2, strides=[[1, 1], [2, 1], [2, 2]], patch_size=[16, 8],
                                         batch_size=1), (4, 4)),
    "regions": (dict(labels="regions"), (2, 2, 2)),
    "ignore_label": (dict(labels="ignore"), (2, 2, 2)),
    "regions_with_ignore_label": (dict(labels="regions_ignore"), (2, 2, 2)),
    "residual_encoder": (dict(architecture="ResidualEncoderUNet"), (2, 2, 2)),
    "residual_encoder_2d_3_input_channels": (dict(architecture="ResidualEncoderUNet", ndim=2, num_channels=3),
                                             (2, 2)),
    # batch negatives only; BatchNorm (unlike InstanceNorm) allows a single bottleneck location
    "batch_norm_one_bottleneck_location": (dict(norm="BatchNorm", patch_size=[4, 4, 4]), (1, 1, 1)),
}


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["deep_supervision", "no_deep_supervision"])
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_case_trains_and_logs(case: str, deep_supervision: bool) -> None:
    options, grid = EDGE_CASES[case]
    plans, dataset_json, configuration = tiny_plans(**options)
    channels = options.get("num_channels", 1)
    heads = NUM_HEADS[options.get("labels", "plain")]

    def configure(trainer: nnUNetTrainer) -> None:
        short_budget()(trainer)
        trainer.enable_deep_supervision = deep_supervision

    trainer = make_trainer(IMNET, plans, dataset_json, configuration, before_initialize=configure)
    network = trainer.unwrapped_network()
    assert isinstance(network, MIRegularisedNetwork)
    patch = trainer.configuration_manager.patch_size
    assert find_bottleneck(network.segmentation_network, channels, patch).grid == grid
    assert tuple(mi_head(trainer).critic.weight.shape) == (16, channels)  # bottleneck channels x image channels

    batches = synthetic_batches(trainer, 2)
    assert isinstance(batches[0]["target"], list) == deep_supervision
    outputs = run_epoch(trainer, batches)

    for output in outputs:
        assert math.isfinite(output["loss"]) and math.isfinite(output["mi_loss"])
        assert math.isfinite(output["mi_estimate"]) and output["mi_finite"] == 1
    # weight 0.1 warmed up over 5% of 2 x 2 iterations: 0 at the first step, the full weight from the second
    assert [o["mi_weight"] for o in outputs] == [0.0, pytest.approx(0.1)]
    critic = mi_head(trainer).critic
    for parameter in (critic.weight, critic.bias):
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        assert parameter.grad.abs().sum() > 0

    logged = {key: trainer.logger.get_value(key, 0) for key in MI_KEYS + MI_HEALTH_KEYS + ("train_losses",)}
    assert logged["mi_loss"] == pytest.approx(np.mean([o["mi_loss"] for o in outputs]), rel=1e-6)
    assert logged["mi_estimate"] == pytest.approx(np.mean([o["mi_estimate"] for o in outputs]), rel=1e-6)
    assert logged["mi_weight"] == pytest.approx(0.1)
    assert logged["mi_max_abs_score"] == pytest.approx(max(o["mi_max_abs_score"] for o in outputs))
    assert logged["mi_nonfinite_steps"] == 0
    assert logged["train_losses"] == pytest.approx(np.mean([o["loss"] for o in outputs]), rel=1e-6)

    # nnU-Net's validation and predictor see the plain segmentation output in eval mode
    trainer.network.eval()
    with torch.no_grad():
        prediction = trainer.network(batches[0]["data"])
    if deep_supervision:
        assert isinstance(prediction, (list, tuple)) and len(prediction) == 2
        prediction = prediction[0]
    assert tuple(prediction.shape) == (trainer.batch_size, heads, *patch)


# ------------------------------------------------------------------------------------------------ 2. bad input
def test_cascade_stage_takes_the_mi_with_the_image_channels_only() -> None:
    """3d_cascade_fullres feeds the previous stage's one-hot segmentation as extra input channels; the MI is taken
    with the image alone."""
    plans, dataset_json, _ = tiny_plans(ndim=3, num_channels=2)
    configurations = plans["configurations"]
    configurations["3d_lowres"] = copy.deepcopy(configurations["3d_fullres"])
    configurations["3d_lowres"].update(data_identifier="nnUNetPlans_3d_lowres", next_stage="3d_cascade_fullres")
    configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    trainer = make_trainer(IMNET, plans, dataset_json, "3d_cascade_fullres")
    foreground = len(trainer.label_manager.foreground_labels)
    assert trainer.is_cascaded and trainer.num_input_channels == 2 + foreground
    assert mi_head(trainer).view.in_channels == 2
    outputs = run_epoch(trainer, synthetic_batches(trainer, 2))
    assert all(o["mi_finite"] == 1 and math.isfinite(o["mi_loss"]) for o in outputs)


@pytest.mark.parametrize("option, value, message", [
    ("estimator", "mine", r"estimator='mine'"),
    ("critic", "mlp", r"critic='mlp'"),
    ("view", "voxels", r"view='voxels'"),
    ("interpolation", "cubic", r"interpolation='cubic'"),
    ("weight", -1, r"weight=-1 is out of range"),
    ("weight", float("nan"), r"weight=nan is out of range"),
    ("temperature", 0, r"temperature=0 is out of range \(0\.0"),
    ("warmup_fraction", 2, r"warmup_fraction=2 is out of range \[0\.0, 1\.0\]"),
])
def test_bad_mi_option_is_refused_before_any_work(option: str, value: object, message: str) -> None:
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(IMNET, plans, dataset_json, configuration, initialize=False,
                           before_initialize=lambda t: setattr(t.mi, option, value))
    with pytest.raises(ValueError, match=message):
        trainer.initialize()
    assert not trainer.was_initialized and trainer.network is None and trainer.optimizer is None
    # nothing half-done: with the option fixed the same trainer initialises
    setattr(trainer.mi, option, getattr(type(trainer.mi)(), option))
    trainer.initialize()
    assert trainer.was_initialized


class _SequentialNetworkTrainer(ALL_TRAINERS[IMNET]):
    """A trainer whose architecture has no encoder/decoder split."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        return nn.Sequential(nn.Conv3d(num_input_channels, num_output_channels, 1))


def test_network_without_encoder_decoder_is_refused_by_name() -> None:
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(_SequentialNetworkTrainer, plans, dataset_json, configuration, initialize=False)
    with pytest.raises(TypeError, match=r"Sequential has no such split.*override `build_network_architecture`"):
        trainer.initialize()
    assert not trainer.was_initialized and trainer.optimizer is None
    assert "build_network_architecture" not in vars(trainer)  # the temporary routing through the MI head is gone


@pytest.mark.parametrize("plan_options, mi_options, message", [
    (dict(batch_size=1, patch_size=[4, 4, 4], norm="BatchNorm"), {},
     r"no negative pairs: .*batch size 1, mi\.batch_negatives=8\).*grid \(1, 1, 1\): 1 location\(s\)"),
    (dict(batch_size=1), dict(location_negatives=0),
     r"no negative pairs: .*batch size 1, .*grid \(2, 2, 2\): 8 location\(s\), mi\.location_negatives=0\)"),
], ids=["one_bottleneck_location", "no_location_negatives"])
def test_no_negative_pairs_is_refused(plan_options: dict, mi_options: dict, message: str) -> None:
    plans, dataset_json, configuration = tiny_plans(**plan_options)

    def configure(trainer: nnUNetTrainer) -> None:
        for name, value in mi_options.items():
            setattr(trainer.mi, name, value)

    trainer = make_trainer(IMNET, plans, dataset_json, configuration, initialize=False, before_initialize=configure)
    with pytest.raises(ValueError, match=message):
        trainer.initialize()
    assert not trainer.was_initialized and trainer.optimizer is None


# ------------------------------------------------------------------------------------------------ 3. non-finite MI
@pytest.mark.parametrize("injection", ["nan_scores", "nan_critic_bias"])
def test_nonfinite_mi_step_is_exactly_the_segmentation_step(injection: str) -> None:
    """A NaN MI term is skipped: the step equals a plain nnU-Net step on the same batch, and the critic's
    gradient is zero, so nothing but the poisoned parameter itself is NaN afterwards."""
    plans, dataset_json, configuration = tiny_plans()
    imnet = make_trainer(IMNET, plans, dataset_json, configuration,
                         before_initialize=lambda t: setattr(t.mi, "warmup_fraction", 0.0))  # full weight at once
    plain = make_trainer(PLAIN, plans, dataset_json, configuration)
    plain.network.load_state_dict(imnet.network.state_dict())
    before = cloned_state(segmentation_network(imnet))
    batch = synthetic_batches(imnet, 1)[0]
    head = mi_head(imnet)
    imnet.on_train_epoch_start()
    plain.on_train_epoch_start()
    if injection == "nan_critic_bias":
        with torch.no_grad():
            head.critic.bias.fill_(float("nan"))
        output = imnet.train_step(batch)
    else:
        with nan_critic_scores(imnet):
            output = imnet.train_step(batch)
    expected = plain.train_step(batch)

    assert output["mi_finite"] == 0 and math.isnan(output["mi_loss"]) and math.isnan(output["mi_estimate"])
    assert output["mi_weight"] == pytest.approx(0.1)
    assert output["loss"] == pytest.approx(float(expected["loss"]), rel=1e-6)
    after = dict(segmentation_network(imnet).named_parameters())
    for name, parameter in plain.network.named_parameters():
        assert torch.isfinite(after[name]).all(), name
        torch.testing.assert_close(after[name], parameter, msg=f"{name} differs from the plain nnU-Net step")
    full_resolution = f"decoder.seg_layers.{len(segmentation_network(imnet).decoder.seg_layers) - 1}.weight"
    assert not torch.equal(after[full_resolution], before[full_resolution])
    assert not torch.equal(after["encoder.stages.0.0.convs.0.conv.weight"],
                           before["encoder.stages.0.0.convs.0.conv.weight"])
    assert torch.count_nonzero(head.critic.weight.grad) == 0 and torch.count_nonzero(head.critic.bias.grad) == 0
    assert torch.isfinite(head.critic.weight).all()
    assert torch.isfinite(head.critic.bias).all() == (injection == "nan_scores")
    for parameter in imnet.network.parameters():
        buffer = momentum_buffer(imnet, parameter)
        if parameter is not head.critic.bias and buffer is not None:
            assert torch.isfinite(buffer).all()


def test_nonfinite_steps_are_counted_per_epoch() -> None:
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(IMNET, plans, dataset_json, configuration, before_initialize=short_budget(2, 3))
    batch = synthetic_batches(trainer, 1)[0]
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(batch)]
    with nan_critic_scores(trainer):
        outputs += [trainer.train_step(batch), trainer.train_step(batch)]
    trainer.on_train_epoch_end(outputs)

    assert [o["mi_finite"] for o in outputs] == [1, 0, 0]
    assert trainer.logger.get_value("mi_nonfinite_steps", 0) == 2
    # the epoch's MI loss and estimate average the finite steps only
    assert trainer.logger.get_value("mi_loss", 0) == pytest.approx(float(outputs[0]["mi_loss"]))
    assert trainer.logger.get_value("mi_estimate", 0) == pytest.approx(float(outputs[0]["mi_estimate"]))
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters())


@pytest.mark.parametrize("scale, warned", [(1.0, False), (1e4, True)], ids=["calibrated", "saturating"])
def test_saturating_critic_is_flagged_in_the_log(scale: float, warned: bool, capsys) -> None:
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(IMNET, plans, dataset_json, configuration, before_initialize=short_budget(2, 1))
    with torch.no_grad():
        mi_head(trainer).critic.weight.mul_(scale)
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([trainer.train_step(synthetic_batches(trainer, 1)[0])])
    largest = trainer.logger.get_value("mi_max_abs_score", 0)
    assert (largest > 30) == warned
    log = capsys.readouterr().out
    assert f"max |critic score| {largest:.3g}" in log
    assert ("WARNING: the MI critic is saturating" in log) == warned


def test_too_many_consecutive_nonfinite_steps_raise() -> None:
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(IMNET, plans, dataset_json, configuration,
                           before_initialize=lambda t: setattr(t.mi, "max_consecutive_nonfinite", 3))
    batch = synthetic_batches(trainer, 1)[0]
    trainer.on_train_epoch_start()
    for finite in (False, False, True, False, False):  # a finite step resets the count
        if finite:
            assert trainer.train_step(batch)["mi_finite"] == 1
        else:
            with nan_critic_scores(trainer):
                assert trainer.train_step(batch)["mi_finite"] == 0
    with nan_critic_scores(trainer), pytest.raises(MITermDiverged) as raised:
        trainer.train_step(batch)
    message = str(raised.value)
    assert "NaN/Inf for 3 training steps in a row (epoch 0, iteration 6" in message
    assert "mi.max_consecutive_nonfinite=3" in message
    assert "Try: estimator 'jsd'" in message and "--c" in message
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters())


# ------------------------------------------------------------------------------------------------ 4. checkpoints
def trained(name: str, plans: dict, dataset_json: dict, configuration: str, steps: int = 2,
            seed: int = 0) -> nnUNetTrainer:
    """A trainer after one epoch of ``steps`` steps (with its epoch-end logging)."""
    trainer = make_trainer(name, plans, dataset_json, configuration, before_initialize=short_budget(2, steps))
    run_epoch(trainer, synthetic_batches(trainer, steps, seed=seed))
    return trainer


@pytest.mark.parametrize("architecture", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_checkpoint_is_atomic_and_holds_a_plain_nnunet_network(architecture: str, tmp_path: Path) -> None:
    plans, dataset_json, configuration = tiny_plans(architecture=architecture)
    trainer = trained(IMNET, plans, dataset_json, configuration)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    path = folder / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    trainer.save_checkpoint(str(path))  # over an existing file
    assert os.listdir(folder) == [path.name]
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)

    # what nnU-Net's predictor builds (no deep supervision) loads the weights strictly
    plain = nnUNetTrainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, trainer.num_input_channels,
        trainer.label_manager.num_segmentation_heads, False)
    assert {k: v.shape for k, v in checkpoint["network_weights"].items()} == \
           {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(checkpoint["network_weights"])
    for key, value in segmentation_network(trainer).state_dict().items():
        assert torch.equal(checkpoint["network_weights"][key], value), key

    imnet = checkpoint["imnet"]
    assert imnet["format"] == 1 and imnet["trainer_name"] == IMNET
    assert imnet["config"] == trainer.mi.as_dict()
    assert set(imnet["mi_head"]) == {"critic.weight", "critic.bias"}
    for key, value in mi_head(trainer).state_dict().items():
        assert torch.equal(imnet["mi_head"][key], value), key
    assert checkpoint["current_epoch"] == 1 and checkpoint["trainer_name"] == IMNET


def test_load_checkpoint_restores_everything_and_training_continues_identically(tmp_path: Path) -> None:
    plans, dataset_json, configuration = tiny_plans()
    original = trained(IMNET, plans, dataset_json, configuration)
    path = str(tmp_path / "checkpoint_latest.pth")
    original.save_checkpoint(path)

    restored = make_trainer(IMNET, plans, dataset_json, configuration, before_initialize=short_budget(2, 2))
    assert not torch.equal(mi_head(restored).critic.weight, mi_head(original).critic.weight)
    restored.load_checkpoint(path)

    for key, value in mi_head(original).state_dict().items():
        assert torch.equal(mi_head(restored).state_dict()[key], value), key
    for key, value in segmentation_network(original).state_dict().items():
        assert torch.equal(segmentation_network(restored).state_dict()[key], value), key
    head_parameters = {id(p) for p in mi_head(restored).parameters()}
    restored_head_buffers = 0
    for mine, theirs in zip(restored.network.parameters(), original.network.parameters()):
        assert_same_momentum(momentum_buffer(restored, mine), momentum_buffer(original, theirs))
        restored_head_buffers += id(mine) in head_parameters and momentum_buffer(restored, mine) is not None
    assert restored_head_buffers == 2
    assert restored.current_epoch == 1
    for key in MI_KEYS + MI_HEALTH_KEYS + COST_KEYS + ("train_losses", "lrs"):
        assert restored.logger.get_value(key, None) == original.logger.get_value(key, None), key
    assert restored._mi_restored_from == path

    # the next epoch's step is the same whether training went on or was resumed
    original.current_epoch = 1  # what on_epoch_end does
    batch = synthetic_batches(original, 1, seed=5)[0]
    results = []
    for trainer in (original, restored):
        trainer.on_train_epoch_start()
        torch.manual_seed(7)  # the same negative pairs
        results.append(trainer.train_step(batch))
    assert results[0]["mi_loss"] == results[1]["mi_loss"] and results[0]["loss"] == results[1]["loss"]
    for mine, theirs in zip(restored.network.parameters(), original.network.parameters()):
        assert torch.equal(mine, theirs)
    for mine, theirs in zip(mi_head(restored).parameters(), mi_head(original).parameters()):
        assert torch.equal(mine, theirs)


def test_checkpoint_with_other_mi_options_is_refused(tmp_path: Path) -> None:
    plans, dataset_json, configuration = tiny_plans()
    writer = make_trainer("nnUNetTrainerIMNet", plans, dataset_json, configuration)
    path = str(tmp_path / "checkpoint_latest.pth")
    writer.save_checkpoint(path)

    reader = make_trainer("nnUNetTrainerIMNet_InfoNCE", plans, dataset_json, configuration)
    weights = cloned_state(segmentation_network(reader))
    with pytest.raises(ValueError, match=r"estimator: checkpoint 'jsd' vs this trainer 'infonce'.*"
                                         r"Continue with -tr nnUNetTrainerIMNet,.*-pretrained_weights"):
        reader.load_checkpoint(path)
    assert reader.current_epoch == 0  # refused before anything was loaded
    for key, value in segmentation_network(reader).state_dict().items():
        assert torch.equal(value, weights[key]), key


@pytest.fixture
def plain_checkpoint(tmp_path: Path) -> Dict[str, object]:
    """A checkpoint of the baseline trainer (nnUNetTrainerMeasured) after one epoch of one step."""
    plans, dataset_json, configuration = tiny_plans()
    plain = trained(PLAIN, plans, dataset_json, configuration, steps=1, seed=3)
    path = str(tmp_path / "plain" / "checkpoint_final.pth")
    os.makedirs(os.path.dirname(path))
    plain.save_checkpoint(path)
    return {"path": path, "trainer": plain, "plans": (plans, dataset_json, configuration)}


def test_baseline_checkpoint_as_pretrained_weights(plain_checkpoint: Dict[str, object]) -> None:
    imnet = make_trainer(IMNET, *plain_checkpoint["plans"])
    own = cloned_state(segmentation_network(imnet))
    head = cloned_state(mi_head(imnet))
    load_pretrained_weights(imnet.network, plain_checkpoint["path"])

    pretrained = plain_checkpoint["trainer"].network.state_dict()
    loaded = segmentation_network(imnet).state_dict()
    skipped = [key for key in loaded if ".seg_layers." in key]
    assert skipped
    for key, value in loaded.items():
        assert torch.equal(value, own[key] if key in skipped else pretrained[key]), key
    assert any(not torch.equal(own[key], pretrained[key]) for key in loaded if key not in skipped)
    for key, value in mi_head(imnet).state_dict().items():
        assert torch.equal(value, head[key]), key


def test_baseline_checkpoint_is_not_continued_by_imnet(plain_checkpoint: Dict[str, object]) -> None:
    """Continuing (``--c``) needs MI state; a baseline checkpoint is refused before anything is loaded."""
    imnet = make_trainer(IMNET, *plain_checkpoint["plans"])
    weights = cloned_state(segmentation_network(imnet))
    with pytest.raises(ValueError, match="holds no MI head state.*-pretrained_weights"):
        imnet.load_checkpoint(plain_checkpoint["path"])
    for key, value in segmentation_network(imnet).state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert imnet.current_epoch == 0


# ------------------------------------------------------------------------------------------------ 5. crash safety
KILL_SCRIPT = """
import sys
import torch
from nnunetv2_imnet.training.checkpoint import atomic_torch_save

atomic_torch_save({"epoch": 8, "weights": torch.ones(100_000_000)}, sys.argv[1])  # 400 MB: a long write
"""


def test_kill_during_checkpoint_write_keeps_the_old_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_latest.pth"
    atomic_torch_save({"epoch": 7, "weights": torch.arange(5.0)}, str(target))
    script = tmp_path / "write_big_checkpoint.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, str(script), str(target)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    temporary = tmp_path / f".{target.name}.{process.pid}.tmp"
    try:
        deadline = time.monotonic() + 120
        while not temporary.exists():
            if process.poll() is not None:
                pytest.fail(f"the writer exited ({process.returncode}) before its temporary file was seen: "
                            f"{process.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert temporary.exists(), "killed after the rename: the write was not interrupted"
    old = torch.load(target, weights_only=True)
    assert old["epoch"] == 7 and torch.equal(old["weights"], torch.arange(5.0))
    temporary.unlink()  # up to 400 MB; pytest keeps recent tmp_path folders


@pytest.mark.parametrize("existing", [True, False], ids=["over_old_file", "new_file"])
def test_failed_save_leaves_old_file_and_no_temporary(existing: bool, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoint_best.pth"
    if existing:
        atomic_torch_save({"epoch": 3}, str(target))

    def failing_save(obj: object, handle) -> None:
        handle.write(b"PK\x03\x04 half a zip")  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_torch_save({"epoch": 4}, str(target))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ([target.name] if existing else [])
    if existing:
        assert torch.load(target, weights_only=True) == {"epoch": 3}


# ------------------------------------------------------------------------------------------------ 6. warm-up
def test_mi_weight_warms_up_linearly_and_reaches_the_head() -> None:
    plans, dataset_json, configuration = tiny_plans()

    def configure(trainer: nnUNetTrainer) -> None:
        short_budget(epochs=4, iterations=5)(trainer)
        trainer.mi.weight = 0.5
        trainer.mi.warmup_fraction = 0.5  # 0.5 x 4 epochs x 5 iterations = 10 warm-up iterations

    trainer = make_trainer(IMNET, plans, dataset_json, configuration, before_initialize=configure)
    head = mi_head(trainer)
    batch = synthetic_batches(trainer, 1)[0]
    trainer.on_train_epoch_start()
    assert trainer.current_mi_weight() == 0.0
    for iteration in range(3):
        output = trainer.train_step(batch)
        assert output["mi_weight"] == pytest.approx(0.05 * iteration)
        assert head.gradient_weight.item() == pytest.approx(0.05 * iteration)
    assert trainer.current_mi_weight() == pytest.approx(0.15)
    for epoch, weight in [(1, 0.25), (2, 0.5), (3, 0.5)]:  # iterations 5, 10 (end of warm-up), 15
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        assert trainer.current_mi_weight() == pytest.approx(weight)
        assert trainer.train_step(batch)["mi_weight"] == pytest.approx(weight)
        assert head.gradient_weight.item() == pytest.approx(weight)


def test_mi_gradient_reaches_the_encoder_only_after_warmup_starts() -> None:
    """At weight 0 an IMNet step equals nnU-Net's; from the first positive weight the encoder moves differently."""
    plans, dataset_json, configuration = tiny_plans()
    imnet = make_trainer(IMNET, plans, dataset_json, configuration, before_initialize=short_budget(2, 2))
    plain = make_trainer(PLAIN, plans, dataset_json, configuration, before_initialize=short_budget(2, 2))
    plain.network.load_state_dict(imnet.network.state_dict())
    batch = synthetic_batches(imnet, 1)[0]
    imnet.on_train_epoch_start()
    plain.on_train_epoch_start()
    imnet_weights = [imnet.train_step(batch)["mi_weight"]]
    plain.train_step(batch)
    for name, parameter in plain.network.named_parameters():
        torch.testing.assert_close(segmentation_network(imnet).get_parameter(name), parameter)
    imnet_weights.append(imnet.train_step(batch)["mi_weight"])
    plain.train_step(batch)
    assert imnet_weights == [0.0, pytest.approx(0.1)]
    encoder = [name for name, _ in plain.network.named_parameters() if name.startswith("encoder.")]
    assert any(not torch.allclose(segmentation_network(imnet).get_parameter(name), plain.network.get_parameter(name))
               for name in encoder)


def test_weight_zero_control_trains_the_same_network_as_nnunet() -> None:
    """``nnUNetTrainerIMNet_lambda0`` is an A/A control: its critic trains, but from the same weights and batches its
    segmentation network follows nnU-Net's step for step, so its differences from the baseline in a benchmark are
    training variance (initialisation, batch order), the noise floor of the comparison."""
    plans, dataset_json, configuration = tiny_plans()
    control = make_trainer("nnUNetTrainerIMNet_lambda0_smoke", plans, dataset_json, configuration,
                           before_initialize=short_budget(2, 3))
    plain = make_trainer(PLAIN, plans, dataset_json, configuration, before_initialize=short_budget(2, 3))
    plain.network.load_state_dict(control.network.state_dict())
    critic_before = cloned_state(mi_head(control))
    batches = synthetic_batches(control, 3)
    for epoch in range(2):
        control.current_epoch = plain.current_epoch = epoch
        control.on_train_epoch_start()
        plain.on_train_epoch_start()
        for batch in batches:
            assert control.train_step(batch)["mi_weight"] == 0.0
            plain.train_step(batch)
    for name, parameter in plain.network.named_parameters():
        torch.testing.assert_close(segmentation_network(control).get_parameter(name), parameter,
                                   msg=f"{name} left nnU-Net's trajectory")
    assert any(not torch.equal(parameter, critic_before[name])
               for name, parameter in mi_head(control).named_parameters()), "the control's critic did not train"


def test_a_huge_critic_gradient_leaves_the_control_on_nnunets_trajectory() -> None:
    """nnU-Net clips the network's gradient to norm 12; the critic's gradient is clipped on its own, so however large
    it is, ``nnUNetTrainerIMNet_lambda0``'s network update stays nnU-Net's (one joint norm would shrink it)."""
    plans, dataset_json, configuration = tiny_plans()
    control = make_trainer("nnUNetTrainerIMNet_lambda0_smoke", plans, dataset_json, configuration,
                           before_initialize=short_budget(2, 3))
    plain = make_trainer(PLAIN, plans, dataset_json, configuration, before_initialize=short_budget(2, 3))
    plain.network.load_state_dict(control.network.state_dict())
    for parameter in mi_head(control).parameters():
        parameter.register_hook(lambda grad: grad * 1e8)
    critic_norms = []
    control.on_train_epoch_start()
    plain.on_train_epoch_start()
    for batch in synthetic_batches(control, 3):
        control.train_step(batch)
        plain.train_step(batch)
        critic_norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in mi_head(control).parameters()])))
    for name, parameter in plain.network.named_parameters():
        torch.testing.assert_close(segmentation_network(control).get_parameter(name), parameter,
                                   msg=f"{name} left nnU-Net's trajectory")
    assert all(norm <= 12 * (1 + 1e-4) for norm in critic_norms), f"the critic was not clipped: {critic_norms}"


# ------------------------------------------------------------------------------------------------ 7. cost logging
def png_size(path: Path) -> Tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name, panels", [(PLAIN, 1), (IMNET, 3)])
def test_cost_logging_and_progress_plot(name: str, panels: int, tmp_path: Path) -> None:
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(name, plans, dataset_json, configuration, before_initialize=short_budget(2, 2))
    trainer.save_every = 1
    run_full_epoch(trainer, synthetic_batches(trainer, 2))  # writes checkpoints and progress.png

    assert trainer.logger.get_value("train_seconds_per_iteration", 0) > 0
    assert trainer.logger.get_value("peak_memory_mb", 0) > 50  # the process's peak RSS, torch included
    assert len(trainer.logger.local_logger.panels) == panels
    output_folder = Path(trainer.output_folder)
    assert sorted(p.name for p in output_folder.iterdir() if p.suffix in (".pth", ".png") or
                  p.name.endswith(".tmp")) == ["checkpoint_best.pth", "checkpoint_latest.pth", "progress.png"]
    plot_folder = tmp_path / "plot"
    plot_folder.mkdir()
    trainer.logger.plot_progress_png(str(plot_folder))
    # 18 x 8 inches per panel: nnU-Net's 3 panels plus the extra ones
    for png in (plot_folder / "progress.png", output_folder / "progress.png"):
        width, height = png_size(png)
        assert height * 18 == width * 8 * (3 + panels)


# ------------------------------------------------------------------------------------------------ 5. no leak
def live_tensors() -> Tuple[int, int]:
    """(number, bytes) of the tensors Python can reach, storages shared between views counted once."""
    gc.collect()
    # exact types: earlier torch.compile tests leave FakeTensors (no storage) in the process
    tensors = [o for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter)]
    storages = dict(filter(None, map(_storage, tensors)))
    return len(tensors), sum(storages.values())


def _storage(tensor: torch.Tensor) -> Optional[Tuple[int, int]]:
    """(address, bytes) of the tensor's storage; None for the storage-less tensors that compiled graphs keep
    (they are still counted as tensors, so a compiled head that made more of them per epoch would fail the test)."""
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except RuntimeError:
        return None


@pytest.mark.parametrize("name", [IMNET, PLAIN])
def test_full_epochs_retain_no_tensors(name: str) -> None:
    """A leak that grows RSS over a long run must show here first: once the optimizer's state exists (first epoch),
    no further epoch of nnU-Net's loop (train steps, MI logging, validation, checkpoint and progress.png) leaves
    more tensors or more tensor bytes alive than the epoch before. ``benchmarks/memory_soak.py`` measures the
    process RSS at scale. Fewer is no leak: something outside the loop (an earlier test's leftovers, torch.compile's
    background workers) may let go of a tensor at any moment; a full CI run once saw 216 tensors become 215, with
    the same bytes. A leak of one tensor per epoch still shows in the epochs where nothing is let go."""
    plans, dataset_json, configuration = tiny_plans()
    trainer = make_trainer(name, plans, dataset_json, configuration, before_initialize=short_budget(4, 2))
    trainer.save_every = 1
    batches = synthetic_batches(trainer, 2)
    run_full_epoch(trainer, batches)
    alive = [live_tensors()]
    for _ in range(3):
        run_full_epoch(trainer, batches)
        alive.append(live_tensors())
    grew = [(after[0] - before[0], after[1] - before[1]) for before, after in zip(alive, alive[1:])]
    assert all(tensors <= 0 and nbytes <= 0 for tensors, nbytes in grew), \
        f"(tensors, bytes) alive after each epoch: {alive}"
