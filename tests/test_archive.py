"""The benchmark archive: a finished job's light record (no models, no predictions) restored into a fresh work
folder counts as finished, reports the same numbers and is never retrained; hand-written runs and the real smoke
run on generated data."""
from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from fake_runs import finish_run
from nnunetv2_imnet import cli
from nnunetv2_imnet.benchmark.archive import archive_job, forget_job, restore_job
from nnunetv2_imnet.benchmark.collect import collect, training_curves
from nnunetv2_imnet.benchmark.runner import BenchmarkRunner
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec
from nnunetv2_imnet.naming import training_done
from nnunetv2_imnet.provenance import record_attempt

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal argument
NAMES = {4: "Dataset004_Hippocampus"}


def _spec(tmp_path: Path, work: str = "work", **fields) -> BenchmarkSpec:
    values = {"raw": str(tmp_path / "raw"), "work": str(tmp_path / work), "datasets": [4], "budget": "cpu1k",
              "device": "cpu", "trainers": ["nnUNetTrainer"], "folds": [0], "eval_noise": [("rician", 5.0)],
              **fields}
    return BenchmarkSpec(**values).validate()


@pytest.fixture
def finished(tmp_path: Path) -> tuple:
    """A finished fake job with a validation and a clean and a noisy evaluation, its MI curve with a NaN epoch."""
    spec = _spec(tmp_path)
    [job] = spec.jobs(NAMES)
    finish_run(spec, job, dice=[0.8, 0.6], curve=[0.2, 0.5, 0.7], mi=[math.nan, 0.1, 0.3],
               conditions={"clean": [0.8, 0.6], "rician_snr5": [0.7, 0.4]})
    (spec.work_path / "timings.json").write_text(json.dumps({f"train {job.label}": 12.5, "train other": 1.0}))
    record_attempt(spec.fold_dir(job), resumed=False)
    return spec, job


def test_the_archive_keeps_summaries_curves_and_cached_nsd_but_no_model_or_predictions(finished, tmp_path) -> None:
    spec, job = finished
    written = archive_job(spec, job, tmp_path / "archive")
    names = {path.name for path in written}
    assert {"training_curves.json", "summary.json", "nsd_1mm.json", "dataset.json", "plans.json",
            "provenance.json", "attempts.json"} <= names
    [provenance] = [path for path in written if path.name == "provenance.json"]
    assert "nnunetv2" in json.loads(provenance.read_text())["archived_by"]
    assert not [path for path in written if path.suffix in (".pth", ".gz")]
    assert len([path for path in written if path.name == "summary.json"]) == 3  # validation, clean, rician_snr5
    assert json.loads((tmp_path / "archive" / "timings.json").read_text()) == {f"train {job.label}": 12.5}


def test_a_restored_job_is_finished_and_collects_the_same_rows(finished, tmp_path) -> None:
    spec, job = finished
    archive_job(spec, job, tmp_path / "archive")
    fresh = _spec(tmp_path, work="fresh")
    assert not training_done(fresh.fold_dir(job))
    assert restore_job(fresh, job, tmp_path / "archive")
    assert training_done(fresh.fold_dir(job))
    assert not (fresh.fold_dir(job) / "checkpoint_final.pth").exists()
    for record in ("provenance.json", "attempts.json"):  # the training run's, not the restoring one's
        assert (fresh.fold_dir(job) / record).read_text() == (spec.fold_dir(job) / record).read_text()
    original, restored = collect(spec, [job]), collect(fresh, [job])
    pd.testing.assert_frame_equal(original.cases, restored.cases)
    pd.testing.assert_frame_equal(original.training, restored.training)  # NaN epochs included
    assert math.isnan(training_curves(fresh.fold_dir(job))[0]["mi_estimate"])
    assert json.loads((fresh.work_path / "timings.json").read_text()) == {f"train {job.label}": 12.5}


def test_a_job_finished_in_the_work_folder_is_not_overwritten(finished, tmp_path) -> None:
    spec, job = finished
    archive_job(spec, job, tmp_path / "archive")
    other = _spec(tmp_path, work="other")
    finish_run(other, job, dice=[0.1, 0.1], curve=[0.1])
    assert not restore_job(other, job, tmp_path / "archive")
    assert set(collect(other, [job]).cases["dice"]) == {0.1}


