"""Overrides of the wrong type name the key, what it expects and how to write it."""

from __future__ import annotations

import pytest

from memvir_pl.config_types import ConfigTypeError, check_config_types, describe, fits
from memvir_pl.train import train
from tests.hydra_helpers import EXPERIMENTS, QUIET, compose_config


@pytest.mark.parametrize(
    ("override", "message"),
    [("memvir.step_gap=abc", "memvir.step_gap=abc is not valid: MemVirCallback expects an integer for 'step_gap', "
                             "got a string"),
     ("memvir.num_steps=2.5", "memvir.num_steps=2.5 .* expects an integer .* got a number with a fraction"),
     ("memvir.warmup_epochs=true", "memvir.warmup_epochs=true .* got a boolean.*e.g. memvir.warmup_epochs=0"),
     ("data.batch_size=big", "data.batch_size=big .* DMLDataModule expects an integer.*e.g. data.batch_size=128"),
     ("data.m_per_class=four", "data.m_per_class=four .* expects an integer or null"),
     ("data.num_workers=1.5", "data.num_workers=1.5"),
     ("module.lr_decay_step=x", "module.lr_decay_step=x .* DMLModule expects an integer or null"),
     ("module.k=[1,a]", r"module.k=\[1,a\] .* expects .*a list of integers"),
     ("module.lr=fast", "module.lr=fast .* DMLModule expects a number"),
     # an interpolation is shown as written, with what it resolved to
     ("memvir.step_gap=${data.dataset}", r"memvir.step_gap=\$\{data.dataset\} \(resolved to glyphs\) is not valid: "
                                         "MemVirCallback expects an integer"),
     ("+module.foo=1", "module.foo is not an argument of DMLModule; it takes .*lr.*Remove the key"),
     ("+memvir.stepgap=2", "memvir.stepgap is not an argument of MemVirCallback; it takes .*step_gap"),
     ("trainer.max_epochs=abc", "trainer.max_epochs=abc is not valid: Trainer expects an integer or null"),
     ("+trainer.limit_train_batches=all", "trainer.limit_train_batches=all is not valid: Trainer expects"),
     ("+trainer.max_epoch=3", "trainer.max_epoch is not an argument of Trainer"),
     ("callbacks.model_checkpoint.save_last=often", "callbacks.model_checkpoint.save_last=often is not valid"),
     # the optimiser is an object config of its own: a name alone, or a key its class does not take
     ("module.optimizer=sgd", r"module.optimizer=sgd is not valid: DMLModule expects an object config "
                              r"\(_target_ and _partial_: true\) for 'optimizer', got a string. .*"
                              r"choose one with module/optimizer=adam\|adamw\|sgd"),
     ("+module.optimizer.momentum=0.9", "module.optimizer.momentum is not an argument of Adam; it takes .*eps")],
)
def test_a_value_of_the_wrong_type_is_named_with_its_fix(tmp_path, monkeypatch, override, message):
    cfg = compose_config([override, *QUIET], tmp_path)

    def build_run(cfg):
        raise AssertionError("data and model were built before the config was checked")

    monkeypatch.setattr("memvir_pl.train.build_run", build_run)
    with pytest.raises(ConfigTypeError, match=message):
        train(cfg)  # before any data is built or anything trained


def test_whole_number_floats_pass_for_integers(tmp_path):
    cfg = compose_config(["memvir.step_gap=2.0", "data.batch_size=64.0", "trainer.max_epochs=3.0",
                          "+trainer.limit_train_batches=1.0", *QUIET], tmp_path)
    check_config_types(cfg)
    # passed on as integers (Lightning and the samplers reject 3.0), except where a float means something else
    assert [type(v) for v in (cfg.memvir.step_gap, cfg.data.batch_size, cfg.trainer.max_epochs)] == [int] * 3
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (64, 3)
    assert isinstance(cfg.trainer.limit_train_batches, float)  # 1.0: the whole epoch, 1: one batch
    with pytest.raises(ConfigTypeError, match=r"module.k=\[1.0,5.0\] .* a list of integers"):
        check_config_types(compose_config(["module.k=[1.0,5.0]", *QUIET], tmp_path))


def test_every_shipped_config_passes_the_check(tmp_path):
    for overrides in ([], *([f"+experiment={name}"] for name in EXPERIMENTS), ["loss=pml_soft_triple"],
                      ["memvir=none"], ["module/optimizer=adamw"], ["module/optimizer=sgd"], ["memvir=saving", "memvir.storage_dtype=bfloat16"], ["data.m_per_class=null"]):
        check_config_types(compose_config(overrides, tmp_path))


def test_the_type_rules_by_hand():
    assert fits(3, int) and not fits(True, int) and fits(3.0, int) and not fits(3.5, int) and not fits("3", int)
    assert fits(3, float) and fits(0.5, float) and not fits("0.5", float)
    assert fits(None, int | None) and fits([1, 2], tuple[int, ...]) and not fits([1, "a"], tuple[int, ...])
    assert fits(4, int | tuple[int, ...]) and not fits("x", int | tuple[int, ...])
    assert fits(object(), object)  # hints it cannot check are accepted
    assert describe(int | None) == "an integer or null" and describe(tuple[int, ...]) == "a list of integers"
