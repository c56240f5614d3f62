"""Per-case metrics for the leaderboard: normalized surface Dice (NSD) via MONAI, and Dice from nnU-Net's summary.json.

NSD complements Dice: it scores how much of the boundary lies within a clinically tolerable distance, which Dice
(dominated by large interiors) barely sees. ``METRICS`` is the one place to add a metric, with its parameter if it
has one: collection, the report's tables, the ranking, the benchmark spec and its command-line option read it.

torch, MONAI and nnU-Net are imported where a metric is computed, not with the registry: the command line reads
the registry to build its options and must not wait for them.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

#: a label value, or a region (union of label values) as in nnU-Net's region-based training
Label = Union[int, Tuple[int, ...]]
#: one tolerance for every label, or one per label
Tolerance = Union[float, Mapping[Label, float]]


def normalized_surface_dice(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[Label],
                            spacing: Sequence[float], tolerance_mm: Tolerance) -> Dict[Label, float]:
    """NSD per label (2D or 3D): the fraction of both boundaries within ``tolerance_mm`` of the other boundary.

    Boundaries are MONAI's edge voxels (foreground voxels with a face-neighbour outside the mask or on the image
    border); distances are Euclidean in mm using ``spacing`` (numpy axis order), and a boundary voxel counts when
    its distance is <= the tolerance. Both masks empty gives NaN (as nnU-Net's Dice, so nanmean skips it);
    exactly one empty gives 0.0. These cases are decided here, not left to MONAI.
    """
    _check_inputs(prediction, reference, spacing)
    tolerances = {label: _tolerance_for(label, tolerance_mm) for label in labels}
    results: Dict[Label, float] = {}
    both_present = []
    for label in labels:
        in_prediction = _label_mask(prediction, label).any()
        in_reference = _label_mask(reference, label).any()
        if in_prediction and in_reference:
            both_present.append(label)
        else:
            results[label] = 0.0 if in_prediction or in_reference else np.nan
    results.update(_monai_nsd(prediction, reference, both_present, spacing, tolerances))
    return {label: results[label] for label in labels}


def _check_inputs(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> None:
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}; "
                         f"resample the prediction to the reference grid first")
    if prediction.ndim not in (2, 3):
        raise ValueError(f"NSD needs 2D or 3D arrays, got shape {prediction.shape}")
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values but the arrays have {prediction.ndim} "
                         f"dimensions (shape {prediction.shape}); pass one spacing per axis in numpy axis order")
    if any(not s > 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} must be positive in every axis")


def _tolerance_for(label: Label, tolerance_mm: Tolerance) -> float:
    if isinstance(tolerance_mm, Mapping):
        if label not in tolerance_mm:
            raise ValueError(f"no tolerance for label {label!r} in {dict(tolerance_mm)}; add it or pass one float")
        tolerance = tolerance_mm[label]
    else:
        tolerance = tolerance_mm
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance_mm for label {label!r} is {tolerance}; it must be a positive, finite number of mm")
    return float(tolerance)


def _label_mask(segmentation: np.ndarray, label: Label) -> np.ndarray:
    """Binary mask of a label, or of a region (union of its label values) as nnU-Net evaluates regions."""
    return np.isin(segmentation, label)


def _monai_nsd(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[Label], spacing: Sequence[float],
               tolerances: Mapping[Label, float]) -> Dict[Label, float]:
    """MONAI's NSD for labels present in both masks, one channel per label (regions may overlap)."""
    import torch
    from monai.metrics import compute_surface_dice

    if not labels:
        return {}
    pred = torch.from_numpy(np.stack([_label_mask(prediction, label) for label in labels])[None])
    ref = torch.from_numpy(np.stack([_label_mask(reference, label) for label in labels])[None])
    nsd = compute_surface_dice(pred, ref, class_thresholds=[tolerances[label] for label in labels],
                               include_background=True, spacing=[float(s) for s in spacing])
    return {label: float(value) for label, value in zip(labels, nsd[0].tolist())}


def read_segmentation(path: Union[str, Path]) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """Segmentation array and its spacing, both in numpy axis order (SimpleITK's spacing is x, y, z: reversed)."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(float(s) for s in reversed(image.GetSpacing()))


def case_nsd(prediction_file: Union[str, Path], reference_file: Union[str, Path], labels: Sequence[Label],
             tolerance_mm: Tolerance) -> Dict[Label, float]:
    """NSD of one case from files; the reference's spacing is used, as predictions are written on its grid."""
    prediction, _ = read_segmentation(prediction_file)
    reference, spacing = read_segmentation(reference_file)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction_file} has shape {prediction.shape} but reference {reference_file} "
                         f"has shape {reference.shape}; compare a prediction with the reference of the same case")
    return normalized_surface_dice(prediction, reference, labels, spacing, tolerance_mm)


