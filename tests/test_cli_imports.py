"""The command line answers at once: building its parser (every ``--help``) imports neither torch nor nnU-Net."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from nnunetv2_imnet import cli

SUBCOMMANDS = sorted(cli.build_parser()._subparsers._group_actions[0].choices)


def _imported_modules(arguments: list) -> set:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "nnunetv2_imnet.cli", *arguments],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {match.group(1).split(".")[0]
            for match in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", result.stderr, flags=re.M)}


@pytest.mark.parametrize("arguments", [["--help"]] + [[name, "--help"] for name in SUBCOMMANDS],
                         ids=lambda arguments: " ".join(arguments))
def test_help_imports_neither_torch_nor_nnunet(arguments: list) -> None:
    modules = _imported_modules(arguments)
    assert "nnunetv2_imnet" in modules, "the import log was not read"
    assert not modules & {"torch", "nnunetv2"}, f"{' '.join(arguments)} imported {modules & {'torch', 'nnunetv2'}}"
