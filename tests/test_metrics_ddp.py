"""RetrievalMetrics across processes (gloo, padded DistributedSampler) and inside Lightning."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from memvir_pl.metrics import RetrievalMetrics, retrieval_metrics

NUM_ITEMS = 53  # odd: a 2-process DistributedSampler pads one item
K = (1, 2, 4)


def dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings (53, 8), labels (53,) of 10 classes (1, 2, ..., 9, 8 items), query flags (53,)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(10), torch.arange(1, 11))[:NUM_ITEMS]
    x = torch.randn(10, 8, generator=g)[labels] + torch.randn(NUM_ITEMS, 8, generator=g)
    is_query = torch.rand(NUM_ITEMS, generator=g) < 0.5
    return x, labels, is_query


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        x, labels, is_query = dataset()
        sampler = DistributedSampler(
            range(NUM_ITEMS), num_replicas=world_size, rank=rank, shuffle=True, seed=3
        )
        indexes = torch.tensor(list(sampler))
        plain, split = RetrievalMetrics(k=K), RetrievalMetrics(k=K)
        for batch in indexes.split(5):
            plain.update(x[batch], labels[batch], batch)
            split.update(x[batch], labels[batch], batch, is_query[batch])
        result = {"plain": plain.compute(), "split": split.compute(), "rows": len(indexes)}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_two_processes_with_padded_sampler_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x, labels, is_query = dataset()
    expected = {
        "plain": retrieval_metrics(x, labels, k=K),
        "split": retrieval_metrics(x, labels, k=K, is_query=is_query),
    }
    for rank in range(2):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert got["rows"] == (NUM_ITEMS + 1) // 2  # each rank saw 27 rows: one is padding
        for mode in ("plain", "split"):
            assert got[mode] == pytest.approx(expected[mode], abs=1e-12), (rank, mode)


class _TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(8, 6)
        self.retrieval = RetrievalMetrics(k=K)

    def validation_step(self, batch, batch_idx):
        x, labels, indexes = batch
        self.retrieval.update(self.embed(x), labels, indexes)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v for k, v in self.retrieval.compute().items()})
        self.retrieval.reset()


def test_logged_values_in_a_lightning_validation_loop_equal_direct_computation():
    torch.set_num_threads(1)
    x, labels, _ = dataset()
    data = TensorDataset(x, labels, torch.arange(NUM_ITEMS))
    module = _TinyModule()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        limit_val_batches=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, DataLoader(data, batch_size=10, shuffle=False), verbose=False)
    seen = 40  # 4 batches of 10
    with torch.no_grad():
        expected = retrieval_metrics(module.embed(x[:seen]), labels[:seen], k=K)
    logged = {k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items()}
    assert set(logged) == set(expected)
    assert logged == pytest.approx(expected, abs=1e-6)  # Lightning logs float32
    assert 0 < expected["recall@1"] < 1
