"""Makes nnU-Net find this package's trainers without any set-up by the user.

The ``nnunetv2_imnet_exttrainer.pth`` file that the package installs into site-packages calls ``register()`` at
interpreter start-up. It appends the ``trainers/`` folder to ``nnUNet_extTrainer`` (keeping whatever the user has
there, and searched after it), so ``nnUNetv2_train ... -tr nnUNetTrainerIMNet`` and ``nnUNetv2_predict`` work in
any fresh shell. Set ``NNUNETV2_IMNET_NO_AUTOREGISTER=1`` to opt out and manage ``nnUNet_extTrainer`` yourself
(``nnunetv2-imnet trainers-path`` prints the folder). Only ``os`` is imported here: this runs in every interpreter
of the environment.
"""
from __future__ import annotations

import os
from typing import MutableMapping

ENV_VAR = "nnUNet_extTrainer"
OPT_OUT_VAR = "NNUNETV2_IMNET_NO_AUTOREGISTER"


def trainers_folder() -> str:
    """``nnunetv2_imnet/trainers`` in an installed wheel, ``<checkout>/trainers`` in a source checkout."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "trainers")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "trainers")


def register(environ: MutableMapping[str, str] = os.environ) -> None:
    if environ.get(OPT_OUT_VAR, "").lower() in ("1", "true", "yes"):
        return
    folder = trainers_folder()
    paths = [p for p in environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if not any(os.path.abspath(p) == folder for p in paths):
        environ[ENV_VAR] = os.pathsep.join(paths + [folder])
