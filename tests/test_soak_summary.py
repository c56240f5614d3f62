"""Known-value checks of the memory soak's summaries (``benchmarks/soak_summary.py``, next to the soak script)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from soak_summary import epoch_windows, growth_mb_per_100, rss_report  # noqa: E402


def soak_samples(steps: int, growth_per_step: float, spike_mb: float = 1000.0, first_epoch_extra: float = 0.0,
                 split: bool = False, malloc: bool = False) -> list:
    """One sample per step: a linear trend plus a step's activations on every other sample (RSS swings within a
    step), and optionally extra memory during the first 50 steps (start-up). With ``malloc`` the trend is memory
    malloc holds free (fragmentation) while the memory in use only swings."""
    samples = []
    for step in range(steps + 1):
        activations = spike_mb if step % 2 else 0.0
        anon = 800 + growth_per_step * step + activations + (first_epoch_extra if step < 50 else 0.0)
        mapped = 200.0
        row = [float(step), step, anon + mapped]
        if split or malloc:
            row += [anon, mapped]
        if malloc:
            row += [500.0 + activations, 100.0 + growth_per_step * step]
        samples.append(row)
    return samples


@pytest.mark.parametrize("growth_per_step, expected", [(0.0, 0.0), (0.3, 30.0), (-0.1, -10.0)])
def test_growth_is_the_slope_of_epoch_medians_despite_spikes(growth_per_step: float, expected: float) -> None:
    windows = epoch_windows(soak_samples(300, growth_per_step), 50)
    assert [(w["first"], w["last"]) for w in windows] == [(0, 49), (50, 99), (100, 149), (150, 199), (200, 249),
                                                          (250, 299)]
    assert growth_mb_per_100(windows) == pytest.approx(expected, abs=1e-9)


def test_window_statistics_known_values() -> None:
    first = epoch_windows(soak_samples(300, 0.0), 50)[0]  # 25 samples at 1000 MB, 25 at 2000 MB
    assert (first["min"], first["median"], first["max"]) == (1000.0, 1500.0, 2000.0)
    assert first["p90"] == pytest.approx(np.percentile([1000.0] * 25 + [2000.0] * 25, 90))
    assert "anon" not in first


def test_start_up_in_the_first_epoch_is_not_growth() -> None:
    windows = epoch_windows(soak_samples(300, 0.0, first_epoch_extra=700.0), 50)
    assert windows[0]["median"] == 2200.0 and windows[1]["median"] == 1500.0
    assert growth_mb_per_100(windows) == pytest.approx(0.0, abs=1e-9)


def test_anonymous_and_file_backed_memory_are_summarised_separately() -> None:
    windows = epoch_windows(soak_samples(300, 0.3, split=True), 50)
    assert windows[1]["file"] == 200.0
    assert growth_mb_per_100(windows, "anon") == pytest.approx(30.0)
    assert growth_mb_per_100(windows, "file") == pytest.approx(0.0, abs=1e-9)


def test_fragmentation_is_told_apart_from_memory_in_use() -> None:
    windows = epoch_windows(soak_samples(300, 0.3, malloc=True), 50)
    assert (windows[1]["in_use"], windows[1]["free"]) == (1000.0, pytest.approx(100.0 + 0.3 * 74.5, abs=0.3))
    assert growth_mb_per_100(windows, "anon") == pytest.approx(30.0)
    assert growth_mb_per_100(windows, "in_use") == pytest.approx(0.0, abs=1e-9)
    assert growth_mb_per_100(windows, "free") == pytest.approx(30.0)


def test_growth_needs_two_epochs_after_the_first() -> None:
    assert np.isnan(growth_mb_per_100(epoch_windows(soak_samples(100, 0.3), 50)))


@pytest.mark.parametrize("samples, per_epoch, message", [
    ([[0.0, 0, 1.0, 2.0]], 50, r"samples must be rows of the first 3, 5 or all of .* got shape \(1, 4\)"),
    ([[0.0, 0, 1.0, 2.0, 3.0, 4.0]], 50, r"got shape \(1, 6\)"),
    ([], 50, r"got shape \(0,\)"),
    ([[0.0, 0, 1.0]], 0, "iterations_per_epoch must be >= 1, got 0"),
])
def test_bad_samples_are_refused(samples: list, per_epoch: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        epoch_windows(samples, per_epoch)


def test_report_interleaves_runs_and_states_growth() -> None:
    runs = [{"trainer": "nnUNetTrainerIMNet", "iterations_per_epoch": 50,
             "samples": soak_samples(150, 0.3, split=True)},
            {"trainer": "nnUNetTrainer", "iterations_per_epoch": 50, "samples": soak_samples(150, 0.0)}]
    lines = rss_report(runs).splitlines()
    assert [line.split(" | ")[:2] for line in lines[2:8]] == [
        ["| 0-49", "nnUNetTrainerIMNet"], ["| 0-49", "nnUNetTrainer"], ["| 50-99", "nnUNetTrainerIMNet"],
        ["| 50-99", "nnUNetTrainer"], ["| 100-149", "nnUNetTrainerIMNet"], ["| 100-149", "nnUNetTrainer"]]
    assert lines[0].endswith("| max | anonymous (median) | file-backed (median) |")
    assert lines[2].endswith("| 200 |") and lines[3].endswith("| - | - |")  # the second run has RSS only
    assert lines[-2] == "nnUNetTrainerIMNet: growth after the first epoch, MB per 100 iterations: median +30.0, " \
                        "anon +30.0, file +0.0"
    assert lines[-1] == "nnUNetTrainer: growth after the first epoch, MB per 100 iterations: median +0.0"
