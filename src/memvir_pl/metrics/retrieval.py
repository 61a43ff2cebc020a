"""Retrieval metrics of DML papers: Recall@K, R-Precision, MAP@R (and NMI), functional form.

Definitions (those of pytorch-metric-learning's ``AccuracyCalculator`` with
``k="max_bin_count"`` and ``avg_of_avgs=False``):

- A query's R is the number of gallery items with its label, itself excluded.
  Queries with R = 0 are skipped: left out of every average and counted in
  ``num_skipped_queries``.
- ``recall@K``: share of queries with at least one same-label item among their
  K nearest gallery items (K=1 is PML's ``precision_at_1``).
- ``r_precision``: mean over queries of (same-label items among the R nearest) / R.
- ``map@r``: mean over queries of (1/R) sum_{i<=R} P(i) rel(i), where rel(i)
  says whether the i-th neighbour shares the label and P(i) is the precision
  of the first i neighbours.

Only max(max K, R) neighbours are searched per query, so memory stays within
``memory_budget_bytes`` (plus the inputs). When every item is a query and a
gallery item and the backend is torch, the score matrix is symmetric and is
computed only half (:meth:`~memvir_pl.metrics.exact_knn.TorchIndex.search_self`)
if all N rows' max(max K, largest R) neighbours fit the budget; otherwise,
and for the faiss backend, queries are searched in blocks sorted by R.

Deliberate differences from PML (values agree to 1e-6 in tests/test_metrics.py):
PML's default kNN is faiss ``IndexFlatL2`` on the embeddings as given, so it
equals our ``"cosine"`` only on L2-normalised inputs (we normalise); exact ties
are ordered by gallery row here, by faiss internals there; PML's
``avg_of_avgs=True`` (per-class averaging) is not offered.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from memvir_pl.metrics._checks import check_embeddings, check_k, check_per_item
from memvir_pl.metrics.clustering import kmeans_nmi
from memvir_pl.metrics.exact_knn import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    Backend,
    Distance,
    ExactIndex,
    TorchIndex,
    build_index,
)

# Bytes per (query, neighbour) pair while scoring a block: values, indices,
# labels, relevance, cumulative sums and float64 precisions; also covers the
# running top-k lists of TorchIndex.search_self (60 bytes).
_BYTES_PER_NEIGHBOUR = 64


class _Split(NamedTuple):
    query: Tensor  # (Q, D)
    query_labels: Tensor  # (Q,)
    gallery: Tensor  # (G, D)
    gallery_labels: Tensor  # (G,)
    self_rows: Tensor | None  # (Q,) gallery row of each query when queries are in the gallery


def metric_names(k: tuple[int, ...], nmi: bool) -> list[str]:
    """The keys :func:`retrieval_metrics` returns, in order."""
    names = [f"recall@{v}" for v in check_k(k)] + ["r_precision", "map@r"]
    return names + (["nmi"] if nmi else []) + ["num_skipped_queries"]


def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    *,
    k: int | tuple[int, ...] = (1, 2, 4, 8),
    is_query: Tensor | None = None,
    distance: Distance = "cosine",
    backend: Backend = "auto",
    nmi: bool = False,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    seed: int = 0,
) -> dict[str, float]:
    """Recall@K, R-Precision, MAP@R (and NMI) of ``embeddings`` (N, D) with ``labels`` (N,).

    Args:
        embeddings: (N, D) floating tensor, finite; the search runs on its device.
        labels: (N,) integer class labels.
        k: the K values of ``recall@K``.
        is_query: optional (N,) bool: True rows are queries only, False rows
            gallery only (In-Shop protocol). Without it every row is a query
            and a gallery item, and a query never retrieves its own row.
        distance: ``"cosine"`` (L2-normalised inner product) or ``"euclidean"``.
        backend: kNN backend, see :func:`memvir_pl.metrics.exact_knn.resolve_backend`.
        nmi: also compute NMI of k-means (as many clusters as query labels) on the queries.
        memory_budget_bytes: bound on the working memory of the search.
        seed: k-means seed (NMI only).
    Returns:
        ``{"recall@K": ..., "r_precision": ..., "map@r": ..., ["nmi": ...,]
        "num_skipped_queries": ...}`` as Python floats; all but the count lie
        in [0, 1] (NaN, with a warning, when every query is skipped).
    """
    ks = check_k(k)
    check_embeddings(embeddings)
    check_per_item(labels, embeddings.shape[0], "labels", "integer")
    check_per_item(is_query, embeddings.shape[0], "is_query", "bool")
    split = _split(embeddings, labels.to(embeddings.device), is_query)
    in_gallery = split.self_rows is not None
    searchable = split.gallery.shape[0] - in_gallery
    if ks[-1] > searchable:
        raise ValueError(
            f"k={ks[-1]} exceeds the {searchable} gallery items a query can retrieve "
            f"({split.gallery.shape[0]} gallery items"
            f"{', minus the query itself' if in_gallery else ''}); "
            "use smaller K values or evaluate on more data."
        )
    relevant = _relevant_counts(split.query_labels, split.gallery_labels, in_gallery)
    index = build_index(
        split.gallery, distance=distance, backend=backend, memory_budget_bytes=memory_budget_bytes
    )
    sums, scored = _accumulate(index, split, relevant, ks, memory_budget_bytes)
    if scored == 0:
        warnings.warn(
            "No query has another gallery item with its label, so recall@K, r_precision and map@r "
            "are NaN; evaluate on more items per class.",
            stacklevel=2,
        )
    results = {name: total / scored if scored else float("nan") for name, total in sums.items()}
    if nmi:
        results["nmi"] = kmeans_nmi(split.query, split.query_labels, distance=distance, seed=seed)
    results["num_skipped_queries"] = float(split.query.shape[0] - scored)
    return results


def _split(embeddings: Tensor, labels: Tensor, is_query: Tensor | None) -> _Split:
    if is_query is None:
        rows = torch.arange(embeddings.shape[0], device=embeddings.device)
        return _Split(embeddings, labels, embeddings, labels, rows)
    is_query = is_query.to(embeddings.device)
    num_queries = int(is_query.sum())
    if num_queries in (0, embeddings.shape[0]):
        missing = "queries (True)" if num_queries == 0 else "gallery items (False)"
        raise ValueError(
            f"is_query marks no {missing} among {embeddings.shape[0]} items; "
            "a separate query/gallery evaluation needs both, or pass is_query=None."
        )
    return _Split(
        embeddings[is_query], labels[is_query], embeddings[~is_query], labels[~is_query], None
    )


def _relevant_counts(query_labels: Tensor, gallery_labels: Tensor, in_gallery: bool) -> Tensor:
    """R (Q,): gallery items sharing each query's label, the query itself excluded."""
    classes, counts = gallery_labels.unique(return_counts=True)
    position = torch.searchsorted(classes, query_labels).clamp_max(classes.numel() - 1)
    found = classes[position] == query_labels
    return torch.where(found, counts[position], 0) - int(in_gallery)


