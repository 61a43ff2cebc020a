"""MemVirCallback's life cycle: device of a restored memory, a failed fit, two callbacks, state keys."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from memvir_pl import MemVirCallback, VirtualClassMemory
from tests.memvir_helpers import CosineSoftmax, LinearEmbedder, fixed_data, quiet_trainer

B, D, C, IN_DIM, STEPS = 8, 6, 5, 10, 20


def make_model(cls: type[LinearEmbedder] = LinearEmbedder) -> LinearEmbedder:
    torch.manual_seed(0)
    return cls(CosineSoftmax(C, D), IN_DIM, fixed_data(STEPS, B, IN_DIM, C), B)


def memvir(**kwargs) -> MemVirCallback:
    return MemVirCallback(**{"num_steps": 3, "step_gap": 4, "warmup_epochs": 1, **kwargs})


def weights(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- item 1: device of a restored memory
class RestoredElsewhere(VirtualClassMemory):
    """Loads its buffers onto the meta device (standing in for "the CPU, while the module is on CUDA");
    ``to(device)`` records the move and brings the real buffers back."""

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._real = self._buffers()
        self._embeddings, self._labels, self._proxies = (t.to("meta") for t in self._real)
        self.moves: list[torch.device] = []

    def to(self, device: torch.device | str) -> VirtualClassMemory:
        self.moves.append(torch.device(device))
        if self._embeddings is not None and self._embeddings.is_meta:
            self._embeddings, self._labels, self._proxies = self._real
        return self


def test_a_memory_restored_on_another_device_is_moved_to_the_modules_before_use(tmp_path):
    straight = make_model()
    quiet_trainer(max_epochs=3, callbacks=[memvir()]).fit(straight)

    trainer = quiet_trainer(max_epochs=2, callbacks=[memvir()])
    trainer.fit(make_model())
    trainer.save_checkpoint(tmp_path / "half.ckpt")

    callback = memvir()
    callback.memory = RestoredElsewhere(3, 4)
    resumed = make_model()
    quiet_trainer(max_epochs=3, callbacks=[callback]).fit(resumed, ckpt_path=tmp_path / "half.ckpt")
    assert callback.memory.moves[0] == resumed.device == torch.device("cpu")
    for name, value in weights(straight).items():
        assert torch.equal(value, weights(resumed)[name]), name


def test_memory_to_moves_buffers_once_and_reports_the_device():
    memory = VirtualClassMemory(1, 0)
    assert memory.device is None and memory.to("meta").device is None  # nothing allocated: nothing to move
    memory.push(torch.ones(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(4, 3))
    buffers = memory._buffers()
    assert memory.to("cpu")._buffers() == buffers  # already there: the same tensors
    assert memory.to("meta").device == torch.device("meta")
    assert all(t.is_meta for t in memory._buffers())


# ---------------------------------------------------------------- item 2: a failed fit
class FailsOnce(LinearEmbedder):
    """Raises after the loss of step ``fail_at`` (0-based, over the whole fit), as an OOM in backward would."""

    fail_at: int | None = None

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == self.fail_at:
            raise RuntimeError("boom")
        return loss


def test_a_failed_fit_leaves_the_loss_unhooked_for_the_next_fit():
    model = make_model(FailsOnce)
    model.fail_at = STEPS + 7  # in epoch 2: MemVir active, the step's item stored
    failed = memvir()
    with pytest.raises(RuntimeError, match="boom"):
        quiet_trainer(max_epochs=2, callbacks=[failed]).fit(model)
    assert model.loss.batch_expander is None
    model.fail_at = None

    model.loss.calls.clear()
    quiet_trainer(max_epochs=1).fit(model)  # a plain fit: no virtual classes
    assert [c["num_classes"] for c in model.loss.calls] == [C] * STEPS

    # a new callback follows the curriculum n = min(N, s // (M+1)) from an empty memory
    model.loss.calls.clear()
    quiet_trainer(max_epochs=1, callbacks=[memvir(warmup_epochs=0)]).fit(model)
    assert [c["num_classes"] // C - 1 for c in model.loss.calls] == [min(3, s // 5) for s in range(STEPS)]

    # the failed callback, fitted again, continues from the 8 items it stored (steps 0..7 of its epoch 2)
    assert failed.memory.pushes == 8
    model.loss.calls.clear()
    quiet_trainer(max_epochs=2, callbacks=[failed]).fit(model)
    expected = [0] * STEPS + [min(3, (8 + s) // 5) for s in range(STEPS)]
    assert [c["num_classes"] // C - 1 for c in model.loss.calls] == expected


# ---------------------------------------------------------------- item 5: two callbacks, state keys
class TwoLosses(LinearEmbedder):
    """Two proxy losses on one embedding: ``loss`` over C classes, ``loss_b`` over 3 (labels mod 3)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_b = CosineSoftmax(3, D)

    def training_step(self, batch, batch_idx):
        x, y = batch
        embeddings = self(x)
        return self.loss(embeddings, y) + self.loss_b(embeddings, y % 3)


def two_callbacks() -> list[MemVirCallback]:
    return [memvir(loss_attr="loss"), memvir(num_steps=2, step_gap=2, loss_attr="loss_b")]


def test_two_callbacks_for_two_losses_save_and_restore_their_own_memories(tmp_path):
    straight, straight_callbacks = make_model(TwoLosses), two_callbacks()
    quiet_trainer(max_epochs=4, callbacks=straight_callbacks).fit(straight)

    trainer = quiet_trainer(max_epochs=2, callbacks=two_callbacks())
    trainer.fit(make_model(TwoLosses))
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    saved = torch.load(tmp_path / "half.ckpt", weights_only=False)["callbacks"]
    assert set(saved) == {"MemVirCallback{'loss_attr': 'loss'}", "MemVirCallback{'loss_attr': 'loss_b'}"}

    resumed, callbacks = make_model(TwoLosses), two_callbacks()
    quiet_trainer(max_epochs=4, callbacks=callbacks).fit(resumed, ckpt_path=tmp_path / "half.ckpt")
    for name, value in weights(straight).items():
        assert torch.equal(value, weights(resumed)[name]), name
    for mine, reference in zip(callbacks, straight_callbacks, strict=True):
        assert mine.memory.pushes == reference.memory.pushes == 3 * STEPS
        for got, want in zip(mine.memory._buffers(), reference.memory._buffers(), strict=True):
            assert torch.equal(got, want)
    assert straight.loss_b.calls[-1]["num_classes"] == 3 * 3  # loss_b's own N=2 blocks of 3 classes


def test_a_checkpoint_keyed_by_class_name_loads_into_a_callback_with_loss_attr(tmp_path):
    trainer = quiet_trainer(max_epochs=2, callbacks=[memvir()])
    trainer.fit(make_model())
    trainer.save_checkpoint(tmp_path / "old.ckpt")
    assert list(torch.load(tmp_path / "old.ckpt", weights_only=False)["callbacks"]) == ["MemVirCallback"]
    callback = memvir(loss_attr="loss")
    quiet_trainer(max_epochs=2, callbacks=[callback]).fit(make_model(), ckpt_path=tmp_path / "old.ckpt")
    assert callback.memory.pushes == STEPS


def test_metrics_are_logged_per_loss_attr():
    model = make_model(TwoLosses)
    trainer = quiet_trainer(max_epochs=2, callbacks=two_callbacks())
    trainer.fit(model)
    metrics = trainer.callback_metrics
    assert int(metrics["memvir/loss/num_classes"]) == 4 * C and int(metrics["memvir/loss_b/num_classes"]) == 3 * 3
