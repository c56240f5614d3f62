"""What a benchmark runs: datasets x configurations x methods x folds, and where everything lives on disk."""
from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunetv2_imnet import naming
from nnunetv2_imnet.benchmark.metrics import METRIC_PARAMETERS, default_metric_parameters
from nnunetv2_imnet.benchmark.noise import NOISE_KINDS, condition_name
from nnunetv2_imnet.naming import (BASELINE_TRAINER, DEFAULT_PLANS, LABEL_BUDGET_IDS, NOISY_IDS, PLANNERS,
                                   PSEUDO_LABEL_IDS, SELF_TRAINING)
from nnunetv2_imnet.training.budgets import BUDGETS

#: the trainers a benchmark compares unless told otherwise
DEFAULT_TRAINERS = (BASELINE_TRAINER, "nnUNetTrainerIMNet")
#: derived datasets of one kind get the ids from their kind's first id on; there are this many
IDS_PER_KIND = 100


def uses_unlabelled_images(trainer: str) -> bool:
    """Whether a trainer's MI term reads preprocessed unlabelled images (``nnunetv2_imnet.unlabelled``), which the
    benchmark prepares for its label budgets."""
    from nnunetv2_imnet.training.catalogue import ALL_TRAINERS  # torch and nnU-Net: only here
    from nnunetv2_imnet.training.unlabelled_trainer import nnUNetTrainerIMNet_Unlabelled
    return issubclass(ALL_TRAINERS.get(trainer, object), nnUNetTrainerIMNet_Unlabelled)


def semi_supervised(trainer: str) -> bool:
    """Whether an arm learns from the unlabelled cases of a label budget (a full-label dataset has none): the
    self-training arm and every trainer that uses unlabelled images."""
    return trainer == SELF_TRAINING or uses_unlabelled_images(trainer)


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
class LabelBudget:
    """N labelled training cases a fold of a source dataset, as a derived dataset (ids 700+) that shares the source's
    files and differs in its splits_final.json (``label_budgets.py``)."""

    source: str  # the source dataset's folder name, e.g. Dataset004_Hippocampus
    labeled_cases: int
    dataset: str  # its own folder name, e.g. Dataset700_HippocampusL1