def _accumulate(
    index: ExactIndex,
    split: _Split,
    relevant: Tensor,
    ks: tuple[int, ...],
    memory_budget_bytes: int,
) -> tuple[dict[str, float], int]:
    """Sums over scored queries (R > 0) of each metric, and how many were scored."""
    scored = (relevant > 0).nonzero().squeeze(1)
    sums = dict.fromkeys([f"recall@{v}" for v in ks] + ["r_precision", "map@r"], 0.0)
    if scored.numel() == 0:
        return sums, 0
    depth = max(ks[-1], int(relevant[scored].max()))
    self_search = (
        isinstance(index, TorchIndex)
        and split.self_rows is not None
        and split.query.shape[0] * depth * _BYTES_PER_NEIGHBOUR <= memory_budget_bytes
    )
    if self_search:
        blocks = iter([(scored, index.search_self(depth).indices[scored])])
    else:
        blocks = _searched_by_r(index, split, relevant, scored, ks[-1], memory_budget_bytes)
    for block, neighbours in blocks:
        hits = split.gallery_labels[neighbours] == split.query_labels[block, None]
        for name, value in _block_sums(hits, relevant[block], ks).items():
            sums[name] += value
    return sums, int(scored.numel())


def _searched_by_r(
    index: ExactIndex,
    split: _Split,
    relevant: Tensor,
    scored: Tensor,
    max_k: int,
    memory_budget_bytes: int,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Query rows (q,) and their max(max K, R) neighbours (q, depth), in blocks sorted by R."""
    order = scored[torch.argsort(relevant[scored], stable=True)]
    depths = relevant[order].clamp_min(max_k)
    start = 0
    while start < order.numel():
        rows = max(1, memory_budget_bytes // (_BYTES_PER_NEIGHBOUR * int(depths[start])))
        stop = min(start + rows, order.numel())
        depth = int(depths[stop - 1])
        stop = min(stop, start + max(1, memory_budget_bytes // (_BYTES_PER_NEIGHBOUR * depth)))
        block = order[start:stop]
        exclude = None if split.self_rows is None else split.self_rows[block]
        yield block, index.search(split.query[block], depth, exclude).indices
        start = stop


def _block_sums(hits: Tensor, relevant: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """Per-metric sums over a block: hits (q, depth) bool, nearest first; relevant R (q,) >= 1."""
    sums = {f"recall@{v}": float(hits[:, :v].any(dim=1).sum()) for v in ks}
    rank = torch.arange(1, hits.shape[1] + 1, device=hits.device)
    hits_in_r = hits & (rank <= relevant[:, None])
    r = relevant.to(torch.float64)
    sums["r_precision"] = float((hits_in_r.sum(dim=1) / r).sum())
    precision = hits_in_r.cumsum(dim=1).to(torch.float64) / rank
    sums["map@r"] = float(((precision * hits_in_r).sum(dim=1) / r).sum())
    return sums
