"""Exact k-nearest-neighbour search with bounded memory.

Two backends return the same neighbours (up to floating-point rounding):

- ``"torch"``: chunked matmul + top-k on the gallery's device (CPU or CUDA).
  The score blocks are sized from ``memory_budget_bytes``, so the extra memory
  does not grow with the dataset (only the (Q, k) answer does). When the
  queries are the gallery, :meth:`TorchIndex.search_self` computes only half
  of the symmetric score matrix.
- ``"faiss"``: a flat (exact) faiss index; on the GPU when the gallery is a
  CUDA tensor and a GPU build of faiss is installed, else on the CPU.
  faiss is imported only when this backend is used.

Neighbours are ordered nearest first; exact ties are ordered by gallery row,
lowest first, in both backends. A query can leave one gallery row out
(``exclude``), by row, not by position: with duplicated embeddings the query's
own row is not assumed to be its first neighbour.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from memvir_pl.metrics._checks import check_embeddings

Distance = Literal["cosine", "euclidean"]
Backend = Literal["auto", "torch", "faiss"]

DISTANCES: tuple[str, ...] = ("cosine", "euclidean")
BACKENDS: tuple[str, ...] = ("auto", "torch", "faiss")
DEFAULT_MEMORY_BUDGET_BYTES = 256 * 2**20


class KNNResult(NamedTuple):
    """Nearest gallery rows of each query, nearest first.

    values: (Q, k) cosine similarity (descending) for ``"cosine"``, Euclidean
        distance (ascending) for ``"euclidean"``.
    indices: (Q, k) int64 gallery rows.
    """

    values: Tensor
    indices: Tensor


def faiss_available() -> bool:
    """Whether faiss can be imported (checked without importing it)."""
    return importlib.util.find_spec("faiss") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``.

    ``"auto"`` is ``"faiss"`` on the CPU when faiss is installed, and
    ``"torch"`` otherwise, including on CUDA, where torch needs no copy off
    the device and has no limit on k. On our 2-core CPU benchmark at SOP size
    (benchmarks/bench_metrics.py) faiss and the torch backend's symmetric
    self-search were within noise of each other (each the faster in one of two
    runs), so faiss, which does not need the symmetry, stays the CPU default.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "faiss" and not faiss_available():
        raise ValueError(
            "backend='faiss' needs faiss: pip install faiss-cpu (or a faiss GPU build)."
        )
    if backend != "auto":
        return backend
    return "faiss" if device.type == "cpu" and faiss_available() else "torch"


class ExactIndex(ABC):
    """Exact kNN over a fixed gallery (G, D) under ``distance``.

    Scores are "larger is nearer": the cosine similarity, or for Euclidean
    search a per-query shift of the negative squared distance; :meth:`search`
    converts them back to similarities or distances.
    """

    def __init__(self, gallery: Tensor, distance: Distance, memory_budget_bytes: int) -> None:
        check_embeddings(gallery, "gallery")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        if memory_budget_bytes < 1:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}.")
        self.distance = distance
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.num_items, self.dim = gallery.shape

    def search(self, query: Tensor, k: int, exclude: Tensor | None = None) -> KNNResult:
        """The k nearest gallery rows of each query row.

        Args:
            query: (Q, D) embeddings.
            k: neighbours per query, 1 <= k <= G (G - 1 when ``exclude`` is given).
            exclude: optional (Q,) int64 gallery row to leave out per query
                (e.g. the query itself); -1 leaves nothing out.
        Returns:
            :class:`KNNResult` with (Q, k) values and indices on the query's device.
        """
        self._check_query(query, k, exclude)
        if query.shape[0] == 0:
            empty = query.new_zeros((0, k))
            return KNNResult(empty, empty.to(torch.int64))
        parts = [self._search_block(q, k, ex) for q, ex in self._query_blocks(query, k, exclude)]
        scores = torch.cat([p[0] for p in parts])
        indices = torch.cat([p[1] for p in parts])
        return KNNResult(self._to_values(scores, query), indices.to(query.device))

    def _check_query(self, query: Tensor, k: int, exclude: Tensor | None) -> None:
        check_embeddings(query, "query", allow_empty=True)
        if query.shape[1] != self.dim:
            raise ValueError(
                f"query has {query.shape[1]} dimensions but the gallery has {self.dim}."
            )
        self._check_k(k, excluding=exclude is not None)
        if exclude is not None and (exclude.ndim != 1 or exclude.shape[0] != query.shape[0]):
            raise ValueError(
                f"exclude must have shape ({query.shape[0]},) (one gallery row per query), "
                f"got {tuple(exclude.shape)}."
            )

    def _check_k(self, k: int, excluding: bool) -> None:
        limit = self.num_items - excluding
        if not isinstance(k, int) or k < 1 or k > limit:
            raise ValueError(
                f"k={k} is invalid for a gallery of {self.num_items} items"
                f"{' with one excluded per query' if excluding else ''}: "
                f"expected 1 <= k <= {limit}; use a smaller k or a larger gallery."
            )

    def _query_blocks(
        self, query: Tensor, k: int, exclude: Tensor | None
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        rows = max(1, self._query_rows(query.shape[0], k))
        for start in range(0, query.shape[0], rows):
            stop = start + rows
            yield query[start:stop], None if exclude is None else exclude[start:stop]

    def _to_values(self, scores: Tensor, query: Tensor) -> Tensor:
        """Cosine similarity as is; Euclidean distance from the shifted score."""
        if self.distance == "cosine":
            return scores.to(query.device)
        sq_norms = query.to(scores.device, scores.dtype).square().sum(dim=1, keepdim=True)
        return (sq_norms - scores).clamp_min_(0).sqrt_().to(query.device)

    @abstractmethod
    def _query_rows(self, num_queries: int, k: int) -> int:
        """How many queries one block holds within the memory budget."""

    @abstractmethod
    def _search_block(self, query: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        """Scores (q, k) and gallery rows (q, k) of a block of queries, nearest first."""


def order_by_score_then_row(scores: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row of candidates by score (descending), ties by gallery row (ascending).

    scores, rows: (Q, n). Returns both permuted the same way.
    """
    rows, perm = rows.sort(dim=1)
    scores = scores.gather(1, perm)
    scores, perm = scores.sort(dim=1, descending=True, stable=True)
    return scores, rows.gather(1, perm)


