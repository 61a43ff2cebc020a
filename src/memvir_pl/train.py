"""Hydra entry point: ``python -m memvir_pl.train [+experiment=NAME] [key=value ...]``.

Builds every object from the composed config with ``hydra.utils.instantiate``,
trains, tests the best checkpoint, prints a Recall@K / R-Precision / MAP@R
table and writes ``metrics.json`` (final, best and test metrics) in the run
directory.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from memvir_pl.checkpoint import check_resume_config, resume_checkpoint
from memvir_pl.config import CONFIG_DIR, instantiate_callbacks, instantiate_loggers
from memvir_pl.config_types import check_config_types
from memvir_pl.extensions.history import EpochHistory
from memvir_pl.extensions.loggers import finish_loggers, log_config
from memvir_pl.losses.base import VirtualClassLoss
from memvir_pl.report import print_metrics_table, run_rows
from memvir_pl.reproducibility import configure_cpu


def build_run(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The datamodule and the DMLModule of a config (the loss sized from the data and the model)."""
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = hydra.utils.instantiate(cfg.model)
    if getattr(datamodule, "cache_features", False):
        datamodule.use_backbone(model)
    loss = hydra.utils.instantiate(cfg.loss)
    if callable(loss) and not isinstance(loss, torch.nn.Module):  # a partial: size it now
        loss = loss(num_classes=datamodule.num_classes, embedding_dim=model.embedding_dim)
    if not isinstance(loss, VirtualClassLoss):
        raise ValueError(
            f"loss config built a {type(loss).__name__}; it must build a memvir_pl ProxyLoss or PMLAdapter "
            "(see conf/loss/*.yaml for examples)."
        )
    module = hydra.utils.instantiate(cfg.module, _convert_="all")(model=model, loss=loss)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    return datamodule, module


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The best checkpoint of the first ModelCheckpoint that monitors a metric ("" if none):
    the one the test runs on (``last.ckpt``'s callback monitors nothing)."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) and callback.best_model_path:
            return callback.best_model_path
    return ""


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) one config; returns the metrics written to ``metrics.json``."""
    check_config_types(cfg)  # every check before any data or model is built
    configure_cpu(cfg.get("threads"), cfg.get("cpu_isa"))
    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    if ckpt_path is not None and cfg.get("ckpt_path") == "auto":  # found, not named: it must be this run's
        check_resume_config(ckpt_path, cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module = build_run(cfg)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    check_validation_split(cfg, datamodule, callbacks)
    memvir = cfg.get("memvir")
    if memvir and memvir.get("_target_"):
        callbacks.append(hydra.utils.instantiate(memvir))
    history = EpochHistory()  # before the checkpoint callbacks (Lightning runs those last): saved up to date
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[*callbacks, history], logger=loggers or False)
    shown = dict.fromkeys(["val/recall@1", "val/r_precision", "val/map@r", cfg.optimized_metric])
    log_config(trainer.loggers, cfg, metrics=list(shown))  # the loggers write on rank zero only
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics: dict[str, Any] = {"final": history.last(), "best": history.best(cfg.optimized_metric)}
    if cfg.get("test"):
        best = best_checkpoint(trainer)
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics["test"] = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
        metrics["test_checkpoint"] = best or "final weights"
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print_metrics_table(run_rows(metrics), title=f"{cfg.task_name}: retrieval metrics ({output_dir / 'metrics.json'})")
    finish_loggers(trainer.loggers)
    return metrics


def is_sweep() -> bool:
    """Whether this run is one job of a Hydra multirun (a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_validation_split(cfg: DictConfig, datamodule: pl.LightningDataModule, callbacks: list) -> None:
    """Refuse a sweep that optimises a metric measured on the test split, and warn loudly when a
    monitored metric (the checkpoint that is tested) is: the datamodule validates on test."""
    if not getattr(datamodule, "validates_on_test", False):
        return
    advice = ("data.val_fraction=0.1 holds out 10 % of the training classes for validation (the test classes "
              "are then used only for the final test)")
    if is_sweep() and str(cfg.optimized_metric).startswith("val/"):
        raise ValueError(
            f"this sweep optimises {cfg.optimized_metric}, but data.val_fraction=0: the validation split is the "
            f"test split of data={cfg.data.dataset}, so the sweep would tune on the test classes. Set {advice}.")
    monitored = sorted({m for c in callbacks if str(m := getattr(c, "monitor", None) or "").startswith("val/")})
    if monitored:
        warnings.warn(
            f"\n{'!' * 78}\ndata.val_fraction=0: the validation split IS the test split of data={cfg.data.dataset} "
            f"(the papers' protocol). {', '.join(monitored)}, which chooses the checkpoint that is tested, is measured "
            f"on the test classes. For a result not tuned on test, set {advice}.\n{'!' * 78}", stacklevel=2)


def optimized_value(metrics: dict[str, Any], key: str) -> float | None:
    """The sweeper's objective: ``key`` in the best epoch's metrics."""
    value = metrics.get("best", {}).get(key)
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return optimized_value(train(cfg), cfg.optimized_metric)


if __name__ == "__main__":
    from memvir_pl.cli import run

    run("memvir-train")
