"""A CSV logger that keeps the rows of a resumed run.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it finds the log folder in use, so a run
resumed into its own folder (after a preemption, or ``ckpt_path=auto``) loses every row logged
before the stop. :class:`CSVLogger` appends to the file instead: its columns grow as new keys
appear, as Lightning's writer already handles.
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


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
