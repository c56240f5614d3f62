"""A light, durable copy of a benchmark's finished jobs, so that a run continues on a fresh machine without
retraining them.

Checkpoints and predictions are large and machines do not last: a preemptible node, a cluster's purged scratch
space, a workstation that is rebuilt. What the report needs of a finished job is small: the summary.json of each
evaluation with the costly per-case metrics (NSD) cached beside it, the training curves nnU-Net keeps in the
checkpoint (written out as JSON), the model folder's dataset.json and plans.json, nnU-Net's training log, the job's
stage timings and which code trained it; for a job on a label budget, the budget's split (its labelled cases); for a
self-training student, its teacher's pseudo-labels, archived as soon as they exist so that a fresh machine continues
the student without the teacher's model. ``archive_job`` copies that into a folder with the work folder's layout
(one under version control, say); ``restore_job`` copies it back into a work folder, where the runner counts the job
as finished and the report reads it as if it had just run. A restored job has no model: an evaluation added later
needs it retrained, after ``forget_job`` has set its run aside.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from nnunetv2_imnet.benchmark.collect import cache_costly_metrics, training_logging
from nnunetv2_imnet.benchmark.metrics import METRICS
from nnunetv2_imnet.benchmark.self_training import PREDICTED_MARKER
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job
from nnunetv2_imnet.naming import TRAINING_CURVES, VALIDATION, training_done
from nnunetv2_imnet.provenance import ATTEMPTS, machine, versions

#: files of nnU-Net's model folder that the report reads
MODEL_FILES = ("dataset.json", "plans.json", "dataset_fingerprint.json")
#: which code and machine archived the job: the versions, commit, time and machine of its first archiving
PROVENANCE = "provenance.json"
#: the fold folder's own files worth keeping: nnU-Net's training logs and the arguments it ran with, the curves, the
#: provenance and the training attempts' machines
FOLD_PATTERNS = ("debug.json", "training_log_*.txt", TRAINING_CURVES, PROVENANCE, ATTEMPTS)
TIMINGS = "timings.json"


def archive_job(spec: BenchmarkSpec, job: Job, archive: Path) -> List[Path]:
    """Copy the light record of the finished ``job`` into ``archive``; returns the files written there.
    Idempotent: archiving again adds evaluations that finished since."""
    fold = spec.fold_dir(job)
    if not training_done(fold):
        raise ValueError(f"{job.label} has not finished training ({fold}); only finished jobs are archived.")
    if not (fold / TRAINING_CURVES).is_file():  # the final checkpoint's logging does not change once written
        (fold / TRAINING_CURVES).write_text(json.dumps(_plain(training_logging(fold))))
    if not (fold / PROVENANCE).is_file():  # the first archiving: by the runner right after training, same code
        (fold / PROVENANCE).write_text(json.dumps(_provenance(), indent=1))
    for summary in _summaries(spec, job, spec.work_path):
        cache_costly_metrics(spec.work_path / summary, spec.model_dir(job), spec.metric_parameters)
    written = []
    for relative in _light_files(spec, job, spec.work_path):
        target = archive / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.work_path / relative, target)
        written.append(target)
    _merge_timings(job, spec.work_path / TIMINGS, archive / TIMINGS)
    return written


def restore_job(spec: BenchmarkSpec, job: Job, archive: Path) -> bool:
    """Copy ``job``'s record from ``archive`` into the work folder unless the job has finished there (its own
    files win). True if the job was restored."""
    if training_done(spec.fold_dir(job)):
        return False
    relative_fold = spec.fold_dir(job).relative_to(spec.work_path)
    if not training_done(archive / relative_fold):
        return False
    for relative in _light_files(spec, job, archive):
        target = spec.work_path / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive / relative, target)
    _merge_timings(job, archive / TIMINGS, spec.work_path / TIMINGS)
    return True


def forget_job(spec: BenchmarkSpec, job: Job, archive: Optional[Path] = None) -> List[Path]:
    """Remove ``job``'s run from the work folder and from ``archive``: its fold folder (model, validation, logs),
    its evaluations and its stage timings, so that the runner trains and evaluates it from scratch. For a run whose
    model is gone but needed (a self-training teacher restored from an archive) or a run set aside. Removing the
    fold folder alone is not enough: the archive would restore the old run, and its evaluations would pass for the
    new model's. The budget's split, the model folder's dataset.json and plans.json (other folds share them) and a
    student's pseudo-labels stay. Returns the folders removed."""
    folders = [spec.fold_dir(job)] + [summary.parent.parent for name, summary in spec.summary_files(job)
                                      if name != VALIDATION]
    removed = []
    for root in _roots(spec, archive):
        for folder in (root / path.relative_to(spec.work_path) for path in folders):
            if folder.is_dir():
                shutil.rmtree(folder)
                removed.append(folder)
        timings = root / TIMINGS
        if timings.is_file():
            kept = {k: v for k, v in json.loads(timings.read_text()).items() if not _is_timing_of(job, k)}
            timings.write_text(json.dumps(kept, indent=1))
    return removed


