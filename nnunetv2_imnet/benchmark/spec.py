"""What a benchmark runs: datasets x configurations x methods x folds, and where everything lives on disk."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunetv2_imnet import naming
from nnunetv2_imnet.benchmark.noise import NOISE_KINDS, condition_name
from nnunetv2_imnet.naming import BASELINE_TRAINER, DEFAULT_PLANS, PLANNERS
from nnunetv2_imnet.training.budgets import BUDGETS

#: the trainers a benchmark compares unless told otherwise
DEFAULT_TRAINERS = (BASELINE_TRAINER, "nnUNetTrainerIMNet")


@dataclass(frozen=True)
class Method:
    """A trainer (without budget suffix) on a plans identifier: one row of the leaderboard."""

    trainer: str
    plans: str

    @property
    def label(self) -> str:
        return self.trainer if self.plans == DEFAULT_PLANS else f"{self.trainer}@{self.plans}"


@dataclass(frozen=True)
class Task:
    """A dataset and configuration: one column group of the leaderboard."""

    dataset: str  # nnU-Net dataset folder name, e.g. Dataset004_Hippocampus
    configuration: str

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.configuration}"


@dataclass(frozen=True)
class Job:
    """One training run: a method on a task and fold, and everything evaluated from it."""

    task: Task
    method: Method
    fold: int
    budget: str

    @property
    def trainer_class(self) -> str:
        return naming.budget_trainer_name(self.method.trainer, self.budget)

    @property
    def label(self) -> str:
        return f"{self.task.label} {self.method.label} fold {self.fold}"


@dataclass(frozen=True)
class NoisyDataset:
    """A noisy copy of a raw dataset to train on (IM-Net's premise), with its own dataset id."""

    source_id: int
    kind: str
    snr: float
    dataset_id: int


@dataclass
class BenchmarkSpec:
    """Everything a run needs; saved as ``spec.json`` in the work folder so SLURM tasks and reports reuse it."""

    raw: str
    work: str
    datasets: List[int]
    configurations: List[str] = field(default_factory=lambda: ["3d_fullres"])
    trainers: List[str] = field(default_factory=lambda: list(DEFAULT_TRAINERS))
    plans: List[str] = field(default_factory=lambda: [DEFAULT_PLANS])
    folds: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    budget: str = "full"
    device: str = "cuda"
    train_noise: List[Tuple[str, float]] = field(default_factory=list)
    noise_folds: List[int] = field(default_factory=lambda: [0])
    eval_noise: List[Tuple[str, float]] = field(
        default_factory=lambda: [(k, s) for k in NOISE_KINDS for s in (20.0, 10.0, 5.0)])
    nsd_tolerance_mm: float = 1.0
    seed: int = 0
    #: a folder that keeps a light copy of every finished job and restores it into a fresh work folder (archive.py)
    archive: Optional[str] = None

    def validate(self) -> "BenchmarkSpec":
        if self.budget not in BUDGETS:
            raise ValueError(f"Unknown budget {self.budget!r}; use one of {list(BUDGETS)}.")
        if BASELINE_TRAINER not in self.trainers:
            raise ValueError(f"The trainers {self.trainers} must include the baseline {BASELINE_TRAINER}: every "
                             f"comparison is against it.")
        from nnunetv2_imnet.training.catalogue import ALL_TRAINERS  # the trainers, torch and nnU-Net: only here
        unknown = [t for t in self.trainers if naming.budget_trainer_name(t, self.budget) not in ALL_TRAINERS]
        if unknown:
            raise ValueError(f"Unknown trainer(s) {unknown}. Give names without the budget suffix; "
                             f"`nnunetv2-imnet trainers` lists them.")
        unknown = [p for p in self.plans if p not in PLANNERS]
        if unknown:
            raise ValueError(f"Unknown plans identifier(s) {unknown}; supported: {list(PLANNERS)}.")
        for name, folds in (("folds", self.folds), ("noise_folds", self.noise_folds)):
            if any(f not in range(5) for f in folds):
                raise ValueError(f"{name} {folds} must be among nnU-Net's 5 cross-validation folds 0-4.")
        if self.nsd_tolerance_mm <= 0:
            raise ValueError(f"nsd_tolerance_mm must be > 0, got {self.nsd_tolerance_mm}.")
        if not self.datasets:
            raise ValueError("Give at least one dataset id.")
        if not self.folds and not (self.train_noise and self.noise_folds):
            raise ValueError("Nothing to train: no folds on the clean datasets and no noisy copies. Give --folds, "
                             "or --train-noise KIND:SNR with --noise-folds.")
        return self

    # ------------------------------------------------------------------ layout
    @property
    def work_path(self) -> Path:
        return Path(self.work)

    def nnunet_raw(self) -> Path:
        """The benchmark's own nnUNet_raw: links to the source datasets plus the derived noisy ones."""
        return self.work_path / "nnUNet_raw"

    def nnunet_preprocessed(self) -> Path:
        return self.work_path / "nnUNet_preprocessed"

    def nnunet_results(self) -> Path:
        return self.work_path / "nnUNet_results"

    def results_dir(self) -> Path:
        return self.work_path / "results"

    def logs_dir(self) -> Path:
        return self.work_path / "logs"

    def model_dir(self, job: Job) -> Path:
        """nnU-Net's model folder of the job's trainer class, plans and configuration (all folds)."""
        return naming.model_folder(self.nnunet_results(), job.task.dataset, job.trainer_class, job.method.plans,
                                   job.task.configuration)

    def fold_dir(self, job: Job) -> Path:
        return naming.fold_folder(self.model_dir(job), job.fold)

    def evaluation_dir(self, job: Job, condition: str) -> Path:
        return (self.work_path / "evaluations" / job.task.dataset / job.task.configuration / job.method.label /
                f"fold_{job.fold}" / condition)

    def summary_files(self, job: Job) -> List[Tuple[str, Path]]:
        """``(evaluation, summary.json)`` of every evaluation of ``job``, whether it ran or not: nnU-Net's validation,
        the labelled test split and each robustness condition."""
        summaries = [("validation", self.fold_dir(job) / "validation" / "summary.json")]
        return summaries + [(name, self.evaluation_dir(job, name) / "predictions" / "summary.json")
                            for name in ["test"] + [name for name, _ in self.eval_conditions()]]

    # ------------------------------------------------------------------ what runs
    def noisy_datasets(self) -> List[NoisyDataset]:
        """Derived datasets get ids 900, 901, ... in spec order (the benchmark's nnUNet_raw holds only these
        and the requested source datasets, so the ids cannot clash with a user's own datasets)."""
        settings = [(source, kind, snr) for source in self.datasets for kind, snr in self.train_noise]
        derived = [NoisyDataset(source, kind, snr, 900 + i) for i, (source, kind, snr) in enumerate(settings)]
        clashes = sorted({n.dataset_id for n in derived} & set(self.datasets))
        if clashes:
            raise ValueError(f"Source dataset id(s) {clashes} collide with the ids 900+ reserved for noisy copies; "
                             f"rename those datasets below 900.")
        return derived

    def methods(self) -> List[Method]:
        return [Method(t, p) for p in self.plans for t in self.trainers]

    @property
    def baseline(self) -> Method:
        return Method(BASELINE_TRAINER, self.plans[0])

    def controls(self) -> Dict[str, str]:
        """Label of each regularised IMNet arm -> label of its weight-0 control arm on the same plans, where the
        spec runs both (e.g. ``nnUNetTrainerIMNet`` -> ``nnUNetTrainerIMNet_lambda0``)."""
        from nnunetv2_imnet.training.catalogue import weight_zero_controls  # torch and nnU-Net: only here
        pairs = weight_zero_controls(self.trainers)
        return {Method(arm, p).label: Method(control, p).label for p in self.plans for arm, control in pairs.items()}

    def eval_conditions(self) -> List[Tuple[str, Optional[Tuple[str, float]]]]:
        """``(name, (kind, snr))`` per robustness condition; the clean one has no noise."""
        return [("clean", None)] + [(condition_name(k, s), (k, s)) for k, s in self.eval_noise]

    def jobs(self, dataset_names: Dict[int, str]) -> List[Job]:
        """Clean datasets on ``folds``; datasets trained under noise on ``noise_folds``."""
        runs: List[Tuple[int, Sequence[int]]] = [(d, self.folds) for d in self.datasets]
        runs += [(n.dataset_id, self.noise_folds) for n in self.noisy_datasets()]
        # methods innermost: every finished fold soon has its paired baseline
        return [Job(Task(dataset_names[d], c), m, f, self.budget)
                for d, folds in runs for c in self.configurations for f in folds for m in self.methods()]

    def save(self, path: Optional[Path] = None) -> Path:
        path = path or self.work_path / "spec.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> "BenchmarkSpec":
        if not Path(path).is_file():
            raise FileNotFoundError(f"No benchmark spec at {path}. `nnunetv2-imnet benchmark ... --work DIR` "
                                    f"writes DIR/spec.json; pass that file.")
        values = json.loads(Path(path).read_text())
        for key in ("train_noise", "eval_noise"):
            values[key] = [tuple(v) for v in values.get(key, [])]
        return cls(**values).validate()

