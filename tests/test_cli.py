"""The commands: console scripts, ``python -m memvir_pl``, per-command ``--help`` and ``--version``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import memvir_pl
from memvir_pl.cli import COMMANDS
from tests.hydra_helpers import REPO

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


def test_console_scripts_are_the_four_commands():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("memvir-")}
    assert scripts == {"memvir-train": "memvir_pl.cli:train", "memvir-eval": "memvir_pl.cli:evaluate",
                       "memvir-embed": "memvir_pl.cli:embed", "memvir-search": "memvir_pl.cli:search"}
    assert set(scripts) == set(COMMANDS)


def test_python_m_memvir_pl_lists_the_commands():
    result = _python("-m", "memvir_pl")
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout
    assert memvir_pl.__version__ in result.stdout and "memvir_pl.data fetch" in result.stdout


@pytest.mark.parametrize("module", ["train", "eval", "embed", "search"])
def test_each_command_has_its_own_help_and_a_version(module):
    name = f"memvir-{module}"
    version = _python("-m", f"memvir_pl.{module}", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"{name} (memvir-pl) {memvir_pl.__version__}"
    result = _python("-m", f"memvir_pl.{module}", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"{name}: ") and f"Usage: {name} " in text and f"{name} --version" in text
    if module == "train":
        assert "== Config groups (group=option) ==" in text and "experiment:" in text and "memvir:" in text
    else:  # only its own keys: no training groups, no training keys
        assert "Config groups" not in text and "ckpt_path: ???" in text
        assert "experiment" not in text and "\nloss:" not in text and "\nmemvir:" not in text


def test_a_checkpoint_command_refuses_a_training_group_with_what_to_do():
    result = _python("-m", "memvir_pl.eval", "ckpt_path=x.ckpt", "data=cars")
    assert result.returncode == 1
    assert "'data=cars': the data settings come from the checkpoint" in result.stderr
    assert "data.root=PATH" in result.stderr and "+data=cars" not in result.stderr
