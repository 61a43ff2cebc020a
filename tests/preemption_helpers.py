"""A callback that sends a signal to its own process at a chosen point of training (soak tests).

Added to a real ``python -m memvir_pl.train`` run from the command line::

    +callbacks.kill._target_=tests.preemption_helpers.SignalAt +callbacks.kill.point=backward:1:3
    +callbacks.kill.signum=15

``point`` is ``PHASE:EPOCH:BATCH`` (epoch and batch counted from 0): ``batch_start`` (before the
forward), ``backward`` (after the forward and the MemVir push, before the backward: mid-step),
``optimizer`` (before the optimiser step), ``val`` (before validation batch BATCH of epoch EPOCH),
``epoch_end`` (in ``on_train_epoch_end``; BATCH is ignored), ``test`` (before test batch BATCH;
EPOCH is ignored). ``+callbacks.kill.rank=R`` fires on DDP process ``R`` only (default: every
process that reaches the point).
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl

PHASES = ("batch_start", "backward", "optimizer", "val", "epoch_end", "test")


class SignalAt(pl.Callback):
    def __init__(self, point: str, signum: int, rank: int | None = None) -> None:
        phase, epoch, batch = point.split(":")
        self.rank = rank
        if phase not in PHASES:
            raise ValueError(f"SignalAt: phase {phase!r} is not one of {PHASES}")
        self.phase, self.epoch, self.batch = phase, int(epoch), int(batch)
        self.signum = int(signum)
        self._batch_idx = -1
        self.fired = False

    def _maybe_fire(self, trainer: pl.Trainer, phase: str, batch: int) -> None:
        if self.fired or trainer.sanity_checking or (self.rank is not None and trainer.global_rank != self.rank):
            return
        if phase != self.phase:
            return
        if (phase == "test" or trainer.current_epoch == self.epoch) and (phase == "epoch_end" or batch == self.batch):
            self.fired = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_idx = batch_idx
        self._maybe_fire(trainer, "batch_start", batch_idx)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        self._maybe_fire(trainer, "backward", self._batch_idx)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self._maybe_fire(trainer, "optimizer", self._batch_idx)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._maybe_fire(trainer, "val", batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_fire(trainer, "epoch_end", -1)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        self._maybe_fire(trainer, "test", batch_idx)
