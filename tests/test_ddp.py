"""DDP (2 processes, gloo, CPU): MemVir training equals one process on the concatenated global batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Subset

from memvir_pl import MemVirCallback
from memvir_pl.losses import NormSoftmax, ProxyAnchor
from memvir_pl.losses.distributed import gather_batch
from tests.memvir_helpers import LinearEmbedder, fixed_data, quiet_trainer

B, D, C, IN_DIM, STEPS, WORLD = 6, 8, 5, 10, 8, 2


class ShardedEmbedder(LinearEmbedder):
    """Global batch t is rows [2Bt, 2B(t+1)); rank r trains on its r-th half; rank 0 saves the result."""

    def __init__(self, loss, out_path: str):
        super().__init__(loss, IN_DIM, fixed_data(STEPS, WORLD * B, IN_DIM, C), B, lr=0.05)
        self.out_path = out_path

    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        local = WORLD * B // world
        rows = [t * WORLD * B + rank * local + i for t in range(STEPS) for i in range(local)]
        return DataLoader(Subset(self.dataset, rows), batch_size=local, shuffle=False)

    def on_train_end(self):
        if self.trainer.global_rank == 0:
            torch.save({k: v.detach().clone() for k, v in self.state_dict().items()}, self.out_path)


def train(loss_cls, devices: int, out_path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = ShardedEmbedder(loss_cls(C, D), str(out_path))
    callback = MemVirCallback(num_steps=2, step_gap=1, warmup_epochs=1)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    quiet_trainer(max_epochs=3, devices=devices, strategy=strategy, callbacks=[callback],
                  use_distributed_sampler=False).fit(model)
    return torch.load(out_path)


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("loss_cls", [NormSoftmax, ProxyAnchor])
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, loss_cls):
    single = train(loss_cls, 1, tmp_path / "single.pt")
    double = train(loss_cls, WORLD, tmp_path / "ddp.pt")
    initial = ShardedEmbedder(loss_cls(C, D), "").state_dict()
    for name, value in single.items():
        assert not torch.allclose(value, initial[name]), f"{name} did not train"
        torch.testing.assert_close(double[name], value, rtol=0, atol=1e-5, msg=name)


def _gather_uneven_batches(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Rank 0 holds 3 rows, rank 1 holds 2 (a last batch with data.drop_last=false): gather, then
    backpropagate a loss that every rank computes on the whole gathered batch."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rows = 3 - rank
    x = (torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) + 10 * rank).requires_grad_()
    embeddings, labels = gather_batch(x, torch.arange(rows) + 10 * rank)
    weights = torch.arange(1.0, 11.0).reshape(5, 2)
    (embeddings * weights).sum().backward()
    torch.save({"embeddings": embeddings.detach(), "labels": labels, "grad": x.grad}, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.ddp
def test_gather_batch_takes_batches_of_different_sizes(tmp_path):
    """Why the gather is ours and not ``torch.distributed.nn.functional.all_gather``: that one needs
    the same shape on every rank, and the ranks' last batches differ when data.drop_last=false."""
    mp.spawn(_gather_uneven_batches, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    expected = torch.cat([torch.arange(6.0).reshape(3, 2), torch.arange(4.0).reshape(2, 2) + 10])
    for result in (rank0, rank1):
        torch.testing.assert_close(result["embeddings"], expected)
        assert result["labels"].tolist() == [0, 1, 2, 10, 11]
    weights = torch.arange(1.0, 11.0).reshape(5, 2)  # each rank's loss has this gradient; DDP sums two
    torch.testing.assert_close(rank0["grad"], 2 * weights[:3])
    torch.testing.assert_close(rank1["grad"], 2 * weights[3:])
