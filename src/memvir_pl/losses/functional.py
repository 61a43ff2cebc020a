"""Small tensor helpers shared by the proxy losses."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_matrix(embeddings: Tensor, proxies: Tensor) -> Tensor:
    """Cosine similarity (B, P) of embeddings (B, D) and proxies (P, D), L2-normalised here."""
    return F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).t()


def init_dimension_first_(proxies: Tensor, init: Callable[[Tensor], object]) -> Tensor:
    """Fill class-first proxies (P, D) as ``init`` fills a dimension-first (D, P) tensor; returns proxies.

    The official MemVir code stores its proxies as (D, C) and initialises that tensor, so
    ``nn.init`` takes fan_in = C and fan_out = D. Filling a (D, P) buffer and copying its
    transpose gives the same values, from the same random stream, as that code (its proxies
    transposed).
    """
    with torch.no_grad():
        buffer = proxies.new_empty(proxies.shape[1], proxies.shape[0])
        init(buffer)
        return proxies.copy_(buffer.t())


def weighted_mean(values: Tensor, row_weights: Tensor | None) -> Tensor:
    """Mean of per-row values (B,), or Σ w·v / Σ w with row weights (B,) >= 0."""
    if row_weights is None:
        return values.mean()
    return (row_weights * values).sum() / row_weights.sum()


def mask_logits(logits: Tensor, logit_mask: Tensor | None) -> Tensor:
    """Logits (B, P) with the entries where ``logit_mask`` (B, P) is True set to -inf (out of the softmax)."""
    return logits if logit_mask is None else logits.masked_fill(logit_mask, float("-inf"))


def check_proxy_rows(loss_name: str, proxies: Tensor, num_classes: int, centers: int) -> None:
    """Raise ``ValueError`` unless proxies has num_classes * centers rows (a bad batch expander)."""
    if proxies.shape[0] != num_classes * centers:
        raise ValueError(
            f"{loss_name}: proxies must have num_classes * centers = {num_classes} * {centers} = "
            f"{num_classes * centers} rows, got {proxies.shape[0]}; a batch expander must stack "
            f"one full proxy block per class block."
        )


def check_positive(loss_name: str, name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` naming the loss and the setting when it is not > 0."""
    if not value > 0:
        raise ValueError(f"{loss_name}: {name} must be > 0, got {value!r}.")
    return float(value)
