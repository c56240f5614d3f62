"""Every trainer this package offers, by the name nnU-Net's ``-tr`` takes.

``trainers/`` re-exports this module, which is how nnU-Net's external-trainer search finds the classes.
"""
from __future__ import annotations

from typing import Dict, Sequence, Type

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.naming import BASELINE_TRAINER, budget_trainer_name
from nnunetv2_imnet.training import unlabelled_trainer, variants
from nnunetv2_imnet.training.budgets import BUDGETS, TrainingBudget
from nnunetv2_imnet.training.imnet_trainer import nnUNetTrainerIMNet
from nnunetv2_imnet.training.measured import nnUNetTrainerMeasured

#: trainers without a budget suffix (IMNet variants train on nnU-Net's default schedule)
BASE_TRAINERS: Dict[str, Type[nnUNetTrainer]] = {
    "nnUNetTrainerMeasured": nnUNetTrainerMeasured,
    "nnUNetTrainerIMNet": nnUNetTrainerIMNet,
    **{name: cls for module in (variants, unlabelled_trainer) for name, cls in vars(module).items()
       if isinstance(cls, type) and issubclass(cls, nnUNetTrainerIMNet) and cls is not nnUNetTrainerIMNet},
}


def description(trainer: Type[nnUNetTrainer]) -> str:
    """The first line of the trainer's own docstring (not inherited): what ``nnunetv2-imnet trainers`` prints."""
    lines = (vars(trainer).get("__doc__") or "").strip().splitlines()
    return lines[0] if lines else ""


def weight_zero_controls(trainers: Sequence[str]) -> Dict[str, str]:
    """Each regularised IMNet trainer among ``trainers`` -> the one among them with its MI options at weight 0.

    The control runs the same code (the critic trains, the MI is estimated and logged) but passes no MI gradient to
    the network, so arm minus control is the effect of the MI gradient itself, apart from everything else the IMNet
    code path does. Names are without budget suffix; trainers that are not IMNet trainers have no control.
    """
    options = {name: MIConfig.from_dict(ALL_TRAINERS[name].mi_options).as_dict() for name in trainers
               if issubclass(ALL_TRAINERS.get(name, nnUNetTrainer), nnUNetTrainerIMNet)}
    controls = {name: values for name, values in options.items() if values["weight"] == 0}
    return {arm: control for arm, values in options.items() if values["weight"] > 0
            for control, control_values in controls.items() if {**values, "weight": 0.0} == control_values}


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


def _budget_trainers() -> Dict[str, Type[nnUNetTrainer]]:
    """Every trainer on every budget; the baseline's budget classes are measured."""
    bases = {BASELINE_TRAINER: nnUNetTrainerMeasured,
             **{k: v for k, v in BASE_TRAINERS.items() if k != "nnUNetTrainerMeasured"}}
    return {budget_trainer_name(name, budget.name): with_budget(base, budget, budget_trainer_name(name, budget.name),
                                                                __name__)
            for name, base in bases.items() for budget in BUDGETS.values()}


BUDGET_TRAINERS = _budget_trainers()
ALL_TRAINERS: Dict[str, Type[nnUNetTrainer]] = {**BASE_TRAINERS, **BUDGET_TRAINERS}
globals().update(BUDGET_TRAINERS)
globals().update(BASE_TRAINERS)
__all__ = sorted(ALL_TRAINERS)
