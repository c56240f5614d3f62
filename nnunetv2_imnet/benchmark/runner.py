"""Runs a benchmark through nnU-Net's own commands, resumably.

Every stage checks what is already on disk: a finished fold is never retrained, an interrupted one continues
with ``nnUNetv2_train --c``, finished evaluations are skipped. Killing the runner (even with SIGKILL) kills the
command it runs, so running it again simply picks up where it stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from nnunetv2_imnet.benchmark import commands
from nnunetv2_imnet.benchmark.archive import archive_job, restore_job
from nnunetv2_imnet.benchmark.budget_stages import LabelBudgetStages, slug
from nnunetv2_imnet.benchmark.noise import COMPLETE_MARKER, corrupt_cases, derive_noisy_dataset
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job, Task
from nnunetv2_imnet.benchmark.training_log import fold_progress
from nnunetv2_imnet.naming import (CHECKPOINTS, TEST, channel_files, dataset_id, find_dataset_folder,
                                   noisy_dataset_name, training_done)
from nnunetv2_imnet.provenance import record_attempt
from nnunetv2_imnet.training.budgets import BUDGETS
from nnunetv2_imnet.training.heap import die_with_parent


class CommandFailed(ChildProcessError):
    """An nnU-Net command exited with an error; the message names its log and how to continue."""


class Progress:
    """Counts jobs and prints what runs, what is done and an estimate of the time left."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.done, self.out = total, 0, out
        self.durations: List[float] = []
        self.start = time.monotonic()

    def finished(self, seconds: Optional[float]) -> None:
        self.done += 1
        if seconds is not None:
            self.durations.append(seconds)

    def say(self, message: str) -> None:
        left = self.total - self.done
        eta = "unknown" if not self.durations else _hms(left * sum(self.durations) / len(self.durations))
        print(f"[{self.done}/{self.total} done, {left} left, elapsed {_hms(time.monotonic() - self.start)}, "
              f"time left ~{eta}] {message}", file=self.out, flush=True)


