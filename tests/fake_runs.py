"""Finished benchmark runs written by hand: the files ``collect`` reads (the checkpoint's logging, nnU-Net's
summary.json and the segmentations it names), so collection and the report are tested without training or data."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job

LABELS = {"background": 0, "Anterior": 1, "Posterior": 2}
#: iterations of a fake epoch, as on the cpu1k budget: an epoch lasts 50 x its seconds per iteration
EPOCH_ITERATIONS = 50


def _segmentation() -> np.ndarray:
    image = np.zeros((6, 8, 8), dtype=np.uint8)
    image[1:5, 1:4, 1:7] = 1
    image[1:5, 4:7, 1:7] = 2
    return image


def _write(array: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return str(path)


def finish_run(spec: BenchmarkSpec, job: Job, dice: Sequence[float], curve: Sequence[float],
               false_positives: Optional[Sequence[int]] = None, mi: Optional[Sequence[float]] = None,
               seconds: Optional[Sequence[float]] = None,
               conditions: Optional[Dict[str, Sequence[float]]] = None) -> None:
    """Write ``job`` as finished: one validation case per ``dice`` value (both classes get it; the predictions are
    the reference, so NSD is 1) and ``curve`` as the per-epoch pseudo Dice (``mi`` as the MI estimate, ``seconds``
    as the train seconds per iteration, 1 s by default, and each epoch's timestamps 50 iterations apart);
    ``conditions``: evaluation name (e.g. "rician_snr5") -> the Dice of the same cases predicted under it."""
    fold_dir = spec.fold_dir(job)
    fold_dir.mkdir(parents=True, exist_ok=True)
    (fold_dir.parent / "dataset.json").write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz"}))
    (fold_dir.parent / "plans.json").write_text("{}")
    _summary(spec, job, fold_dir / "validation", dice,
             false_positives if false_positives is not None else [0] * len(dice))
    for condition, values in (conditions or {}).items():
        _summary(spec, job, spec.evaluation_dir(job, condition) / "predictions", values, [0] * len(values))
    ema = [curve[0]]
    for value in curve[1:]:
        ema.append(0.9 * ema[-1] + 0.1 * value)
    per_iteration = list(seconds or [1.0] * len(curve))
    ends = np.cumsum([EPOCH_ITERATIONS * s for s in per_iteration]).tolist()
    logging = {"mean_fg_dice": list(curve), "ema_fg_dice": ema, "train_seconds_per_iteration": per_iteration,
               "peak_memory_mb": [100.0] * len(curve), "epoch_start_timestamps": [0.0, *ends[:-1]],
               "epoch_end_timestamps": ends}
    if mi is not None:
        logging["mi_estimate"] = list(mi)
    torch.save({"logging": logging}, fold_dir / "checkpoint_final.pth")


def _summary(spec: BenchmarkSpec, job: Job, folder: Path, dice: Sequence[float],
             false_positives: Sequence[int]) -> None:
    """nnU-Net's summary.json in ``folder`` with one case per ``dice`` value, and the segmentations it names."""
    entries = []
    for index, (value, fp) in enumerate(zip(dice, false_positives)):
        name = f"case_{job.fold}_{index}.nii.gz"
        reference = _write(_segmentation(), spec.work_path / "gt" / name)
        prediction = _write(_segmentation(), folder / name)
        metrics = {key: {"Dice": float(value), "FP": int(fp)} for key in ("1", "2")}
        entries.append({"prediction_file": prediction, "reference_file": reference, "metrics": metrics})
    (folder / "summary.json").write_text(json.dumps({"metric_per_case": entries}))
