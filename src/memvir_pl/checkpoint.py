"""Rebuilding a trained DMLModule (and its data) from a checkpoint written by memvir_pl.train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "memvir_pl_config"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a clear error when the file is missing or was not written by memvir_pl.train."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt "
            "(or epoch_NNN.ckpt) of a memvir_pl.train run."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if CONFIG_KEY not in checkpoint:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' entry: it was not written by memvir_pl.train, so the model and "
            "data cannot be rebuilt from it. Use a checkpoint from a `python -m memvir_pl.train` run."
        )
    return checkpoint


def restore_run(
    checkpoint: dict[str, Any], data_overrides: DictConfig | dict | None = None
) -> tuple[DictConfig, pl.LightningDataModule, pl.LightningModule]:
    """The run's config, its datamodule (set up) and the DMLModule with the checkpoint's weights.

    ``data_overrides`` are merged into the saved data config (e.g. a new ``root``).
    Pretrained-weight loading is switched off: the weights come from the checkpoint.
    """
    from memvir_pl.train import build_run

    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    if data_overrides:
        cfg.data = OmegaConf.merge(cfg.data, data_overrides)
    for key, value in (("pretrained", False), ("weights", None)):
        if key in cfg.model:
            cfg.model[key] = value
    datamodule, module = build_run(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return cfg, datamodule, module