def test_nothing_to_restore_and_unfinished_jobs_cannot_be_archived(tmp_path) -> None:
    spec = _spec(tmp_path)
    [job] = spec.jobs(NAMES)
    assert not restore_job(spec, job, tmp_path / "empty_archive")
    with pytest.raises(ValueError, match=r"has not finished training .*only finished jobs are archived"):
        archive_job(spec, job, tmp_path / "archive")


def test_a_restored_job_skips_an_evaluation_it_has_no_model_for(finished, tmp_path) -> None:
    spec, job = finished
    archive_job(spec, job, tmp_path / "archive")
    fresh = _spec(tmp_path, work="fresh", eval_noise=[("rician", 5.0), ("gaussian", 5.0)],
                  archive=str(tmp_path / "archive"))
    restore_job(fresh, job, tmp_path / "archive")
    out = io.StringIO()
    runner = BenchmarkRunner(fresh, out=out)
    runner.raw_folders = {NAMES[4]: tmp_path / "raw"}  # what prepare_raw links
    assert not runner.evaluate_noise(job)
    assert f"cannot evaluate gaussian_snr5 for {job.label}: it was restored from an archive" in out.getvalue()
    assert f"To train it again: nnunetv2-imnet benchmark-job --spec {fresh.work_path / 'spec.json'} --index 0 " \
           "--retrain" in out.getvalue()
    assert "cannot evaluate rician_snr5" not in out.getvalue()  # restored, so done


def test_a_forgotten_job_is_gone_from_work_and_archive_with_its_evaluations_and_timings(finished, tmp_path) -> None:
    """Setting a run aside: the archive must not restore it, and its evaluations must not pass for the next run's."""
    spec, job = finished
    archive = tmp_path / "archive"
    archive_job(spec, job, archive)
    other = json.loads((archive / "timings.json").read_text()) | {"train other": 3.0}
    (archive / "timings.json").write_text(json.dumps(other))
    removed = forget_job(spec, job, archive)
    evaluations = [spec.evaluation_dir(job, condition) for condition in ("clean", "rician_snr5")]
    for root in (spec.work_path, archive):
        expected = [root / path.relative_to(spec.work_path) for path in [spec.fold_dir(job), *evaluations]]
        assert set(expected) <= set(removed)
        assert not any(path.exists() for path in expected)
        assert json.loads((root / "timings.json").read_text()) == {"train other": 1.0 if root == spec.work_path
                                                                   else 3.0}
    assert (spec.model_dir(job) / "dataset.json").is_file()  # the other folds' share stays
    assert not restore_job(spec, job, archive) and not training_done(spec.fold_dir(job))
    assert forget_job(spec, job, archive) == []  # nothing left to remove


def test_the_smoke_run_restored_into_a_fresh_work_folder_reports_the_same(synthetic_benchmark, synthetic_raw,
                                                                          tmp_path, capsys) -> None:
    """The real run of the CLI: archive it, then the same benchmark on a new work folder with --archive preprocesses,
    restores both jobs, trains and predicts nothing and writes the same results.csv."""
    archive = tmp_path / "archive"
    cli.main(["archive", "--spec", str(synthetic_benchmark["work"] / "spec.json"), "--to", str(archive)])
    assert "archived 2 of 2 jobs" in capsys.readouterr().out
    assert not [p for p in archive.rglob("*") if p.suffix in (".pth", ".gz")]
    arguments = synthetic_benchmark["arguments"]
    work = tmp_path / "fresh"
    cli.main([*arguments[:arguments.index("--work") + 1], str(work), *arguments[arguments.index("--work") + 2:],
              "--archive", str(archive)])
    out = capsys.readouterr().out
    assert out.count("# restored ") == 2, out
    assert "training " not in out and "predict " not in out, out
    assert not list(work.rglob("*.pth"))
    original = pd.read_csv(synthetic_benchmark["work"] / "results" / "results.csv")
    pd.testing.assert_frame_equal(original, pd.read_csv(work / "results" / "results.csv"))
    assert BenchmarkSpec.load(work / "spec.json").archive == str(archive)
    report_only = tmp_path / "report_only"  # the archive alone makes the report: nothing is preprocessed
    cli.main([*arguments[:arguments.index("--work") + 1], str(report_only),
              *arguments[arguments.index("--work") + 2:], "--archive", str(archive), "--report-only"])
    assert not (report_only / "nnUNet_preprocessed").exists()
    pd.testing.assert_frame_equal(original, pd.read_csv(report_only / "results" / "results.csv"))
    assert dataclasses.asdict(BenchmarkSpec.load(synthetic_benchmark["work"] / "spec.json"))["archive"] is None
