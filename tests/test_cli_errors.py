"""User errors of the CLI end in one ``error:`` line and a non-zero exit, without a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnunetv2_imnet import cli


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A raw folder with an (empty) dataset 4: enough for everything before nnU-Net runs."""
    (tmp_path / "raw" / "Dataset004_Hippocampus").mkdir(parents=True)
    return tmp_path / "raw"


def test_missing_raw_folder_is_one_error_line_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "nnunetv2_imnet.cli", "benchmark", "--raw", "/nonexistent", "-d",
                             "4", "--work", str(tmp_path / "work"), "--budget", "smoke", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith("error: The dataset folder /nonexistent does not exist.")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("arguments, message", [
    (["-d", "5"], r"error: No dataset with id 5 \(a folder Dataset005_<name>\) in .*raw"),
    (["-d", "4", "--folds", "7"], r"error: folds \[7\] must be among nnU-Net's 5 cross-validation folds 0-4"),
    (["-d", "4", "--trainers", "nnUNetTrainer", "nnUNetTrainerIMNet_smoke"],
     r"error: Unknown trainer\(s\) \['nnUNetTrainerIMNet_smoke'\]. Give names without the budget suffix"),
    (["-d", "4", "--trainers", "nnUNetTrainerIMNet"], r"error: The trainers .* must include the baseline"),
    (["-d", "4", "--plans", "MyPlans"], r"error: Unknown plans identifier\(s\) \['MyPlans'\]"),
])
def test_benchmark_user_errors(raw: Path, tmp_path: Path, arguments: list, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        cli.main(["benchmark", "--raw", str(raw), "--work", str(tmp_path / "work"), "--budget", "smoke",
                  "--device", "cpu", "--dry-run", *arguments])


@pytest.mark.parametrize("command", ["report", "prepare", "benchmark-job"])
def test_missing_spec_file(command: str, tmp_path: Path) -> None:
    extra = ["--index", "0"] if command == "benchmark-job" else []
    with pytest.raises(SystemExit, match=r"error: No benchmark spec at .*spec.json. `nnunetv2-imnet benchmark"):
        cli.main([command, "--spec", str(tmp_path / "spec.json"), *extra])


def test_make_noisy_with_an_unknown_dataset(raw: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="error: No dataset with id 9 "):
        cli.main(["make-noisy", "-d", "9", "--raw", str(raw), "--noise", "rician:5", "--id", "904", "-o",
                  str(tmp_path / "out")])


def test_bad_option_values_are_argparse_errors(raw: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["benchmark", "--raw", str(raw), "-d", "4", "--train-noise", "rician"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "argument --train-noise: Cannot read the noise condition 'rician'; write KIND:SNR with KIND one of "
        "('gaussian', 'rician') and SNR a number > 0, e.g. 'rician:10'.")
