"""SLURM jobs: each job's resources from the command line, and logs that say what runs and how it ended."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import List

import pytest

from nnunetv2_imnet import cli


def _scripts(tmp_path: Path, *options: str) -> Path:
    """Write the job scripts for a smoke benchmark (baseline and IMNet, fold 0) and return their folder."""
    raw = tmp_path / "raw"
    (raw / "Dataset990_IMNetDemo").mkdir(parents=True)  # only found, never read, when writing scripts
    jobs = tmp_path / "jobs"
    cli.main(["benchmark", "--raw", str(raw), "--work", str(tmp_path / "work"), "-d", "990", "--folds", "0",
              "--budget", "smoke", "--device", "cpu", "--eval-noise", "rician:5", "--slurm", str(jobs), *options])
    return jobs


def _directives(script: Path) -> List[str]:
    """The ``#SBATCH`` options of a job script other than its name, log file and array range."""
    options = re.findall(r"^#SBATCH (\S+)$", script.read_text(), flags=re.M)
    return [o for o in options if not o.startswith(("--job-name=", "--output=", "--array="))]


def test_default_jobs_ask_for_as_many_cpus_as_their_commands_use(tmp_path: Path) -> None:
    jobs = _scripts(tmp_path)
    assert _directives(jobs / "prepare.sbatch") == ["--cpus-per-task=2"]  # nnUNetv2_plan_and_preprocess -np 2
    assert _directives(jobs / "train.sbatch") == ["--cpus-per-task=2", "--requeue"]
    assert _directives(jobs / "report.sbatch") == ["--cpus-per-task=1"]
    assert "#SBATCH --array=0-1" in (jobs / "train.sbatch").read_text()


def test_each_job_kind_takes_its_own_options_and_they_replace_defaults_of_the_same_name(tmp_path: Path) -> None:
    jobs = _scripts(tmp_path, "--slurm-option=--gpus=1", "--slurm-option=--cpus-per-task=8",
                    "--slurm-prepare-option=--cpus-per-task=4", "--slurm-prepare-option=--partition=cpu",
                    "--slurm-report-option=--time=0:30:00")
    assert _directives(jobs / "train.sbatch") == ["--requeue", "--gpus=1", "--cpus-per-task=8"]
    assert _directives(jobs / "prepare.sbatch") == ["--cpus-per-task=4", "--partition=cpu"]
    assert _directives(jobs / "report.sbatch") == ["--cpus-per-task=1", "--time=0:30:00"]


def test_a_short_sbatch_option_is_refused_with_the_long_form_to_use(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        _scripts(tmp_path, "--slurm-prepare-option=-c 4")
    error = capsys.readouterr().err
    assert "argument --slurm-prepare-option: '-c 4' is not a long sbatch option" in error
    assert "--cpus-per-task=8 rather than -c 8" in error
    assert not (tmp_path / "jobs").exists()


def test_a_failed_task_log_says_what_ran_and_ends_with_its_exit_status_and_how_to_rerun_it(tmp_path: Path) -> None:
    jobs = _scripts(tmp_path)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "5", "SLURM_JOB_NAME": "imnet-train", "SLURM_JOB_ID": "77"}
    result = subprocess.run(["bash", str(jobs / "train.sbatch")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)  # one log, as SLURM writes it
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1
    assert "imnet-train job 77 on" in lines[0] and "run of array index 5 (of 0-1)" in lines[0]
    assert f"full logs: the files it names in {tmp_path / 'work' / 'logs'}/" in lines[0]
    assert lines[1].endswith(f"benchmark-job --spec {tmp_path / 'work' / 'spec.json'} --index 5")
    assert any("--index 5 is out of range: the spec has 2 jobs" in line for line in lines)
    assert re.search(r"FAILED: exit status 1; see the error above; fix the cause, then sbatch --array=5 "
                     rf"{re.escape(str(jobs))}/train.sbatch \(it continues where it stopped\)", lines[-1])

