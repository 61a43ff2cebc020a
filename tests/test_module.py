"""DMLModule's learning-rate schedules against the official rule and hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from memvir_pl import DMLModule
from memvir_pl.losses import NormSoftmax
from memvir_pl.module import step_decay_factor

LR, PROXY_LR, BATCHES = 1e-3, 1e-2, 3


def official_step_lrs(epochs: int, decay_step: int, decay_stop: int, gamma: float = 0.1) -> list[float]:
    """The official main.py: at the start of epoch e (1-based), lr *= gamma if e % step == 0 and e <= stop."""
    lr, lrs = 1.0, []
    for epoch in range(1, epochs + 1):
        if epoch % decay_step == 0 and epoch <= decay_stop:
            lr *= gamma
        lrs.append(lr)
    return lrs


def test_step_decay_starts_at_the_decay_epoch_as_the_official_code():
    factor = lambda epoch, step, stop: step_decay_factor(epoch - 1, 0.1, step, stop)  # noqa: E731
    # step = stop = 50 (the CARS196 baselines): epochs 1..49 at 1, epoch 50 on at 0.1
    assert [factor(e, 50, 50) for e in range(1, 50)] == [1.0] * 49
    assert [factor(e, 50, 50) for e in range(50, 131)] == pytest.approx([0.1] * 81)
    # step 10, no stop: 0.1 from epoch 10, 0.01 from epoch 20
    assert [factor(e, 10, None) for e in (1, 9, 10, 19, 20, 29)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [factor(e, 20, 45) for e in range(1, 80)] == pytest.approx(official_step_lrs(79, 20, 45))


def test_step_schedule_of_the_module_trains_epoch_e_at_its_factor():
    module = make_module(lr_schedule="step", lr_decay_step=2, lr_decay_stop=None)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(5):  # epochs 1..5; Lightning steps an epoch scheduler after each epoch
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()  # no gradients: a no-op that keeps the scheduler order
        scheduler.step()
    expected = [[LR * f, PROXY_LR * f] for f in (1, 0.1, 0.1, 0.01, 0.01)]
    assert lrs == [pytest.approx(row) for row in expected]


def cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def test_cosine_with_max_steps_only_spans_the_steps():
    lrs = fit(max_epochs=-1, max_steps=7)  # 3 batches per epoch: epochs of 3, 3 and 1 steps
    assert len(lrs) == 7
    assert lrs == [pytest.approx([LR * cosine(s, 7), PROXY_LR * cosine(s, 7)]) for s in range(7)]
    assert min(lr for row in lrs for lr in row) > 0


def test_cosine_of_a_resumed_run_keeps_the_first_fits_length(tmp_path):
    # a run planned for 2 epochs (6 steps), resumed after epoch 1 with max_epochs=4
    uninterrupted = fit(max_epochs=2, checkpoint_dir=tmp_path)
    assert uninterrupted == [pytest.approx([LR * cosine(s, 6), PROXY_LR * cosine(s, 6)]) for s in range(6)]
    with pytest.warns(UserWarning, match="keeps its first fit's length of 6 steps"):
        resumed = fit(max_epochs=4, ckpt_path=tmp_path / "e0.ckpt")
    assert len(resumed) == 9  # steps 3..11
    assert resumed[:3] == uninterrupted[3:]  # no jump: the original curve goes on
    assert resumed[3:] == [[0.0, 0.0]] * 6  # past its end the lr stays 0


def test_cosine_needs_a_finite_training_length():
    with pytest.raises(ValueError, match="finite training length"):
        fit(max_epochs=-1, max_steps=-1)


# ---------------------------------------------------------------- helpers


class RandomImages(Dataset):
    """BATCHES * 4 fixed random 4x4 "images" of 2 classes, as DMLModule batches."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(BATCHES * 4, 3, 4, 4, generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": torch.tensor(index % 2), "index": torch.tensor(index)}


def make_module(**kwargs) -> DMLModule:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8))
    return DMLModule(model, NormSoftmax(2, 8), lr=LR, proxy_lr=PROXY_LR, **kwargs)


class RecordLR(pl.Callback):
    """The lr of each param group in every training step, as the step uses it."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])


def fit(max_epochs: int, max_steps: int = -1, checkpoint_dir: Path | None = None,
        ckpt_path: Path | None = None) -> list[list[float]]:
    """The lrs of a cosine fit on RandomImages; with ``checkpoint_dir``, a checkpoint e<epoch>.ckpt per epoch."""
    record = RecordLR()
    callbacks: list[pl.Callback] = [record]
    if checkpoint_dir is not None:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=checkpoint_dir, filename="e{epoch}", save_top_k=-1,
                                                      save_on_train_epoch_end=True, auto_insert_metric_name=False))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, max_steps=max_steps, callbacks=callbacks,
                         logger=False, enable_checkpointing=checkpoint_dir is not None, enable_progress_bar=False,
                         enable_model_summary=False)
    loader = DataLoader(RandomImages(), batch_size=4)
    trainer.fit(make_module(lr_schedule="cosine"), train_dataloaders=loader, ckpt_path=ckpt_path)
    return record.lrs


# --------------------------------------------------------------------- the optimiser


def test_the_default_optimiser_is_the_official_adam_over_two_groups():
    optimizer = make_module(lr_schedule="constant").configure_optimizers()
    assert type(optimizer) is torch.optim.Adam
    assert [(g["name"], g["lr"], g["eps"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("model", LR, 0.01, 1e-4), ("proxies", PROXY_LR, 0.01, 1e-4)]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_each_optimizer_config_builds_its_torch_optimiser_with_the_module_lrs(tmp_path, name):
    import hydra

    from memvir_pl.config import compose_config

    overrides = [f"module/optimizer={name}", "module.lr=0.003", "module.proxy_lr=0.03", "module.lr_schedule=constant"]
    cfg = compose_config(overrides, tmp_path)
    module = hydra.utils.instantiate(cfg.module, _convert_="all")(
        model=nn.Sequential(nn.Flatten(), nn.Linear(48, 8)), loss=NormSoftmax(2, 8))
    optimizer = module.configure_optimizers()
    assert type(optimizer) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    assert [g["lr"] for g in optimizer.param_groups] == [0.003, 0.03]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {1e-4}
    assert "optimizer" not in module.hparams  # in the run config, not pickled into the hyper-parameters


def test_an_optimizer_name_instead_of_a_factory_says_how_to_choose_one():
    with pytest.raises(TypeError, match="module/optimizer=adam"):
        make_module(optimizer="sgd")


def test_an_lr_bound_in_the_optimizer_is_refused_for_the_module_lrs():
    import functools

    with pytest.raises(ValueError, match="set module.lr .* and module.proxy_lr"):
        make_module(optimizer=functools.partial(torch.optim.Adam, lr=0.5))
