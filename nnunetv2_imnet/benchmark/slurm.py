"""A SLURM job array for a benchmark: preparation, one task per training run, then the report.

Each array task runs ``nnunetv2-imnet benchmark-job --index $SLURM_ARRAY_TASK_ID``, which trains (or continues)
that run and evaluates it; a requeued or resubmitted task continues where it stopped. Self-training students are
not in the array (its indices skip them): ``submit.sh`` submits each as its own task of the same script, waiting
for its teacher's array task (``afterok:<array job>_<teacher index>``). The commands log under
``WORK/logs/``, so every job's SLURM log (in ``WORK/logs/slurm/``) starts with what the job runs and where those logs
are, and ends with its exit status and what to do after a failure.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from nnunetv2_imnet.benchmark.commands import PROCESSES
from nnunetv2_imnet.benchmark.label_budgets import check_budgets, source_splits
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job

#: what each job asks for unless the user gives an option of the same name: fits any node. Preparation and a
#: training task's evaluation run ``PROCESSES`` worker processes; the report runs in one process.
DEFAULT_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "prepare": (f"--cpus-per-task={PROCESSES}",),
    "train": (f"--cpus-per-task={PROCESSES}", "--requeue"),
    "report": ("--cpus-per-task=1",),
}


def student_submissions(spec: BenchmarkSpec, jobs: Sequence[Job]) -> List[str]:
    """``submit.sh``'s lines that submit each self-training student's task after its teacher's array task; a student
    whose teacher failed is cancelled (``--kill-on-invalid-dep``), so that the report still starts."""
    lines = []
    for index, job in enumerate(jobs):
        if job.is_student:
            teacher = jobs.index(spec.teacher(job))
            lines += [f"# {job.label}: waits for its teacher, array index {teacher}",
                      f'students="$students:$(sbatch --parsable --array={index} '
                      f'--dependency=afterok:${{train}}_{teacher} --kill-on-invalid-dep=yes train.sbatch)"']
    return lines


def index_ranges(indices: Sequence[int]) -> str:
    """Sorted array indices as sbatch's ``--array`` writes them: ``[0, 1, 2, 4, 5, 7]`` -> ``0-2,4-5,7``."""
    ranges: List[List[int]] = []
    for index in sorted(indices):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def option_name(option: str) -> str:
    """``--time=48:00:00`` -> ``--time``. Only long options can replace a default, so others raise ValueError."""
    words = option.split("=", 1)[0].split()
    if len(words) != 1 or not words[0].startswith("--") or len(words[0]) < 3:
        raise ValueError(f"{option!r} is not a long sbatch option; write it as --name=value, e.g. "
                         f"--cpus-per-task=8 rather than -c 8.")
    return words[0]


def sbatch_options(kind: str, given: Sequence[str]) -> List[str]:
    """The defaults of job ``kind`` that ``given`` does not replace (same option name), then ``given``."""
    replaced = {option_name(o) for o in given}
    return [o for o in DEFAULT_OPTIONS[kind] if option_name(o) not in replaced] + list(given)


