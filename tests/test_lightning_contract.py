"""The Lightning internals that preemption relies on, pinned on a tiny model.

Preemption reads and sets three things that Lightning does not publish as API:
the SIGTERM flag its loops check at step boundaries, whether a batch ends an optimiser step
under gradient accumulation, and the fit loop's progress counters. If a Lightning release
changes any of them, these tests fail before a preempted run silently loses its place.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from memvir_pl.data.sampler import train_position
from memvir_pl.extensions.preemption import _at_optimizer_step, _request_stop


class TinyRegression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(pl.Callback):
    """Records, after each training batch, what preemption reads; optionally requests a stop."""

    def __init__(self, stop_after_batch: int | None = None) -> None:
        self.stop_after_batch = stop_after_batch
        self.seen: list[dict] = []
        self.exception: BaseException | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append({"batch": batch_idx, "steps": trainer.global_step, "at_step": _at_optimizer_step(trainer),
                          "position": train_position(trainer)})
        if batch_idx == self.stop_after_batch:
            _request_stop(trainer)

    def on_exception(self, trainer, pl_module, exception):
        self.exception = exception


def _fit(tmp_path, callback: Recorder, batches: int = 5, accumulate: int = 1) -> None:
    data = TensorDataset(torch.randn(batches * 2, 3), torch.randn(batches * 2, 1))
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=accumulate, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(TinyRegression(), DataLoader(data, batch_size=2))


def test_the_step_flag_matches_lightnings_optimiser_steps_under_accumulation(tmp_path):
    """Accumulating 2 batches over 5: steps end on batches 1, 3 and the epoch's last, 4."""
    recorder = Recorder()
    _fit(tmp_path, recorder, batches=5, accumulate=2)
    assert [s["at_step"] for s in recorder.seen] == [False, True, False, True, True]
    steps = [s["steps"] for s in recorder.seen]
    assert [b > a for a, b in zip([0, *steps[:-1]], steps, strict=True)] == [s["at_step"] for s in recorder.seen]


def test_the_position_counts_the_batches_trained_in_the_epoch(tmp_path):
    recorder = Recorder()
    _fit(tmp_path, recorder, batches=4)
    assert [s["position"]["batches_done"] for s in recorder.seen] == [1, 2, 3, 4]
    assert all(s["position"]["epoch"] == 0 and s["position"]["num_replicas"] == 1 for s in recorder.seen)


@pytest.mark.parametrize("stop_after_batch", [0, 2])
def test_a_requested_stop_raises_sigterm_exception_before_the_next_batch(tmp_path, stop_after_batch):
    """Setting the flag in ``on_train_batch_end`` makes Lightning raise ``SIGTERMException`` at that
    step boundary, which reaches ``on_exception`` (where the checkpoint is written)."""
    recorder = Recorder(stop_after_batch=stop_after_batch)
    with pytest.raises(SIGTERMException):
        _fit(tmp_path, recorder, batches=4)
    assert [s["batch"] for s in recorder.seen] == list(range(stop_after_batch + 1))
    assert isinstance(recorder.exception, SIGTERMException)
