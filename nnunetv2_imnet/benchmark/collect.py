"""Gathers what the runs wrote into tables: per-case metrics, training cost and convergence curves."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_imnet.benchmark.metrics import METRICS, EvaluatedCase, Metric, evaluated_cases
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job, LabelBudget
from nnunetv2_imnet.naming import TRAINING_CURVES, training_done
from nnunetv2_imnet.provenance import attempt_machines

Label = Union[int, Tuple[int, ...]]
#: what identifies a row of results.csv; one column per registered metric follows. ``labeled_cases``: the labelled
#: training cases a fold of a label budget's run, empty where all labels were used
IDENTITY_COLUMNS = ["dataset", "configuration", "plans", "trainer", "method", "labeled_cases", "fold", "evaluation",
                    "case", "class", "label"]
CURVE_KEYS = ("mean_fg_dice", "ema_fg_dice", "mi_estimate", "train_seconds_per_iteration", "peak_memory_mb")


@dataclass
class Collected:
    cases: pd.DataFrame  # case_columns(): one row per job x evaluation x case x class
    training: pd.DataFrame  # one row per job x epoch with CURVE_KEYS and the machines its attempts ran on
    missing: List[Job]  # jobs that have not finished
    label_budgets: List[LabelBudget] = field(default_factory=list)  # of the jobs, finished or not, in spec order


def collect(spec: BenchmarkSpec, jobs: Sequence[Job]) -> Collected:
    case_rows: List[dict] = []
    curve_rows: List[dict] = []
    missing: List[Job] = []
    for job in jobs:
        fold_dir = spec.fold_dir(job)
        if not training_done(fold_dir):
            missing.append(job)
            continue
        labels = _labels(spec.model_dir(job))
        file_ending = json.loads((spec.model_dir(job) / "dataset.json").read_text())["file_ending"]
        identity = {"dataset": job.task.dataset, "configuration": job.task.configuration, "plans": job.method.plans,
                    "trainer": job.method.trainer, "method": job.method.label, "labeled_cases": job.labeled_cases,
                    "fold": job.fold}
        for evaluation, summary in spec.summary_files(job):
            if summary.is_file():
                case_rows += _case_rows(identity, evaluation, summary, labels, file_ending, spec.metric_parameters)
        machines = tuple(attempt_machines(fold_dir))  # empty for a run from before the record
        curve_rows += [{**identity, **row, "machines": machines} for row in training_curves(fold_dir)]
    cases = pd.DataFrame(case_rows, columns=case_columns())
    cases["labeled_cases"] = cases["labeled_cases"].astype("Int64")  # whole numbers, empty for all labels
    budgets = list(dict.fromkeys(job.label_budget for job in jobs if job.label_budget is not None))
    return Collected(cases, pd.DataFrame(curve_rows), missing, budgets)


def case_columns() -> List[str]:
    """results.csv's columns: the identity, then every metric of the registry."""
    return IDENTITY_COLUMNS + list(METRICS)


def _labels(trainer_dir: Path) -> Dict[str, Tuple[Label, str]]:
    """summary.json key -> (label or region, class name), from the dataset.json and plans nnU-Net saved."""
    dataset_json = json.loads((trainer_dir / "dataset.json").read_text())
    plans = json.loads((trainer_dir / "plans.json").read_text())
    manager = PlansManager(plans).get_label_manager(dataset_json)
    labels = manager.foreground_regions if manager.has_regions else manager.foreground_labels
    names = {str(_as_key(value)): name for name, value in dataset_json["labels"].items()}
    return {str(_as_key(label)): (_as_key(label), names.get(str(_as_key(label)), str(label))) for label in labels}


def _as_key(value) -> Label:
    """nnU-Net keys summary.json by ``str()`` of an int label or a tuple region."""
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)


def _case_rows(identity: dict, evaluation: str, summary: Path, labels: Dict[str, Tuple[Label, str]],
               file_ending: str, parameters: Mapping[str, float]) -> List[dict]:
    """One row per case and class with every registered metric, for the cases of nnU-Net's summary.json."""
    cases = evaluated_cases(summary, {key: label for key, (label, _) in labels.items()}, parameters, file_ending)
    values = {metric.name: _metric_values(metric, cases, summary.parent, parameters) for metric in METRICS.values()}
    return [{**identity, "evaluation": evaluation, "case": case, "class": name, "label": key,
             **{metric: values[metric][case].get(key, math.nan) for metric in values}}
            for case in cases for key, (_, name) in labels.items()]


