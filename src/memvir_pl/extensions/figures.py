"""Figures at the end of fit: the validation curves and a retrieval grid of validation images,
as PNGs in the run directory and as figures of TensorBoard, W&B and MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.loggers import Logger

from memvir_pl.extensions.history import EpochHistory


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

        from memvir_pl.inference import embed_batches
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
        try:
            embeddings, _ = embed_batches(pl_module, loader, pl_module.device)  # puts the module in eval mode
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
