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
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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
