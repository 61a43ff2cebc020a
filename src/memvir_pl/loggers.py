"""What a run tells its loggers: metrics, the whole config, and figures at the end of fit.

* :class:`CSVLogger`: Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it finds the log
  folder in use, so a run resumed into its own folder (after a preemption, or ``ckpt_path=auto``)
  loses every row logged before the stop. This one appends to the file instead: its columns grow
  as new keys appear, as Lightning's writer already handles.
* :class:`MLFlowLogger`: Lightning's, with ``@`` in metric names written as ``_at_`` (MLflow
  refuses ``@``).
* :func:`log_config`: the composed config as hyper-parameters of every logger (so sweep runs can
  be filtered by N, M, parts, data, model, seed ...).
* :class:`EpochHistory`: the validation metrics of every validated epoch, kept in the checkpoint.
* :class:`FigureLogging`: at the end of fit, the validation curves and a retrieval grid of
  validation images, as PNGs in the run directory and as figures of TensorBoard, W&B and MLflow.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.loggers import MLFlowLogger as LightningMLFlowLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

from memvir_pl.config import flatten_config


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, appending to an existing ``metrics.csv``."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class CSVLogger(LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` (same arguments) whose ``metrics.csv`` survives a
    resume into the same folder: the rows before the stop stay, the resumed run's rows follow.
    Steps redone after a hard kill (those after the last checkpoint) appear twice."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class MLFlowLogger(LightningMLFlowLogger):
    """``pytorch_lightning.loggers.MLFlowLogger`` (same arguments) that keeps metric names readable:
    MLflow does not allow ``@`` in a key, and Lightning would drop it (``val/recall1``,
    ``val/mapr``); here it becomes ``_at_`` (``val/recall_at_1``, ``val/map_at_r``)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({key.replace("@", "_at_"): value for key, value in metrics.items()}, step)


def log_config(loggers: Sequence[Logger], cfg: DictConfig, metrics: Sequence[str] = ()) -> None:
    """Log the whole composed ``cfg`` (resolved) as hyper-parameters of each logger; the loggers
    flatten it as they do (``memvir/num_steps``, ``data/dataset`` ...).

    ``metrics`` (e.g. ``val/map@r``) are the columns of TensorBoard's HPARAMS tab, which shows each
    one's last logged value next to the run's hyper-parameters.
    """
    params = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger) and metrics:
            write_tensorboard_hparams(logger, params, metrics)


def flatten_params(params: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """``{"memvir": {"num_steps": 5}}`` -> ``{"memvir/num_steps": 5}``; values other than bool,
    int, float and str become their ``str`` (lists, ``None``)."""
    return {name: value if isinstance(value, bool | int | float | str) else str(value)
            for name, value in flatten_config(params, separator="/").items()}


@rank_zero_only
def write_tensorboard_hparams(logger: TensorBoardLogger, params: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """The summaries behind TensorBoard's HPARAMS tab, in the logger's own event file: the
    flattened ``params`` and the metric tags whose logged scalars the tab shows.

    Lightning's ``TensorBoardLogger`` writes them only with ``default_hp_metric`` (a placeholder
    ``hp_metric`` scalar) or together with made-up starting values of the metrics; this writes
    the names alone, so the curves keep only real values.
    """
    from torch.utils.tensorboard.summary import hparams

    experiment, session_start, session_end = hparams(flatten_params(params), dict.fromkeys(metrics, 0.0))
    file_writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams reaches it
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)


def finish_loggers(loggers: Sequence[Logger]) -> None:
    """End this process's W&B run when a logger started one: the next run of a Hydra multirun,
    trained in the same process, then starts its own."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


class EpochHistory(pl.Callback):
    """Keeps the validation metrics of every validated epoch (for metrics.json's final and best, and
    the curves of :class:`FigureLogging`).

    Saved in the checkpoint, so a resumed run's final and best cover the epochs before the resume too.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if row:
            self.epochs.append({"epoch": trainer.current_epoch + 1, **row})

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(row) for row in self.epochs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = [dict(row) for row in state_dict["epochs"]]

    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}

    def best(self, key: str) -> dict[str, float]:
        scored = [row for row in self.epochs if key in row and not math.isnan(row[key])]
        return max(scored, key=lambda row: row[key]) if scored else {}


