"""IMNet variants, one option each, named as nnU-Net names its trainer variants."""
from __future__ import annotations

import torch

from nnunetv2_imnet.training.imnet_trainer import nnUNetTrainerIMNet


class nnUNetTrainerIMNet_InfoNCE(nnUNetTrainerIMNet):
    """InfoNCE estimator instead of IM-Net's JSD/BCE."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.estimator = "infonce"


class nnUNetTrainerIMNet_DV(nnUNetTrainerIMNet):
    """Donsker-Varadhan (MINE) estimator instead of IM-Net's JSD/BCE."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.estimator = "dv"


class nnUNetTrainerIMNet_Concat(nnUNetTrainerIMNet):
    """Concat (1x1 MLP) critic instead of IM-Net's bilinear one."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.critic = "concat"


class nnUNetTrainerIMNet_Patches(nnUNetTrainerIMNet):
    """Space-to-depth input blocks with a 64-channel learned embedding instead of the resampled image."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.view = "patches"
        self.mi.embedding_channels = 64


class nnUNetTrainerIMNet_Embed(nnUNetTrainerIMNet):
    """The resampled image through a 32-channel learned embedding before the critic."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.embedding_channels = 32


class nnUNetTrainerIMNet_Area(nnUNetTrainerIMNet):
    """Block-average (area) resampling of the input instead of trilinear interpolation."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.interpolation = "area"


class nnUNetTrainerIMNet_lambda0(nnUNetTrainerIMNet):
    """Weight 0: the critic trains and the MI is logged, but the network is not regularised (an ablation)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.weight = 0.0


class nnUNetTrainerIMNet_lambda0p01(nnUNetTrainerIMNet):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.weight = 0.01


class nnUNetTrainerIMNet_lambda1(nnUNetTrainerIMNet):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mi.weight = 1.0
