"""Proxy losses that accept MemVir's virtual classes, and an adapter for pytorch-metric-learning.

Every loss is ``loss(embeddings (B, D), labels (B,))`` and computes
``loss_from(embeddings, labels, proxies, num_classes)``, a pure function of
its arguments, so MemVir can widen the batch and the proxies.
"""

from __future__ import annotations

from memvir_pl.losses.base import ProxyLoss, VirtualClassLoss
from memvir_pl.losses.pml import SUPPORTED_PML_LOSSES, PMLAdapter, pml_loss
from memvir_pl.losses.proxy_anchor import ProxyAnchor
from memvir_pl.losses.proxy_nca import ProxyNCA
from memvir_pl.losses.softmax import ArcFace, CosFace, CosineSoftmaxLoss, NormSoftmax, Softmax

LOSSES: dict[str, type[ProxyLoss]] = {
    "softmax": Softmax,
    "norm_softmax": NormSoftmax,
    "cosface": CosFace,
    "arcface": ArcFace,
    "proxy_nca": ProxyNCA,
    "proxy_anchor": ProxyAnchor,
}

__all__ = [
    "LOSSES",
    "SUPPORTED_PML_LOSSES",
    "ArcFace",
    "CosFace",
    "CosineSoftmaxLoss",
    "NormSoftmax",
    "PMLAdapter",
    "ProxyAnchor",
    "ProxyLoss",
    "ProxyNCA",
    "Softmax",
    "VirtualClassLoss",
    "pml_loss",
]
