"""Our proxy losses against independent references (pytorch-metric-learning or slow loops)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_metric_learning import losses as pml

from memvir_pl.losses import (
    LOSSES,
    ArcFace,
    CosFace,
    NormSoftmax,
    PMLAdapter,
    ProxyAnchor,
    ProxyLoss,
    ProxyNCA,
    Softmax,
)
from tests.memvir_helpers import load_pml_proxies

C, D, B, BLOCKS = 5, 8, 12, 3
TOL = {"atol": 1e-5, "rtol": 1e-5}
CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"

# reference(embeddings, labels, proxies (C, D), num_classes) -> (loss, d/d embeddings, d/d proxies)
Reference = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, ...]]


def _pml_reference(
    make: Callable[[int], torch.nn.Module], weight: str, class_first: bool
) -> Reference:
    """A reference that copies the proxies into a fresh PML loss's own parameter."""

    def reference(embeddings, labels, proxies, num_classes):
        loss_fn = make(num_classes)
        param = load_pml_proxies(loss_fn, weight, proxies, class_first)
        x = embeddings.clone().requires_grad_()
        loss = loss_fn(x, labels)
        grad_x, grad_w = torch.autograd.grad(loss, (x, param))
        return loss, grad_x, grad_w if class_first else grad_w.t()

    return reference


