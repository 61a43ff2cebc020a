"""DMLModule: backbone -> pooling -> embedding -> proxy loss, with retrieval metrics."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from memvir_pl.inference import update_metric
from memvir_pl.losses.base import VirtualClassLoss
from memvir_pl.metrics import RetrievalMetrics

#: Builds the optimiser from parameter groups (each with its ``lr``): a torch optimiser class with
#: its other settings bound, e.g. a Hydra config with ``_partial_: true`` (``conf/module/optimizer/``).
OptimizerFactory = Callable[[Iterable[dict[str, Any]]], torch.optim.Optimizer]
#: The official optimiser (github.com/navervision/MemVir): Adam, eps 0.01, weight decay 1e-4.
OFFICIAL_OPTIMIZER: OptimizerFactory = functools.partial(torch.optim.Adam, eps=0.01, weight_decay=1e-4)
LR_SCHEDULES = ("constant", "step", "cosine")


def step_decay_factor(epochs_done: int, gamma: float, decay_step: int, decay_stop: int | None) -> float:
    """The official schedule: lr x gamma at the start of every epoch e (1-based) with
    e % decay_step == 0 and e <= decay_stop, so epoch e itself already trains at the decayed lr.

    ``epochs_done`` counts finished epochs; the factor is the one of epoch epochs_done + 1:
    ``gamma ** (min(epochs_done + 1, decay_stop) // decay_step)`` (step = stop = 50: epochs 1-49
    at 1, from epoch 50 on at gamma).
    """
    epoch = epochs_done + 1
    last = epoch if decay_stop is None else min(epoch, decay_stop)
    return gamma ** (max(last, 0) // decay_step)


class CosineFactor:
    """The cosine lr factor 0.5 * (1 + cos(pi * step / total_steps)), 1 -> 0, clamped at 0 after the end.

    ``step`` counts optimiser steps done. A callable object rather than a function, so that
    ``LambdaLR`` saves ``total_steps`` in its state dict (the checkpoint) and a resume
    restores it: a resumed run keeps the curve of its first fit.
    """

    def __init__(self, total_steps: int) -> None:
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))


class DMLModule(pl.LightningModule):
    """Deep metric learning with a proxy loss, MemVir-ready.

    Args:
        model: images (B, 3, H, W) -> L2-normalised embeddings (B, D); e.g.
            :class:`memvir_pl.models.EmbeddingNet` (its ``freeze_bn`` keeps
            BatchNorm statistics frozen, as the official ``--freeze_BN``).
        loss: a :class:`~memvir_pl.losses.ProxyLoss` or ``PMLAdapter`` over the training classes.
        optimizer: parameter groups -> torch optimiser, every setting but the learning rates
            bound (:data:`OptimizerFactory`, e.g. ``functools.partial(torch.optim.SGD,
            momentum=0.9)``); default :data:`OFFICIAL_OPTIMIZER`.
        lr: learning rate of the model (backbone + embedding); official 1e-4.
        proxy_lr: learning rate of the loss's proxies; official 1e-2.
        lr_schedule: ``"constant"``, ``"step"`` (x ``lr_decay_gamma`` every
            ``lr_decay_step`` epochs up to ``lr_decay_stop``, the official rule: see
            :func:`step_decay_factor`) or ``"cosine"`` (per optimiser step, from lr to 0 over the
            first fit's ``trainer.estimated_stepping_batches``, i.e. ``max_epochs`` or
            ``max_steps``, whichever ends training first; a resume keeps that length, whatever
            ``max_epochs`` it is given, and steps past it train at lr 0).
        k: the Recall@K values of the retrieval metrics.
        metric_backend: kNN backend of the metrics (``"auto"``, ``"torch"``, ``"faiss"``).

    Batches are dicts with ``image`` (B, 3, H, W), ``label`` (B,), ``index`` (B,)
    and, for query/gallery splits, ``is_query`` (B,). Validation logs
    ``val/recall@K``, ``val/r_precision``, ``val/map@r``; testing ``test/...``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: VirtualClassLoss,
        optimizer: OptimizerFactory = OFFICIAL_OPTIMIZER,
        lr: float = 1e-4,
        proxy_lr: float = 1e-2,
        lr_schedule: str = "constant",
        lr_decay_step: int | None = None,
        lr_decay_stop: int | None = None,
        lr_decay_gamma: float = 0.1,
        k: Sequence[int] = (1, 2, 4, 8),
        metric_backend: str = "auto",
    ) -> None:
        super().__init__()
        if not callable(optimizer):
            raise TypeError(
                f"DMLModule: optimizer must build a torch optimiser from parameter groups (e.g. "
                f"functools.partial(torch.optim.Adam, eps=0.01)), got {optimizer!r}; in a config choose one "
                "with module/optimizer=adam|adamw|sgd, or give module.optimizer a _target_ and _partial_: true."
            )
        if "lr" in getattr(optimizer, "keywords", {}):
            raise ValueError(
                f"DMLModule: the optimizer binds lr={optimizer.keywords['lr']!r}, which the parameter groups' own "
                "learning rates would override; set module.lr (network) and module.proxy_lr (proxies) instead."
            )
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"DMLModule: lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}.")
        if lr_schedule == "step" and not (lr_decay_step and lr_decay_step > 0):
            raise ValueError(
                f"DMLModule: lr_schedule='step' needs lr_decay_step > 0 (epochs), got {lr_decay_step!r}; "
                "e.g. module.lr_decay_step=50 module.lr_decay_stop=50 (the official CARS196 baseline)."
            )
        # the optimiser's settings are in the run config (saved in checkpoints), not in the hyper-parameters
        self.save_hyperparameters(ignore=["model", "loss", "optimizer"])
        self.optimizer_factory = optimizer
        self.model = model
        self.loss = loss
        self.val_metrics = RetrievalMetrics(k=tuple(k), backend=metric_backend)
        self.test_metrics = RetrievalMetrics(k=tuple(k), backend=metric_backend)
        self.run_config: dict[str, Any] | None = None  # the composed Hydra config, saved in checkpoints

    def forward(self, images: Tensor) -> Tensor:
        """Embeddings (B, D) of images (B, 3, H, W)."""
        return self.model(images)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        update_metric(self.val_metrics, self(batch["image"]), batch)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        update_metric(self.test_metrics, self(batch["image"]), batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def _log_metrics(self, metric: RetrievalMetrics, prefix: str) -> None:
        if metric.update_count == 0:  # e.g. a sanity check with no batches
            return
        values = metric.compute()
        metric.reset()
        # the metric's states are gathered across processes already: every rank logs the same values
        self.log_dict({f"{prefix}/{name}": float(value) for name, value in values.items()}, sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = [
            {"params": [p for p in self.model.parameters() if p.requires_grad], "lr": hp.lr, "name": "model"},
            {"params": [p for p in self.loss.parameters() if p.requires_grad], "lr": hp.proxy_lr, "name": "proxies"},
        ]
        optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        if hp.lr_schedule == "constant":
            return optimizer
        if hp.lr_schedule == "step":
            factor = lambda epochs_done: step_decay_factor(  # noqa: E731
                epochs_done, hp.lr_decay_gamma, hp.lr_decay_step, hp.lr_decay_stop
            )
            interval = "epoch"
        else:
            factor = CosineFactor(self._training_steps())
            interval = "step"
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def _training_steps(self) -> int:
        """The optimiser steps this fit will take (the trainer's ``estimated_stepping_batches``)."""
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps) or steps < 1:
            raise ValueError(
                f"DMLModule: lr_schedule='cosine' needs a finite training length, got {steps} optimiser steps; "
                "set trainer.max_epochs or trainer.max_steps (or use module.lr_schedule=constant)."
            )
        return int(steps)

    def on_train_start(self) -> None:
        schedulers = self.lr_schedulers()
        scheduler = schedulers[0] if isinstance(schedulers, list) else schedulers
        factor = getattr(scheduler, "lr_lambdas", [None])[0]
        if isinstance(factor, CosineFactor) and factor.total_steps != self._training_steps():
            rank_zero_warn(
                f"DMLModule: this fit runs to optimiser step {self._training_steps()}, but the resumed cosine "
                f"schedule keeps its first fit's length of {factor.total_steps} steps (saved in the checkpoint): "
                "the lr follows that curve and is 0 past its end. Start a new run to change the schedule's length."
            )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["memvir_pl_config"] = self.run_config
