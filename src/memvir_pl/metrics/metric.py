"""``RetrievalMetrics``: Recall@K, R-Precision, MAP@R (and NMI) as a torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from memvir_pl.metrics._checks import check_embeddings, check_k, check_per_item
from memvir_pl.metrics.exact_knn import (
    BACKENDS,
    DEFAULT_MEMORY_BUDGET_BYTES,
    DISTANCES,
    Backend,
    Distance,
)
from memvir_pl.metrics.retrieval import retrieval_metrics


class RetrievalMetrics(Metric):
    """Retrieval metrics of a whole evaluation set, exact and memory-bounded.

    ``update`` stores embeddings and labels (concatenated across processes on
    sync); ``compute`` returns :func:`~memvir_pl.metrics.retrieval_metrics`'s
    dict of Python floats: ``recall@K`` for each K, ``r_precision``,
    ``map@r``, ``nmi`` (if asked) and ``num_skipped_queries``.

    Args:
        k: the K values of ``recall@K``.
        distance: ``"cosine"`` (L2-normalised inner product) or ``"euclidean"``.
        backend: ``"auto"``, ``"torch"`` or ``"faiss"`` exact kNN.
        nmi: also compute NMI of k-means (costly at SOP scale).
        memory_budget_bytes: bound on the working memory of the search.
        seed: k-means seed (NMI only).
        **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``compute_on_cpu``).

    Calling the metric as a module, ``metric(embeddings, labels)``, is
    ``update`` only and returns ``None``: retrieval metrics of one batch are
    not defined (a batch with <= K items has no K neighbours), so there is no
    per-batch value. ``compute`` returns a dict, so ``self.log("x", metric)``
    cannot log it; in a LightningModule update in the step and log the dict at
    the epoch's end::

        def validation_step(self, batch, batch_idx):
            self.metric(self(batch["image"]), batch["label"])  # = update

        def on_validation_epoch_end(self):
            self.log_dict({f"val/{k}": v for k, v in self.metric.compute().items()})
            self.metric.reset()

    Example::

        metric = RetrievalMetrics(k=(1, 2, 4, 8))
        for images, labels, indexes in loader:       # a DistributedSampler may pad
            metric.update(model(images), labels, indexes)
        metric.compute()  # {'recall@1': 0.62, ..., 'num_skipped_queries': 0.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        k: int | tuple[int, ...] = (1, 2, 4, 8),
        distance: Distance = "cosine",
        backend: Backend = "auto",
        nmi: bool = False,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        if memory_budget_bytes < 1:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}.")
        self.k = check_k(k)
        self.distance = distance
        self.backend = backend
        self.nmi = nmi
        self.memory_budget_bytes = memory_budget_bytes
        self.seed = seed
        for name in ("embeddings", "labels", "indexes", "is_query"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """``update(*args, **kwargs)`` only (no per-batch compute); returns ``None``."""
        self.update(*args, **kwargs)

    def update(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indexes: Tensor | None = None,
        is_query: Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            embeddings: (B, D) floating, finite.
            labels: (B,) integer class labels.
            indexes: optional (B,) dataset indices; rows repeated across the
                whole evaluation (a distributed sampler's padding) are kept
                once. Give them in every update or in none.
            is_query: optional (B,) bool, True for queries, False for gallery
                items (In-Shop). Give it in every update or in none.
        """
        check_embeddings(embeddings, allow_empty=True)
        check_per_item(labels, embeddings.shape[0], "labels", "integer")
        check_per_item(indexes, embeddings.shape[0], "indexes", "integer")
        check_per_item(is_query, embeddings.shape[0], "is_query", "bool")
        self.embeddings.append(embeddings.detach())
        self.labels.append(labels.detach().to(torch.int64))
        if indexes is not None:
            self.indexes.append(indexes.detach().to(torch.int64))
        if is_query is not None:
            # uint8: bool tensors cannot be gathered by every backend (gloo).
            self.is_query.append(is_query.detach().to(torch.uint8))

    def compute(self) -> dict[str, float]:
        """The metrics of everything added since the last ``reset`` (all processes)."""
        embeddings = _concat(self.embeddings)
        if embeddings is None or embeddings.shape[0] == 0:
            raise ValueError(
                "RetrievalMetrics.compute() was called with no data: "
                "call update(embeddings, labels) "
                "with the evaluation set first (and reset() only after compute())."
            )
        labels = _concat(self.labels)
        indexes = _optional(self.indexes, embeddings.shape[0], "indexes")
        is_query = _optional(self.is_query, embeddings.shape[0], "is_query")
        if indexes is not None:
            keep = first_row_per_index(indexes.to(torch.int64))
            embeddings, labels = embeddings[keep], labels[keep]
            is_query = None if is_query is None else is_query[keep]
        return retrieval_metrics(
            embeddings,
            labels.to(torch.int64),
            k=self.k,
            is_query=None if is_query is None else is_query.to(torch.bool),
            distance=self.distance,
            backend=self.backend,
            nmi=self.nmi,
            memory_budget_bytes=self.memory_budget_bytes,
            seed=self.seed,
        )


def first_row_per_index(indexes: Tensor) -> Tensor:
    """Rows (U,) of the first occurrence of each distinct value of ``indexes`` (N,), by value."""
    _, inverse = indexes.unique(return_inverse=True)
    positions = torch.arange(indexes.shape[0], device=indexes.device)
    first = torch.full((int(inverse.max()) + 1,), indexes.shape[0], device=indexes.device)
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")


def _concat(state: list[Tensor] | Tensor) -> Tensor | None:
    if isinstance(state, list) and not state:
        return None
    return dim_zero_cat(state)


def _optional(state: list[Tensor] | Tensor, num_items: int, name: str) -> Tensor | None:
    """An optional per-item state: None when never given, else checked to cover every row."""
    values = _concat(state)
    if values is None or values.numel() == 0:
        return None
    if values.shape[0] != num_items:
        raise ValueError(
            f"{name} was given for {values.shape[0]} of {num_items} rows: pass {name} "
            "in every update() call or in none."
        )
    return values