def _loop_reference(
    logits_of_row: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Reference:
    """Mean over rows of −log softmax(logits)[y], one row and one class at a time."""

    def reference(embeddings, labels, proxies, num_classes):
        x = embeddings.clone().requires_grad_()
        w = proxies.clone().requires_grad_()
        total = x.new_zeros(())
        for i in range(x.shape[0]):
            logits = torch.stack([logits_of_row(x[i], w[c]) for c in range(num_classes)])
            total = total - (logits[labels[i]] - torch.logsumexp(logits, 0))
        loss = total / x.shape[0]
        return (loss, *torch.autograd.grad(loss, (x, w)))

    return reference


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


CASES: dict[str, tuple[Callable[[], ProxyLoss], Reference]] = {
    "softmax": (lambda: Softmax(C, D), _loop_reference(lambda x, w: (x * w).sum())),
    "norm_softmax": (
        lambda: NormSoftmax(C, D, scale=23.0),
        _pml_reference(lambda n: pml.NormalizedSoftmaxLoss(n, D, temperature=1 / 23.0), "W", False),
    ),
    "cosface": (
        lambda: CosFace(C, D, scale=30.0, margin=0.35),
        _pml_reference(lambda n: pml.CosFaceLoss(n, D, scale=30.0, margin=0.35), "W", False),
    ),
    "arcface": (
        lambda: ArcFace(C, D, scale=30.0, margin=0.5),
        _pml_reference(
            lambda n: pml.ArcFaceLoss(n, D, scale=30.0, margin=math.degrees(0.5)), "W", False
        ),
    ),
    # A margin near pi/2 sends many targets into ArcFace's theta > pi - margin branch.
    "arcface_wide_margin": (
        lambda: ArcFace(C, D, scale=10.0, margin=1.4),
        _pml_reference(
            lambda n: pml.ArcFaceLoss(n, D, scale=10.0, margin=math.degrees(1.4)), "W", False
        ),
    ),
    "proxy_nca": (
        lambda: ProxyNCA(C, D, scale=12.0),
        _loop_reference(lambda x, w: -12.0 * ((_unit(x) - _unit(w)) ** 2).sum()),
    ),
    "proxy_nca_pml": (
        lambda: ProxyNCA(C, D, scale=12.0),
        _pml_reference(lambda n: pml.ProxyNCALoss(n, D, softmax_scale=12.0), "proxies", True),
    ),
    "proxy_anchor": (
        lambda: ProxyAnchor(C, D, alpha=32.0, delta=0.1),
        _pml_reference(
            lambda n: pml.ProxyAnchorLoss(n, D, margin=0.1, alpha=32.0), "proxies", True
        ),
    ),
}


def _batch(seed: int, num_classes: int = C, rows: int = B, missing: int | None = None):
    """Random embeddings (rows, D), labels in [0, num_classes), optionally without ``missing``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, D, generator=g)
    labels = torch.randint(0, num_classes, (rows,), generator=g)
    if missing is not None:
        labels[labels == missing] = (missing + 1) % num_classes
    return x, labels


def _memory(loss: ProxyLoss):
    """An expander adding BLOCKS - 1 fixed past blocks (embeddings, labels + j·C, proxies)."""
    blocks = [_batch(100 + j, missing=0) for j in range(1, BLOCKS)]
    past_proxies = [
        torch.randn(C, D, generator=torch.Generator().manual_seed(200 + j))
        for j in range(1, BLOCKS)
    ]

    def expander(_loss, x, y, w):
        xs = torch.cat([x, *(bx for bx, _ in blocks)])
        ys = torch.cat([y, *(by + j * C for j, (_, by) in enumerate(blocks, start=1))])
        return xs, ys, torch.cat([w, *past_proxies]), BLOCKS * C

    return expander


def _ours(
    loss: ProxyLoss, x: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, num_classes: int
):
    x = x.clone().requires_grad_()
    w = proxies.clone().requires_grad_()
    value = loss.loss_from(x, labels, w, num_classes)
    return (value, *torch.autograd.grad(value, (x, w)))


def _assert_same(ours, reference):
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("name", CASES)
def test_loss_matches_reference(name):
    make, reference = CASES[name]
    loss = make()
    # class 3 absent from the batch: proxies without positives (Proxy-Anchor) are covered
    x, labels = _batch(0, missing=3)
    proxies = loss.proxies.detach()
    value, grad_x, grad_w = _ours(loss, x, labels, proxies, C)
    _assert_same((value, grad_x, grad_w), reference(x, labels, proxies, C))
    assert grad_w[3].abs().sum() > 0  # the absent class still gets a (negative) gradient
    assert value.item() > 0


@pytest.mark.parametrize("name", CASES)
def test_loss_with_virtual_classes(name):
    make, reference = CASES[name]
    loss = make()
    x, labels = _batch(1)
    expander = _memory(loss)
    wide_x, wide_labels, wide_proxies, wide_classes = expander(
        loss, x, labels, loss.proxies.detach()
    )
    assert wide_classes == BLOCKS * C and wide_proxies.shape == (BLOCKS * C, D)
    expected = reference(wide_x, wide_labels, wide_proxies, wide_classes)
    _assert_same(_ours(loss, wide_x, wide_labels, wide_proxies, wide_classes), expected)

    # forward with the expander: same loss; gradients reach the current rows and proxies only
    loss.batch_expander = expander
    x_leaf = x.clone().requires_grad_()
    value = loss(x_leaf, labels)
    grad_x, grad_w = torch.autograd.grad(value, (x_leaf, loss.proxies))
    torch.testing.assert_close(value, expected[0], **TOL)
    torch.testing.assert_close(grad_x, expected[1][:B], **TOL)
    torch.testing.assert_close(grad_w, expected[2][:C], **TOL)
    # the virtual classes change the loss
    loss.batch_expander = None
    assert abs(loss(x, labels).item() - value.item()) > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_idempotent_on_normalised_input_and_float32(name):
    loss = CASES[name][0]()
    x, labels = _batch(2)
    if name != "softmax":
        torch.testing.assert_close(
            loss(x, labels), loss(torch.nn.functional.normalize(x), labels), **TOL
        )
    assert loss(x.double(), labels).dtype == torch.float32


def _all_losses() -> dict[str, Callable[[], torch.nn.Module]]:
    makers = {name: make for name, (make, _) in CASES.items()}
    makers["pml_adapter"] = lambda: PMLAdapter(pml.CosFaceLoss(num_classes=C, embedding_size=D))
    return makers


@pytest.mark.parametrize("name", _all_losses())
@pytest.mark.parametrize(
    ("x", "labels", "pattern"),
    [
        (torch.randn(4, D), torch.tensor([0, 1, -1, 2]), r"labels must lie in \[0, 5\).*got -1"),
        (torch.randn(4, D), torch.tensor([0, 1, C, 2]), r"labels must lie in \[0, 5\).*got 5"),
        (torch.randn(4, D + 1), torch.tensor([0, 1, 2, 3]), r"shape \(batch, 8\), got \(4, 9\)"),
        (
            torch.randn(4, D),
            torch.tensor([0.0, 1.0, 2.0, 3.0]),
            r"labels must be integers, got dtype torch.float32",
        ),
        (torch.randn(4, D), torch.tensor([0, 1, 2]), r"labels must have shape \(4,\).*got \(3,\)"),
        (torch.full((4, D), float("nan")), torch.tensor([0, 1, 2, 3]), r"NaN or Inf \(32 values\)"),
    ],
    ids=["label_minus_1", "label_C", "embedding_size", "float_labels", "label_count", "nan"],
)
def test_bad_input_names_loss_expectation_and_value(name, x, labels, pattern):
    loss = _all_losses()[name]()
    with pytest.raises(ValueError, match=pattern) as info:
        loss(x, labels)
    assert str(info.value).startswith(type(loss).__name__ + ":")


def test_bad_expander_rows_and_bad_hyperparameters():
    loss = NormSoftmax(C, D)
    loss.batch_expander = lambda _l, x, y, w: (x, y, torch.cat([w, w[:2]]), 2 * C)
    with pytest.raises(ValueError, match=r"NormSoftmax: proxies must have .* = 10 rows, got 7"):
        loss(*_batch(3))
    with pytest.raises(ValueError, match="NormSoftmax: scale must be > 0, got 0"):
        NormSoftmax(C, D, scale=0)
    with pytest.raises(ValueError, match=r"ArcFace: margin must be in \[0, pi\) radians, got 28.6"):
        ArcFace(C, D, margin=28.6)
    with pytest.raises(
        ValueError, match="ProxyAnchor: num_classes must be a positive integer, got 0"
    ):
        ProxyAnchor(0, D)


@pytest.mark.parametrize("name", _all_losses())
def test_autocast_bfloat16_computes_in_float32(name):
    torch.manual_seed(0)
    loss = _all_losses()[name]()
    head = torch.nn.Linear(D, D)
    inputs, labels = _batch(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = head(inputs)
        assert x.dtype == torch.bfloat16
        value = loss(x, labels)
    assert value.dtype == torch.float32
    # exactly the float32 loss of the bf16-rounded embeddings, and close to the all-float32 loss
    torch.testing.assert_close(value, loss(x.float(), labels), **TOL)
    torch.testing.assert_close(value, loss(head(inputs), labels), atol=0.05, rtol=0.03)


def _reference_proxies(shape: tuple[int, int], init, transpose: bool) -> torch.Tensor:
    """The official codes' init: an empty tensor of ``shape`` filled by ``init`` (transposed if asked)."""
    weight = torch.empty(shape)
    init(weight)
    return weight.t() if transpose else weight


def _uniform(w: torch.Tensor) -> None:
    torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))


