"""MemVirCallback(parts=...): each ablation of MemVir's inputs against the list-based reference."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

from memvir_pl import MemVirCallback, VirtualClassMemory
from memvir_pl.extensions.memvir import PARTS, own_class_copies
from memvir_pl.losses import NormSoftmax, PMLAdapter, ProxyAnchor
from tests.memvir_helpers import (
    CosineSoftmax,
    LinearEmbedder,
    assert_same_steps,
    fixed_data,
    proxy_anchor_loop,
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
    rows = {"full": 3 * B, "memory_rows": 3 * B, "virtual_proxies": B, "no_own_virtual": 3 * B,
            "virtual_proxies_masked": B}[parts]
    classes = {"full": 3 * C, "memory_rows": C, "virtual_proxies": 3 * C, "no_own_virtual": 3 * C,
               "virtual_proxies_masked": 3 * C}[parts]
    assert (len(last["labels"]), last["num_classes"]) == (rows, classes)
    assert int(last["labels"].max()) < classes


@pytest.mark.parametrize(("parts", "store_rows", "store_proxies"), [
    ("memory_rows", True, False),
    ("virtual_proxies", False, True),
    ("virtual_proxies_masked", False, True),
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


def step_with_two_virtual_blocks(loss, parts: str, x: torch.Tensor, y: torch.Tensor, old: list[torch.Tensor]):
    """``loss(x, y)`` (x (b, D), y (b,) in [0, C)) at a MemVir step (N=2, M=0) whose memory holds the
    proxy snapshots ``old`` (each (C, D); nearest step first): two virtual blocks."""
    callback = MemVirCallback(num_steps=2, step_gap=0, parts=parts)
    callback.loss, loss.batch_expander, callback._active = loss, callback.expand_batch, True
    for snapshot in reversed(old):  # oldest first; only the proxies matter to these parts
        callback.memory.push(torch.zeros(1, loss.embedding_dim), torch.zeros(1, dtype=torch.long), snapshot)
    callback._in_step, callback._stored_this_step = True, False
    value = loss(x, y)
    assert callback.virtual_blocks == 2 and callback.loss_classes == 3 * loss.num_classes
    return value


def kept_columns(label: int, num_classes: int, num_blocks: int) -> list[int]:
    """Columns a row of real class ``label`` (block 0) keeps: all of block 0, and every class but its
    own in the older blocks; written as a loop over the columns."""
    return [j * num_classes + c for j in range(num_blocks) for c in range(num_classes) if j == 0 or c != label]


def norm_softmax_loop(x: torch.Tensor, y: torch.Tensor, proxies: torch.Tensor, num_classes: int, scale: float):
    """NormSoftmax one row at a time in float64, each row's softmax over :func:`kept_columns` only;
    x (b, D), y (b,) in block 0, proxies (blocks*C, D). Differentiable in x and proxies."""
    x, proxies = F.normalize(x.double(), dim=1), F.normalize(proxies.double(), dim=1)
    rows = []
    for i in range(len(x)):
        kept = kept_columns(int(y[i]), num_classes, len(proxies) // num_classes)
        logits = torch.stack([scale * x[i] @ proxies[c] for c in kept])
        rows.append(torch.logsumexp(logits, 0) - scale * x[i] @ proxies[int(y[i])])
    return torch.stack(rows).mean()


MASKED_C, MASKED_B = 4, 10


def masked_case(seed: int = 0, labels: torch.Tensor | None = None):
    """Rows x (B, D) with labels (every class by default), and two old snapshots (C, D) each."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(MASKED_B, D, generator=g)
    y = torch.arange(MASKED_B) % MASKED_C if labels is None else labels
    old = [torch.randn(MASKED_C, D, generator=g) for _ in range(2)]
    return x, y, old


