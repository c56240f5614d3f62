"""Progress lines from nnU-Net's training log (``benchmark/training_log.py``), on logs as nnU-Net 2.8.1 writes them."""
from __future__ import annotations

import os
from pathlib import Path

from nnunetv2_imnet.benchmark.training_log import describe, fold_progress, read_status

# nnU-Net ends every line with a space
LOG = "".join(f"{line} \n" for line in [
    "2026-11-28 06:07:40.648859:",
    "2026-11-28 06:07:40.648931: Epoch 0",
    "2026-11-28 06:07:40.649067: Current learning rate: 0.01",
    "2026-11-28 06:07:49.695949: MI estimate -0.0237 nats, MI loss 0.7168, weight 0.1",
    "2026-11-28 06:07:51.184268: train_loss 2.5965",
    "2026-11-28 06:07:51.184541: Pseudo dice [np.float32(0.017), np.float32(0.0178)]",
    "2026-11-28 06:07:51.184607: Epoch time: 10.5 s",
    "2026-11-28 06:07:57.071039:",
    "2026-11-28 06:07:57.071213: Epoch 1",
    "2026-11-28 06:07:57.071339: Current learning rate: 0.00536",
    "2026-11-28 06:08:04.933187: MI estimate 0.1250 nats, MI loss 0.6, weight 0.1",
    "2026-11-28 06:08:07.128177: Pseudo dice [np.float32(0.5), np.float32(nan)]",
    "2026-11-28 06:08:07.128241: Epoch time: 9.5 s",
    "2026-11-28 06:08:07.128302:",
    "2026-11-28 06:08:07.128400: Epoch 2",
])


def test_the_latest_values_and_the_time_left() -> None:
    status = read_status(LOG)
    assert status.epoch == 2 and status.epoch_seconds == [10.5, 9.5] and not status.training_done
    assert status.pseudo_dice[0] == 0.5 and str(status.pseudo_dice[1]) == "nan"
    assert status.mi_estimate == 0.125
    # epochs 3 to 10 left at 10 s each
    assert describe(status, 10) == ("epoch 3/10, pseudo Dice 0.500, nan, MI 0.1250 nats, training time left ~1m20s "
                                    "(then nnU-Net's validation)")


def test_a_baseline_log_a_fresh_start_and_a_finished_training() -> None:
    baseline = "\n".join(line for line in LOG.splitlines() if "MI estimate" not in line)
    assert describe(read_status(baseline), 3) == ("epoch 3/3, pseudo Dice 0.500, nan, training time left ~0m10s "
                                                  "(then nnU-Net's validation)")
    assert describe(read_status(""), 3) == "starting (nnU-Net loads the data and builds the network)"
    done = LOG.replace("Epoch 2 \n", "Training done. \n")
    assert describe(read_status(done), 2) == "trained 2/2 epochs; nnU-Net validates the fold"


def test_the_newest_log_of_a_fold_is_read(tmp_path: Path) -> None:
    assert fold_progress(tmp_path, 5).startswith("starting")
    (tmp_path / "training_log_2026_11_28_06_00_00.txt").write_text(LOG)
    resumed = tmp_path / "training_log_2026_11_28_07_00_00.txt"
    resumed.write_text("2026-11-28 07:00:01.0: Epoch 4 \n")
    os.utime(resumed, (2e9, 2e9))
    assert fold_progress(tmp_path, 5) == "epoch 5/5"
