"""SplitEvaluation: retrieval metrics of another split (e.g. test) at every validation, for audits."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from memvir_pl.inference import evaluate


class SplitEvaluation(pl.Callback):
    """Evaluates the module on the datamodule's ``split`` after each validation epoch.

    The official MemVir code reports the best test value seen over all evaluated epochs; this
    callback makes such a per-epoch test curve part of a run (e.g. to measure how much that
    protocol adds over testing the epoch chosen on validation) without changing what is
    selected: its metrics are logged as ``<prefix>/<metric>`` (default ``<split>_during_fit/``)
    in the same row as the ``val/`` ones, and no checkpoint monitors them.

    The metric is a fresh copy of the module's ``val_metrics`` (same K values, backend), fed
    ``module(images)`` (B, D) of each batch (dicts with ``image``, ``label``, ``index`` and,
    on query/gallery splits, ``is_query``) of ``datamodule.<split>_dataloader()``. Under DDP
    every process evaluates the whole split (the metric keeps one row per dataset index).

    The callback leaves torch's global RNG as it found it, so a run's checkpoints and its random
    draws after an evaluation (dropout, augmentation) are the same with or without it: a
    DataLoader without a ``generator`` draws its workers' base seed from the global RNG each
    time it is iterated, so a loader that has none is given a fresh ``torch.Generator`` seeded
    with ``seed`` at every evaluation (a loader with its own generator keeps it).

    Args:
        split: the datamodule split, ``test`` by default.
        prefix: the logged name prefix; default ``<split>_during_fit``.
        seed: the seed of the loader's generator (worker seeds; evaluation draws nothing else).
    """

    def __init__(self, split: str = "test", prefix: str | None = None, seed: int = 0) -> None:
        self.split = split
        self.prefix = prefix or f"{split}_during_fit"
        self.seed = seed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = getattr(pl_module, "val_metrics", None)
        loader = getattr(trainer.datamodule, f"{self.split}_dataloader", None)
        if metric is None or loader is None:
            raise ValueError(
                f"SplitEvaluation({self.split!r}) needs a module with `val_metrics` (a RetrievalMetrics, "
                f"as DMLModule) and a datamodule with `{self.split}_dataloader()`; got "
                f"{type(pl_module).__name__} and {type(trainer.datamodule).__name__}."
            )
        batches = loader()
        if isinstance(batches, DataLoader) and batches.generator is None:
            batches.generator = torch.Generator().manual_seed(self.seed)
        values = evaluate(pl_module, batches, metric.clone(),
                          to_device=lambda batch: pl_module.transfer_batch_to_device(batch, pl_module.device, 0))
        pl_module.log_dict({f"{self.prefix}/{k}": float(v) for k, v in values.items()}, sync_dist=False)
