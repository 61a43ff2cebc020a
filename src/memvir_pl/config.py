"""Where the Hydra configs live and small helpers to build config groups that hold several objects."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf


def run_id(output_dir: str) -> str:
    """A stable id of a run directory (16 hex digits of the SHA-1 of its absolute path): a logger run
    resumed in the same directory (a requeued job, ``ckpt_path=auto``) keeps its id (W&B's ``id``)."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


OmegaConf.register_new_resolver("memvir_run_id", run_id, replace=True)


def flatten_config(value: Any, prefix: str = "", separator: str = ".") -> dict[str, Any]:
    """Nested mappings as one level: ``{"memvir": {"num_steps": 5}}`` -> ``{"memvir.num_steps": 5}``
    (keys joined by ``separator`` under ``prefix``); a value that is not a mapping is
    ``{prefix: value}``."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten_config(item, f"{prefix}{separator}{key}" if prefix else str(key), separator))
    return flat


def _config_dir() -> Path:
    """Where the Hydra configs are: ``$MEMVIR_CONFIG_DIR``, else the source tree's ``conf/``
    (an editable install or a checkout on ``PYTHONPATH``), else the copy a built wheel carries
    in ``memvir_pl/conf`` (see setup.py)."""
    package = Path(__file__).resolve().parent
    source_tree = package.parents[1] / "conf" if package.parent.name == "src" else None
    candidates = [os.environ.get("MEMVIR_CONFIG_DIR"), source_tree, package / "conf"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.yaml").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        "memvir_pl: no Hydra config directory with train.yaml found (looked in "
        f"{[str(c) for c in candidates if c]}); reinstall the package (`pip install memvir-pl` ships "
        "its configs) or set MEMVIR_CONFIG_DIR to a copy of the repository's conf/ folder."
    )


CONFIG_DIR = _config_dir()


def _instantiate_group(group: DictConfig | None, kind: str) -> list[Any]:
    objects = []
    for name, node in (group or {}).items():
        if node is None:  # switched off from the command line, e.g. callbacks.rich_progress_bar=null
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(
                f"{kind} config '{name}' has no _target_; each entry of the {kind} group must be an object "
                f"config such as {{_target_: pytorch_lightning.callbacks.ModelCheckpoint, ...}}."
            )
        objects.append(hydra.utils.instantiate(node))
    return objects


def instantiate_callbacks(group: DictConfig | None) -> list[Any]:
    """Lightning callbacks from the ``callbacks`` group (a mapping name -> object config or null)."""
    return _instantiate_group(group, "callbacks")


def instantiate_loggers(group: DictConfig | None) -> list[Any]:
    """Lightning loggers from the ``logger`` group (a mapping name -> object config or null)."""
    return _instantiate_group(group, "logger")


def resolve_path(path: str | None) -> str | None:
    """An absolute path for a user-given path (relative to where the command was started)."""
    if not path:
        return None
    resolved = Path(hydra.utils.to_absolute_path(str(path))) if _hydra_running() else Path(path).resolve()
    if not resolved.exists():
        raise FileNotFoundError(f"{path}: no such file (resolved to {resolved}); check the path given.")
    return str(resolved)


def compose_config(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """A config composed as the command line would (``${hydra:...}`` resolvable), for Python callers.

    The run's output goes to ``output_dir``; use it to drive :func:`memvir_pl.train.train`
    from scripts, notebooks and tests without a Hydra app.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def _hydra_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()
