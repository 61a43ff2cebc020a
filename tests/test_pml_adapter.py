"""PMLAdapter: an unmodified pytorch-metric-learning loss with MemVir's virtual classes."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml

from memvir_pl.losses import SUPPORTED_PML_LOSSES, PMLAdapter, pml_loss
from tests.memvir_helpers import load_pml_proxies

C, D, B, BLOCKS = 4, 8, 10, 3
TOL = {"atol": 1e-5, "rtol": 1e-5}

# name -> (options, centres per class K, weight attribute, class-first)
SPECS = {
    "NormalizedSoftmaxLoss": ({"temperature": 0.1}, 1, "W", False),
    "LargeMarginSoftmaxLoss": ({"margin": 3, "scale": 2.0}, 1, "W", False),
    "CosFaceLoss": ({"margin": 0.35, "scale": 16.0}, 1, "W", False),
    "ArcFaceLoss": ({"margin": 28.6, "scale": 16.0}, 1, "W", False),
    "SphereFaceLoss": ({"margin": 2, "scale": 1.0}, 1, "W", False),
    "SubCenterArcFaceLoss": ({"margin": 28.6, "scale": 16.0, "sub_centers": 3}, 3, "W", False),
    "SoftTripleLoss": (
        {"centers_per_class": 3, "la": 20.0, "gamma": 0.1, "margin": 0.01},
        3,
        "fc",
        False,
    ),
    "ProxyNCALoss": ({"softmax_scale": 5.0}, 1, "proxies", True),
    "ProxyAnchorLoss": ({"margin": 0.1, "alpha": 32.0}, 1, "proxies", True),
}


def _make(name: str, num_classes: int = C) -> torch.nn.Module:
    torch.manual_seed(7)
    return getattr(pml, name)(num_classes=num_classes, embedding_size=D, **SPECS[name][0])


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


def _expander(k: int):
    """Adds BLOCKS - 1 fixed past blocks (embeddings, labels + j·C, proxies (C·K, D))."""
    g = torch.Generator().manual_seed(99)
    past = [
        (torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g))
        for _ in range(BLOCKS - 1)
    ]
    past_proxies = [torch.randn(C * k, D, generator=g) for _ in range(BLOCKS - 1)]

    def expand(loss, x, y, w):
        assert loss.num_classes == C
        xs = torch.cat([x, *(px for px, _ in past)])
        ys = torch.cat([y, *(py + j * C for j, (_, py) in enumerate(past, start=1))])
        return xs, ys, torch.cat([w, *past_proxies]), BLOCKS * C

    return expand


def test_supported_list_is_complete():
    assert set(SUPPORTED_PML_LOSSES) == set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_without_virtual_classes_equals_the_bare_pml_loss(name):
    _, k, weight_name, _ = SPECS[name]
    bare, wrapped = _make(name), _make(name)
    adapter = PMLAdapter(wrapped)
    assert (adapter.num_classes, adapter.embedding_dim, adapter.centers) == (C, D, k)
    assert [p for p in adapter.parameters()] == [getattr(wrapped, weight_name)]
    x, labels = _batch(0)
    results = []
    for loss_fn, param in (
        (bare, getattr(bare, weight_name)),
        (adapter, getattr(wrapped, weight_name)),
    ):
        x_leaf = x.clone().requires_grad_()
        value = loss_fn(x_leaf, labels)
        results.append((value, *torch.autograd.grad(value, (x_leaf, param))))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    assert results[0][0].item() != 0


@pytest.mark.parametrize("name", SPECS)
def test_virtual_classes_equal_pml_built_with_the_widened_weights(name):
    _, k, weight_name, class_first = SPECS[name]
    adapter = PMLAdapter(_make(name))
    param = getattr(adapter.pml_loss, weight_name)
    expand = _expander(k)
    adapter.batch_expander = expand
    x, labels = _batch(1)

    x_leaf = x.clone().requires_grad_()
    value = adapter(x_leaf, labels)
    grad_x, grad_param = torch.autograd.grad(value, (x_leaf, param))

    # the same PML class built directly for BLOCKS * C classes, holding the widened weights
    wide_x, wide_labels, wide_proxies, wide_classes = expand(
        adapter, x, labels, adapter.class_proxies().detach()
    )
    direct = _make(name, num_classes=wide_classes)
    direct_param = load_pml_proxies(direct, weight_name, wide_proxies, class_first)
    wide_leaf = wide_x.clone().requires_grad_()
    expected = direct(wide_leaf, wide_labels)
    expected_grad_x, expected_grad_param = torch.autograd.grad(expected, (wide_leaf, direct_param))

    torch.testing.assert_close(value, expected, **TOL)
    torch.testing.assert_close(grad_x, expected_grad_x[:B], **TOL)
    first_block = expected_grad_param[: C * k] if class_first else expected_grad_param[:, : C * k]
    torch.testing.assert_close(grad_param, first_block, **TOL)
    # virtual classes change the loss
    adapter.batch_expander = None
    assert abs(adapter(x, labels).item() - value.item()) > 1e-4


def _assert_restored(loss: torch.nn.Module, weight_name: str, before: dict) -> None:
    assert getattr(loss, weight_name) is before["param"]
    assert dict(loss.named_parameters()) == {weight_name: before["param"]}
    assert tuple(before["param"].shape) == before["shape"]
    assert loss.num_classes == before["num_classes"]
    assert getattr(loss, "proxy_labels", None) is before["proxy_labels"]


@pytest.mark.parametrize("name", SPECS)
def test_parameter_and_class_count_are_restored_also_after_an_error(name, monkeypatch):
    _, k, weight_name, _ = SPECS[name]
    adapter = PMLAdapter(_make(name))
    adapter.batch_expander = _expander(k)
    loss = adapter.pml_loss
    param = getattr(loss, weight_name)
    before = {
        "param": param,
        "shape": tuple(param.shape),
        "num_classes": loss.num_classes,
        "proxy_labels": getattr(loss, "proxy_labels", None),
    }
    x, labels = _batch(2)
    adapter(x, labels).backward()
    _assert_restored(loss, weight_name, before)
    assert before["param"].grad is not None and before["param"].grad.shape == before["shape"]

    seen = {}

    def failing_compute_loss(*_args, **_kwargs):
        seen["shape"] = tuple(getattr(loss, weight_name).shape)
        seen["num_classes"] = loss.num_classes
        raise RuntimeError("boom inside the PML forward")

    monkeypatch.setattr(adapter.pml_loss, "compute_loss", failing_compute_loss)
    with pytest.raises(RuntimeError, match="boom"):
        adapter(x, labels)
    wide_rows = BLOCKS * C * k
    assert seen["shape"] in {(wide_rows, D), (D, wide_rows)} and seen["num_classes"] == BLOCKS * C
    _assert_restored(loss, weight_name, before)


def test_proxy_nca_class_labels_are_widened_for_the_forward_only(monkeypatch):
    adapter = PMLAdapter(_make("ProxyNCALoss"))
    adapter.batch_expander = _expander(1)
    original = adapter.pml_loss.proxy_labels
    seen = []
    compute = adapter.pml_loss.compute_loss

    def spy(*args, **kwargs):
        seen.append(adapter.pml_loss.proxy_labels.clone())
        return compute(*args, **kwargs)

    monkeypatch.setattr(adapter.pml_loss, "compute_loss", spy)
    adapter(*_batch(3))
    assert torch.equal(seen[0], torch.arange(BLOCKS * C))
    assert adapter.pml_loss.proxy_labels is original


@pytest.mark.parametrize("name", ["SoftTripleLoss", "SubCenterArcFaceLoss", "ProxyAnchorLoss"])
def test_class_proxies_is_the_class_first_view_of_the_pml_parameter(name):
    _, k, weight_name, class_first = SPECS[name]
    adapter = PMLAdapter(_make(name))
    param = getattr(adapter.pml_loss, weight_name)
    proxies = adapter.class_proxies()
    assert proxies.shape == (C * k, D)
    for c in range(C):
        for j in range(k):
            column = param[c * k + j] if class_first else param[:, c * k + j]
            assert torch.equal(proxies[c * k + j], column)
    proxies.sum().backward()
    assert torch.equal(param.grad, torch.ones_like(param))


def test_loss_from_keeps_pml_float32_under_bfloat16_autocast_and_accepts_float64():
    adapter = PMLAdapter(_make("CosFaceLoss"))
    x, labels = _batch(4)
    reference = adapter(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = adapter(x.bfloat16(), labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, adapter(x.bfloat16().float(), labels), **TOL)
    torch.testing.assert_close(adapter(x.double(), labels), reference.double(), **TOL)
    assert adapter.pml_loss.W.dtype == torch.float32  # PML's own cast did not touch the parameter


def test_unsupported_losses_are_rejected_with_the_supported_list():
    with pytest.raises(
        ValueError, match=r"unsupported loss type TripletMarginLoss.*CosFaceLoss.*SoftTripleLoss"
    ):
        PMLAdapter(pml.TripletMarginLoss())
    with pytest.raises(ValueError, match=r"unsupported loss type Linear"):
        PMLAdapter(torch.nn.Linear(2, 2))
    with pytest.raises(
        ValueError,
        match=r"unsupported pytorch-metric-learning loss 'ContrastiveLoss'.*ProxyAnchorLoss",
    ):
        pml_loss("ContrastiveLoss", num_classes=C, embedding_dim=D)


def test_subclasses_use_the_nearest_supported_layout():
    class MyArcFace(pml.ArcFaceLoss):
        pass

    adapter = PMLAdapter(MyArcFace(num_classes=C, embedding_size=D))
    assert adapter.class_proxies().shape == (C, D)
    sub = PMLAdapter(pml.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, sub_centers=2))
    assert (sub.num_classes, sub.centers) == (C, 2)


def test_pml_loss_factory_builds_and_wraps():
    adapter = pml_loss(
        "ArcFaceLoss", num_classes=C, embedding_dim=D, margin=math.degrees(0.5), scale=30
    )
    assert isinstance(adapter.pml_loss, pml.ArcFaceLoss)
    assert adapter.pml_loss.scale == 30 and math.isclose(adapter.pml_loss.margin, 0.5)
    assert (adapter.num_classes, adapter.embedding_dim) == (C, D)