def write_slurm_scripts(spec: BenchmarkSpec, folder: Path, options: Mapping[str, Sequence[str]]) -> Path:
    """Write ``prepare.sbatch``, ``train.sbatch`` (the array), ``report.sbatch`` and ``submit.sh``.

    ``options`` maps a job kind (``prepare``, ``train``, ``report``) to the user's extra ``#SBATCH`` options.
    """
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown SLURM job kinds {sorted(unknown)}; the jobs are {list(DEFAULT_OPTIONS)}.")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = shlex.quote(str(spec.work_path / "spec.json"))
    cli = f"{shlex.quote(sys.executable)} -m nnunetv2_imnet.cli"
    logs, slurm_logs = spec.logs_dir(), spec.logs_dir() / "slurm"
    names = spec.dataset_names()
    for budget in spec.label_budgets(names):  # a budget too large for a fold fails here, not on the cluster
        check_budgets(source_splits(Path(spec.raw) / budget.source, spec.nnunet_preprocessed() / budget.source,
                                    write=False), [budget.labeled_cases], budget.source)
    runs = spec.jobs(names)
    last, array = len(runs) - 1, index_ranges([i for i, job in enumerate(runs) if not job.is_student])
    students = student_submissions(spec, runs)
    jobs = {
        "prepare": (f"{cli} prepare --spec {spec_file}",
                    f"link, derive and preprocess the datasets (nnUNetv2_plan_and_preprocess -np {PROCESSES}); "
                    f"full logs: {_quotable(logs)}/prepare_*.log",
                    f"fix the cause, scancel the waiting training array and report, then run "
                    f"bash {_quotable(folder)}/submit.sh again (finished work is kept)"),
        "train": (f"{cli} benchmark-job --spec {spec_file} --index \"$SLURM_ARRAY_TASK_ID\"",
                  f"train, predict and evaluate the run of array index $SLURM_ARRAY_TASK_ID (of 0-{last}) named "
                  f"below; full logs: the files it names in {_quotable(logs)}/",
                  f"fix the cause, then sbatch --array=$SLURM_ARRAY_TASK_ID {_quotable(folder)}/train.sbatch "
                  f"(it continues where it stopped) and sbatch {_quotable(folder)}/report.sbatch"),
        "report": (f"{cli} report --spec {spec_file}",
                   f"collect what the tasks wrote into {_quotable(spec.results_dir())}/results.md, results.csv "
                   f"and plots; full log: this file",
                   f"fix the cause, then sbatch {_quotable(folder)}/report.sbatch"),
    }
    for kind, (command, about, on_failure) in jobs.items():
        output = "%x_%A_%a.log" if kind == "train" else "%x_%j.log"
        directives = [f"--job-name=imnet-{kind}", f"--output={slurm_logs}/{output}"]
        if kind == "train":
            directives.append(f"--array={array}")
        directives += sbatch_options(kind, options.get(kind, ()))
        (folder / f"{kind}.sbatch").write_text(_job_script(directives, command, about, on_failure))
    submit = folder / "submit.sh"
    submit.write_text("\n".join([
        "#!/bin/bash",
        "# preparation, then the training array, then the report (also after failed tasks: it lists them)",
        "set -euo pipefail",
        f"cd {shlex.quote(str(folder))}",
        f"mkdir -p {shlex.quote(str(slurm_logs))}",
        "prepare=$(sbatch --parsable prepare.sbatch)",
        "train=$(sbatch --parsable --dependency=afterok:$prepare train.sbatch)",
        *(['students=""', *students] if students else []),
        f"report=$(sbatch --parsable --dependency=afterany:$train{'$students' if students else ''} report.sbatch)",
        'echo "submitted: prepare $prepare, train $train, '
        + ('self-training students${students//:/ }, ' if students else '')
        + f'report $report; their logs: {_quotable(slurm_logs)}"',
    ]) + "\n")
    return submit


def _job_script(directives: Sequence[str], command: str, about: str, on_failure: str) -> str:
    """A job that logs what it runs (``about`` and the command line) and ends its log with the exit status.

    The trap keeps bash alive through SIGTERM (time limit, scancel, preemption) so the last line is still written.
    """
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "set -euo pipefail",
                      "trap 'echo \"$(date -Is) SIGTERM: stopped by the time limit, scancel or preemption\"' TERM",
                      f'echo "$(date -Is) ${{SLURM_JOB_NAME:-}} job ${{SLURM_JOB_ID:-}} on $(hostname): {about}"',
                      f"command=({command})",
                      'echo "+ ${command[*]}"',
                      "status=0",
                      '"${command[@]}" || status=$?',
                      'if [ "$status" -eq 0 ]; then echo "$(date -Is) finished: exit status 0"',
                      f'else echo "$(date -Is) FAILED: exit status $status; see the error above; {on_failure}"; fi',
                      'exit "$status"']) + "\n"


def _quotable(path: Path) -> str:
    """``path`` escaped for a double-quoted shell string (where ``$`` and backquotes would expand)."""
    return "".join("\\" + c if c in '"$`\\' else c for c in str(path))
