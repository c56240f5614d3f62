"""IMNet variants, named as nnU-Net names its trainer variants. Each is data: a description (its docstring, which
``nnunetv2-imnet trainers`` prints) and the MI options it changes (``mi_options``, applied once by
``nnUNetTrainerIMNet.__init__``)."""
from __future__ import annotations

from nnunetv2_imnet.training.imnet_trainer import nnUNetTrainerIMNet


class nnUNetTrainerIMNet_InfoNCE(nnUNetTrainerIMNet):
    """InfoNCE estimator instead of IM-Net's JSD/BCE."""

    mi_options = {"estimator": "infonce"}


class nnUNetTrainerIMNet_DV(nnUNetTrainerIMNet):
    """Donsker-Varadhan (MINE) estimator instead of IM-Net's JSD/BCE."""

    mi_options = {"estimator": "dv"}


class nnUNetTrainerIMNet_Concat(nnUNetTrainerIMNet):
    """Concat (1x1 MLP) critic instead of IM-Net's bilinear one."""

    mi_options = {"critic": "concat"}


class nnUNetTrainerIMNet_Patches(nnUNetTrainerIMNet):
    """Space-to-depth input blocks with a 64-channel learned embedding instead of the resampled image."""

    mi_options = {"view": "patches", "embedding_channels": 64}


class nnUNetTrainerIMNet_Embed(nnUNetTrainerIMNet):
    """The resampled image through a 32-channel learned embedding before the critic."""

    mi_options = {"embedding_channels": 32}


class nnUNetTrainerIMNet_Area(nnUNetTrainerIMNet):
    """Block-average (area) resampling of the input instead of trilinear interpolation."""

    mi_options = {"interpolation": "area"}


class nnUNetTrainerIMNet_lambda0(nnUNetTrainerIMNet):
    """Weight 0: the critic trains and the MI is logged, but the network is not regularised (an ablation)."""

    mi_options = {"weight": 0.0}


class nnUNetTrainerIMNet_lambda0p01(nnUNetTrainerIMNet):
    """Weight 0.01, a tenth of the default: a gentler MI regularisation."""

    mi_options = {"weight": 0.01}


class nnUNetTrainerIMNet_lambda1(nnUNetTrainerIMNet):
    """Weight 1, ten times the default: the MI term as strong as the segmentation loss."""

    mi_options = {"weight": 1.0}
