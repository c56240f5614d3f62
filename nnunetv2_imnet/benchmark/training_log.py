"""What a running ``nnUNetv2_train`` has done so far, read from nnU-Net's training log in the fold folder.

The benchmark runner prints this while a job trains, so a user can tell progress from a hang. Only the log
nnU-Net (and the IMNet trainer) already write is read; nothing about training changes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from nnunetv2_imnet.naming import latest_training_log

_EPOCH = re.compile(r": Epoch (\d+) *$", re.M)
_EPOCH_TIME = re.compile(r": Epoch time: ([-+\d.e]+) s *$", re.M)
_PSEUDO_DICE = re.compile(r": Pseudo dice \[(.*)\] *$", re.M)
_MI_ESTIMATE = re.compile(r": MI estimate (\S+) nats", re.M)
_NUMPY_SCALAR = re.compile(r"np\.float\d+\(([^)]*)\)")  # numpy 2 writes np.float32(0.5)
_TRAINING_DONE = "Training done."


@dataclass
class TrainingStatus:
    """The latest values in a training log (None until the first epoch has logged them)."""

    epoch: Optional[int] = None  # the epoch running now, or the last one once training is done
    epoch_seconds: List[float] = field(default_factory=list)  # finished epochs of this start
    pseudo_dice: Optional[List[float]] = None
    mi_estimate: Optional[float] = None
    training_done: bool = False


def read_status(text: str) -> TrainingStatus:
    """The status that ``text`` (a training log, possibly half written) describes."""
    status = TrainingStatus(training_done=_TRAINING_DONE in text,
                            epoch_seconds=[float(s) for s in _EPOCH_TIME.findall(text)])
    epochs = _EPOCH.findall(text)
    if epochs:
        status.epoch = int(epochs[-1])
    dice = _PSEUDO_DICE.findall(text)
    if dice:
        values = _NUMPY_SCALAR.sub(r"\1", dice[-1]).split(",")
        status.pseudo_dice = [float(v) for v in values if v.strip()]
    mi = _MI_ESTIMATE.findall(text)
    if mi:
        status.mi_estimate = float(mi[-1])
    return status


def describe(status: TrainingStatus, num_epochs: int) -> str:
    """One line: epoch, latest pseudo Dice and MI estimate, and the training time left."""
    if status.epoch is None:
        return "starting (nnU-Net loads the data and builds the network)"
    if status.training_done:
        return f"trained {status.epoch + 1}/{num_epochs} epochs; nnU-Net validates the fold"
    parts = [f"epoch {status.epoch + 1}/{num_epochs}"]
    if status.pseudo_dice:
        parts.append("pseudo Dice " + ", ".join(f"{d:.3f}" for d in status.pseudo_dice))
    if status.mi_estimate is not None and math.isfinite(status.mi_estimate):
        parts.append(f"MI {status.mi_estimate:.4f} nats")
    if status.epoch_seconds:
        left = (num_epochs - status.epoch) * sum(status.epoch_seconds) / len(status.epoch_seconds)
        parts.append(f"training time left ~{_minutes(left)} (then nnU-Net's validation)")
    return ", ".join(parts)


def fold_status(fold: Path) -> TrainingStatus:
    """``read_status`` of the newest training log of a fold folder (an empty status before nnU-Net wrote one)."""
    log = latest_training_log(fold)
    return read_status(log.read_text(errors="replace") if log is not None else "")


def fold_progress(fold: Path, num_epochs: int) -> str:
    """``describe`` for the newest training log of a fold folder."""
    return describe(fold_status(fold), num_epochs)


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"
