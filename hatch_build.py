"""Installs ``nnunetv2_imnet_exttrainer.pth`` for editable installs too (wheels get it via force-include)."""
from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ExtTrainerHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            build_data["force_include_editable"]["nnunetv2_imnet_exttrainer.pth"] = "nnunetv2_imnet_exttrainer.pth"
