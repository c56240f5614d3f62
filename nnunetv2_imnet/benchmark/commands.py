"""The nnU-Net command lines a benchmark runs. Pure functions, so ``--dry-run`` prints exactly what would run."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job, Task
from nnunetv2_imnet.naming import PLANNERS, dataset_id

#: nnU-Net's environment variables that the benchmark sets for every command
PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: worker processes of preprocessing and evaluation (``-np``): fits a 2-core machine; SLURM jobs ask for as many CPUs
PROCESSES = 2


def with_console_scripts(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` with this interpreter's script folder first on PATH: nnU-Net's console scripts sit there, also when
    the environment is not activated."""
    return {**env, "PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])}


def nnunet_environment(spec: BenchmarkSpec, training: bool) -> Dict[str, str]:
    """The environment for an nnU-Net command: the benchmark's own folders.

    ``nnUNet_n_proc_DA=0`` (augmentation in the main process) is the fastest setting on a 2-core CPU but breaks
    ``nnUNetv2_plan_and_preprocess``, so it is set for training on CPU only, and removed for everything else.
    """
    env = with_console_scripts(dict(os.environ))
    env.update({"nnUNet_raw": str(spec.nnunet_raw()), "nnUNet_preprocessed": str(spec.nnunet_preprocessed()),
                "nnUNet_results": str(spec.nnunet_results())})
    if training and spec.device == "cpu":
        env.setdefault("nnUNet_n_proc_DA", "0")
    elif not training:
        env.pop("nnUNet_n_proc_DA", None)
    return env


def plan_and_preprocess(task: Task, plans: str) -> List[str]:
    return ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id(task.dataset)), "-c", task.configuration,
            "-pl", PLANNERS[plans], "-np", str(PROCESSES)]


def preprocess(dataset: str, configuration: str, plans: str) -> List[str]:
    """Preprocess a dataset that has plans already (a self-training student's pseudo-labelled dataset)."""
    return ["nnUNetv2_preprocess", "-d", str(dataset_id(dataset)), "-c", configuration, "-plans_name", plans,
            "-np", str(PROCESSES)]


def train(job: Job, device: str, resume: bool) -> List[str]:
    command = ["nnUNetv2_train", str(dataset_id(job.model_dataset)), job.task.configuration, str(job.fold),
               "-tr", job.trainer_class, "-p", job.method.plans, "-device", device]
    return command + (["--c"] if resume else [])


def predict(job: Job, input_folder: Path, output_folder: Path, device: str, tta: bool) -> List[str]:
    command = ["nnUNetv2_predict", "-i", str(input_folder), "-o", str(output_folder),
               "-d", str(dataset_id(job.model_dataset)), "-c", job.task.configuration, "-tr", job.trainer_class,
               "-p", job.method.plans, "-f", str(job.fold), "-device", device, "-npp", "1", "-nps", "1"]
    return command + ([] if tta else ["--disable_tta"])


def evaluate(reference_folder: Path, prediction_folder: Path, dataset_json: Path, plans_json: Path) -> List[str]:
    return ["nnUNetv2_evaluate_folder", str(reference_folder), str(prediction_folder),
            "-djfile", str(dataset_json), "-pfile", str(plans_json), "-np", str(PROCESSES), "--chill"]


def render(command: Sequence[str]) -> str:
    """One shell line, quoted where needed."""
    import shlex
    return " ".join(shlex.quote(c) for c in command)
