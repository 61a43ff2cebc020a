"""DDP (2 processes, gloo, CPU): MemVir training equals one process on the concatenated global batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from memvir_pl import MemVirCallback
from memvir_pl.losses import NormSoftmax, ProxyAnchor
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
