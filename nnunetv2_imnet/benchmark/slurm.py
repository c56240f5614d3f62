"""A SLURM job array for a benchmark: preparation, one task per training run, then the report.

Each array task runs ``nnunetv2-imnet benchmark-job --index $SLURM_ARRAY_TASK_ID``, which trains (or continues)
that run and evaluates it; a requeued or resubmitted task continues where it stopped.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from nnunetv2_imnet.benchmark.spec import BenchmarkSpec


def count_jobs(spec: BenchmarkSpec) -> int:
    datasets = len(spec.datasets) * len(spec.folds) + len(spec.noisy_datasets()) * len(spec.noise_folds)
    return datasets * len(spec.configurations) * len(spec.methods())


def write_slurm_scripts(spec: BenchmarkSpec, folder: Path, training_options: Sequence[str] = ()) -> Path:
    """Write ``prepare.sbatch``, ``train.sbatch`` (the array), ``report.sbatch`` and ``submit.sh``."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = spec.work_path / "spec.json"
    cli = f"{shlex.quote(sys.executable)} -m nnunetv2_imnet.cli"
    logs = spec.logs_dir() / "slurm"
    header = ["#!/bin/bash", f"#SBATCH --output={logs}/%x_%A_%a.log", "set -euo pipefail"]
    scripts = {
        "prepare.sbatch": header[:1] + ["#SBATCH --job-name=imnet-prepare", "#SBATCH --cpus-per-task=8"]
        + header[1:] + [f"{cli} prepare --spec {spec_file}"],
        "train.sbatch": header[:1] + ["#SBATCH --job-name=imnet-train", f"#SBATCH --array=0-{count_jobs(spec) - 1}",
                                      "#SBATCH --requeue"] + [f"#SBATCH {o}" for o in training_options]
        + header[1:] + [f"{cli} benchmark-job --spec {spec_file} --index \"$SLURM_ARRAY_TASK_ID\""],
        "report.sbatch": header[:1] + ["#SBATCH --job-name=imnet-report", "#SBATCH --cpus-per-task=4"]
        + header[1:] + [f"{cli} report --spec {spec_file}"],
    }
    for name, lines in scripts.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    submit = folder / "submit.sh"
    submit.write_text("\n".join([
        "#!/bin/bash",
        "# preparation, then the training array, then the report (also after failed tasks: it lists them)",
        "set -euo pipefail",
        f"cd {shlex.quote(str(folder))}",
        f"mkdir -p {shlex.quote(str(logs))}",
        "prepare=$(sbatch --parsable prepare.sbatch)",
        "train=$(sbatch --parsable --dependency=afterok:$prepare train.sbatch)",
        "report=$(sbatch --parsable --dependency=afterany:$train report.sbatch)",
        'echo "submitted: prepare $prepare, train $train, report $report"',
    ]) + "\n")
    return submit
