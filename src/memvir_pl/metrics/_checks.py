"""Input validation shared by the kNN search and the retrieval metrics.

Every check raises a ``ValueError`` (or ``TypeError``) that names the argument,
what it was, what was expected and how to fix it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_embeddings(
    embeddings: Tensor, name: str = "embeddings", allow_empty: bool = False
) -> None:
    """Check a floating (N, D) tensor with finite values (N > 0 unless ``allow_empty``)."""
    if not isinstance(embeddings, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (N, D), got {type(embeddings).__name__}."
        )
    if embeddings.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N items, D dimensions), got shape {tuple(embeddings.shape)}; "
            "flatten or reshape it to (N, D)."
        )
    if not embeddings.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {embeddings.dtype}.")
    if embeddings.shape[1] == 0:
        raise ValueError(
            f"{name} has zero dimensions (shape {tuple(embeddings.shape)}); expected D >= 1."
        )
    if embeddings.shape[0] == 0 and not allow_empty:
        raise ValueError(
            f"{name} is empty (shape {tuple(embeddings.shape)}); expected at least one row."
        )
    if not bool(torch.isfinite(embeddings).all()):
        bad = int((~torch.isfinite(embeddings)).any(dim=1).sum())
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad} of {embeddings.shape[0]} rows; "
            "check the model's outputs (e.g. a diverged loss or an fp16 overflow)."
        )


def check_per_item(values: Tensor | None, num_items: int, name: str, kind: str) -> None:
    """Check a 1-D per-item tensor of length ``num_items``; ``kind``: ``"integer"``/``"bool"``."""
    if values is None:
        return
    if not isinstance(values, Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor, got {type(values).__name__}.")
    if values.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one value per item), got shape {tuple(values.shape)}."
        )
    if values.shape[0] != num_items:
        raise ValueError(
            f"{name} has {values.shape[0]} entries but embeddings have {num_items} rows; "
            f"pass exactly one {name} entry per embedding row."
        )
    if kind == "bool" and values.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor (True = query, False = gallery), got {values.dtype}."
        )
    if kind == "integer" and (
        values.is_floating_point() or values.is_complex() or values.dtype == torch.bool
    ):
        raise TypeError(f"{name} must be an integer tensor, got dtype {values.dtype}.")


def check_k(k: tuple[int, ...]) -> tuple[int, ...]:
    """Return the K values as a sorted tuple of distinct positive ints."""
    values = (k,) if isinstance(k, int) else tuple(k)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(
            f"k must be a positive int or a non-empty sequence of positive ints, got {k!r}."
        )
    return tuple(sorted(set(values)))