@dataclass(frozen=True)
class Job:
    """One training run: a method on a task and fold, and everything evaluated from it."""

    task: Task
    method: Method
    fold: int
    budget: str
    #: the label budget whose dataset ``task`` is; None for a run on all labels
    label_budget: Optional[LabelBudget] = None
    #: the dataset nnU-Net trains on where it is not the task's: the self-training student's pseudo-labelled one
    nnunet_dataset: Optional[str] = None

    @property
    def trainer_class(self) -> str:
        return naming.budget_trainer_name(naming.nnunet_trainer(self.method.trainer), self.budget)

    @property
    def model_dataset(self) -> str:
        """The dataset folder name that ``nnUNetv2_train`` and ``nnUNetv2_predict`` get."""
        return self.nnunet_dataset or self.task.dataset

    @property
    def labeled_cases(self) -> Optional[int]:
        return None if self.label_budget is None else self.label_budget.labeled_cases

    @property
    def is_student(self) -> bool:
        return self.method.trainer == SELF_TRAINING

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
    #: the metrics' parameters by key (``metrics.METRIC_PARAMETERS``), e.g. NSD's tolerance in mm
    metric_parameters: Dict[str, float] = field(default_factory=default_metric_parameters)
    seed: int = 0
    #: a folder that keeps a light copy of every finished job and restores it into a fresh work folder (archive.py)
    archive: Optional[str] = None
    #: label budgets: every arm also trains on each number of labelled cases per fold (increasing, distinct)
    labeled_cases: List[int] = field(default_factory=list)
    #: the seed of the draw of the labelled cases (label_budgets.draw_labelled)
    label_seed: int = 0
    #: with label budgets: also train the supervised arms on all labels of the clean datasets (the full-label point)
    full_labels: bool = True
    #: an earlier run's results.csv whose validation rows on the same datasets and configurations give the learning
    #: curve's full-label point instead
    full_label_results: Optional[str] = None

    def validate(self) -> "BenchmarkSpec":
        if self.budget not in BUDGETS:
            raise ValueError(f"Unknown budget {self.budget!r}; use one of {list(BUDGETS)}.")
        if BASELINE_TRAINER not in self.trainers:
            raise ValueError(f"The trainers {self.trainers} must include the baseline {BASELINE_TRAINER}: every "
                             f"comparison is against it.")
        from nnunetv2_imnet.training.catalogue import ALL_TRAINERS  # the trainers, torch and nnU-Net: only here
        unknown = [t for t in self.trainers
                   if t != SELF_TRAINING and naming.budget_trainer_name(t, self.budget) not in ALL_TRAINERS]
        if unknown:
            raise ValueError(f"Unknown trainer(s) {unknown}. Give names without the budget suffix (or "
                             f"{SELF_TRAINING} for nnU-Net self-training); `nnunetv2-imnet trainers` lists them.")
        self._validate_label_budgets()
        unknown = [p for p in self.plans if p not in PLANNERS]
        if unknown:
            raise ValueError(f"Unknown plans identifier(s) {unknown}; supported: {list(PLANNERS)}.")
        for name, folds in (("folds", self.folds), ("noise_folds", self.noise_folds)):
            if any(f not in range(5) for f in folds):
                raise ValueError(f"{name} {folds} must be among nnU-Net's 5 cross-validation folds 0-4.")
        unknown = sorted(set(self.metric_parameters) ^ set(METRIC_PARAMETERS))
        if unknown:
            raise ValueError(f"metric_parameters must give exactly {sorted(METRIC_PARAMETERS)}; "
                             f"{unknown} missing or unknown in {self.metric_parameters}.")
        for key, value in self.metric_parameters.items():
            METRIC_PARAMETERS[key].check(value)
        if not self.datasets:
            raise ValueError("Give at least one dataset id.")
        if not self.folds and not (self.train_noise and self.noise_folds):
            raise ValueError("Nothing to train: no folds on the clean datasets and no noisy copies. Give --folds, "
                             "or --train-noise KIND:SNR with --noise-folds.")
        return self

    def _validate_label_budgets(self) -> None:
        budgets = self.labeled_cases
        if budgets != sorted(set(budgets)) or any(not isinstance(n, int) or n < 1 for n in budgets):
            raise ValueError(f"labeled_cases {budgets} must be distinct whole numbers >= 1 in increasing order, "
                             f"e.g. [1, 2, 5].")
        unlabelled = [t for t in self.trainers if semi_supervised(t)]
        if unlabelled and not budgets:
            raise ValueError(f"{unlabelled} learn from unlabelled cases, which only label budgets have: add "
                             f"--labeled-cases N [N ...], or leave them out.")
        if budgets and not self.folds:
            raise ValueError(f"Label budgets {budgets} train on --folds, and none is given; give at least one fold.")
        if not self.full_labels and not budgets:
            raise ValueError("full_labels is off but there are no label budgets: nothing would train on the clean "
                             "datasets. Give --labeled-cases, or train on all labels.")
        if self.full_label_results is not None and not Path(self.full_label_results).is_file():
            raise FileNotFoundError(f"full_label_results {self.full_label_results} is not a file; pass the "
                                    f"results.csv of an earlier run of the same datasets and budget.")

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
        return naming.model_folder(self.nnunet_results(), job.model_dataset, job.trainer_class, job.method.plans,
                                   job.task.configuration)

    def splits_file(self, dataset: str) -> Path:
        """nnU-Net's split of a dataset of the benchmark (a label budget's: its labelled cases)."""
        return self.nnunet_preprocessed() / dataset / naming.SPLITS_FILE

    def prepared_marker(self, dataset: str, plans: str, configuration: str) -> Path:
        """Written once a dataset is preprocessed (or linked, for a label budget) for plans and configuration."""
        return self.nnunet_preprocessed() / dataset / f".prepared_{plans}_{configuration}"

    def pseudo_label_dir(self, student: Job) -> Path:
        """A self-training student's teacher predictions: ``inputs`` (links to the unlabelled images) and
        ``predictions`` (the pseudo-labels)."""
        return self.work_path / "pseudo_labels" / student.model_dataset

    def unlabelled_images_dir(self, source: str) -> Path:
        """Links to the images (never the labels) of every training case of a source dataset."""
        return self.work_path / "unlabelled_images" / source

    def fold_dir(self, job: Job) -> Path:
        return naming.fold_folder(self.model_dir(job), job.fold)

    def evaluation_dir(self, job: Job, condition: str) -> Path:
        return (self.work_path / "evaluations" / job.task.dataset / job.task.configuration / job.method.label /
                f"fold_{job.fold}" / condition)

    def summary_files(self, job: Job) -> List[Tuple[str, Path]]:
        """``(evaluation, summary.json)`` of every evaluation of ``job``, whether it ran or not: nnU-Net's validation,
        the labelled test split and each robustness condition."""
        summaries = [(naming.VALIDATION, self.fold_dir(job) / naming.VALIDATION / "summary.json")]
        return summaries + [(name, self.evaluation_dir(job, name) / "predictions" / "summary.json")
                            for name in [naming.TEST] + [name for name, _ in self.eval_conditions()]]

    # ------------------------------------------------------------------ what runs
    def noisy_datasets(self) -> List[NoisyDataset]:
        """Noisy copies get ids 900, 901, ... in spec order (the benchmark's nnUNet_raw holds only the derived
        datasets and the requested source datasets, so the ids cannot clash with a user's own datasets)."""
        settings = [(source, kind, snr) for source in self.datasets for kind, snr in self.train_noise]
        derived = [NoisyDataset(source, kind, snr, NOISY_IDS + i) for i, (source, kind, snr) in enumerate(settings)]
        self._check_ids("noisy copies", NOISY_IDS, len(derived))
        return derived

    def label_budgets(self, dataset_names: Dict[int, str]) -> List[LabelBudget]:
        """One derived dataset per source dataset and budget, ids 700, 701, ... in spec order."""
        settings = [(source, n) for source in self.datasets for n in self.labeled_cases]
        self._check_ids("label budgets", LABEL_BUDGET_IDS, len(settings))
        return [LabelBudget(dataset_names[source], n,
                            naming.label_budget_dataset_name(dataset_names[source], LABEL_BUDGET_IDS + i, n))
                for i, (source, n) in enumerate(settings)]

    def _check_ids(self, kind: str, first: int, count: int) -> None:
        if count > IDS_PER_KIND:
            raise ValueError(f"{count} {kind} need more than the {IDS_PER_KIND} dataset ids {first}-"
                             f"{first + IDS_PER_KIND - 1}; run fewer at a time.")
        clashes = sorted(set(range(first, first + count)) & set(self.datasets))
        if clashes:
            raise ValueError(f"Source dataset id(s) {clashes} collide with the ids {first}+ of the {kind} the "
                             f"benchmark derives; rename those datasets below {LABEL_BUDGET_IDS}.")

    def methods(self) -> List[Method]:
        return [Method(t, p) for p in self.plans for t in self.trainers]

    def teacher(self, student: Job) -> Job:
        """The job whose model labels a self-training student's unlabelled cases: the baseline on the same label
        budget, configuration, fold and plans."""
        return replace(student, method=Method(BASELINE_TRAINER, student.method.plans), nnunet_dataset=None)

    @property
    def baseline(self) -> Method:
        return Method(BASELINE_TRAINER, self.plans[0])

    def controls(self) -> Dict[str, str]:
        """Label of each regularised IMNet arm -> label of its weight-0 control arm on the same plans, where the
        spec runs both (e.g. ``nnUNetTrainerIMNet`` -> ``nnUNetTrainerIMNet_lambda0``)."""
        from nnunetv2_imnet.training.catalogue import weight_zero_controls  # torch and nnU-Net: only here
        pairs = weight_zero_controls(self.trainers)
        return {Method(arm, p).label: Method(control, p).label for p in self.plans for arm, control in pairs.items()}

    def reference_pairs(self) -> List[Tuple[str, str]]:
        """``(arm, reference)`` labels compared besides every arm against the baseline: each regularised IMNet arm
        against its weight-0 control, and each IMNet arm that learns from unlabelled images against nnU-Net
        self-training (the semi-supervised baseline nnU-Net's maintainers recommend) on the same plans."""
        pairs = list(self.controls().items())
        if SELF_TRAINING in self.trainers:
            controls = set(self.controls().values())
            pairs += [(Method(t, p).label, Method(SELF_TRAINING, p).label) for p in self.plans for t in self.trainers
                      if uses_unlabelled_images(t) and Method(t, p).label not in controls]
        return pairs

    def eval_conditions(self) -> List[Tuple[str, Optional[Tuple[str, float]]]]:
        """``(name, (kind, snr))`` per robustness condition; the clean one has no noise."""
        return [(naming.CLEAN, None)] + [(condition_name(k, s), (k, s)) for k, s in self.eval_noise]

    def jobs(self, dataset_names: Dict[int, str]) -> List[Job]:
        """Clean datasets on ``folds`` (all labels, unless ``full_labels`` is off), datasets trained under noise on
        ``noise_folds``, then each label budget on ``folds``, fold by fold, so that every budget and fold is
        complete before the next begins. A self-training student comes right after its teacher: the teacher
        predicts the pseudo-labels, which are archived at once, while its model is still on this machine (an
        archive keeps no model, so a teacher restored from one would have to be trained again).
        ``dataset_names``: id -> folder name of the source and noisy datasets; derived names follow by rule."""
        runs: List[Tuple[int, Sequence[int]]] = [(d, self.folds) for d in self.datasets if self.full_labels]
        runs += [(n.dataset_id, self.noise_folds) for n in self.noisy_datasets()]
        supervised = [m for m in self.methods() if not semi_supervised(m.trainer)]
        # methods innermost: every finished fold soon has its paired baseline
        jobs = [Job(Task(dataset_names[d], c), m, f, self.budget)
                for d, folds in runs for c in self.configurations for f in folds for m in supervised]
        budgets = self.label_budgets(dataset_names)
        arms = [m for m in self.methods() if m.trainer != SELF_TRAINING]
        students = {(job.task, job.fold, job.method.plans): job for job in self._students(budgets)}
        for b in budgets:
            for c in self.configurations:
                for f in self.folds:
                    for arm in (Job(Task(b.dataset, c), m, f, self.budget, b) for m in arms):
                        student = students.get((arm.task, f, arm.method.plans))
                        jobs += [arm, student] if student and arm.method.trainer == BASELINE_TRAINER else [arm]
        return jobs

    def _students(self, budgets: Sequence[LabelBudget]) -> List[Job]:
        """One self-training student per label budget, configuration, fold and plans, each on its own
        pseudo-labelled dataset (ids 800, 801, ...)."""
        if SELF_TRAINING not in self.trainers:
            return []
        settings = [(b, c, f, p) for b in budgets for c in self.configurations for f in self.folds for p in self.plans]
        self._check_ids("pseudo-labelled datasets", PSEUDO_LABEL_IDS, len(settings))
        return [Job(Task(b.dataset, c), Method(SELF_TRAINING, p), f, self.budget, b,
                    naming.pseudo_label_dataset_name(b.source, PSEUDO_LABEL_IDS + i, b.labeled_cases, f, c, p))
                for i, (b, c, f, p) in enumerate(settings)]

    def dataset_names(self) -> Dict[int, str]:
        """Id -> folder name of the source datasets (as found in ``raw``) and their noisy copies (by rule): what
        ``jobs`` takes, without linking or deriving anything."""
        names = {d: naming.find_dataset_folder(Path(self.raw), d).name for d in self.datasets}
        names.update({n.dataset_id: naming.noisy_dataset_name(names[n.source_id], n.dataset_id, n.kind, n.snr)
                      for n in self.noisy_datasets()})
        return names

    def retrain_command(self, job: Job, dataset_names: Optional[Dict[int, str]] = None) -> str:
        """The command that sets ``job``'s finished run aside (work folder and archive) and trains it again.
        ``dataset_names`` as for ``jobs`` (by default read from ``raw``)."""
        index = self.jobs(dataset_names if dataset_names is not None else self.dataset_names()).index(job)
        return (f"nnunetv2-imnet benchmark-job --spec {shlex.quote(str(self.work_path / 'spec.json'))} "
                f"--index {index} --retrain")

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
        if "nsd_tolerance_mm" in values:  # spec.json written before metric parameters were declared with the metric
            values["metric_parameters"] = {"nsd_tolerance_mm": values.pop("nsd_tolerance_mm")}
        for key in ("train_noise", "eval_noise"):
            values[key] = [tuple(v) for v in values.get(key, [])]
        return cls(**values).validate()

