"""Rebuilding a trained DMLModule (and its data) from a checkpoint written by memvir_pl.train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

CONFIG_KEY = "memvir_pl_config"

#: The config entries whose values change what a run trains (dotted keys; a group covers its keys)...
TRAINING_KEYS = ("data", "model", "loss", "module", "memvir", "trainer", "seed", "threads", "cpu_isa")
#: ... except these, which change where things are read and written or how a run reports, not the weights.
NOT_TRAINING_KEYS = frozenset({
    "data.root", "data.num_workers", "data.pin_memory", "data.eval_batch_size", "data.feature_cache_dir",
    "data.options.cache_dir", "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.plugins",
})


class ResumeConfigError(ValueError):
    """``ckpt_path=auto`` found a checkpoint written under another training configuration."""


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value}


def training_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The :data:`TRAINING_KEYS` (less :data:`NOT_TRAINING_KEYS`) on which two resolved configs
    (plain dicts) differ, one ``"key: SAVED in the checkpoint, CURRENT now"`` line each, sorted."""
    absent = "<absent>"
    flat_saved, flat_current = {}, {}
    for key in TRAINING_KEYS:
        flat_saved.update(_flatten(saved.get(key, absent), key))
        flat_current.update(_flatten(current.get(key, absent), key))
    differing = []
    for key in sorted(flat_saved.keys() | flat_current.keys()):
        if key in NOT_TRAINING_KEYS or any(key.startswith(f"{k}.") for k in NOT_TRAINING_KEYS):
            continue
        before, now = flat_saved.get(key, absent), flat_current.get(key, absent)
        if before != now:
            differing.append(f"{key}: {before!r} in the checkpoint, {now!r} now")
    return differing


def check_resume_config(path: str | Path, cfg: DictConfig) -> None:
    """Raise :class:`ResumeConfigError` unless the checkpoint at ``path`` was written under the
    same training configuration as ``cfg`` (:func:`training_differences` is empty)."""
    checkpoint = read_checkpoint(path)
    current = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
               for key in TRAINING_KEYS if key in cfg}
    if CONFIG_KEY not in checkpoint:
        differing = [f"the checkpoint has no saved config ('{CONFIG_KEY}'): it was not written by memvir_pl.train"]
    else:
        differing = training_differences(checkpoint[CONFIG_KEY], current)
    if differing:
        raise ResumeConfigError(
            f"ckpt_path=auto found {path}, but it was written under another training configuration:\n  "
            + "\n  ".join(differing)
            + f"\nResuming it would continue another run. Give this run its own directory (hydra.run.dir=...), "
            f"start it afresh with ckpt_path=null, or resume that checkpoint anyway with ckpt_path={path}."
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an existing file, memory-mapped: a tensor is read from disk only
    when used (a look at the config does not read the weights, memory or optimiser state)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a clear error when the file is missing or was not written by memvir_pl.train.

    The file is memory-mapped: a tensor is read from disk only when used, so rebuilding the model
    from ``last.ckpt`` does not read its MemVir memory or optimiser state.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt "
            "(or epoch_NNN.ckpt) of a memvir_pl.train run."
        )
    checkpoint = read_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' entry: it was not written by memvir_pl.train, so the model and "
            "data cannot be rebuilt from it. Use a checkpoint from a `python -m memvir_pl.train` run."
        )
    return checkpoint


def saved_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The run's config, with pretrained-weight loading off (the weights come from the checkpoint)."""
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    for key, value in (("pretrained", False), ("weights", None)):
        if key in cfg.model:
            cfg.model[key] = value
    return cfg


def load_embedding_model(ckpt_path: str | Path) -> tuple[DictConfig, nn.Module]:
    """The run config and the embedding network (eval mode, CPU) of a checkpoint, without its data.

    Only ``cfg.model`` is built, so a checkpoint trained on a dataset that is not on this
    machine still embeds new images.
    """
    checkpoint = load_checkpoint(ckpt_path)
    cfg = saved_config(checkpoint)
    model = hydra.utils.instantiate(cfg.model)
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    return cfg, model.eval()


def restore_run(
    checkpoint: dict[str, Any], data_overrides: DictConfig | dict | None = None
) -> tuple[DictConfig, pl.LightningDataModule, pl.LightningModule]:
    """The run's config, its datamodule (set up) and the DMLModule with the checkpoint's weights.

    ``data_overrides`` are merged into the saved data config (e.g. a new ``root``).
    """
    from memvir_pl.train import build_run

    cfg = saved_config(checkpoint)
    if data_overrides:
        cfg.data = OmegaConf.merge(cfg.data, data_overrides)
    datamodule, module = build_run(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return cfg, datamodule, module
