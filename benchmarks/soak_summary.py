"""Summaries of a process's memory sampled during training, for ``memory_soak.py`` beside this file.

RSS swings by a whole step's activations within every step, so a slope fitted to raw samples mostly measures
where in a step each sample fell. The summaries here are per epoch of training steps (min, median, 90th
percentile, max), and growth is the slope of the per-epoch medians after the first epoch, which holds start-up
and the first allocations of the optimizer state, the data loader and the allocator's pools.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

#: one sample: seconds since start, training steps done, RSS, anonymous RSS, file-backed RSS, memory that C/C++
#: code (tensors included) holds from malloc, and memory malloc holds free for reuse (MB). Samples saved by
#: earlier versions have the first three or five only.
SAMPLE_FIELDS = ("seconds", "iterations", "rss_mb", "rss_anon_mb", "rss_file_mb", "malloc_in_use_mb",
                 "malloc_free_mb")
#: per-epoch medians of the optional fields, by column
_EXTRA_COLUMNS = {"anon": 3, "file": 4, "in_use": 5, "free": 6}
_EXTRA_TITLES = {"anon": "anonymous", "file": "file-backed", "in_use": "malloc in use", "free": "malloc free"}


def epoch_windows(samples: Sequence[Sequence[float]], iterations_per_epoch: int) -> List[Dict[str, float]]:
    """Per epoch of training steps (samples taken while step ``first`` to ``last`` ran, validation and checkpoint
    writing included): min, median, p90 and max RSS, and the medians of the other fields that were sampled."""
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
    array = np.asarray(samples, dtype=float)
    if array.ndim != 2 or array.shape[1] not in (3, 5, len(SAMPLE_FIELDS)) or len(array) == 0:
        raise ValueError(f"samples must be rows of the first 3, 5 or all of {SAMPLE_FIELDS}, got shape {array.shape}")
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
        for key, column in _EXTRA_COLUMNS.items():
            if column < array.shape[1]:
                window[key] = float(np.median(array[inside, column]))
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
    tables = [(run["trainer"], epoch_windows(run["samples"], run["iterations_per_epoch"])) for run in runs]
    extras = [key for key in _EXTRA_COLUMNS if any(key in windows[0] for _, windows in tables)]
    lines = ["| iterations | trainer | RSS min | median | p90 | max | "
             + "".join(f"{_EXTRA_TITLES[key]} (median) | " for key in extras).rstrip(),
             "|---|---|---|---|---|---|" + "---|" * len(extras)]
    for index in range(max(len(windows) for _, windows in tables)):
        for trainer, windows in tables:
            if index < len(windows):
                w = windows[index]
                split = "".join(f"{w[key]:.0f} | " if key in w else "- | " for key in extras)
                lines.append(f"| {w['first']}-{w['last']} | {trainer} | {w['min']:.0f} | {w['median']:.0f} | "
                             f"{w['p90']:.0f} | {w['max']:.0f} | {split}".rstrip())
    for trainer, windows in tables:
        keys = ["median"] + [key for key in extras if key in windows[-1]]
        slopes = ", ".join(f"{key} {round(growth_mb_per_100(windows, key), 1) + 0.0:+.1f}" for key in keys)  # no -0.0
        lines.append(f"{trainer}: growth after the first epoch, MB per 100 iterations: {slopes}")
    return "\n".join(lines)