def _metric_values(metric: Metric, cases: Dict[str, EvaluatedCase], folder: Path,
                   parameters: Mapping[str, float]) -> Dict[str, Dict[str, float]]:
    """case -> label key -> value; a metric with a ``cache_file`` is computed once per set of cases."""
    if metric.cache_file is None:
        return {case: dict(metric.per_case(evaluated)) for case, evaluated in cases.items()}
    cache_file = folder / metric.cache_name(parameters)
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if set(cached) == set(cases):
            return cached
    values = {case: {key: float(v) for key, v in metric.per_case(evaluated).items()}
              for case, evaluated in cases.items()}
    cache_file.write_text(json.dumps(values))
    return values


def training_curves(fold: Path) -> List[dict]:
    """Per-epoch pseudo Dice, MI estimate and cost from the logging that nnU-Net keeps in the final checkpoint (or
    its JSON copy, for a job restored from a benchmark archive)."""
    logging = training_logging(fold)
    epochs = len(logging["mean_fg_dice"])
    return [{"epoch": e, **{k: float(logging[k][e]) if k in logging and e < len(logging[k]) else math.nan
                            for k in CURVE_KEYS}, "epoch_seconds": _epoch_seconds(logging, e)} for e in range(epochs)]


def training_logging(fold: Path) -> dict:
    """nnU-Net's logging dict (lists per key) of a finished fold."""
    checkpoint = fold / "checkpoint_final.pth"
    if checkpoint.is_file():
        return torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["logging"]
    logging = json.loads((fold / TRAINING_CURVES).read_text())
    # the archive stored NaN (an epoch without an MI estimate, say) as JSON's null
    return {key: [math.nan if v is None else v for v in values] if isinstance(values, list) else values
            for key, values in logging.items()}


def cache_costly_metrics(summary: Path, trainer_dir: Path, parameters: Mapping[str, float]) -> None:
    """Compute and cache beside ``summary`` every metric with a cache file (NSD reads the segmentations), so that
    the report needs only the summary and its caches, not the predictions."""
    labels = _labels(trainer_dir)
    file_ending = json.loads((trainer_dir / "dataset.json").read_text())["file_ending"]
    cases = evaluated_cases(summary, {key: label for key, (label, _) in labels.items()}, parameters, file_ending)
    for metric in METRICS.values():
        if metric.cache_file is not None:
            _metric_values(metric, cases, summary.parent, parameters)


def _epoch_seconds(logging: dict, epoch: int) -> float:
    """An epoch's wall time from nnU-Net's own timestamps, which the checkpoint keeps across resumed attempts (the
    runner's stage timings cover only the last attempt)."""
    starts, ends = logging.get("epoch_start_timestamps", []), logging.get("epoch_end_timestamps", [])
    return float(ends[epoch] - starts[epoch]) if epoch < min(len(starts), len(ends)) else math.nan


def cost_per_job(training: pd.DataFrame) -> pd.DataFrame:
    """Per job: the wall time of all epochs, the median and fastest epoch's train seconds per iteration (first
    epoch excluded: start-up) and peak memory, and the machines it trained on. The fastest epoch estimates the cost
    without load: other work on the machine slows some epochs, never speeds one up."""
    if training.empty:
        return pd.DataFrame()
    keys = ["dataset", "configuration", "plans", "trainer", "method", "fold", "machines"]

    def summarise(group: pd.DataFrame) -> pd.Series:
        steady = group[group["epoch"] > 0] if len(group) > 1 else group
        seconds = steady["train_seconds_per_iteration"]
        epoch_seconds = group["epoch_seconds"]
        minutes = float(epoch_seconds.sum()) / 60 if epoch_seconds.notna().all() else math.nan
        return pd.Series({"training_minutes": minutes,
                          "seconds_per_iteration": float(np.nanmedian(seconds)),
                          "fastest_seconds_per_iteration": float(np.nanmin(seconds)),
                          "peak_memory_mb": float(np.nanmax(group["peak_memory_mb"]))})

    return training.groupby(keys).apply(summarise, include_groups=False).reset_index()


def read_timings(spec: BenchmarkSpec) -> Optional[Dict[str, float]]:
    path = spec.work_path / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else None
