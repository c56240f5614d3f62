"""nnU-Net's local logger with extra per-epoch keys, each group drawn as an extra panel of ``progress.png``."""
from __future__ import annotations

import math
from typing import Dict, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import join  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402


class PanelLocalLogger(LocalLogger):
    """Keys added with ``add_panel`` are logged like nnU-Net's own (one value per epoch, stored in the
    checkpoint's ``logging``) and plotted below nnU-Net's three panels."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(verbose)
        self.panels: Dict[str, Sequence[str]] = {}

    def add_panel(self, title: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.my_fantastic_logging.setdefault(key, [])
        self.panels[title] = tuple(keys)

    def load_checkpoint(self, checkpoint: dict) -> None:
        """Keys that an older checkpoint lacks are filled with NaN so every key keeps one value per epoch."""
        super().load_checkpoint(checkpoint)
        epochs = len(self.my_fantastic_logging.get("train_losses", []))
        for keys in self.panels.values():
            for key in keys:
                values = self.my_fantastic_logging.setdefault(key, [])
                values.extend([math.nan] * (epochs - len(values)))

    def plot_progress_png(self, output_folder: str) -> None:
        # nnU-Net's three panels follow LocalLogger.plot_progress_png of nnU-Net 2.8.1
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
        for ax, (title, keys) in zip(axes[3:], self.panels.items()):
            for key in keys:
                ax.plot(x, logged[key][:epoch + 1], label=key, linewidth=3)
            ax.set_title(title)
        for ax in axes[1:]:
            ax.legend(loc="upper left")
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(join(output_folder, "progress.png"))
        plt.close(fig)
