"""Training budgets shared by baseline and IMNet, so both sides of a comparison train equally long.

Each budget is a trainer suffix: ``nnUNetTrainer_cpu`` and ``nnUNetTrainerIMNet_cpu`` differ only in the MI
term (``catalogue.py`` turns every budget into classes). Plain data, importing neither torch nor nnU-Net, so that the
command line reads it at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

#: nnU-Net's default schedule, set in nnUNetTrainer.__init__ (so not readable from the class; guarded by
#: nnunet_followed.py): epochs, training and validation iterations per epoch
NNUNET_EPOCHS = 1000
NNUNET_ITERATIONS_PER_EPOCH = 250
NNUNET_VAL_ITERATIONS_PER_EPOCH = 50


@dataclass(frozen=True)
class TrainingBudget:
    """``None`` keeps nnU-Net's default (1000 epochs of 250 iterations, 50 validation iterations)."""

    name: str
    description: str
    num_epochs: Optional[int] = None
    iterations_per_epoch: Optional[int] = None
    val_iterations_per_epoch: Optional[int] = None
    save_every: Optional[int] = None  # epochs between checkpoint_latest writes; short budgets resume per epoch
    batch_size: Optional[int] = None  # replaces the planned batch size (patch size and network stay as planned)

    @property
    def epochs(self) -> int:
        return self.num_epochs if self.num_epochs is not None else NNUNET_EPOCHS


BUDGETS: Dict[str, TrainingBudget] = {
    "smoke": TrainingBudget("smoke", "a few iterations: checks the pipeline in minutes on 2 CPU cores",
                            2, 2, 1, save_every=1),
    # Hippocampus 3d_fullres on 2 CPU cores: ~6.3 s per train step (batch 7), so 240 steps, the per-epoch
    # validation and nnU-Net's final validation of 40 cases take about half an hour
    "cpu": TrainingBudget("cpu", "real but short: about half an hour per fold on 2 CPU cores (Hippocampus "
                                 "3d_fullres)", 20, 12, 2, save_every=1),
    # batch 2 (what nnU-Net plans for large 3D patches) makes a step ~4x cheaper than the planned batch on CPU,
    # so 1,000 steps fit 15-30 min of training per fold (Hippocampus 3d_fullres, 2 idle cores, nnUNet_n_proc_DA=0:
    # a median 56 s an epoch, 95 % of them 40-73 s, over the 21 plain models of benchmarks/hippocampus_cpu1k.sh,
    # 72-115 s on the slower machine of its first attempt; ResEnc M 24-28 min); 20 epochs of 50 steps give the
    # convergence curve 20 points, each from 10 validation batches
    "cpu1k": TrainingBudget("cpu1k", "converges on CPU: 1,000 steps at batch size 2, 15-30 minutes of training "
                                     "per fold on 2 CPU cores (Hippocampus 3d_fullres)", 20, 50, 10, save_every=1,
                            batch_size=2),
    "full": TrainingBudget("full", "nnU-Net's default schedule, for GPUs"),
}