def log_figure(logger: Logger, name: str, figure: Figure, step: int) -> bool:
    """Send ``figure`` to ``logger`` under ``name`` (TensorBoard ``add_figure``, a W&B image,
    MLflow ``log_figure``); False for a logger that takes no figures (e.g. CSV)."""
    from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    from memvir_pl.viz import figure_to_array

    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_figure(name, figure, global_step=step, close=False)
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[figure_to_array(figure)], step=step)
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_figure(logger.run_id, figure, f"{name}.png")
    else:
        return False
    return True


class FigureLogging(pl.Callback):
    """At the end of fit (rank zero): the validation curves (from :class:`EpochHistory`) and a
    retrieval grid of the final weights, written to ``<dirpath>/*.png`` and sent to every logger
    that takes figures.

    The grid: ``queries`` validation images of different classes (drawn with a fixed seed), each
    with its ``k`` nearest among the first ``max_items`` validation images (itself left out),
    framed green when of the query's class. It needs images to show: a data set of cached
    backbone features gets the curves only.

    Args:
        dirpath: folder of the PNGs (``None``: none written, loggers only).
        queries: rows of the grid, >= 1.
        k: results per query, >= 1.
        max_items: validation images embedded for the grid.
    """

    def __init__(self, dirpath: str | None = None, queries: int = 8, k: int = 5, max_items: int = 2000) -> None:
        for name, value in (("queries", queries), ("k", k), ("max_items", max_items)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FigureLogging: {name} must be an int >= 1, got {value!r}.")
        self.dirpath = dirpath
        self.queries, self.k, self.max_items = queries, k, max_items

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        figures: dict[str, Figure] = {}
        history = next((c for c in trainer.callbacks if isinstance(c, EpochHistory)), None)
        if history is not None and history.epochs:
            from memvir_pl.viz import plot_validation_curves

            figures["validation_curves"] = plot_validation_curves(history.epochs)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "split"):
            grid = self.retrieval_grid(pl_module, datamodule)
            if grid is not None:
                figures["retrieval_grid"] = grid
        for name, figure in figures.items():
            if self.dirpath:
                from memvir_pl.viz import save_figure

                save_figure(figure, Path(self.dirpath) / f"{name}.png")
            for logger in trainer.loggers:
                log_figure(logger, f"figures/{name}", figure, trainer.global_step)

    @torch.no_grad()
    def retrieval_grid(self, pl_module: pl.LightningModule, datamodule: Any) -> Figure | None:
        """The grid of module docstring, or None when the validation split has no images to show."""
        from torch.utils.data import DataLoader, Subset

        from memvir_pl.metrics import knn
        from memvir_pl.viz import plot_retrieval_grid

        split = datamodule.split("val")
        if getattr(datamodule, "cache_features", False) or not (hasattr(split, "images") or hasattr(split, "paths")):
            return None
        count = min(self.max_items, len(split.labels))
        labels_np = np.asarray(split.labels[:count])
        classes = np.unique(labels_np)
        if count < 2 or len(classes) < 1:
            return None
        rng = np.random.default_rng(0)
        chosen = rng.choice(classes, size=min(self.queries, len(classes)), replace=False)
        queries = torch.tensor([int(np.flatnonzero(labels_np == c)[0]) for c in chosen])
        loader = DataLoader(Subset(datamodule.split_dataset("val", train=False), range(count)), batch_size=256)
        was_training = pl_module.training
        pl_module.eval()
        try:
            embeddings = torch.cat([pl_module(batch["image"].to(pl_module.device)).float().cpu() for batch in loader])
        finally:
            pl_module.train(was_training)
        found = knn(embeddings[queries], embeddings, k=min(self.k, count - 1), exclude=queries)
        labels = torch.as_tensor(labels_np)
        correct = (labels[found.indices] == labels[queries, None]).numpy()
        names = getattr(split, "classes", None)

        def title(row: int) -> str:
            label = int(labels_np[row])
            return f"query: {names[label]}"[:28] if names is not None and len(names) > label else f"query {label}"

        return plot_retrieval_grid(
            [_thumbnail(split, int(q)) for q in queries],
            [[_thumbnail(split, int(i)) for i in row] for row in found.indices],
            correct=correct, scores=found.values.numpy(), query_titles=[title(int(q)) for q in queries],
        )


def _thumbnail(split: Any, index: int, size: int = 96) -> np.ndarray:
    """Image ``index`` of a split as an array: rendered splits hold arrays, file splits paths."""
    if hasattr(split, "images"):
        return np.asarray(split.images[index])
    from PIL import Image

    with Image.open(split.paths[index]) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        return np.asarray(image)
