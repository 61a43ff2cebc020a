"""Adapter giving pytorch-metric-learning's weight-based losses virtual classes (MemVir).

The PML loss is used unmodified: for one forward, its weight parameter is
replaced by the widened proxies (in PML's own layout) and its class count by
the widened count, then both are restored. pytorch-metric-learning is
imported only when a PML loss is built by :func:`pml_loss`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from memvir_pl.losses.base import VirtualClassLoss


@dataclass(frozen=True)
class _Layout:
    """Where a PML loss keeps its proxies.

    weight: name of the parameter. class_first: True for (C*K, D), False for
    (D, C*K). centers_attr: attribute holding K (None: one centre per class).
    labels_attr: attribute holding ``arange(C)``, if the loss keeps one.
    """

    weight: str
    class_first: bool
    centers_attr: str | None = None
    labels_attr: str | None = None


_W_DC = _Layout("W", class_first=False)
_LAYOUTS: dict[str, _Layout] = {
    "NormalizedSoftmaxLoss": _W_DC,
    "LargeMarginSoftmaxLoss": _W_DC,
    "CosFaceLoss": _W_DC,
    "ArcFaceLoss": _W_DC,
    "SphereFaceLoss": _W_DC,
    "SubCenterArcFaceLoss": _Layout("W", class_first=False, centers_attr="sub_centers"),
    "SoftTripleLoss": _Layout("fc", class_first=False, centers_attr="centers_per_class"),
    "ProxyNCALoss": _Layout("proxies", class_first=True, labels_attr="proxy_labels"),
    "ProxyAnchorLoss": _Layout("proxies", class_first=True),
}
SUPPORTED_PML_LOSSES: tuple[str, ...] = tuple(_LAYOUTS)


def _layout_of(loss: nn.Module) -> _Layout:
    """The layout of the nearest supported PML class in ``type(loss)``'s MRO."""
    for cls in type(loss).__mro__:
        if cls.__module__.startswith("pytorch_metric_learning.") and cls.__name__ in _LAYOUTS:
            return _LAYOUTS[cls.__name__]
    raise ValueError(
        f"PMLAdapter: unsupported loss type {type(loss).__name__}; expected a "
        f"pytorch-metric-learning weight-based loss, one of: {', '.join(SUPPORTED_PML_LOSSES)}."
    )


class PMLAdapter(VirtualClassLoss):
    """Wraps an unmodified pytorch-metric-learning weight-based loss as a :class:`VirtualClassLoss`.

    Usable wherever a :class:`~memvir_pl.losses.ProxyLoss` is, MemVir
    included. Without virtual classes it returns exactly the PML loss's
    result. The PML loss's parameter stays registered (as ``pml_loss.<name>``)
    and receives the gradients. The PML forward runs in float32 (float64 if
    given) with autocast off.

    Args:
        pml_loss: an instance of one of :data:`SUPPORTED_PML_LOSSES` (or a subclass).
    """

    def __init__(self, pml_loss: nn.Module) -> None:
        super().__init__()
        self.layout = _layout_of(pml_loss)
        self.pml_loss = pml_loss
        weight = self._weight()
        self.centers = (
            int(getattr(pml_loss, self.layout.centers_attr)) if self.layout.centers_attr else 1
        )
        rows = weight.shape[0] if self.layout.class_first else weight.shape[1]
        self.embedding_dim = int(weight.shape[1] if self.layout.class_first else weight.shape[0])
        self.num_classes = rows // self.centers

    def _weight(self) -> Tensor:
        return getattr(self.pml_loss, self.layout.weight)

    def class_proxies(self) -> Tensor:
        """The PML parameter as a differentiable class-first (C*K, D) view."""
        weight = self._weight()
        return weight if self.layout.class_first else weight.t()

    def loss_from(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        """The PML loss run with weight ``proxies`` (num_classes*K, D; class-first).

        Raises:
            ValueError: for row weights other than all ones, or a logit mask (PML losses take neither).
        """
        if logit_mask is not None:
            raise ValueError(
                f"PMLAdapter({type(self.pml_loss).__name__}): pytorch-metric-learning losses take no logit "
                "mask; use MemVirCallback(parts='full') or one of memvir_pl's own losses."
            )
        if row_weights is not None and not bool((row_weights == 1).all()):
            raise ValueError(
                f"PMLAdapter({type(self.pml_loss).__name__}): row weights other than 1 are not "
                "supported for pytorch-metric-learning losses; use MemVirCallback(memory_weight=1.0) "
                "or one of memvir_pl's own losses."
            )
        dtype = torch.promote_types(
            torch.promote_types(embeddings.dtype, proxies.dtype), torch.float32
        )
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            proxies = proxies.to(dtype)
            weight = proxies if self.layout.class_first else proxies.t()
            with self._class_count(num_classes, proxies.device):
                return functional_call(
                    self.pml_loss, {self.layout.weight: weight}, (embeddings.to(dtype), labels)
                )

    @contextmanager
    def _class_count(self, num_classes: int, device: torch.device) -> Iterator[None]:
        """Set the PML loss's class count (and what it derives from it), restoring it on exit."""
        values: dict[str, Any] = {"num_classes": num_classes}
        if self.layout.labels_attr:
            values[self.layout.labels_attr] = torch.arange(num_classes, device=device)
        saved = {name: getattr(self.pml_loss, name) for name in values}
        try:
            for name, value in values.items():
                setattr(self.pml_loss, name, value)
            yield
        finally:
            for name, value in saved.items():
                setattr(self.pml_loss, name, value)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"centers={self.centers}"
        )


def pml_loss(name: str, num_classes: int, embedding_dim: int, **kwargs: Any) -> PMLAdapter:
    """``pytorch_metric_learning.losses.<name>(num_classes, embedding_size, **kw)`` in an adapter.

    For Hydra configs: ``_target_: memvir_pl.losses.pml.pml_loss``, ``_partial_: true``,
    ``name: SoftTripleLoss`` and the loss's own options; the training script
    fills ``num_classes`` and ``embedding_dim``.
    """
    if name not in _LAYOUTS:
        raise ValueError(
            f"pml_loss: unsupported pytorch-metric-learning loss {name!r}; "
            f"use one of: {', '.join(SUPPORTED_PML_LOSSES)}."
        )
    loss_class = getattr(importlib.import_module("pytorch_metric_learning.losses"), name)
    return PMLAdapter(loss_class(num_classes=num_classes, embedding_size=embedding_dim, **kwargs))
