"""Proxy-NCA (Movshovitz-Attias et al., ICCV 2017) as in the official MemVir code."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn
from torch.nn import functional as F

from memvir_pl.losses.base import ProxyLoss
from memvir_pl.losses.functional import (
    check_positive,
    check_proxy_rows,
    cosine_matrix,
    init_dimension_first_,
    mask_logits,
    weighted_mean,
)


class ProxyNCA(ProxyLoss):
    """Cross-entropy over logits ``−scale · ‖x̂ − ŵ_c‖²`` (x̂, ŵ L2-normalised).

    The positive proxy is part of the softmax denominator (as in the official
    MemVir code, unlike the original paper's NCA). Because
    ``‖x̂ − ŵ‖² = 2 − 2 cos``, this equals a normalised softmax with scale
    ``2 · scale``.

    Args:
        num_classes: C.
        embedding_dim: D.
        scale: multiplier of the squared distances, > 0 (default 12.0).
    """

    supports_logit_mask = True

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 12.0) -> None:
        super().__init__(num_classes, embedding_dim)
        self.scale = check_positive("ProxyNCA", "scale", scale)

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out) on the (D, C) layout, as the official MemVir Proxy-NCA.

        That code stores proxies as (D, C), so fan_out is D: N(0, 2/D), std sqrt(2/D)
        (D=512: 0.0625); the values are the official tensor's transpose for the same random state.
        """
        init_dimension_first_(self.proxies, partial(nn.init.kaiming_normal_, mode="fan_out"))

    def compute(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        check_proxy_rows(type(self).__name__, proxies, num_classes, self.centers)
        squared_distance = (2 - 2 * cosine_matrix(embeddings, proxies)).clamp_min(0)
        logits = mask_logits(-self.scale * squared_distance, logit_mask)
        losses = F.cross_entropy(logits, labels, reduction="none")
        return weighted_mean(losses, row_weights)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"
