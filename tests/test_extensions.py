"""The Lightning extensions package: every name it exports resolves, and the MemVir callback
loads neither the data package nor the logger and figure stack."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytorch_lightning as pl

import memvir_pl
import memvir_pl.extensions as extensions

CALLBACKS = ("EpochHistory", "FigureLogging", "MemVirCallback", "PreemptionCheckpoint", "SplitEvaluation")
LOGGERS = ("CSVLogger", "MLFlowLogger")


def test_every_exported_name_is_a_lightning_callback_or_logger():
    assert sorted(extensions.__all__) == sorted(CALLBACKS + LOGGERS)
    for name in CALLBACKS:
        assert issubclass(getattr(extensions, name), pl.Callback), name
    for name in LOGGERS:
        assert issubclass(getattr(extensions, name), pl.loggers.Logger), name
    assert memvir_pl.MemVirCallback is extensions.MemVirCallback


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'MemvirCallback'"):
        extensions.MemvirCallback  # noqa: B018


def test_the_memvir_callback_loads_neither_data_nor_loggers_nor_figures():
    code = (
        "import sys; from memvir_pl.extensions import MemVirCallback; "
        "bad = [k for k in ('memvir_pl.data', 'memvir_pl.extensions.loggers', 'memvir_pl.extensions.figures', "
        "'memvir_pl.extensions.preemption', 'memvir_pl.viz', 'omegaconf') if k in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
