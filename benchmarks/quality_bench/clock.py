"""EpochClock: the seconds a run has spent in fitting at the end of each training epoch.

The quality runner adds it to every run and stores what it wrote in the run's record, so that
"how soon does an arm reach a target" counts training and the evaluations during it, and not
the data loading or feature extraction before fitting or the final test after it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl


class EpochClock(pl.Callback):
    """Writes ``[{"epoch": e, "seconds": s}, ...]`` (epochs from 1; wall seconds since the fit
    loop started, validations included) to ``path`` after every training epoch."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows.append({"epoch": trainer.current_epoch + 1, "seconds": round(time.perf_counter() - self._start, 2)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.rows))


def read_clock(path: Path) -> list[dict[str, float]]:
    """What :class:`EpochClock` wrote ([] when the run has no clock file)."""
    return json.loads(path.read_text()) if path.is_file() else []
