"""Softmax-family proxy losses: linear Softmax and the cosine ones (NormSoftmax, CosFace, ArcFace).

All are cross-entropy over one logit per class; the cosine losses share
:class:`CosineSoftmaxLoss` and differ only in how the target class's cosine
is changed before scaling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from memvir_pl.losses.base import ProxyLoss
from memvir_pl.losses.functional import (
    check_positive,
    check_proxy_rows,
    cosine_matrix,
    mask_logits,
    weighted_mean,
)

# acos is clamped this far inside [-1, 1] so its gradient stays finite.
_ACOS_EPS = 1e-7


class Softmax(ProxyLoss):
    """Cross-entropy over linear logits x·wᵀ (no bias, no normalisation).

    Args:
        num_classes: C, the number of training classes.
        embedding_dim: D, the embedding size.
    """

    supports_logit_mask = True

    def compute(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        check_proxy_rows(type(self).__name__, proxies, num_classes, self.centers)
        logits = mask_logits(embeddings @ proxies.t(), logit_mask)
        return weighted_mean(F.cross_entropy(logits, labels, reduction="none"), row_weights)


class CosineSoftmaxLoss(ProxyLoss):
    """Cross-entropy over ``scale · cos(x, w_c)``, target cosine changed by :meth:`target_logit`.

    Embeddings and proxies are L2-normalised inside (idempotent on normalised input).

    Args:
        num_classes: C.
        embedding_dim: D.
        scale: multiplier of the cosine logits (inverse temperature), > 0.
    """

    supports_logit_mask = True

    def __init__(self, num_classes: int, embedding_dim: int, scale: float) -> None:
        super().__init__(num_classes, embedding_dim)
        self.scale = check_positive(type(self).__name__, "scale", scale)

    def target_logit(self, cosine: Tensor) -> Tensor:
        """The target class's logit before scaling, from its cosine (B, 1); identity here."""
        return cosine

    def compute(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        check_proxy_rows(type(self).__name__, proxies, num_classes, self.centers)
        cosine = cosine_matrix(embeddings, proxies)
        index = labels.unsqueeze(1)
        logits = cosine.scatter(1, index, self.target_logit(cosine.gather(1, index)))
        losses = F.cross_entropy(mask_logits(self.scale * logits, logit_mask), labels, reduction="none")
        return weighted_mean(losses, row_weights)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


class NormSoftmax(CosineSoftmaxLoss):
    """Normalised softmax (Zhai & Wu, BMVC 2019): cross-entropy over ``scale · cos``.

    ``scale`` = 1 / temperature; the default 23.0 is a temperature of about 0.043.
    """

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 23.0) -> None:
        super().__init__(num_classes, embedding_dim, scale)


class CosFace(CosineSoftmaxLoss):
    """CosFace, large-margin cosine loss (Wang et al., CVPR 2018): target logit ``cos θ − m``.

    Defaults are the paper's face-recognition values (s=64, m=0.35), also
    pytorch-metric-learning's; metric-learning work often uses a smaller
    scale (about 23-30), set it in the config.
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 64.0, margin: float = 0.35
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        if not margin >= 0:
            raise ValueError(f"CosFace: margin must be >= 0, got {margin!r}.")
        self.margin = float(margin)

    def target_logit(self, cosine: Tensor) -> Tensor:
        return cosine - self.margin

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


class ArcFace(CosineSoftmaxLoss):
    """ArcFace, additive angular margin (Deng et al., CVPR 2019): target logit ``cos(θ + m)``.

    ``margin`` is in **radians** (the paper's 0.5 rad = 28.6°, which
    pytorch-metric-learning writes in degrees). Where θ > π − margin the
    target logit is ``cos θ − margin · sin(margin)`` instead, as in the
    official code, so it keeps decreasing in θ. Defaults: s=64, m=0.5 (paper).
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 64.0, margin: float = 0.5
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        if not 0 <= margin < math.pi:
            raise ValueError(f"ArcFace: margin must be in [0, pi) radians, got {margin!r}.")
        self.margin = float(margin)

    def target_logit(self, cosine: Tensor) -> Tensor:
        theta = torch.acos(cosine.clamp(-1 + _ACOS_EPS, 1 - _ACOS_EPS))
        return torch.where(
            theta <= math.pi - self.margin,
            torch.cos(theta + self.margin),
            cosine - self.margin * math.sin(self.margin),
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"
