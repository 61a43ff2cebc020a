"""What a run tells its loggers: metrics and the whole config.

* :class:`CSVLogger`: Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it finds the log
  folder in use, so a run resumed into its own folder (after a preemption, or ``ckpt_path=auto``)
  loses every row logged before the stop. This one appends to the file instead: its columns grow
  as new keys appear, as Lightning's writer already handles.
* :class:`MLFlowLogger`: Lightning's, with ``@`` in metric names written as ``_at_`` (MLflow
  refuses ``@``).
* :func:`log_config`: the composed config as hyper-parameters of every logger (so sweep runs can
  be filtered by N, M, parts, data, model, seed ...).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
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