@pytest.mark.parametrize("make", [NormSoftmax, ProxyAnchor])
def test_virtual_proxies_masked_equals_a_loop_over_each_rows_unmasked_columns(make):
    torch.manual_seed(0)
    loss = make(num_classes=MASKED_C, embedding_dim=D)
    x, y, old = masked_case()
    value = step_with_two_virtual_blocks(loss, "virtual_proxies_masked", x, y, old)
    proxies = torch.cat([loss.proxies.detach(), *old])  # [W_t; W_t-1; W_t-2]
    if make is NormSoftmax:
        expected = norm_softmax_loop(x, y, proxies, MASKED_C, loss.scale).item()
    else:  # each row leaves the negatives of the proxies it does not keep
        mask = [[c not in kept_columns(int(label), MASKED_C, 3) for c in range(3 * MASKED_C)] for label in y]
        expected = proxy_anchor_loop(x, y, proxies, torch.ones(MASKED_B), loss.alpha, loss.delta, mask)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    unmasked = step_with_two_virtual_blocks(make(num_classes=MASKED_C, embedding_dim=D), "virtual_proxies", x, y, old)
    assert unmasked.item() != pytest.approx(expected, rel=1e-3)  # the mask changes something here


def test_virtual_proxies_masked_sends_gradient_to_the_current_rows_and_proxies_only():
    torch.manual_seed(0)
    loss = NormSoftmax(num_classes=MASKED_C, embedding_dim=D)
    x, y, old = masked_case()
    x.requires_grad_(True)
    old = [o.requires_grad_(True) for o in old]  # the memory keeps detached copies
    step_with_two_virtual_blocks(loss, "virtual_proxies_masked", x, y, old).backward()
    assert all(o.grad is None for o in old)
    # independent: the loop with the old proxies as constants
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = loss.proxies.detach().clone().requires_grad_(True)
    norm_softmax_loop(x_ref, y, torch.cat([w_ref, *(o.detach() for o in old)]), MASKED_C, loss.scale).backward()
    torch.testing.assert_close(x.grad, x_ref.grad.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss.proxies.grad, w_ref.grad.float(), rtol=1e-4, atol=1e-6)
    assert x.grad.abs().sum() > 0 and loss.proxies.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [NormSoftmax, ProxyAnchor])
def test_virtual_proxies_masked_ignores_each_rows_own_class_old_proxies(make):
    x, y, old = masked_case(1, torch.full((MASKED_B,), 1))  # every row is of class 1

    def value(parts, old):
        torch.manual_seed(0)  # the same current proxies each time
        return step_with_two_virtual_blocks(make(num_classes=MASKED_C, embedding_dim=D), parts, x, y, old)

    def moved(classes):
        """The old snapshots with the proxies of ``classes`` replaced by other values."""
        new = [o.clone() for o in old]
        for o in new:
            o[classes] = torch.randn(len(classes), D, generator=torch.Generator().manual_seed(7))
        return new

    base = value("virtual_proxies_masked", old)
    assert torch.equal(value("virtual_proxies_masked", moved([1])), base)  # the rows' own class: no effect
    assert not torch.allclose(value("virtual_proxies_masked", moved([2])), base)  # other classes: negatives
    assert not torch.allclose(value("virtual_proxies", moved([1])), value("virtual_proxies", old))


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


@pytest.mark.parametrize("parts", ["no_own_virtual", "virtual_proxies_masked"])
def test_masking_parts_need_a_loss_that_takes_a_logit_mask(parts):
    model = LinearEmbedder(PMLAdapter(pml.ProxyNCALoss(num_classes=C, embedding_size=D)), IN_DIM,
                           fixed_data(2, B, IN_DIM, C), B)
    callback = MemVirCallback(num_steps=1, step_gap=0, parts=parts)
    with pytest.raises(ValueError, match=f"parts='{parts}' needs a loss that takes a logit mask"):
        quiet_trainer(max_epochs=1, callbacks=[callback]).fit(model)
    assert model.loss.batch_expander is None


def test_conf_memvir_parts_reaches_the_callback(tmp_path):
    import hydra

    from tests.hydra_helpers import compose_config

    assert compose_config([], tmp_path).memvir.parts == "full"  # the paper's rule by default
    cfg = compose_config(["memvir.parts=virtual_proxies"], tmp_path)
    assert hydra.utils.instantiate(cfg.memvir).parts == "virtual_proxies"
