"""``nnunetv2-imnet check``: each way nnUNetv2_train would fail is named, with what to do, before any training."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import requires_real_data
from nnunetv2_imnet import cli
from nnunetv2_imnet.preflight import PreflightError, check

pytestmark = [requires_real_data, pytest.mark.integration]


@pytest.fixture
def environment(hippocampus_2d: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("nnUNet_raw", str(hippocampus_2d / "nnUNet_raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(hippocampus_2d / "nnUNet_preprocessed"))
    monkeypatch.delenv("nnUNet_results", raising=False)
    return hippocampus_2d


def test_a_runnable_setup_is_described(environment: Path, capsys):
    before = sorted(environment.rglob("*"))  # other tests share this folder and may have trained in it
    cli.main(["check", "4", "2d", "-tr", "nnUNetTrainerIMNet_Concat"])
    out = capsys.readouterr().out
    assert "OK: dataset Dataset004_Hippocampus, plans nnUNetPlans, configuration 2d" in out
    assert "'critic': 'concat'" in out
    assert sorted(environment.rglob("*")) == before  # the check writes nothing: no training folders


@pytest.mark.parametrize("arguments, message", [
    (("4", "3d_lowres"), r"Configuration '3d_lowres' is not in nnUNetPlans.json; available: \['2d', '3d_fullres'\]"),
    (("4", "2d", "nnUNetTrainerIMNet", "nnUNetResEncUNetMPlans"),
     r"Plans 'nnUNetResEncUNetMPlans' do not exist .* Run: nnUNetv2_plan_and_preprocess -d 4 -c 2d "
     r"-pl nnUNetPlannerResEncM"),
    (("5", "2d"), r"No dataset 5 in nnUNet_preprocessed .* nor in nnUNet_raw"),
    (("4", "2d", "nnUNetTrainerIMNet_infonce"), r"cannot find the trainer 'nnUNetTrainerIMNet_infonce'. Did you "
                                                 r"mean \[.*'nnUNetTrainerIMNet_InfoNCE'"),
])
def test_problems_are_named_with_what_to_do(environment: Path, arguments, message):
    with pytest.raises(PreflightError, match=message):
        check(*arguments)


def test_planned_but_not_preprocessed(environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Plans exist but the configuration's data folder does not: the trainer's own check says which command."""
    preprocessed = tmp_path / "preprocessed"
    dataset = preprocessed / "Dataset004_Hippocampus"
    dataset.mkdir(parents=True)
    source = environment / "nnUNet_preprocessed" / "Dataset004_Hippocampus"
    for name in ("nnUNetPlans.json", "dataset.json", "dataset_fingerprint.json"):
        (dataset / name).write_bytes((source / name).read_bytes())
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    with pytest.raises(PreflightError, match="No preprocessed data for configuration '2d'.*nnUNetv2_preprocess -d 4 "
                                             "-c 2d -plans_name nnUNetPlans"):
        check("4", "2d")


def test_in_raw_but_not_preprocessed(environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "empty"))
    with pytest.raises(PreflightError, match=r"is in nnUNet_raw but not preprocessed.*nnUNetv2_plan_and_preprocess "
                                             r"-d 4 -c 2d"):
        check("4", "2d")


USER_VARIANT = """
import torch
from nnunetv2_imnet.training.imnet_trainer import nnUNetTrainerIMNet


class nnUNetTrainerIMNet_typo(nnUNetTrainerIMNet):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.estimator = "nce"
"""


def test_a_users_variant_with_a_bad_option(environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A variant of the user's own, found through nnUNet_extTrainer, with a typo in an MI option."""
    folder = tmp_path / "my_trainers"
    folder.mkdir()
    (folder / "my_variants.py").write_text(USER_VARIANT)
    monkeypatch.setenv("nnUNet_extTrainer", str(folder))
    with pytest.raises(SystemExit, match=r"error: Unknown MI option estimator='nce'. Use one of \['jsd', "
                                         r"'infonce', 'dv'\]"):
        cli.main(["check", "4", "2d", "-tr", "nnUNetTrainerIMNet_typo"])


def test_missing_environment(environment: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("nnUNet_preprocessed")
    with pytest.raises(PreflightError, match="nnUNet_preprocessed is not set"):
        check("4", "2d")