def case_id(file_name: Union[str, Path], file_ending: Optional[str] = None) -> str:
    """Case identifier: the file name without its ending (``file_ending`` if given, else a known nnU-Net ending)."""
    name = Path(file_name).name
    endings = (file_ending,) if file_ending else _known_file_endings()
    for ending in endings:
        if name.endswith(ending) and len(name) > len(ending):
            return name[:-len(ending)]
    raise ValueError(f"{name!r} does not end with {' or '.join(endings)}; pass the dataset's file_ending "
                     f"(dataset.json 'file_ending')")


@functools.lru_cache(maxsize=None)
def _known_file_endings() -> Tuple[str, ...]:
    """File endings nnU-Net can read, longest first so that a compound ending such as ".nii.gz" is stripped whole."""
    from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES
    return tuple(sorted({e for io in LIST_OF_IO_CLASSES for e in io.supported_file_endings},
                        key=lambda ending: (-len(ending), ending)))


@dataclass(frozen=True)
class EvaluatedCase:
    """One entry of nnU-Net's summary.json and what a per-case metric may need beside it."""

    prediction_file: str
    reference_file: str
    nnunet_metrics: Mapping[str, Mapping[str, float]]  # summary.json label key -> nnU-Net's metrics (Dice, FP, ...)
    labels: Mapping[str, Label]  # summary.json label key ("1", "(1, 2)") -> label or region
    parameters: Mapping[str, float]  # the benchmark's metric parameters by key (``MetricParameter.key``)


@dataclass(frozen=True)
class Metric:
    """A per-case leaderboard metric: one entry in ``METRICS`` gives it a results.csv column, report columns and
    a part in the ranking, in the direction ``higher_is_better`` declares."""

    name: str  # results.csv column
    title: str  # report heading
    higher_is_better: bool
    per_case: Callable[[EvaluatedCase], Mapping[str, float]]  # summary.json label key -> value (NaN: undefined)
    cache_file: Optional[str] = None  # costly metrics are cached next to summary.json; {key} formats the parameter
    parameter: Optional["MetricParameter"] = None
    value_range: Optional[Tuple[float, float]] = None  # the values it can take: plots clip their axes to it

    def cache_name(self, parameters: Mapping[str, float]) -> Optional[str]:
        """The cache file's name for these parameter values; None for a metric that is not cached."""
        return None if self.cache_file is None else self.cache_file.format(**parameters)


@dataclass(frozen=True)
class MetricParameter:
    """A number a metric takes from the benchmark, such as NSD's tolerance: ``BenchmarkSpec.metric_parameters`` holds
    it under ``key`` and the command line sets it with ``option``."""

    key: str
    option: str
    default: float
    help: str
    #: how the report's text names the value, e.g. "NSD at {value:g} mm"
    described: str

    def check(self, value: float) -> None:
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{self.key} must be a positive, finite number, got {value!r} ({self.help}).")


def evaluated_cases(summary_json_path: Union[str, Path], labels: Mapping[str, Label],
                    parameters: Mapping[str, float], file_ending: Optional[str] = None) -> Dict[str, EvaluatedCase]:
    """case id -> ``EvaluatedCase`` for every case of nnU-Net's summary.json (its label keys as nnU-Net writes
    them: ``"1"`` for a label, ``"(1, 2)"`` for a region)."""
    summary = json.loads(Path(summary_json_path).read_text())
    if "metric_per_case" not in summary:
        raise ValueError(f"{summary_json_path} has no 'metric_per_case'; pass a summary.json written by nnU-Net's "
                         f"evaluation (nnUNetv2_evaluate_folder or the validation of nnUNetv2_train)")
    return {case_id(entry["prediction_file"], file_ending):
            EvaluatedCase(entry["prediction_file"], entry["reference_file"], entry["metrics"], labels, parameters)
            for entry in summary["metric_per_case"]}


def _nnunet_dice(case: EvaluatedCase) -> Dict[str, float]:
    """nnU-Net's own Dice (NaN where the label is absent from both prediction and reference)."""
    return {key: float(metrics["Dice"]) for key, metrics in case.nnunet_metrics.items()}


def _case_nsd(case: EvaluatedCase) -> Dict[str, float]:
    values = case_nsd(case.prediction_file, case.reference_file, list(case.labels.values()),
                      case.parameters[NSD_TOLERANCE.key])
    return {key: values[label] for key, label in case.labels.items()}


NSD_TOLERANCE = MetricParameter("nsd_tolerance_mm", "--nsd-tolerance", 1.0, "NSD tolerance in mm", "NSD at {value:g} mm")
#: name -> metric, in report order
METRICS: Dict[str, Metric] = {metric.name: metric for metric in [
    Metric("dice", "Dice", True, _nnunet_dice, value_range=(0.0, 1.0)),
    Metric("nsd", "NSD", True, _case_nsd, cache_file="nsd_{nsd_tolerance_mm:g}mm.json", parameter=NSD_TOLERANCE,
           value_range=(0.0, 1.0)),
]}
#: every metric's parameter by key
METRIC_PARAMETERS: Dict[str, MetricParameter] = {m.parameter.key: m.parameter for m in METRICS.values() if m.parameter}


def default_metric_parameters() -> Dict[str, float]:
    return {key: parameter.default for key, parameter in METRIC_PARAMETERS.items()}
