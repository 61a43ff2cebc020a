"""The validation metrics of every validated epoch, kept in the checkpoint."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl


class EpochHistory(pl.Callback):
    """Keeps the validation metrics of every validated epoch (for metrics.json's final and best, and
    the curves of :class:`~memvir_pl.extensions.figures.FigureLogging`).

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
