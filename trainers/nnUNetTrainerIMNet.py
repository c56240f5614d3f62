"""The folder that nnU-Net's ``nnUNet_extTrainer`` points at. nnU-Net imports this module while it searches for
``-tr`` names; every trainer of nnunetv2-imnet is re-exported here from the installed library."""
from nnunetv2_imnet.training.catalogue import *  # noqa: F401,F403
from nnunetv2_imnet.training.catalogue import __all__  # noqa: F401