def _normal_fan_out(w: torch.Tensor) -> None:
    torch.nn.init.kaiming_normal_(w, mode="fan_out")


# CARS196 (C=98, D=512). Official MemVir: NormSoftmax / ProxyNCA store (D, C) and init that tensor
# (its softmax variants follow NormSoftmax); the Proxy-Anchor repository stores (C, D).
# (official layout, init, transposed to (C, D), std by the kaiming formula on that layout)
DIMENSION_FIRST_UNIFORM = ((512, 98), _uniform, True, 1 / math.sqrt(3 * 98))  # U(±1/√C): 0.0583
OFFICIAL_INITS = {
    NormSoftmax: DIMENSION_FIRST_UNIFORM,
    Softmax: DIMENSION_FIRST_UNIFORM,
    CosFace: DIMENSION_FIRST_UNIFORM,
    ArcFace: DIMENSION_FIRST_UNIFORM,
    ProxyNCA: ((512, 98), _normal_fan_out, True, math.sqrt(2 / 512)),  # N(0, 2/D): 0.0625
    ProxyAnchor: ((98, 512), _normal_fan_out, False, math.sqrt(2 / 98)),  # N(0, 2/C): 0.143
}


@pytest.mark.parametrize("cls", list(OFFICIAL_INITS), ids=lambda cls: cls.__name__)
def test_initialisations_follow_the_official_code(cls):
    shape, init, transpose, std = OFFICIAL_INITS[cls]
    torch.manual_seed(0)
    reference = _reference_proxies(shape, init, transpose)
    torch.manual_seed(0)
    proxies = cls(98, 512).proxies.detach()
    assert proxies.shape == (98, 512)
    torch.testing.assert_close(proxies, reference, rtol=0, atol=0)
    assert proxies.std().item() == pytest.approx(std, rel=0.02)


EXPECTED_CONFIGS = {
    "softmax": (Softmax, {}),
    "norm_softmax": (NormSoftmax, {"scale": 23.0}),
    "cosface": (CosFace, {"scale": 64.0, "margin": 0.35}),
    "arcface": (ArcFace, {"scale": 64.0, "margin": 0.5}),
    "proxy_nca": (ProxyNCA, {"scale": 12.0}),
    "proxy_anchor": (ProxyAnchor, {"alpha": 32.0, "delta": 0.1}),
}


@pytest.mark.parametrize("name", [*EXPECTED_CONFIGS, "pml_soft_triple"])
def test_hydra_configs_build_the_losses(name):
    factory = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    loss = factory(num_classes=C, embedding_dim=D)
    assert (loss.num_classes, loss.embedding_dim) == (C, D)
    if name == "pml_soft_triple":
        assert isinstance(loss, PMLAdapter) and isinstance(loss.pml_loss, pml.SoftTripleLoss)
        assert loss.centers == 10 and loss.class_proxies().shape == (C * 10, D)
        assert loss.pml_loss.la == 20.0 and loss.pml_loss.margin == 0.01
        return
    cls, hyper = EXPECTED_CONFIGS[name]
    assert type(loss) is cls and LOSSES[name] is cls
    for key, value in hyper.items():
        assert getattr(loss, key) == value