class BenchmarkRunner(LabelBudgetStages):
    #: seconds between the progress lines printed while a job trains
    progress_seconds = 30.0

    def __init__(self, spec: BenchmarkSpec, dry_run: bool = False, out: Optional[TextIO] = None) -> None:
        self.spec = spec.validate()
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.timings_file = spec.work_path / "timings.json"
        #: dataset folder name -> its raw folder (the source itself in a dry run, where nothing is linked)
        self.raw_folders: Dict[str, Path] = {}

    # ------------------------------------------------------------------ top level
    def run(self) -> None:
        names = self.prepare_raw()
        jobs = self.spec.jobs(names)
        self.prepare(jobs)
        progress = Progress(len(jobs), self.out)
        for job in jobs:
            started = time.monotonic()
            ran = self.run_job(job, progress)
            progress.finished(time.monotonic() - started if ran and not self.dry_run else None)
        progress.say("all jobs done")

    def prepare_raw(self) -> Dict[int, str]:
        """Link the source datasets into the benchmark's nnUNet_raw and derive the noisy copies to train on."""
        raw = self.spec.nnunet_raw()
        names: Dict[int, str] = {}
        for dataset in self.spec.datasets:
            source = find_dataset_folder(Path(self.spec.raw), dataset)
            link = raw / source.name
            names[dataset] = source.name
            self.raw_folders[source.name] = source if self.dry_run else link
            if self.dry_run:
                print(f"# link {source} -> {link}", file=self.out)
            elif not link.exists():
                raw.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source.resolve(), target_is_directory=True)
        for noisy in self.spec.noisy_datasets():
            source = self.raw_folders[names[noisy.source_id]]
            folder = raw / noisy_dataset_name(source.name, noisy.dataset_id, noisy.kind, noisy.snr)
            if self.dry_run:
                print(f"# derive {noisy.kind} noise at SNR {noisy.snr:g} from {source.name} as dataset "
                      f"{noisy.dataset_id} in {raw}", file=self.out)
            else:
                # a finished derivation returns at once: timing it again would overwrite its cost with ~0 s
                with nullcontext() if (folder / COMPLETE_MARKER).is_file() else \
                        self._timed(f"derive dataset {noisy.dataset_id}"):
                    derive_noisy_dataset(source, raw, noisy.dataset_id, noisy.kind, noisy.snr, self.spec.seed)
            names[noisy.dataset_id] = folder.name
            self.raw_folders[folder.name] = folder
        for budget in self.spec.label_budgets(names):
            self.link_label_budget(budget)
        return names

    def prepare(self, jobs: Sequence[Job]) -> None:
        """``nnUNetv2_plan_and_preprocess`` for every (task, plans) that is not preprocessed yet (a label budget's
        source for the budget), then the label budgets' folders and unlabelled images."""
        planned = [j.task if j.label_budget is None else Task(j.label_budget.source, j.task.configuration)
                   for j in jobs]
        for task, plans in dict.fromkeys((t, j.method.plans) for t, j in zip(planned, jobs)):
            marker = self.spec.prepared_marker(task.dataset, plans, task.configuration)
            command = commands.plan_and_preprocess(task, plans)
            if marker.is_file():
                self._show(command, done=True)
                continue
            self._execute(command, training=False, log=self._log_file(f"prepare_{task.dataset}_{plans}"),
                          stage=f"plan and preprocess {task.label} {plans}")
            if not self.dry_run:
                marker.write_text(commands.render(command))
        self.prepare_label_budgets(jobs)

    def run_job(self, job: Job, progress: Optional[Progress] = None) -> bool:
        """Train (or continue), predict the test split if it has labels, evaluate under noise. True if it ran.
        With an archive, a job finished there is restored first and a finished job is archived last."""
        archive = None if self.dry_run or self.spec.archive is None else Path(self.spec.archive)
        if archive is not None and restore_job(self.spec, job, archive):
            print(f"# restored {job.label} from the archive {archive}", file=self.out, flush=True)
        ran = job.is_student and not training_done(self.spec.fold_dir(job)) and self.prepare_student(job, archive)
        ran = self.train(job, progress) or ran
        ran = self.predict_test(job) or ran
        ran = self.evaluate_noise(job) or ran
        if archive is not None and training_done(self.spec.fold_dir(job)):
            archive_job(self.spec, job, archive)
        return ran

    # ------------------------------------------------------------------ stages
    def train(self, job: Job, progress: Optional[Progress] = None) -> bool:
        fold_dir = self.spec.fold_dir(job)
        if training_done(fold_dir):
            self._show(commands.train(job, self.spec.device, resume=False), done=True)
            return False
        resume = any((fold_dir / c).is_file() for c in CHECKPOINTS)
        command = commands.train(job, self.spec.device, resume)
        if progress is not None:
            progress.say(f"{'continuing' if resume else 'training'} {job.label}")
        if self.dry_run:
            self._show(command)
            return True
        fold_dir.mkdir(parents=True, exist_ok=True)
        with _job_lock(fold_dir) as acquired:
            if not acquired:
                print(f"# skipping {job.label}: another process is training it", file=self.out)
                return False
            record_attempt(fold_dir, resume)
            epochs = BUDGETS[self.spec.budget].epochs
            self._execute(command, training=True, log=self._train_log(job),
                          stage=f"train {job.label}",
                          progress=lambda: f"{job.label}: {fold_progress(fold_dir, epochs)}")
        return True

    def predict_test(self, job: Job) -> bool:
        """Datasets with labelled test cases (``imagesTs`` + ``labelsTs``) are predicted with nnU-Net's TTA."""
        if not self._has_labelled_test_split(job) or self._without_model(job, TEST):
            return False
        raw = self.raw_folders[job.task.dataset]
        return self._predict_and_evaluate(job, TEST, raw / "imagesTs", raw / "labelsTs", tta=True)

    def _has_labelled_test_split(self, job: Job) -> bool:
        raw = self.raw_folders[job.task.dataset]
        return (raw / "labelsTs").is_dir() and (raw / "imagesTs").is_dir()

    def evaluate_noise(self, job: Job) -> bool:
        """Predict the fold's validation cases clean and corrupted at each SNR (no TTA, same for every method)."""
        ran = False
        for condition, noise in self.spec.eval_conditions():
            if self._without_model(job, condition):
                continue
            inputs = self.spec.work_path / "noisy_inputs" / job.task.dataset / f"fold_{job.fold}" / condition
            if not self.dry_run and not self._evaluated(job, condition):
                self._make_inputs(job, noise, inputs)
            labels = self.raw_folders[job.task.dataset] / "labelsTr"
            ran = self._predict_and_evaluate(job, condition, inputs, labels, tta=False) or ran
        return ran

    def _without_model(self, job: Job, condition: str) -> bool:
        """True, and says so, if ``condition`` is still to evaluate for a job restored from an archive, which keeps
        no model to predict with."""
        model = self.spec.fold_dir(job) / "checkpoint_final.pth"
        if self.dry_run or self._evaluated(job, condition) or model.is_file():
            return False
        print(f"# cannot evaluate {condition} for {job.label}: it was restored from an archive, which keeps no "
              f"model. To train it again: {self._retrain_command(job)}", file=self.out, flush=True)
        return True

    def _retrain_command(self, job: Job) -> str:
        return self.spec.retrain_command(job, {dataset_id(name): name for name in self.raw_folders})

    def _evaluated(self, job: Job, condition: str) -> bool:
        return (self.spec.evaluation_dir(job, condition) / "predictions" / "summary.json").is_file()

    def _make_inputs(self, job: Job, noise: Optional[Tuple[str, float]], folder: Path) -> None:
        complete = folder / ".complete"
        if complete.is_file():
            return
        splits = json.loads(self.spec.splits_file(job.task.dataset).read_text())
        raw = self.raw_folders[job.task.dataset]
        ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
        cases = {case: channel_files(raw / "imagesTr", case, ending) for case in splits[job.fold]["val"]}
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        if noise is None:
            for files in cases.values():
                for f in files:
                    (folder / f.name).symlink_to(f.resolve())
        else:
            corrupt_cases(cases, folder, noise[0], noise[1], self.spec.seed)
        complete.write_text(json.dumps(noise))

    def _predict_and_evaluate(self, job: Job, condition: str, inputs: Path, labels: Path, tta: bool) -> bool:
        out = self.spec.evaluation_dir(job, condition)
        predictions = out / "predictions"
        predict = commands.predict(job, inputs, predictions, self.spec.device, tta)
        model = self.spec.model_dir(job)
        evaluate = commands.evaluate(labels, predictions, model / "dataset.json", model / "plans.json")
        if self._evaluated(job, condition):
            self._show(predict, done=True)
            self._show(evaluate, done=True)
            return False
        log = self._evaluation_log(job, condition)
        if predictions.exists() and not self.dry_run:
            shutil.rmtree(predictions)  # an interrupted prediction: start it again
        self._execute(predict, training=False, log=log, stage=f"predict {condition} {job.label}")
        self._execute(evaluate, training=False, log=log, stage=f"evaluate {condition} {job.label}")
        return True

    # ------------------------------------------------------------------ plumbing
    def _show(self, command: Sequence[str], done: bool = False) -> None:
        if self.dry_run:
            print(("# [done] " if done else "") + commands.render(command), file=self.out)

    def _execute(self, command: Sequence[str], training: bool, log: Path, stage: str,
                 progress: Optional[Callable[[], str]] = None) -> None:
        """Run ``command`` with its output in ``log``; every ``progress_seconds`` print ``progress()`` (by default,
        that the stage still runs)."""
        if self.dry_run:
            self._show(command)
            return
        log.parent.mkdir(parents=True, exist_ok=True)
        with self._timed(stage), open(log, "a") as handle:
            handle.write(f"\n$ {commands.render(command)}\n")
            handle.flush()
            env = commands.nnunet_environment(self.spec, training)
            executable = shutil.which(command[0], path=env["PATH"]) or command[0]
            code = self._wait(subprocess.Popen([executable, *command[1:]], stdout=handle, stderr=subprocess.STDOUT,
                                               env=env, preexec_fn=die_with_parent),
                              progress or (lambda: f"{stage}: still running"))
        if code != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
            raise CommandFailed(f"{stage} failed (exit code {code}). The log is {log}; its end:\n{tail}\n"
                                f"Fix the cause and run the benchmark again: it continues where it stopped.")

    def _wait(self, process: subprocess.Popen, progress: Callable[[], str]) -> int:
        started = time.monotonic()
        try:
            while True:
                try:
                    return process.wait(timeout=self.progress_seconds)
                except subprocess.TimeoutExpired:
                    print(f"    [{_hms(time.monotonic() - started)}] {progress()}", file=self.out, flush=True)
        except BaseException:  # Ctrl-C or an error here: the command must not outlive the runner
            process.kill()
            process.wait()
            raise

    def _log_file(self, name: str) -> Path:
        return self.spec.logs_dir() / f"{name}.log"

    def _train_log(self, job: Job) -> Path:
        return self._log_file(f"train_{slug(job.label)}")

    def _evaluation_log(self, job: Job, condition: str) -> Path:
        return self._log_file(f"evaluate_{slug(job.label)}_{condition}")

    def describe(self, job: Job) -> str:
        """What ``run_job`` runs and where its commands' output goes (after ``prepare_raw``): a SLURM task's log
        starts with it."""
        conditions = [TEST] * self._has_labelled_test_split(job) + [n for n, _ in self.spec.eval_conditions()]
        student = (f"nnUNetv2_predict of the unlabelled cases by the teacher {self.spec.teacher(job).label}, "
                   f"nnUNetv2_preprocess of {job.model_dataset}, ") if job.is_student else ""
        return (f"{job.label}: {student}nnUNetv2_train, then nnUNetv2_predict and nnUNetv2_evaluate_folder for "
                f"{', '.join(conditions)}\nfull logs: {self._train_log(job)} and {self._evaluation_log(job, '*')}")

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        timings = json.loads(self.timings_file.read_text()) if self.timings_file.is_file() else {}
        timings[stage] = round(time.monotonic() - started, 1)
        self.timings_file.parent.mkdir(parents=True, exist_ok=True)
        self.timings_file.write_text(json.dumps(timings, indent=1))


@contextmanager
def _job_lock(folder: Path) -> Iterator[bool]:
    """An exclusive lock file holding our pid; a stale lock (its process is gone) is taken over."""
    lock = folder / ".benchmark.lock"
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _alive(lock):
                yield False
                return
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False


def _alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or 0)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return pid != 0


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
