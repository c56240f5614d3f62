"""nnU-Net finds the trainers in a fresh shell, after an editable and after a plain ``pip install .``."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from nnunetv2_imnet import _exttrainer
from nnunetv2_imnet.training.catalogue import ALL_TRAINERS

REPO = Path(__file__).resolve().parents[1]

FIND_TRAINERS = """
import os, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
names = sys.argv[1:]
for name in names:
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name, (cls, name)
print("FOLDER", os.environ["nnUNet_extTrainer"])
print("MODULE", sys.modules[cls.__module__].__file__)
print("LEFT", sorted(m for m in sys.modules if m == "nnUNetTrainerIMNet"))
"""


def fresh_shell_env() -> dict:
    """The environment of a new shell: no nnU-Net trainer path, no opt-out."""
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", _exttrainer.OPT_OUT_VAR)}
    env.pop("PYTHONPATH", None)
    return env


def test_register_appends_to_existing_value_once():
    environ = {"nnUNet_extTrainer": "/my/trainers"}
    _exttrainer.register(environ)
    _exttrainer.register(environ)
    assert environ["nnUNet_extTrainer"].split(os.pathsep) == ["/my/trainers", _exttrainer.trainers_folder()]


def test_register_on_empty_and_opt_out():
    environ: dict = {}
    _exttrainer.register(environ)
    assert environ["nnUNet_extTrainer"] == _exttrainer.trainers_folder()
    opted_out = {_exttrainer.OPT_OUT_VAR: "1"}
    _exttrainer.register(opted_out)
    assert "nnUNet_extTrainer" not in opted_out


def test_source_checkout_points_at_the_top_level_trainers_folder():
    assert Path(_exttrainer.trainers_folder()) == REPO / "trainers"


def test_every_trainer_is_found_by_nnunets_search_in_a_fresh_interpreter():
    """The start-up hook sets nnUNet_extTrainer; nnU-Net then finds every -tr name and cleans up its imports."""
    result = subprocess.run([sys.executable, "-c", FIND_TRAINERS, *sorted(ALL_TRAINERS)], env=fresh_shell_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"FOLDER {REPO / 'trainers'}" in result.stdout
    assert "LEFT []" in result.stdout  # nnU-Net dropped the module imported from trainers/ after the search


@pytest.mark.integration
def test_plain_pip_install_registers_the_installed_trainers_folder(tmp_path):
    """A non-editable wheel install: a new environment sees the trainers folder inside site-packages."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    environment = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    target = Path(subprocess.check_output([str(python), "-c", purelib], text=True).strip())
    # dependencies (torch, nnU-Net, ...) come from this environment; its own .pth hooks are not processed there
    (target / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              *map(str, wheels.glob("*.whl"))], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (target / "nnunetv2_imnet_exttrainer.pth").is_file()
    result = subprocess.run([str(python), "-c", FIND_TRAINERS, "nnUNetTrainerIMNet", "nnUNetTrainer_cpu"],
                            env=fresh_shell_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    installed_folder = target / "nnunetv2_imnet" / "trainers"
    assert f"FOLDER {installed_folder}" in result.stdout
    assert str(target / "nnunetv2_imnet") in result.stdout.split("MODULE ")[1]
    assert str(REPO) not in result.stdout


def test_site_packages_of_this_environment_has_the_hook():
    """The README's install put the start-up hook in place (editable installs get it too)."""
    assert any((Path(p) / "nnunetv2_imnet_exttrainer.pth").is_file() for p in site.getsitepackages())
