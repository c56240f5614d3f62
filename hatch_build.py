"""Puts ``nnunetv2_imnet_exttrainer.pth`` at the root of site-packages, for wheels and editable installs alike.

Python runs a ``.pth`` file's ``import`` line at start-up; this one appends the package's trainers folder to
nnU-Net's ``nnUNet_extTrainer`` (see ``nnunetv2_imnet/_exttrainer.py``).
"""
import os
import shutil
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_NAME = "nnunetv2_imnet_exttrainer.pth"
PTH_LINE = "import nnunetv2_imnet._exttrainer; nnunetv2_imnet._exttrainer.register()\n"


class ExtTrainerHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        folder = self._pth_folder = tempfile.mkdtemp(prefix="nnunetv2_imnet_build_")
        path = os.path.join(folder, PTH_NAME)
        with open(path, "w") as handle:
            handle.write(PTH_LINE)
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data[key][path] = PTH_NAME

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        shutil.rmtree(self._pth_folder, ignore_errors=True)  # the wheel holds its own copy now
