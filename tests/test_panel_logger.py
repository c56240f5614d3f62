"""progress.png's extra panels: one unit per y-axis (cost: time and memory; MI: nats and λ)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest

from nnunetv2_imnet.training import panel_logger
from nnunetv2_imnet.training.imnet_trainer import MI_HEALTH_PANEL, MI_PANEL
from nnunetv2_imnet.training.measured import COST_PANEL
from nnunetv2_imnet.training.panel_logger import PanelLocalLogger

NNUNET_KEYS = {"mean_fg_dice": 0.5, "ema_fg_dice": 0.5, "dice_per_class_or_region": [0.5], "train_losses": 1.0,
               "val_losses": 1.0, "lrs": 0.01, "epoch_start_timestamps": 0.0, "epoch_end_timestamps": 10.0}


def plotted_axes(logger: PanelLocalLogger, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, List[str]]:
    """y-axis label -> the keys drawn against it, from the figure ``plot_progress_png`` draws."""
    figures = []
    monkeypatch.setattr(panel_logger.plt, "close", figures.append)
    logger.plot_progress_png(str(folder))
    assert (folder / "progress.png").is_file()
    return {ax.get_ylabel(): [line.get_label() for line in ax.get_lines()] for ax in figures[0].axes}


def test_each_unit_gets_its_own_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = PanelLocalLogger()
    for title, panel in (("cost", COST_PANEL), ("MI", MI_PANEL), ("health", MI_HEALTH_PANEL)):
        logger.add_panel(title, panel)
    for epoch in range(3):
        for key, value in NNUNET_KEYS.items():
            logger.log(key, value, epoch)
        for key in logger.panel_keys():
            logger.log(key, 0.1 * epoch, epoch)
    axes = plotted_axes(logger, tmp_path, monkeypatch)
    assert axes["seconds per training iteration"] == ["train_seconds_per_iteration"]
    assert axes["peak memory (MB)"] == ["peak_memory_mb"]
    assert axes["nats"] == ["mi_estimate", "mi_loss"]
    assert axes["λ (MI weight)"] == ["mi_weight"]
    assert axes["largest |critic score|"] == ["mi_max_abs_score"]
    assert axes["non-finite MI steps"] == ["mi_nonfinite_steps"]


def test_a_panel_has_one_or_two_axes() -> None:
    with pytest.raises(ValueError, match="one or two y-axes"):
        PanelLocalLogger().add_panel("too many", {"a": ("x",), "b": ("y",), "c": ("z",)})
