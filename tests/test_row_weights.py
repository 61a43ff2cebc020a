"""Row weights (MemVirCallback(memory_weight=...)) and logit masks (parts="no_own_virtual") against
independent computations."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml

from memvir_pl import MemVirCallback
from memvir_pl.losses import (
    ArcFace,
    CosFace,
    NormSoftmax,
    PMLAdapter,
    ProxyAnchor,
    ProxyNCA,
    Softmax,
)
from tests.memvir_helpers import proxy_anchor_loop

C, D, B = 4, 6, 10
CROSS_ENTROPY_LOSSES = [Softmax, NormSoftmax, CosFace, ArcFace, ProxyNCA]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g)
    labels = torch.arange(B) % C
    weights = torch.rand(B, generator=g) + 0.1
    return x, labels, weights


@pytest.mark.parametrize("make", CROSS_ENTROPY_LOSSES)
def test_cross_entropy_losses_take_the_weighted_mean_of_the_rows_losses(make):
    torch.manual_seed(0)
    loss = make(num_classes=C, embedding_dim=D)
    x, labels, w = _batch()
    proxies = loss.proxies.detach()
    # independent: each row's loss alone (a batch of one, the unweighted path), combined by hand
    per_row = torch.stack([loss.loss_from(x[i : i + 1], labels[i : i + 1], proxies, C) for i in range(B)])
    expected = (w * per_row).sum() / w.sum()
    torch.testing.assert_close(loss.loss_from(x, labels, proxies, C, row_weights=w), expected)
    # all ones = the paper's equal weighting
    torch.testing.assert_close(
        loss.loss_from(x, labels, proxies, C, row_weights=torch.ones(B)), loss.loss_from(x, labels, proxies, C)
    )


def test_proxy_anchor_weights_multiply_each_rows_exp_terms():
    torch.manual_seed(0)
    loss = ProxyAnchor(num_classes=C, embedding_dim=D, alpha=8.0, delta=0.1)
    x, labels, w = _batch(1)
    proxies = loss.proxies.detach()
    value = loss.loss_from(x, labels, proxies, C, row_weights=w)
    assert value.item() == pytest.approx(proxy_anchor_loop(x, labels, proxies, w, 8.0, 0.1), rel=1e-5)
    ones = loss.loss_from(x, labels, proxies, C, row_weights=torch.ones(B))
    torch.testing.assert_close(ones, loss.loss_from(x, labels, proxies, C))


def _mask(seed: int = 4) -> torch.Tensor:
    """A random (B, 2C) logit mask that never masks a row's target (labels from :func:`_batch`)."""
    mask = torch.rand(B, 2 * C, generator=torch.Generator().manual_seed(seed)) < 0.4
    mask[torch.arange(B), torch.arange(B) % C] = False
    return mask


@pytest.mark.parametrize("make", CROSS_ENTROPY_LOSSES)
def test_cross_entropy_losses_drop_masked_proxies_from_each_rows_softmax(make):
    torch.manual_seed(0)
    loss = make(num_classes=C, embedding_dim=D)
    x, labels, w = _batch()
    proxies = torch.cat([loss.proxies.detach(), torch.randn(C, D)])  # two blocks, 2C classes
    mask = _mask()
    # independent: each row alone, with the masked proxies removed and its target re-indexed
    per_row = []
    for i in range(B):
        keep = ~mask[i]
        target = int(keep[: int(labels[i])].sum())
        per_row.append(loss.loss_from(x[i : i + 1], torch.tensor([target]), proxies[keep], int(keep.sum())))
    per_row = torch.stack(per_row)
    torch.testing.assert_close(loss.loss_from(x, labels, proxies, 2 * C, logit_mask=mask), per_row.mean())
    torch.testing.assert_close(
        loss.loss_from(x, labels, proxies, 2 * C, row_weights=w, logit_mask=mask), (w * per_row).sum() / w.sum()
    )


def test_proxy_anchor_mask_leaves_rows_out_of_the_masked_proxies_negatives():
    torch.manual_seed(0)
    loss = ProxyAnchor(num_classes=C, embedding_dim=D, alpha=8.0, delta=0.1)
    x, labels, w = _batch(1)
    proxies = torch.cat([loss.proxies.detach(), torch.randn(C, D)])
    mask = _mask()
    value = loss.loss_from(x, labels, proxies, 2 * C, row_weights=w, logit_mask=mask)
    assert value.item() == pytest.approx(proxy_anchor_loop(x, labels, proxies, w, 8.0, 0.1, mask.tolist()), rel=1e-5)


