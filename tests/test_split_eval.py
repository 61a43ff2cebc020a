"""SplitEvaluation: the test split evaluated at each validation equals trainer.test of the same weights,
and evaluating it leaves torch's global RNG untouched."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from memvir_pl.extensions.split_eval import SplitEvaluation
from memvir_pl.metrics import RetrievalMetrics
from memvir_pl.train import train
from tests.hydra_helpers import QUIET, compose_config

TINY = ["data.options.chars='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'", "data.batch_size=32",
        "memvir=none", "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "test=true",
        "callbacks.model_checkpoint.monitor=val/map@r", "optimized_metric=val/map@r",
        "+callbacks.test_during_fit._target_=memvir_pl.extensions.split_eval.SplitEvaluation"]


@pytest.mark.slow
def test_logged_test_curve_matches_trainer_test_of_each_epoch(tmp_path):
    torch.set_num_threads(1)
    cfg = compose_config([*TINY, *QUIET, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    metrics = train(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("test_during_fit/recall@1")]
    assert [int(r["epoch"]) + 1 for r in rows] == [1, 2]  # every validated epoch, sanity check excluded
    # trainer.test ran on the checkpoint of the epoch chosen on val/map@r: the same weights as the
    # callback's evaluation after that epoch, through DMLModule.test_step instead of the callback
    chosen = rows[metrics["best"]["epoch"] - 1]
    for name in ("recall@1", "recall@2", "r_precision", "map@r"):
        assert float(chosen[f"test_during_fit/{name}"]) == pytest.approx(metrics["test"][f"test/{name}"], abs=1e-6)
    assert not any(k.startswith("test_during_fit") for k in metrics["best"])  # not part of the selection


def test_needs_retrieval_metrics_and_the_split_loader():
    trainer = SimpleNamespace(sanity_checking=False, datamodule=SimpleNamespace())
    with pytest.raises(ValueError, match=r"needs a module with `val_metrics`.*`test_dataloader\(\)`"):
        SplitEvaluation().on_validation_epoch_end(trainer, torch.nn.Linear(2, 2))
    assert SplitEvaluation("val").prefix == "val_during_fit"


class _Items(torch.utils.data.Dataset):
    """Items as the datamodule's: dicts of image (3,), label, index."""

    def __init__(self) -> None:
        self.images = torch.arange(30, dtype=torch.float32).reshape(10, 3).sin()
        self.labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


class _Module(torch.nn.Module):
    """The parts of a DMLModule the callback uses: val_metrics, forward, batch transfer, log_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.val_metrics = RetrievalMetrics(k=(1, 2))
        self.device = torch.device("cpu")
        self.logged: dict = {}

    def forward(self, x):
        return x

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch

    def log_dict(self, values, sync_dist):
        self.logged.update(values)


def test_leaves_the_global_rng_as_it_found_it():
    data = SimpleNamespace(test_dataloader=lambda: torch.utils.data.DataLoader(_Items(), batch_size=4))
    trainer = SimpleNamespace(sanity_checking=False, datamodule=data)
    module = _Module()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    SplitEvaluation().on_validation_epoch_end(trainer, module)
    assert torch.equal(torch.get_rng_state(), before)
    # the same values as the metric fed the whole split at once
    reference = RetrievalMetrics(k=(1, 2))
    reference.update(_Items().images, _Items().labels, indexes=torch.arange(10))
    expected = {f"test_during_fit/{k}": float(v) for k, v in reference.compute().items()}
    assert module.logged == pytest.approx(expected)
