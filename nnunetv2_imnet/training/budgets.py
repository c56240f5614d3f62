"""Training budgets shared by baseline and IMNet, so both sides of a comparison train equally long.

Each budget is a trainer suffix: ``nnUNetTrainer_cpu`` and ``nnUNetTrainerIMNet_cpu`` differ only in the MI
term. The baseline classes derive from ``nnUNetTrainerMeasured`` so their costs are logged the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Type

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

#: nnUNetTrainer's num_epochs (set in its __init__, so not readable from the class)
NNUNET_EPOCHS = 1000


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


def with_budget(base: Type[nnUNetTrainer], budget: TrainingBudget, name: str, module: str) -> Type[nnUNetTrainer]:
    """A subclass ``name`` of ``base`` that trains for ``budget``.

    The ``__init__`` keeps nnU-Net's exact signature: nnU-Net records its arguments by introspection to rebuild
    the trainer from a checkpoint.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        if budget.num_epochs is not None:
            self.num_epochs = budget.num_epochs
        if budget.iterations_per_epoch is not None:
            self.num_iterations_per_epoch = budget.iterations_per_epoch
        if budget.val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = budget.val_iterations_per_epoch
        if budget.save_every is not None:
            self.save_every = budget.save_every
        if budget.batch_size is not None:
            # nnU-Net reads (and splits over DDP ranks) the configuration's batch size in initialize(); the
            # configuration is the trainer's own deep copy of the plans, so plans.json stays as planned
            self.configuration_manager.configuration["batch_size"] = budget.batch_size

    doc = f"{base.__name__} on the '{budget.name}' budget: {budget.description}."
    return type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": module})
