"""Summaries of a process's memory sampled during training (``benchmarks/memory_soak.py``).

RSS swings by a whole step's activations within every step, so a slope fitted to raw samples mostly measures
where in a step each sample fell. The summaries here are per epoch of training steps (min, median, 90th
percentile, max), and growth is the slope of the per-epoch medians after the first epoch, which holds start-up
and the first allocations of the optimizer state, the data loader and the allocator's pools.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

#: one sample: seconds since start, training steps done, RSS, anonymous RSS, file-backed RSS (MB); samples saved
#: before the split was recorded have the first three only
SAMPLE_FIELDS = ("seconds", "iterations", "rss_mb", "rss_anon_mb", "rss_file_mb")


def epoch_windows(samples: Sequence[Sequence[float]], iterations_per_epoch: int) -> List[Dict[str, float]]:
    """Per epoch of training steps (samples taken while step ``first`` to ``last`` ran, validation and checkpoint
    writing included): min, median, p90 and max RSS, and the median anonymous and file-backed RSS if sampled."""
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
    array = np.asarray(samples, dtype=float)
    if array.ndim != 2 or array.shape[1] not in (3, len(SAMPLE_FIELDS)) or len(array) == 0:
        raise ValueError(f"samples must be rows of {SAMPLE_FIELDS[:3]} or {SAMPLE_FIELDS}, got shape {array.shape}")
    done, rss = array[:, 1], array[:, 2]
    last_step = int(done.max())
    windows = []
    for first in range(0, last_step, iterations_per_epoch):
        inside = (done >= first) & (done < first + iterations_per_epoch)
        if not inside.any():
            continue
        window = {"first": first, "last": min(first + iterations_per_epoch, last_step) - 1,
                  "min": float(rss[inside].min()), "median": float(np.median(rss[inside])),
                  "p90": float(np.percentile(rss[inside], 90)), "max": float(rss[inside].max())}
        if array.shape[1] == len(SAMPLE_FIELDS):
            window["anon"] = float(np.median(array[inside, 3]))
            window["file"] = float(np.median(array[inside, 4]))
        windows.append(window)
    return windows


def growth_mb_per_100(windows: Sequence[Dict[str, float]], key: str = "median") -> float:
    """Least-squares slope of a per-epoch statistic after the first epoch, in MB per 100 iterations (NaN with
    fewer than two epochs after the first)."""
    later = [w for w in windows[1:] if key in w]
    if len(later) < 2:
        return float("nan")
    centres = [(w["first"] + w["last"]) / 2 for w in later]
    return float(np.polyfit(centres, [w[key] for w in later], 1)[0]) * 100


def rss_report(runs: Sequence[dict]) -> str:
    """A markdown table of the per-epoch RSS of saved runs (``trainer``, ``iterations_per_epoch``, ``samples``),
    interleaved epoch by epoch so that runs with the same arguments compare line by line, and each run's growth."""
    lines = ["| iterations | trainer | RSS min | median | p90 | max | anonymous (median) | file-backed (median) |",
             "|---|---|---|---|---|---|---|---|"]
    tables = [(run["trainer"], epoch_windows(run["samples"], run["iterations_per_epoch"])) for run in runs]
    for index in range(max(len(windows) for _, windows in tables)):
        for trainer, windows in tables:
            if index < len(windows):
                w = windows[index]
                split = [f"{w[k]:.0f}" if k in w else "-" for k in ("anon", "file")]
                lines.append(f"| {w['first']}-{w['last']} | {trainer} | {w['min']:.0f} | {w['median']:.0f} | "
                             f"{w['p90']:.0f} | {w['max']:.0f} | {split[0]} | {split[1]} |")
    for trainer, windows in tables:
        keys = [key for key in ("median", "anon", "file") if key in windows[-1]]
        slopes = ", ".join(f"{key} {round(growth_mb_per_100(windows, key), 1) + 0.0:+.1f}" for key in keys)  # no -0.0
        lines.append(f"{trainer}: growth after the first epoch, MB per 100 iterations: {slopes}")
    return "\n".join(lines)
