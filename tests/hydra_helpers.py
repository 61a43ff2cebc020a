"""Composing the project's Hydra configs in tests, and running the entry points as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from memvir_pl.config import CONFIG_DIR, compose_config

__all__ = ["EXPERIMENTS", "QUIET", "REPO", "compose_config", "run_module"]

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
QUIET = ["callbacks.rich_progress_bar=null", "logger=csv"]


def run_module(module: str, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd``, as a user runs it; output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MEMVIR_CACHE": str(cwd / ".cache")}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
