"""Every trainer this package offers, by the name nnU-Net's ``-tr`` takes.

``trainers/`` re-exports this module, which is how nnU-Net's external-trainer search finds the classes.
"""
from __future__ import annotations

from typing import Dict, Sequence, Type

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.naming import BASELINE_TRAINER, budget_trainer_name
from nnunetv2_imnet.training import unlabelled_trainer, variants
from nnunetv2_imnet.training.budgets import BUDGETS, with_budget
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