def topk_ties_by_row(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k of each row of ``scores`` (Q, n) with ties broken by lowest column.

    ``torch.topk`` picks an arbitrary member of a tie group that straddles the
    k-th place; such rows (found from the (k+1)-th score) are redone exactly.
    """
    take = min(k + 1, scores.shape[1])
    values, columns = scores.topk(take, dim=1)
    if take > k:
        straddle = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1)
        values, columns = values[:, :k], columns[:, :k]
        if straddle.numel() > 0:
            sub = scores[straddle]
            kth = values[straddle, k - 1 :]
            above = sub > kth
            tied = sub == kth
            missing = k - above.sum(dim=1, keepdim=True)
            keep = above | (tied & (tied.cumsum(dim=1) <= missing))
            fixed = keep.nonzero()[:, 1].view(-1, k)
            columns[straddle] = fixed
            values[straddle] = sub.gather(1, fixed)
    return order_by_score_then_row(values, columns)


def exact_topk(
    query: Tensor,
    gallery_blocks: Iterable[tuple[int, Tensor]],
    k: int,
    distance: Distance,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-k scores and gallery rows (q, k) over gallery blocks, ties by lowest row.

    Args:
        query: (q, D) prepared (L2-normalised for cosine) queries.
        gallery_blocks: (first row, prepared (g, D) rows) pairs covering the gallery in order.
        k: neighbours per query.
        distance: ``"cosine"`` or ``"euclidean"``.
        exclude: optional (q,) gallery row to leave out per query (-1: none).
    """
    best = _RunningTopK(k)
    for start, gallery in gallery_blocks:
        block = _scores(query, gallery, distance)
        if exclude is not None:
            _mask_excluded(block, exclude, start)
        best.add(block, start)
    if not best.parts:
        raise ValueError("exact_topk got no gallery blocks; expected at least one gallery row.")
    return best.result()


def exact_self_topk(
    items: Tensor, k: int, distance: Distance, block_rows: int
) -> tuple[Tensor, Tensor]:
    """Exact top-k scores and rows (N, k) of each item among the other items, ties by lowest row.

    The same answer as :func:`exact_topk` of ``items`` against itself with
    ``exclude=arange(N)``, from half the products: the score matrix is
    symmetric, so only its blocks I <= J (``block_rows`` rows each) are
    computed, and each S = X_I X_J^T feeds the running top-k of the rows in I
    (from S) and, when J != I, of the rows in J (from S^T). Each item's own
    entry, on the diagonal of its block (I, I), is left out.

    Args:
        items: (N, D) prepared (L2-normalised for cosine) rows.
        k: neighbours per item, 1 <= k <= N - 1.
        distance: ``"cosine"`` or ``"euclidean"``.
        block_rows: rows per block; the working memory is two (block_rows, block_rows) blocks.
    """
    num_items = items.shape[0]
    sq_norms = items.square().sum(dim=1) if distance == "euclidean" else None
    starts = range(0, num_items, block_rows)
    work = items.new_empty(min(block_rows, num_items) ** 2)
    # Every block row gets its blocks in increasing row order: J from pairs (I, J), I < J,
    # before the outer loop reaches J, then J itself, then the blocks after J.
    best = {start: _RunningTopK(k) for start in starts}
    for first, i in enumerate(starts):
        for j in starts[first:]:
            inner = items[i : i + block_rows] @ items[j : j + block_rows].T
            scores = inner if sq_norms is None else _from_inner(inner, sq_norms[j:], work)
            if i == j:
                scores.fill_diagonal_(float("-inf"))
            best[i].add(scores, j)
            if j != i:
                scores = _from_inner(inner.T, None if sq_norms is None else sq_norms[i:], work)
                best[j].add(scores, i)
    parts = [b.result() for b in best.values()]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class _RunningTopK:
    """Exact top-k (q, k) of score blocks fed in increasing gallery row order, ties by lowest row.

    Each block's top-k is kept (nearest first, ties by row); every
    ``MERGE_EVERY`` blocks they are merged by one stable sort on score, which
    orders ties by row because earlier blocks hold lower rows. At most
    ``MERGE_EVERY + 1`` (q, k) lists of scores and int64 rows are held.
    """

    MERGE_EVERY = 4

    def __init__(self, k: int) -> None:
        self.k = k
        self.parts: list[tuple[Tensor, Tensor]] = []

    def add(self, scores: Tensor, start: int) -> None:
        """Fold in a (q, g) score block whose columns are gallery rows ``start``..."""
        values, rows = topk_ties_by_row(scores, min(self.k, scores.shape[1]))
        self.parts.append((values, rows + start))
        if len(self.parts) > self.MERGE_EVERY:
            self.parts = [self.result()]

    def result(self) -> tuple[Tensor, Tensor]:
        """The (q, k) scores and gallery rows so far, nearest first."""
        if len(self.parts) == 1:
            return self.parts[0]
        values, order = torch.cat([p[0] for p in self.parts], 1).sort(
            dim=1, descending=True, stable=True
        )
        rows = torch.cat([p[1] for p in self.parts], 1).gather(1, order[:, : self.k])
        return values[:, : self.k], rows


def _from_inner(inner: Tensor, column_sq_norms: Tensor | None, out: Tensor) -> Tensor:
    """The (a, b) scores of :func:`_scores` from inner products (a, b), written into ``out``.

    ``inner`` may be a transposed view; ``column_sq_norms`` starts at its first column
    (euclidean; None for cosine). ``out`` is a flat buffer of at least a * b elements.
    """
    out = out[: inner.numel()].view(inner.shape)
    if column_sq_norms is None:
        return out.copy_(inner)
    return torch.add(column_sq_norms[: inner.shape[1]].neg(), inner, alpha=2, out=out)


def _scores(query: Tensor, gallery: Tensor, distance: Distance) -> Tensor:
    """(q, g) "larger is nearer" scores: q.g for cosine, 2 q.g - |g|^2 = |q|^2 - |q - g|^2 else."""
    if distance == "cosine":
        return query @ gallery.T
    return torch.addmm(-gallery.square().sum(dim=1), query, gallery.T, alpha=2)


def _mask_excluded(block: Tensor, exclude: Tensor, start: int) -> None:
    """Set block[i, exclude[i] - start] to -inf where that column lies in the block."""
    columns = exclude - start
    hit = ((columns >= 0) & (columns < block.shape[1])).nonzero().squeeze(1)
    block[hit, columns[hit]] = float("-inf")


def _prepare(x: Tensor, distance: Distance) -> Tensor:
    return F.normalize(x, dim=1) if distance == "cosine" else x


def _gallery_step(block_elements: int, num_queries: int, num_items: int, k: int) -> int:
    """Gallery rows per score block: the whole gallery if 256 queries fit beside it."""
    rows_wanted = min(max(num_queries, 1), 256)
    return min(num_items, max(k + 1, block_elements // rows_wanted))


class TorchIndex(ExactIndex):
    """Exact kNN by chunked matmul + top-k on the gallery's device (CPU or CUDA).

    A score block (q, g) holds at most ``memory_budget_bytes / 2`` bytes; when
    the gallery does not fit in one block next to enough queries, it is split
    too and per-block top-k lists are merged. :meth:`search_self` searches the
    gallery against itself from the upper triangle of its score matrix.
    float64 galleries are searched in float64, all others in float32.
    """

    def __init__(
        self,
        gallery: Tensor,
        distance: Distance = "cosine",
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    ) -> None:
        super().__init__(gallery, distance, memory_budget_bytes)
        dtype = torch.float64 if gallery.dtype == torch.float64 else torch.float32
        self.gallery = _prepare(gallery.to(dtype), distance)
        self._block_elements = max(1, self.memory_budget_bytes // (2 * self.gallery.element_size()))

    def _columns(self, num_queries: int, k: int) -> int:
        return _gallery_step(self._block_elements, num_queries, self.num_items, k)

    def _query_rows(self, num_queries: int, k: int) -> int:
        return self._block_elements // self._columns(num_queries, k)

    def search_self(self, k: int) -> KNNResult:
        """The k nearest other gallery rows of each gallery row, from half the products.

        The neighbours of ``search(gallery, k, exclude=torch.arange(G))``
        (ties by lowest row; scores that differ only by float rounding may
        rank either way in both), by :func:`exact_self_topk` with two score
        blocks of at most ``memory_budget_bytes / 4`` bytes each; beside them,
        every row's running top-k is held (up to 5 (G, k) lists of scores and
        int64 rows, 60 bytes per (row, neighbour) in float32).

        Args:
            k: neighbours per row, 1 <= k <= G - 1.
        Returns:
            :class:`KNNResult` with (G, k) values and indices on the gallery's device.
        """
        self._check_k(k, excluding=True)
        block_rows = max(1, math.isqrt(self._block_elements // 2))
        scores, indices = exact_self_topk(self.gallery, k, self.distance, block_rows)
        return KNNResult(self._to_values(scores, self.gallery), indices)

    def _search_block(self, query: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        query = _prepare(query.to(self.gallery.device, self.gallery.dtype), self.distance)
        if exclude is not None:
            exclude = exclude.to(self.gallery.device)
        step = self._columns(query.shape[0], k)
        blocks = ((s, self.gallery[s : s + step]) for s in range(0, self.num_items, step))
        return exact_topk(query, blocks, k, self.distance, exclude)


class FaissIndex(ExactIndex):
    """Exact kNN with a faiss flat index (inner product on L2-normalised rows, or L2).

    On the GPU when ``gallery`` is a CUDA tensor and faiss has GPUs (faiss GPU
    search allows k <= 2048), else on the CPU; results come back on the
    query's device. Queries are searched in blocks whose (q, k) answer fits the
    memory budget; faiss itself tiles its distance computation. faiss does not
    break ties at the k-th place by row, so one extra neighbour is searched and
    the (rare) queries with a tie there are redone exactly by :func:`exact_topk`
    over the index's stored rows.
    """

    GPU_MAX_K = 2048

    def __init__(
        self,
        gallery: Tensor,
        distance: Distance = "cosine",
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    ) -> None:
        super().__init__(gallery, distance, memory_budget_bytes)
        self._faiss = importlib.import_module("faiss")
        self.on_gpu = gallery.is_cuda and self._faiss.get_num_gpus() > 0
        if self.on_gpu:
            importlib.import_module("faiss.contrib.torch_utils")
            self._resources = self._faiss.StandardGpuResources()
            config = self._faiss.GpuIndexFlatConfig()
            config.device = gallery.device.index or 0
            gpu_flat = (
                self._faiss.GpuIndexFlatIP if distance == "cosine" else self._faiss.GpuIndexFlatL2
            )
            self.index = gpu_flat(self._resources, self.dim, config)
        else:
            flat = self._faiss.IndexFlatIP if distance == "cosine" else self._faiss.IndexFlatL2
            self.index = flat(self.dim)
        self.index.add(self._as_input(gallery))

    def _as_input(self, x: Tensor) -> Tensor:
        """float32 contiguous rows, normalised for cosine: CUDA tensor (GPU faiss) or numpy."""
        x = _prepare(x.detach().to(torch.float32), self.distance).contiguous()
        return x if self.on_gpu else x.cpu().numpy()

    def _query_rows(self, num_queries: int, k: int) -> int:
        # per query row: its float32 copy (4 D bytes) and (k+2) scores and rows (12 bytes each),
        # with room for the few copies made while sorting them.
        return self.memory_budget_bytes // (4 * self.dim + 48 * (k + 2))

    def _search_block(self, query: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        depth = min(k + 1 + (exclude is not None), self.num_items)
        if self.on_gpu and depth > self.GPU_MAX_K:
            raise ValueError(
                f"faiss GPU search allows k <= {self.GPU_MAX_K}, "
                f"but {depth} neighbours are needed; use backend='torch' on CUDA."
            )
        distances, rows = self.index.search(self._as_input(query), depth)
        scores = torch.as_tensor(distances)
        rows = torch.as_tensor(rows).to(torch.int64)
        if self.distance == "euclidean":
            # |q|^2 - |q - g|^2: the same shifted score as the torch backend.
            scores = query.to(scores.device, torch.float32).square().sum(1, keepdim=True) - scores
        if exclude is not None:
            scores, rows = _drop_excluded(scores, rows, exclude.to(rows.device))
        scores, rows = order_by_score_then_row(scores, rows)
        if scores.shape[1] == k:
            return scores, rows
        tied = (scores[:, k] == scores[:, k - 1]).nonzero().squeeze(1)
        scores, rows = scores[:, :k].contiguous(), rows[:, :k].contiguous()
        if tied.numel() > 0:
            redone = self._exact(query[tied.to(query.device)], k, exclude, tied)
            scores[tied], rows[tied] = (t.to(scores.device) for t in redone)
        return scores, rows

    def _exact(
        self, query: Tensor, k: int, exclude: Tensor | None, which: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:func:`exact_topk` on the CPU over the rows stored in the faiss index."""
        query = _prepare(query.detach().to("cpu", torch.float32), self.distance)
        if exclude is not None:
            exclude = exclude.to("cpu")[which.cpu()]
        elements = max(1, self.memory_budget_bytes // 8)
        step = _gallery_step(elements, query.shape[0], self.num_items, k)
        blocks = (
            (s, torch.as_tensor(self.index.reconstruct_n(s, min(step, self.num_items - s))))
            for s in range(0, self.num_items, step)
        )
        return exact_topk(query, blocks, k, self.distance, exclude)


def _drop_excluded(scores: Tensor, rows: Tensor, exclude: Tensor) -> tuple[Tensor, Tensor]:
    """Remove the excluded row from each (Q, k+1) answer, or the farthest one if it is absent."""
    drop = rows == exclude[:, None]
    drop[~drop.any(dim=1), -1] = True
    keep = ~drop
    width = rows.shape[1] - 1
    return scores[keep].view(-1, width), rows[keep].view(-1, width)


def build_index(
    gallery: Tensor,
    *,
    distance: Distance = "cosine",
    backend: Backend = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> ExactIndex:
    """An exact kNN index over ``gallery`` (G, D); ``backend`` as in :func:`resolve_backend`."""
    check_embeddings(gallery, "gallery")
    chosen = resolve_backend(backend, gallery.device)
    cls = FaissIndex if chosen == "faiss" else TorchIndex
    return cls(gallery, distance, memory_budget_bytes)


def knn(
    query: Tensor,
    gallery: Tensor,
    k: int,
    *,
    distance: Distance = "cosine",
    backend: Backend = "auto",
    exclude: Tensor | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> KNNResult:
    """Exact k nearest gallery rows of each query row.

    Args:
        query: (Q, D) embeddings.
        gallery: (G, D) embeddings (cosine: any norm, rows are L2-normalised here).
        k: neighbours per query, 1 <= k <= G (G - 1 with ``exclude``).
        distance: ``"cosine"`` or ``"euclidean"``.
        backend: ``"torch"``, ``"faiss"`` or ``"auto"``.
        exclude: optional (Q,) int64 gallery row to leave out per query (-1: none),
            e.g. ``torch.arange(Q)`` when the query set is the gallery.
        memory_budget_bytes: bound on the extra working memory of the search.
    Returns:
        :class:`KNNResult`: (Q, k) similarities (cosine) or distances
        (euclidean) and int64 gallery rows, nearest first, ties by lowest row.
    """
    index = build_index(
        gallery, distance=distance, backend=backend, memory_budget_bytes=memory_budget_bytes
    )
    return index.search(query, k, exclude)