def test_proxy_anchor_real_proxies_divides_the_negatives_by_the_real_classes_only():
    torch.manual_seed(0)
    loss = ProxyAnchor(num_classes=C, embedding_dim=D, alpha=8.0, delta=0.1, negative_mean="real_proxies")
    x, labels, w = _batch(1)
    real = loss.proxies.detach()
    proxies = torch.cat([real, torch.randn(C, D)])  # one virtual block: 2C proxy rows, C real classes
    mask = _mask()
    value = loss.loss_from(x, labels, proxies, 2 * C, row_weights=w, logit_mask=mask)
    expected = proxy_anchor_loop(x, labels, proxies, w, 8.0, 0.1, mask.tolist(), negative_count=C)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # the virtual block's negatives add to the loss rather than dilute the real ones
    assert value.item() != pytest.approx(proxy_anchor_loop(x, labels, proxies, w, 8.0, 0.1, mask.tolist()), rel=1e-3)
    # without virtual classes both means are the same loss
    every = ProxyAnchor(num_classes=C, embedding_dim=D, alpha=8.0, delta=0.1)
    torch.testing.assert_close(loss.loss_from(x, labels, real, C), every.loss_from(x, labels, real, C))


def test_proxy_anchor_names_the_negative_means_it_accepts():
    with pytest.raises(ValueError, match="negative_mean must be one of .*'all_proxies', 'real_proxies'.*got 'real'"):
        ProxyAnchor(C, D, negative_mean="real")


def test_pml_adapter_and_plain_proxy_losses_refuse_a_logit_mask():
    x, labels, _ = _batch()
    adapter = PMLAdapter(pml.ProxyNCALoss(num_classes=C, embedding_size=D))
    with pytest.raises(ValueError, match="take no logit mask"):
        adapter.loss_from(x, labels, adapter.class_proxies(), C, logit_mask=torch.zeros(B, C, dtype=torch.bool))

    class NoMask(Softmax):
        supports_logit_mask = False

    plain = NoMask(num_classes=C, embedding_dim=D)
    with pytest.raises(ValueError, match="NoMask takes no logit mask"):
        plain.loss_from(x, labels, plain.proxies, C, logit_mask=torch.zeros(B, C, dtype=torch.bool))


def _active(callback: MemVirCallback, loss) -> None:
    callback.loss = loss
    loss.batch_expander = callback.expand_batch
    callback._active = True


@pytest.mark.parametrize("memory_weight", [1.0, 0.25])
def test_callback_weighs_memory_rows(memory_weight):
    torch.manual_seed(0)
    loss = NormSoftmax(num_classes=C, embedding_dim=D)
    callback = MemVirCallback(num_steps=1, step_gap=0, memory_weight=memory_weight)
    _active(callback, loss)
    x0, y0, _ = _batch(2)
    x1, y1, _ = _batch(3)
    callback._in_step, callback._stored_this_step = True, False
    first = loss(x0, y0)  # nothing stored yet: plain loss
    torch.testing.assert_close(first, loss.loss_from(x0, y0, loss.proxies, C))
    w0 = loss.proxies.detach().clone()
    callback._in_step, callback._stored_this_step = True, False
    value = loss(x1, y1)
    # independent: the two row blocks' plain losses, combined with weights 1 and memory_weight
    memory_rows = torch.nn.functional.normalize(x0, dim=1)
    wide = torch.cat([loss.proxies.detach(), w0])
    current = loss.loss_from(x1, y1, wide, 2 * C)
    past = loss.loss_from(memory_rows, y0 + C, wide, 2 * C)
    expected = (current * B + memory_weight * past * B) / (B + memory_weight * B)
    torch.testing.assert_close(value, expected)


def test_memory_weight_must_be_positive():
    with pytest.raises(ValueError, match="memory_weight must be > 0"):
        MemVirCallback(num_steps=1, step_gap=0, memory_weight=0.0)


def test_pml_adapter_refuses_row_weights_other_than_one():
    adapter = PMLAdapter(pml.ProxyNCALoss(num_classes=C, embedding_size=D))
    x, labels, w = _batch()
    proxies = adapter.class_proxies().detach()
    with pytest.raises(ValueError, match="row weights other than 1"):
        adapter.loss_from(x, labels, proxies, C, row_weights=w)
    torch.testing.assert_close(
        adapter.loss_from(x, labels, proxies, C, row_weights=torch.ones(B)), adapter.loss_from(x, labels, proxies, C)
    )
