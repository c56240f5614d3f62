"""The trainer catalogue: variants declared as data, every trainer described, budget versions built from them."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnunetv2_imnet import cli
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec
from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.training import variants
from nnunetv2_imnet.training.catalogue import ALL_TRAINERS, BASE_TRAINERS, description, weight_zero_controls
from nnunetv2_imnet.training.imnet_trainer import nnUNetTrainerIMNet
from trainer_helpers import make_trainer, nnunet_folders, tiny_plans

EXPECTED_OPTIONS = {
    "nnUNetTrainerIMNet": {},
    "nnUNetTrainerIMNet_InfoNCE": {"estimator": "infonce"},
    "nnUNetTrainerIMNet_DV": {"estimator": "dv"},
    "nnUNetTrainerIMNet_Concat": {"critic": "concat"},
    "nnUNetTrainerIMNet_Patches": {"view": "patches", "embedding_channels": 64},
    "nnUNetTrainerIMNet_Embed": {"embedding_channels": 32},
    "nnUNetTrainerIMNet_Area": {"interpolation": "area"},
    "nnUNetTrainerIMNet_lambda0": {"weight": 0.0},
    "nnUNetTrainerIMNet_lambda0p01": {"weight": 0.01},
    "nnUNetTrainerIMNet_lambda1": {"weight": 1.0},
    "nnUNetTrainerIMNet_Unlabelled": {},
    "nnUNetTrainerIMNet_Unlabelled_lambda0": {"weight": 0.0},
    "nnUNetTrainerIMNet_Unlabelled_lambda1": {"weight": 1.0},
}


def test_every_trainer_prints_a_description(capsys) -> None:
    cli.main(["trainers"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ALL_TRAINERS)
    for line in lines:
        name, _, text = line.partition(" ")
        assert text.strip(), f"{name} has no description"
    assert all(description(cls) for cls in ALL_TRAINERS.values())
    assert description(ALL_TRAINERS["nnUNetTrainerIMNet_lambda1_cpu"]).startswith(
        "nnUNetTrainerIMNet_lambda1 on the 'cpu' budget")


def test_an_undocumented_trainer_has_no_description() -> None:
    undocumented = type("nnUNetTrainerIMNet_Undocumented", (nnUNetTrainerIMNet,), {"mi_options": {"weight": 2.0}})
    assert description(undocumented) == ""  # the parent's docstring does not count


def test_variants_are_declared_as_mi_options() -> None:
    imnet = {name: cls for name, cls in BASE_TRAINERS.items() if issubclass(cls, nnUNetTrainerIMNet)}
    assert {name: cls.mi_options for name, cls in imnet.items()} == EXPECTED_OPTIONS
    assert all(vars(variants)[name].__init__ is nnUNetTrainerIMNet.__init__ for name in imnet if name in vars(variants))
    for options in EXPECTED_OPTIONS.values():
        MIConfig.from_dict(options).validate()


@pytest.mark.parametrize("name", ["nnUNetTrainerIMNet_Patches", "nnUNetTrainerIMNet_lambda0p01_smoke"])
def test_a_variant_and_its_budget_version_apply_their_options(name: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in nnunet_folders(tmp_path).items():
        monkeypatch.setenv(key, value)
    trainer = make_trainer(name, *tiny_plans(), initialize=False)
    base = name.removesuffix("_smoke")
    assert trainer.mi == MIConfig(**EXPECTED_OPTIONS[base])
    assert trainer.my_init_kwargs.keys() == {"plans", "configuration", "fold", "dataset_json", "device"}


@pytest.mark.parametrize("trainers, expected", [
    (["nnUNetTrainer", "nnUNetTrainerIMNet", "nnUNetTrainerIMNet_lambda0"],
     {"nnUNetTrainerIMNet": "nnUNetTrainerIMNet_lambda0"}),
    # the weight is all that may differ: the other variants' options are not the default ones
    (["nnUNetTrainerIMNet_InfoNCE", "nnUNetTrainerIMNet_lambda1", "nnUNetTrainerIMNet_lambda0"],
     {"nnUNetTrainerIMNet_lambda1": "nnUNetTrainerIMNet_lambda0"}),
    (["nnUNetTrainer", "nnUNetTrainerIMNet"], {}),  # no control run
    (["nnUNetTrainer", "nnUNetTrainerIMNet_lambda0"], {}),  # a control with no arm
])
def test_weight_zero_controls_pair_arms_with_the_same_mi_options_at_weight_zero(trainers, expected) -> None:
    assert weight_zero_controls(trainers) == expected


def test_a_spec_names_controls_per_plans(tmp_path) -> None:
    spec = BenchmarkSpec(raw=str(tmp_path), work=str(tmp_path), datasets=[4], budget="cpu1k",
                         trainers=["nnUNetTrainer", "nnUNetTrainerIMNet", "nnUNetTrainerIMNet_lambda0"],
                         plans=["nnUNetPlans", "nnUNetResEncUNetMPlans"]).validate()
    assert spec.controls() == {
        "nnUNetTrainerIMNet": "nnUNetTrainerIMNet_lambda0",
        "nnUNetTrainerIMNet@nnUNetResEncUNetMPlans": "nnUNetTrainerIMNet_lambda0@nnUNetResEncUNetMPlans"}
