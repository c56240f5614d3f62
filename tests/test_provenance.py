"""Which machine trained a run: each training attempt is recorded with its machine, so that a cost figure can say
when a run and its baseline (or one run's resumed attempts) did not share one."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nnunetv2_imnet import provenance
from nnunetv2_imnet.benchmark.runner import BenchmarkRunner
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec
from nnunetv2_imnet.provenance import ATTEMPTS, attempt_machines, machine, machine_name, record_attempt

NAMES = {4: "Dataset004_Hippocampus"}
SLOW = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "cpu_count": 2, "gpu": None}
FAST = {"cpu": "AMD EPYC 9654", "cpu_capability": "AVX512", "cpu_count": 2, "gpu": None}


def test_this_machine_is_named_by_its_cpu_vector_instructions_cpu_count_and_gpu() -> None:
    record = machine()
    assert set(record) == {"cpu", "cpu_capability", "cpu_count", "gpu"}
    assert record["cpu"] and record["cpu_count"] >= 1
    assert isinstance(record["cpu_capability"], str) and record["cpu_capability"]  # "AVX2", "AVX512", "DEFAULT"...


@pytest.mark.parametrize("record, name", [
    (SLOW, "AMD EPYC (AVX2), 2 CPUs"),
    ({**SLOW, "gpu": "NVIDIA H200"}, "AMD EPYC (AVX2), 2 CPUs, NVIDIA H200"),
    ({"cpu_count": 16}, "unknown CPU (?), 16 CPUs"),
])
def test_machine_names(record: dict, name: str) -> None:
    assert machine_name(record) == name


def test_attempts_are_appended_and_their_machines_listed_once_in_order(tmp_path, monkeypatch) -> None:
    assert attempt_machines(tmp_path) == []  # a run from before the record
    for record, resumed in ((FAST, False), (SLOW, True), (FAST, True)):
        monkeypatch.setattr(provenance, "machine", lambda record=record: record)
        record_attempt(tmp_path, resumed)
    attempts = json.loads((tmp_path / ATTEMPTS).read_text())
    assert [a["resumed"] for a in attempts] == [False, True, True]
    assert attempt_machines(tmp_path) == ["AMD EPYC 9654 (AVX512), 2 CPUs", "AMD EPYC (AVX2), 2 CPUs"]


def test_each_training_attempt_of_the_runner_is_recorded_as_new_or_resumed(tmp_path, monkeypatch) -> None:
    spec = BenchmarkSpec(raw=str(tmp_path / "raw"), work=str(tmp_path / "work"), datasets=[4], budget="cpu1k",
                         device="cpu", trainers=["nnUNetTrainer"], folds=[0], eval_noise=[]).validate()
    [job] = spec.jobs(NAMES)
    commands = []
    monkeypatch.setattr(BenchmarkRunner, "_execute", lambda self, command, **_: commands.append(command))
    runner = BenchmarkRunner(spec, out=io.StringIO())
    assert runner.train(job)
    (spec.fold_dir(job) / "checkpoint_latest.pth").write_bytes(b"")  # stopped after an epoch
    assert runner.train(job)
    attempts = json.loads((spec.fold_dir(job) / ATTEMPTS).read_text())
    assert [a["resumed"] for a in attempts] == [False, True]
    assert "--c" in commands[1] and "--c" not in commands[0]
    assert attempts[0]["machine"] == machine()
