"""MemVirCallback(parts=...): each ablation of MemVir's inputs against the list-based reference."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_metric_learning import losses as pml

from memvir_pl import MemVirCallback, VirtualClassMemory
from memvir_pl.callback import PARTS, own_class_copies
from memvir_pl.losses import PMLAdapter
from tests.memvir_helpers import (
    CosineSoftmax,
    LinearEmbedder,
    assert_same_steps,
    fixed_data,
    quiet_trainer,
    reference_run,
)

N, M, U = 2, 3, 1
B, D, C, IN_DIM = 8, 6, 5, 10
STEPS_PER_EPOCH, EPOCHS = 30, 2


def make_model() -> LinearEmbedder:
    torch.manual_seed(0)  # the same initial proxies in every run
    return LinearEmbedder(CosineSoftmax(C, D), IN_DIM, fixed_data(STEPS_PER_EPOCH, B, IN_DIM, C), B)


def fit(model: LinearEmbedder, parts: str, full_storage: bool = False) -> MemVirCallback:
    """Train ``model`` with MemVir(parts); ``full_storage`` keeps whole items whatever ``parts`` uses."""
    callback = MemVirCallback(num_steps=N, step_gap=M, warmup_epochs=U, parts=parts)
    if full_storage:
        callback.memory = VirtualClassMemory(N, M, store_rows=True, store_proxies=True)
    quiet_trainer(max_epochs=EPOCHS, callbacks=[callback]).fit(model)
    return callback


def run(parts: str) -> tuple[list[dict], list[dict]]:
    """(callback's steps, reference's steps) of one model trained both ways."""
    model = make_model()
    expected = reference_run(copy.deepcopy(model), N, M, U, EPOCHS, STEPS_PER_EPOCH, parts=parts)
    fit(model, parts)
    return model.loss.calls, expected


@pytest.mark.parametrize("parts", PARTS)
def test_parts_match_the_reference(parts):
    got, expected = run(parts)
    assert_same_steps(got, expected)
    last = got[-1]  # N blocks active
    rows = {"full": 3 * B, "memory_rows": 3 * B, "virtual_proxies": B, "no_own_virtual": 3 * B}[parts]
    classes = {"full": 3 * C, "memory_rows": C, "virtual_proxies": 3 * C, "no_own_virtual": 3 * C}[parts]
    assert (len(last["labels"]), last["num_classes"]) == (rows, classes)
    assert int(last["labels"].max()) < classes


@pytest.mark.parametrize(("parts", "store_rows", "store_proxies"), [
    ("memory_rows", True, False),
    ("virtual_proxies", False, True),
])
def test_parts_using_half_the_memory_store_only_that_half_and_train_bit_identically(parts, store_rows, store_proxies):
    lean_model, full_model = make_model(), make_model()
    lean = fit(lean_model, parts)
    full = fit(full_model, parts, full_storage=True)
    assert (lean.memory.store_rows, lean.memory.store_proxies) == (store_rows, store_proxies)
    assert len(lean_model.loss.calls) == len(full_model.loss.calls) == EPOCHS * STEPS_PER_EPOCH
    for step, (got, expected) in enumerate(zip(lean_model.loss.calls, full_model.loss.calls, strict=True)):
        for key in ("labels", "proxies", "loss"):
            assert torch.equal(got[key], expected[key]), (step, key)
    for name, value in lean_model.state_dict().items():
        assert torch.equal(value, full_model.state_dict()[name]), name
    held = VirtualClassMemory.bank_bytes(N, M, B, D, C, store_rows=store_rows, store_proxies=store_proxies)
    assert lean.memory.nbytes() == held < full.memory.nbytes() == VirtualClassMemory.bank_bytes(N, M, B, D, C)


def test_no_own_virtual_changes_the_loss_only_once_virtual_classes_exist():
    full, _ = run("full")
    masked, _ = run("no_own_virtual")
    losses_full = torch.stack([c["loss"] for c in full])
    losses_masked = torch.stack([c["loss"] for c in masked])
    first_virtual = STEPS_PER_EPOCH + M + 1  # the first step with a virtual block
    assert torch.equal(losses_full[:first_virtual], losses_masked[:first_virtual])
    assert not torch.allclose(losses_full[first_virtual:], losses_masked[first_virtual:])


def test_own_class_copies_by_hand():
    # C=2 classes, 2 blocks, K=2 centres: columns 0-3 block 0 (class 0: 0,1; class 1: 2,3), 4-7 block 1
    labels = torch.tensor([0, 1, 2, 3])  # class 0 block 0, class 1 block 0, class 0 block 1, class 1 block 1
    expected = torch.tensor([
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0],
    ], dtype=torch.bool)
    assert torch.equal(own_class_copies(labels, num_classes=2, num_blocks=2, centers=2), expected)


def test_unknown_parts_is_refused():
    with pytest.raises(ValueError, match=r"parts must be one of \('full', 'memory_rows'.*got 'proxies'"):
        MemVirCallback(num_steps=1, step_gap=0, parts="proxies")


def test_no_own_virtual_needs_a_loss_that_takes_a_logit_mask():
    model = LinearEmbedder(PMLAdapter(pml.ProxyNCALoss(num_classes=C, embedding_size=D)), IN_DIM,
                           fixed_data(2, B, IN_DIM, C), B)
    callback = MemVirCallback(num_steps=1, step_gap=0, parts="no_own_virtual")
    with pytest.raises(ValueError, match="parts='no_own_virtual' needs a loss that takes a logit mask"):
        quiet_trainer(max_epochs=1, callbacks=[callback]).fit(model)
    assert model.loss.batch_expander is None


def test_conf_memvir_parts_reaches_the_callback(tmp_path):
    import hydra

    from tests.hydra_helpers import compose_config

    assert compose_config([], tmp_path).memvir.parts == "full"  # the paper's rule by default
    cfg = compose_config(["memvir.parts=virtual_proxies"], tmp_path)
    assert hydra.utils.instantiate(cfg.memvir).parts == "virtual_proxies"
