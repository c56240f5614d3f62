"""What the ``nnunetv2-imnet`` benchmark commands do, apart from parsing their arguments: run (or continue) a
benchmark, one job of it, its preparation, its report, its archive.

Listing the jobs of a spec touches nothing on disk (``spec.jobs(spec.dataset_names())``); only running them links,
derives and preprocesses (``BenchmarkRunner.prepare_raw``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from nnunetv2_imnet.benchmark.archive import archive_job, finished_pseudo_labels, forget_job, restore_job
from nnunetv2_imnet.benchmark.collect import collect, read_timings
from nnunetv2_imnet.benchmark.report import write_report
from nnunetv2_imnet.benchmark.runner import BenchmarkRunner
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec
from nnunetv2_imnet.naming import training_done
from nnunetv2_imnet.provenance import versions


def run_benchmark(spec: BenchmarkSpec, command: str, dry_run: bool = False, report_only: bool = False,
                  prepare_only: bool = False) -> Optional[Path]:
    """Run (or continue) everything ``spec`` describes, then write the report. Returns results.md's path."""
    runner = BenchmarkRunner(spec, dry_run=dry_run)
    if dry_run:
        runner.run()
        return None
    spec.save()
    if prepare_only:
        runner.prepare(spec.jobs(runner.prepare_raw()))
        return None
    if not report_only:
        runner.run()
    return write_results(spec, command)


def write_results(spec: BenchmarkSpec, command: str) -> Path:
    """results.md, results.csv and the plots from what the jobs wrote, or from the archive for jobs that are not in
    the work folder (``--report-only`` on a new work folder, say)."""
    jobs = spec.jobs(spec.dataset_names())
    if spec.archive is not None:
        for job in jobs:
            restore_job(spec, job, Path(spec.archive))
    started = time.monotonic()
    path = write_report(spec, collect(spec, jobs), spec.results_dir(), command, read_timings(spec), versions())
    print(f"report written in {time.monotonic() - started:.0f} s: {path}")
    return path


def run_job(spec_file: Path, index: int, retrain: bool = False) -> None:
    """One SLURM array task: the job at ``index`` of the saved spec. ``retrain``: first set its finished run aside
    (``forget_job``: work folder and archive), so that it trains from scratch."""
    spec = BenchmarkSpec.load(spec_file)
    jobs = spec.jobs(spec.dataset_names())
    if not 0 <= index < len(jobs):
        raise ValueError(f"--index {index} is out of range: the spec has {len(jobs)} jobs (0-{len(jobs) - 1}).")
    job = jobs[index]
    if retrain:
        archive = Path(spec.archive) if spec.archive is not None else None
        for folder in forget_job(spec, job, archive):
            print(f"# set aside: removed {folder}", flush=True)
        for student in (j for j in jobs if j.is_student and spec.teacher(j) == job):
            taught = finished_pseudo_labels(spec, student, archive)
            if taught:
                print(f"# note: {student.label} learns from the pseudo-labels of the run set aside "
                      f"({', '.join(map(str, taught))}); to pair it with the new run, delete them and retrain it "
                      f"(--index {jobs.index(student)} --retrain)", flush=True)
    runner = BenchmarkRunner(spec)
    runner.prepare_raw()
    print(runner.describe(job), flush=True)
    runner.run_job(job)


def prepare(spec_file: Path) -> None:
    """Link, derive and preprocess every dataset of a saved spec (before a SLURM array starts)."""
    runner = BenchmarkRunner(BenchmarkSpec.load(spec_file))
    runner.prepare(runner.spec.jobs(runner.prepare_raw()))


def archive(spec_file: Path, target: Path) -> None:
    """Copy the light record of every finished job of a saved spec into ``target`` (see ``--archive``)."""
    spec = BenchmarkSpec.load(spec_file)
    jobs = spec.jobs(spec.dataset_names())
    finished = [job for job in jobs if training_done(spec.fold_dir(job))]
    size = sum(path.stat().st_size for job in finished for path in archive_job(spec, job, target))
    print(f"archived {len(finished)} of {len(jobs)} jobs ({size / 1e6:.1f} MB) in {target}")
