"""MemVirCallback in a Lightning run: resume, mixed precision, logging, finding the loss, errors."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from memvir_pl import MemVirCallback
from tests.memvir_helpers import CosineSoftmax, LinearEmbedder, fixed_data, quiet_trainer

B, D, C, IN_DIM, STEPS = 8, 6, 5, 10, 20


def make_model(steps: int = STEPS, batch: int = B) -> LinearEmbedder:
    torch.manual_seed(0)  # the same initial proxies in every run
    return LinearEmbedder(CosineSoftmax(C, D), IN_DIM, fixed_data(steps, batch, IN_DIM, C), B)


def memvir(**kwargs) -> MemVirCallback:
    return MemVirCallback(**{"num_steps": 3, "step_gap": 4, "warmup_epochs": 1, **kwargs})


def final_state(model: LinearEmbedder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("proxy_mode", "parts"), [
    ("exact", "full"),
    ("saving", "full"),
    ("exact", "memory_rows"),  # a memory without proxy snapshots
    ("exact", "virtual_proxies"),  # a memory without rows
])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, proxy_mode, parts):
    straight = make_model()
    quiet_trainer(max_epochs=4, callbacks=[memvir(proxy_mode=proxy_mode, parts=parts)]).fit(straight)

    first_half = make_model()
    trainer = quiet_trainer(max_epochs=2, callbacks=[memvir(proxy_mode=proxy_mode, parts=parts)])
    trainer.fit(first_half)
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)

    resumed = make_model()
    callback = memvir(proxy_mode=proxy_mode, parts=parts)
    quiet_trainer(max_epochs=4, callbacks=[callback]).fit(resumed, ckpt_path=ckpt)
    for name, value in final_state(straight).items():
        assert torch.equal(value, final_state(resumed)[name]), name
    assert callback.memory.pushes == 3 * STEPS

    # the same resume with an empty memory (what the official code does) drifts away
    forgetful = make_model()
    empty = memvir(proxy_mode=proxy_mode, parts=parts)
    empty.load_state_dict = lambda state: None
    quiet_trainer(max_epochs=4, callbacks=[empty]).fit(forgetful, ckpt_path=ckpt)
    assert not torch.equal(final_state(forgetful)["net.weight"], final_state(straight)["net.weight"])


def test_resume_with_parts_that_store_another_half_is_refused(tmp_path):
    trainer = quiet_trainer(max_epochs=2, callbacks=[memvir(parts="virtual_proxies")])
    trainer.fit(make_model())
    ckpt = tmp_path / "proxies_only.ckpt"
    trainer.save_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"keeps \(store_rows, store_proxies\)=\(False, True\), this run needs "
                                         r"\(True, True\): the half it lacks cannot be rebuilt"):
        quiet_trainer(max_epochs=3, callbacks=[memvir(parts="full")]).fit(make_model(), ckpt_path=ckpt)


def test_bf16_mixed_precision_trains_close_to_fp32():
    fp32, bf16 = make_model(), make_model()
    quiet_trainer(max_epochs=2, callbacks=[memvir()]).fit(fp32)
    callback = memvir()
    quiet_trainer(max_epochs=2, callbacks=[callback], precision="bf16-mixed").fit(bf16)
    losses32 = torch.stack([c["loss"] for c in fp32.loss.calls])
    losses16 = torch.stack([c["loss"] for c in bf16.loss.calls])
    assert losses16.dtype == torch.float32
    assert callback.memory.num_blocks() == 3 and callback.memory._proxies.dtype == torch.float32
    torch.testing.assert_close(losses16, losses32, rtol=0, atol=0.05)


def test_storage_dtype_bfloat16_is_used_for_the_bank():
    model = make_model()
    callback = memvir(storage_dtype="bfloat16")
    quiet_trainer(max_epochs=2, callbacks=[callback]).fit(model)
    assert callback.memory._embeddings.dtype == torch.bfloat16
    assert model.loss.calls[-1]["proxies"].dtype == torch.float32  # the loss still computes in fp32


class LoggedMetrics(Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = trainer.callback_metrics
        self.rows.append((int(m["memvir/virtual_blocks"]), int(m["memvir/num_classes"])))


def test_logs_blocks_and_class_count_every_step():
    recorder = LoggedMetrics()
    quiet_trainer(max_epochs=2, callbacks=[memvir(), recorder]).fit(make_model())
    assert recorder.rows[:STEPS] == [(0, C)] * STEPS
    blocks = [min(3, max(0, s) // 5) for s in range(STEPS)]  # step s of epoch 2 holds s items
    assert recorder.rows[STEPS:] == [(n, (n + 1) * C) for n in blocks]


def test_loss_is_found_by_type_or_by_loss_attr():
    model = make_model()
    model.other = CosineSoftmax(C, D)
    with pytest.raises(ValueError, match=r"exactly one .* found 2 \(loss, other\).*loss_attr"):
        quiet_trainer(max_epochs=1, callbacks=[memvir()]).fit(model)
    callback = memvir(warmup_epochs=0, loss_attr="loss")
    quiet_trainer(max_epochs=1, callbacks=[callback]).fit(model)
    assert callback.loss is model.loss and model.loss.calls[-1]["num_classes"] == 4 * C
    assert model.loss.batch_expander is None  # detached after fit


@pytest.mark.parametrize(("attr", "message"), [("nope", "no attribute path 'nope'"), ("net", "is a Linear, not")])
def test_bad_loss_attr(attr, message):
    with pytest.raises(ValueError, match=message):
        quiet_trainer(max_epochs=1, callbacks=[memvir(loss_attr=attr)]).fit(make_model())


class TwoLossCalls(LinearEmbedder):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) + super().training_step(batch, batch_idx)


def test_loss_called_twice_in_a_step_is_refused():
    model = TwoLossCalls(CosineSoftmax(C, D), IN_DIM, fixed_data(STEPS, B, IN_DIM, C), B)
    with pytest.raises(RuntimeError, match="called twice in one training step"):
        quiet_trainer(max_epochs=1, callbacks=[memvir(warmup_epochs=0)]).fit(model)


def test_negative_warmup_is_refused():
    with pytest.raises(ValueError, match="warmup_epochs must be an integer >= 0"):
        memvir(warmup_epochs=-1)