def finished_pseudo_labels(spec: BenchmarkSpec, student: Job, archive: Optional[Path] = None) -> List[Path]:
    """The folders, in the work folder and in ``archive``, that hold ``student``'s finished pseudo-labels."""
    folders = [root / spec.pseudo_label_dir(student).relative_to(spec.work_path) for root in _roots(spec, archive)]
    return [folder for folder in folders if (folder / PREDICTED_MARKER).is_file()]


def archive_pseudo_labels(spec: BenchmarkSpec, student: Job, archive: Path) -> None:
    """Copy a self-training student's finished pseudo-labels into ``archive`` (once), with the time their
    prediction took: a student continued elsewhere restores them instead of predicting them again."""
    relative = spec.pseudo_label_dir(student).relative_to(spec.work_path)
    if (archive / relative / PREDICTED_MARKER).is_file():
        return
    for path in _pseudo_label_files(spec, student, spec.work_path):
        (archive / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.work_path / path, archive / path)
    _merge_timings(student, spec.work_path / TIMINGS, archive / TIMINGS)


def restore_pseudo_labels(spec: BenchmarkSpec, student: Job, archive: Path) -> bool:
    """Copy a student's pseudo-labels from ``archive`` into the work folder unless they are there. True if
    restored."""
    relative = spec.pseudo_label_dir(student).relative_to(spec.work_path)
    if (spec.work_path / relative / PREDICTED_MARKER).is_file():
        return False
    files = _pseudo_label_files(spec, student, archive)
    for path in files:
        (spec.work_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive / path, spec.work_path / path)
    if files:
        _merge_timings(student, archive / TIMINGS, spec.work_path / TIMINGS)
    return bool(files)


def _pseudo_label_files(spec: BenchmarkSpec, student: Job, root: Path) -> List[Path]:
    """The predictions and their marker of a student under ``root``, relative to it; none unless finished."""
    folder = root / spec.pseudo_label_dir(student).relative_to(spec.work_path)
    if not (folder / PREDICTED_MARKER).is_file():
        return []
    files = [folder / PREDICTED_MARKER] + sorted(p for p in (folder / "predictions").iterdir() if p.is_file())
    return [path.relative_to(root) for path in files]


def _light_files(spec: BenchmarkSpec, job: Job, root: Path) -> List[Path]:
    """The job's files an archive keeps that exist under ``root`` (a work folder, or an archive with its layout),
    relative to ``root``."""
    model = spec.model_dir(job).relative_to(spec.work_path)
    fold = spec.fold_dir(job).relative_to(spec.work_path)
    cache_names = [m.cache_name(spec.metric_parameters) for m in METRICS.values() if m.cache_file is not None]
    files = [model / name for name in MODEL_FILES]
    files += [path.relative_to(root) for pattern in FOLD_PATTERNS for path in sorted((root / fold).glob(pattern))]
    for summary in _summaries(spec, job, root):
        files += [summary] + [summary.parent / name for name in cache_names]
    if job.label_budget is not None:
        files.append(spec.splits_file(job.task.dataset).relative_to(spec.work_path))
    if job.is_student:
        files += _pseudo_label_files(spec, job, root)
    return [path for path in files if (root / path).is_file()]


def _summaries(spec: BenchmarkSpec, job: Job, root: Path) -> List[Path]:
    """The job's evaluation summaries that exist under ``root``, relative to it."""
    paths = [summary.relative_to(spec.work_path) for _, summary in spec.summary_files(job)]
    return [path for path in paths if (root / path).is_file()]


def _merge_timings(job: Job, source: Path, target: Path) -> None:
    """Copy the job's stage timings (``train <label>``, ``predict <condition> <label>``, ...) from one timings.json
    into another; the other jobs' entries of the target stay."""
    if not source.is_file():
        return
    merged = json.loads(target.read_text()) if target.is_file() else {}
    merged.update({k: v for k, v in json.loads(source.read_text()).items() if _is_timing_of(job, k)})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(merged, indent=1))


def _roots(spec: BenchmarkSpec, archive: Optional[Path]) -> List[Path]:
    """The work folder, and the archive if there is one: both have the work folder's layout."""
    return [spec.work_path] + ([archive] if archive is not None else [])


def _is_timing_of(job: Job, stage: str) -> bool:
    """Whether a timings.json key (``train <label>``, ``predict <condition> <label>``, ...) is one of ``job``'s."""
    return stage.endswith(f" {job.label}")


def _provenance() -> dict:
    return {"archived_by": versions(), "archived_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine()}


def _plain(value):
    """nnU-Net's logging (lists of floats, numpy scalars, tensors) as JSON values; NaN and inf become null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, (np.generic, np.ndarray)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
