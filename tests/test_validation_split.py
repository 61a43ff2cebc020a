"""A metric that chooses anything is never measured on the test split without a loud word."""

from __future__ import annotations

import warnings

import pytest
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

import memvir_pl.train as train_module
from memvir_pl.data import DMLDataModule
from memvir_pl.train import check_validation_split


def test_monitoring_the_test_split_warns_and_a_sweep_refuses(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"optimized_metric": "val/recall@1", "data": {"dataset": "cub"}})
    callbacks = [ModelCheckpoint(monitor="val/map@r"), ModelCheckpoint(monitor=None)]
    on_test = DMLDataModule("cub", root=str(tmp_path))  # the papers' protocol: val_fraction=0
    held_out = DMLDataModule("cub", root=str(tmp_path), val_fraction=0.1)
    assert on_test.validates_on_test and not held_out.validates_on_test and not DMLDataModule().validates_on_test
    with pytest.warns(UserWarning, match="val/map@r, which chooses the checkpoint that is tested, is measured on "
                                         "the test classes. For a result not tuned on test, set data.val_fraction=0.1"):
        check_validation_split(cfg, on_test, callbacks)
    monkeypatch.setattr(train_module, "is_sweep", lambda: True)
    with pytest.raises(ValueError, match="optimises val/recall@1, but data.val_fraction=0: the validation split is "
                                         "the test split of data=cub, so the sweep would tune on the test classes"):
        check_validation_split(cfg, on_test, callbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_validation_split(cfg, held_out, callbacks)  # a sweep on held-out classes: silent
        check_validation_split(cfg, DMLDataModule(), callbacks)  # glyphs have their own validation classes
