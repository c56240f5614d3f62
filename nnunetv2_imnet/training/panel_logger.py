"""nnU-Net's local logger with extra per-epoch keys, each group drawn as an extra panel of ``progress.png``."""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import join  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402


#: one panel: y-axis label -> the keys drawn against it; at most two axes (left, right), one unit each
Panel = Mapping[str, Sequence[str]]


class PanelLocalLogger(LocalLogger):
    """Keys added with ``add_panel`` are logged like nnU-Net's own (one value per epoch, stored in the
    checkpoint's ``logging``) and plotted below nnU-Net's three panels."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(verbose)
        self.panels: Dict[str, Dict[str, Tuple[str, ...]]] = {}

    def add_panel(self, title: str, axes: Panel) -> None:
        """A panel with one y-axis per unit: the first entry on the left, a second one on the right."""
        if not 1 <= len(axes) <= 2:
            raise ValueError(f"A panel has one or two y-axes, got {list(axes)} for {title!r}.")
        for keys in axes.values():
            for key in keys:
                self.my_fantastic_logging.setdefault(key, [])
        self.panels[title] = {label: tuple(keys) for label, keys in axes.items()}

    def panel_keys(self) -> List[str]:
        return [key for axes in self.panels.values() for keys in axes.values() for key in keys]

    def load_checkpoint(self, checkpoint: dict) -> None:
        """Keys that an older checkpoint lacks are filled with NaN so every key keeps one value per epoch."""
        super().load_checkpoint(checkpoint)
        epochs = len(self.my_fantastic_logging.get("train_losses", []))
        for key in self.panel_keys():
            values = self.my_fantastic_logging.setdefault(key, [])
            values.extend([math.nan] * (epochs - len(values)))

    def plot_progress_png(self, output_folder: str) -> None:
        # nnU-Net's three panels follow LocalLogger.plot_progress_png of nnU-Net 2.8.1 (guarded: nnunet_followed.py)
        logged = self.my_fantastic_logging
        epoch = min(len(v) for v in logged.values()) - 1
        if epoch < 0:
            return
        x = list(range(epoch + 1))
        fig, axes = plt.subplots(3 + len(self.panels), 1, figsize=(18, 8 * (3 + len(self.panels))))
        ax = axes[0]
        ax.plot(x, logged["train_losses"][:epoch + 1], color="b", label="loss_tr", linewidth=3)
        ax.plot(x, logged["val_losses"][:epoch + 1], color="r", label="loss_val", linewidth=3)
        ax.set_ylabel("loss")
        dice_axis = ax.twinx()
        dice_axis.plot(x, logged["mean_fg_dice"][:epoch + 1], color="g", ls="dotted", label="pseudo dice")
        dice_axis.plot(x, logged["ema_fg_dice"][:epoch + 1], color="g", label="pseudo dice (mov. avg.)", linewidth=3)
        dice_axis.set_ylabel("pseudo dice")
        ax.legend(loc="upper left")
        dice_axis.legend(loc="upper right")
        durations = [e - s for s, e in zip(logged["epoch_start_timestamps"], logged["epoch_end_timestamps"])]
        axes[1].plot(x, durations[:epoch + 1], color="b", label="epoch duration [s]", linewidth=3)
        axes[1].set_ylim(bottom=0)
        axes[2].plot(x, logged["lrs"][:epoch + 1], color="b", label="learning rate", linewidth=3)
        for ax in axes[1:3]:
            ax.legend(loc="upper left")
        for ax, (title, panel) in zip(axes[3:], self.panels.items()):
            self._plot_panel(ax, title, panel, x, epoch)
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(join(output_folder, "progress.png"))
        plt.close(fig)

    def _plot_panel(self, ax: plt.Axes, title: str, panel: Dict[str, Tuple[str, ...]], x: List[int],
                    epoch: int) -> None:
        """Each unit on its own y-axis (the second on the right, dashed), colours distinct across both."""
        colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
        for index, (label, keys) in enumerate(panel.items()):
            axis = ax if index == 0 else ax.twinx()
            for key in keys:
                axis.plot(x, self.my_fantastic_logging[key][:epoch + 1], label=key, linewidth=3, color=next(colors),
                          ls="solid" if index == 0 else "dashed")
            axis.set_ylabel(label)
            axis.legend(loc="upper left" if index == 0 else "upper right")
        ax.set_title(title)
