"""The CSV log of a run resumed into its own folder keeps the rows logged before the stop."""

from __future__ import annotations

import csv

import pytest
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger

from memvir_pl.extensions.loggers import CSVLogger


def _log(logger_class, root, rows) -> None:
    logger = logger_class(save_dir=str(root), name="csv", version="")
    for step, row in rows:
        logger.log_metrics(row, step=step)
    logger.save()


def _rows(root) -> list[dict[str, str]]:
    with open(root / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_a_resumed_logger_appends_and_widens_the_header(tmp_path):
    _log(CSVLogger, tmp_path, [(0, {"train/loss": 2.0}), (1, {"train/loss": 1.5})])
    _log(CSVLogger, tmp_path, [(2, {"train/loss": 1.0, "val/map@r": 0.4})])  # the resumed process
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert [r["train/loss"] for r in rows] == ["2.0", "1.5", "1.0"]
    assert [r["val/map@r"] for r in rows] == ["", "", "0.4"]


def test_lightnings_logger_loses_the_rows_before_the_resume(tmp_path):
    # the behaviour memvir_pl.extensions.loggers.CSVLogger exists for: if this starts failing, Lightning keeps the rows itself
    _log(LightningCSVLogger, tmp_path, [(0, {"train/loss": 2.0})])
    with pytest.warns(UserWarning, match="will be deleted"):
        _log(LightningCSVLogger, tmp_path, [(1, {"train/loss": 1.0})])
    assert [r["step"] for r in _rows(tmp_path)] == ["1"]
