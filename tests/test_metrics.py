"""Tests of memvir_pl.metrics: exact kNN backends and the retrieval metrics.

References: pytorch-metric-learning's AccuracyCalculator, a brute-force loop,
and hand-worked cases. Deliberate differences from PML (documented here and in
retrieval.py): PML searches with faiss ``IndexFlatL2`` on the embeddings as
given, so it is fed L2-normalised embeddings for our cosine metric (same
neighbour order); ties are ordered by gallery row in our backends; queries
whose label has no other gallery item are skipped by both (PML's
"lone queries"), and we also report how many.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from memvir_pl.metrics import (
    RetrievalMetrics,
    build_index,
    kmeans_nmi,
    knn,
    metric_names,
    resolve_backend,
    retrieval_metrics,
)
from memvir_pl.metrics.clustering import kmeans_assignments
from memvir_pl.metrics.metric import first_row_per_index

BACKENDS = ["torch", "faiss"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clustered(seed: int, sizes: list[int], dim: int = 16, spread: float = 0.9):
    """Embeddings (N, dim) around one random centre per class (class c has sizes[c] items), shuffled."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    centres = torch.randn(len(sizes), dim, generator=g)
    x = centres[labels] + spread * torch.randn(labels.numel(), dim, generator=g)
    perm = torch.randperm(labels.numel(), generator=g)
    return x[perm], labels[perm]


def class_sizes(kind: str, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":  # CUB/CARS-like: equal, larger classes
        return [12] * 20
    if kind == "sop":  # SOP-like: 2..12 items per class
        return torch.randint(2, 13, (60,), generator=g).tolist()
    # skewed, with singletons: 1..40 items, heavy tail
    return (torch.rand(40, generator=g).pow(3) * 40 + 1).long().tolist()


def pml_reference(x, labels, is_query=None, distance="cosine"):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    x = F.normalize(x, dim=1) if distance == "cosine" else x
    if is_query is None:
        return calc.get_accuracy(x, labels)
    return calc.get_accuracy(x[is_query], labels[is_query], x[~is_query], labels[~is_query])


def brute_force(x, labels, ks, is_query=None):
    """Recall@K, R-Precision, MAP@R by a Python loop over queries (cosine, ties by row)."""
    n = x.shape[0]
    queries = range(n) if is_query is None else [i for i in range(n) if is_query[i]]
    gallery = list(range(n)) if is_query is None else [i for i in range(n) if not is_query[i]]
    xn = F.normalize(x.double(), dim=1)
    recall = dict.fromkeys(ks, 0)
    rp = ap = 0.0
    scored = 0
    for q in queries:
        candidates = [j for j in gallery if j != q]
        ranked = sorted(candidates, key=lambda j: (-float(xn[q] @ xn[j]), j))
        rel = [int(labels[j] == labels[q]) for j in ranked]
        r = sum(rel)
        if r == 0:
            continue
        scored += 1
        for k in ks:
            recall[k] += any(rel[:k])
        rp += sum(rel[:r]) / r
        ap += sum(sum(rel[: i + 1]) / (i + 1) for i in range(r) if rel[i]) / r
    out = {f"recall@{k}": recall[k] / scored for k in ks}
    return out | {"r_precision": rp / scored, "map@r": ap / scored}


# --------------------------------------------------------------------- PML agreement


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["uniform", "sop", "skewed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("split", [False, True])
def test_agrees_with_pml(backend, kind, seed, split):
    x, labels = clustered(seed, class_sizes(kind, seed))
    is_query = None
    if split:
        is_query = torch.rand(labels.numel(), generator=torch.Generator().manual_seed(seed)) < 0.4
    ours = retrieval_metrics(x, labels, k=(1,), is_query=is_query, backend=backend)
    ref = pml_reference(x, labels, is_query)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_agrees_with_pml_euclidean_and_lone_queries(backend):
    # "skewed" has singleton classes: PML drops them as lone queries, we skip and count them.
    x, labels = clustered(5, class_sizes("skewed", 5), dim=24)
    ours = retrieval_metrics(x, labels, k=(1,), distance="euclidean", backend=backend)
    ref = pml_reference(x, labels, distance="euclidean")
    singletons = int((labels.bincount() == 1).sum())
    assert singletons > 0
    assert ours["num_skipped_queries"] == singletons
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


@pytest.mark.parametrize("split", [False, True])
def test_agrees_with_brute_force_loop(split):
    x, labels = clustered(3, class_sizes("skewed", 3), dim=8, spread=1.5)
    is_query = (torch.arange(labels.numel()) % 3 == 0) if split else None
    ks = (1, 2, 4, 8, 16)
    ours = retrieval_metrics(x, labels, k=ks, is_query=is_query, backend="torch")
    ref = brute_force(x, labels, ks, is_query)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


# --------------------------------------------------------------------- hand-worked cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_separate_query_and_gallery(backend):
    # 1-D Euclidean. Gallery at 1, 2, 3, 4, 5 with labels A, B, A, B, A.
    # Query at 0 (A): ranks A B A B A, R=3: RP = 2/3; MAP@R = (1/1 + 0 + 2/3) / 3 = 5/9.
    # Query at 10 (B): ranks (5, 4, 3, 2, 1) = A B A B A, R=2: RP = 1/2; MAP@R = (0 + 1/2) / 2 = 1/4.
    # Query at 3.4 (C): no C in the gallery -> skipped.
    # Means over 2 queries: recall@1 = (1 + 0)/2, recall@2 = (1 + 1)/2,
    # RP = (2/3 + 1/2)/2 = 7/12, MAP@R = (5/9 + 1/4)/2 = 29/72.
    x = torch.tensor([1.0, 2, 3, 4, 5, 0, 10, 3.4])[:, None]
    labels = torch.tensor([0, 1, 0, 1, 0, 0, 1, 2])
    is_query = torch.tensor([False] * 5 + [True] * 3)
    out = retrieval_metrics(
        x, labels, k=(1, 2), is_query=is_query, distance="euclidean", backend=backend
    )
    assert out == pytest.approx(
        {
            "recall@1": 1 / 2,
            "recall@2": 1.0,
            "r_precision": 7 / 12,
            "map@r": 29 / 72,
            "num_skipped_queries": 1.0,
        },
        abs=1e-12,
    )
    assert list(out) == metric_names((1, 2), nmi=False)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_self_excluded_by_row_with_duplicates_and_ties(backend, distance):
    # Rows 0-3 are the same vector e0, row 4 is e1; labels 0, 1, 1, 0, 1.
    # Neighbours (self excluded, ties by row): q0 -> 1 2 3 4, q1 -> 0 2 3 4, q2 -> 0 1 3 4,
    # q3 -> 0 1 2 4 (dropping q3's first neighbour "as self" would wrongly give row 1),
    # q4 -> 0 1 2 3 (all tied).
    # q0 (label 0, R=1): labels 1 1 0 1 -> RP 0, MAP 0, hit@1 0, hit@2 0.
    # q1 (label 1, R=2): labels 0 1 0 1 -> RP 1/2, MAP (0 + 1/2)/2 = 1/4, hit@1 0, hit@2 1.
    # q2 (label 1, R=2): labels 0 1 0 1 -> same as q1.
    # q3 (label 0, R=1): labels 0 1 1 1 -> RP 1, MAP 1, hit@1 1, hit@2 1.
    # q4 (label 1, R=2): labels 0 1 1 0 -> RP 1/2, MAP (0 + 1/2)/2 = 1/4, hit@1 0, hit@2 1.
    # recall@1 = 1/5, recall@2 = 4/5, RP = (0 + .5 + .5 + 1 + .5)/5 = 1/2,
    # MAP@R = (0 + .25 + .25 + 1 + .25)/5 = 7/20.
    x = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 1, 1, 0, 1])
    out = retrieval_metrics(x, labels, k=(1, 2), distance=distance, backend=backend)
    assert out == pytest.approx(
        {
            "recall@1": 1 / 5,
            "recall@2": 4 / 5,
            "r_precision": 1 / 2,
            "map@r": 7 / 20,
            "num_skipped_queries": 0.0,
        },
        abs=1e-12,
    )
    result = knn(x, x, 4, distance=distance, backend=backend, exclude=torch.arange(5))
    expected = [[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [0, 1, 2, 3]]
    assert result.indices.tolist() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_ordered_by_gallery_row(backend):
    # Gallery rows with entries in {0, 1/2} and unit norm: all scores are exact.
    # Query (1, 1, 0, 0) / sqrt(2): rows 0, 3, 5 tie at 1/sqrt(2), rows 1, 4 tie at 0.
    half = 0.5
    gallery = torch.tensor(
        [
            [half, half, half, half],  # 0: score 1/sqrt(2)
            [half, -half, half, -half],  # 1: score 0
            [-half, -half, half, half],  # 2: score -1/sqrt(2)
            [half, half, -half, -half],  # 3: score 1/sqrt(2)
            [half, -half, -half, half],  # 4: score 0
            [half, half, half, half],  # 5: score 1/sqrt(2)
        ]
    )
    query = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    for k, expected in [(1, [0]), (2, [0, 3]), (4, [0, 3, 5, 1]), (5, [0, 3, 5, 1, 4])]:
        result = knn(query, gallery, k, backend=backend)
        assert result.indices.tolist() == [expected], k
    tiny = knn(query, gallery, 4, backend="torch", memory_budget_bytes=8)  # 5-column blocks
    assert tiny.indices.tolist() == [[0, 3, 5, 1]]


def test_singleton_classes_are_skipped_and_all_singletons_give_nan():
    x, labels = clustered(0, [1, 1, 3, 1, 4], dim=4)
    out = retrieval_metrics(x, labels, k=(1,))
    ref = brute_force(x, labels, (1,))
    assert out["num_skipped_queries"] == 3.0
    assert out["map@r"] == pytest.approx(ref["map@r"], abs=1e-12)
    with pytest.warns(UserWarning, match="No query has another gallery item"):
        alone = retrieval_metrics(x[:4], torch.arange(4), k=(1,))
    assert math.isnan(alone["recall@1"]) and math.isnan(alone["map@r"])
    assert alone["num_skipped_queries"] == 4.0


# --------------------------------------------------------------------- kNN backends


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_backends_and_budgets_give_the_same_neighbours(distance):
    x, _ = clustered(7, [30] * 10, dim=32)
    query, gallery = x[:100], x[100:]
    exclude = torch.full((100,), -1).index_fill_(0, torch.arange(0, 100, 3), 5)
    ref = knn(query, gallery, 20, distance=distance, backend="torch", exclude=exclude)
    # brute force: full score matrix, excluded entries removed, stable sort
    q, g = query.double(), gallery.double()
    if distance == "cosine":
        full = F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    else:
        full = -torch.cdist(q, g)
    full[exclude >= 0, 5] = -math.inf
    expected = full.sort(dim=1, descending=True, stable=True).indices[:, :20]
    assert torch.equal(ref.indices, expected)
    values = full.gather(1, expected).float()
    assert torch.allclose(ref.values, values if distance == "cosine" else -values, atol=1e-5)
    for backend, budget in [("faiss", 2**28), ("torch", 2**12), ("torch", 100)]:
        other = knn(
            query,
            gallery,
            20,
            distance=distance,
            backend=backend,
            exclude=exclude,
            memory_budget_bytes=budget,
        )
        assert torch.equal(other.indices, ref.indices), (backend, budget)
        assert torch.allclose(other.values, ref.values, atol=1e-5)


def exact_clustered(seed: int, sizes: list[int], dim: int = 16, duplicates: int = 30):
    """Clustered rows with exactly 4 entries +-1 (norm 2), some duplicated, shuffled.

    A class's rows are its centre with one sign flipped (70 %) or the centre.

    Every inner product, cosine similarity and squared distance is exact in
    float32, so exact ties stay ties whatever the order of summation.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    centres = torch.zeros(len(sizes), dim)
    for centre in centres:
        centre[torch.randperm(dim, generator=g)[:4]] = torch.randint(2, (4,), generator=g) * 2.0 - 1
    x = centres[labels]
    for row in (torch.rand(labels.numel(), generator=g) < 0.7).nonzero().squeeze(1):
        nonzero = x[row].nonzero().squeeze(1)  # flip the sign of one of the 4 entries
        x[row, nonzero[torch.randint(4, (1,), generator=g)]] *= -1
    copies = torch.randint(labels.numel(), (duplicates,), generator=g)
    x, labels = torch.cat([x, x[copies]]), torch.cat([labels, labels[copies]])
    perm = torch.randperm(labels.numel(), generator=g)
    return x[perm], labels[perm]


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_self_search_equals_search_with_self_excluded(distance):
    from memvir_pl.metrics.exact_knn import TorchIndex

    x, _ = exact_clustered(3, [6] * 30)
    n, k = x.shape[0], 25
    # brute force in float64: full score matrix, own row removed, stable sort (ties by row)
    full = F.normalize(x.double(), dim=1) @ F.normalize(x.double(), dim=1).T
    if distance == "euclidean":
        full = -torch.cdist(x.double(), x.double())
    full.fill_diagonal_(-math.inf)
    expected = full.sort(dim=1, descending=True, stable=True).indices[:, :k]
    assert (full.gather(1, expected)[:, 1:] == full.gather(1, expected)[:, :-1]).sum() > n
    ref = knn(x, x, k, distance=distance, backend="torch", exclude=torch.arange(n))
    assert torch.equal(ref.indices, expected)
    # 2**9 bytes: 5-row blocks (42 of them); 2**12: 16-row blocks; default: one block
    for budget in [2**9, 2**12, 2**28]:
        index = TorchIndex(x, distance, budget)
        for depth in [1, k]:
            result = index.search_self(depth)
            assert torch.equal(result.indices, expected[:, :depth]), (budget, depth)
            assert torch.allclose(result.values, ref.values[:, :depth], atol=1e-6, rtol=0)


def test_self_search_computes_the_upper_triangle_and_uses_it_both_ways(monkeypatch):
    from memvir_pl.metrics import exact_knn

    x, _ = exact_clustered(4, [5] * 20, duplicates=0)  # 100 rows
    block_pairs = []
    add = exact_knn._RunningTopK.add
    monkeypatch.setattr(
        exact_knn._RunningTopK,
        "add",
        lambda self, scores, start: block_pairs.append(scores.shape) or add(self, scores, start),
    )
    _, rows = exact_knn.exact_self_topk(F.normalize(x, dim=1), 5, "cosine", block_rows=30)
    # blocks of 30, 30, 30, 10 rows: 4 + 6 products (I <= J), the 6 with I != J used both ways,
    # so that every (row, column) score is seen once
    assert len(block_pairs) == 4 + 2 * 6
    assert sum(a * b for a, b in block_pairs) == 100 * 100
    assert rows.shape == (100, 5)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_self_search_metrics_equal_blocked_search(distance, monkeypatch):
    from memvir_pl.metrics.exact_knn import TorchIndex

    x, labels = exact_clustered(5, [2, 3, 5, 8, 12] * 6)
    ref = brute_force(x, labels, (1, 2, 4)) if distance == "cosine" else None
    calls = []
    search_self = TorchIndex.search_self
    monkeypatch.setattr(
        TorchIndex, "search_self", lambda self, k: calls.append(k) or search_self(self, k)
    )
    fast = retrieval_metrics(x, labels, k=(1, 2, 4), distance=distance, backend="torch")
    tiny = retrieval_metrics(
        x, labels, k=(1, 2, 4), distance=distance, backend="torch", memory_budget_bytes=2**14
    )
    assert len(calls) == 1  # the tight budget used the R-sorted blocks
    assert fast == pytest.approx(tiny, abs=1e-12)
    if ref is not None:
        assert fast == pytest.approx(ref | {"num_skipped_queries": 0.0}, abs=1e-12)


def test_small_budget_searches_in_blocks_with_same_metrics():
    x, labels = clustered(11, class_sizes("sop", 11), dim=16)
    ref = retrieval_metrics(x, labels, backend="torch")
    index = build_index(x, backend="torch", memory_budget_bytes=4096)
    assert index._columns(x.shape[0], 11) < x.shape[0]  # the gallery is split too
    small = retrieval_metrics(x, labels, backend="torch", memory_budget_bytes=4096)
    assert small == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_searched_depth_is_max_k_or_r_not_the_gallery(backend, monkeypatch):
    from memvir_pl.metrics.exact_knn import ExactIndex, TorchIndex

    x, labels = clustered(8, [3] * 30 + [20], dim=8)  # R is 2 for most queries, 19 for one class
    depths = []
    faiss_depths = []
    search = ExactIndex.search
    monkeypatch.setattr(
        ExactIndex,
        "search",
        lambda self, query, k, exclude=None: depths.append(k) or search(self, query, k, exclude),
    )
    if backend == "faiss":
        import faiss

        flat_search = faiss.IndexFlatIP.search
        monkeypatch.setattr(
            faiss.IndexFlatIP,
            "search",
            lambda self, q, k, *a, **kw: (
                faiss_depths.append(k) or flat_search(self, q, k, *a, **kw)
            ),
        )
    if backend == "torch":  # one symmetric self-search of depth max(K, largest R)
        search_self = TorchIndex.search_self
        monkeypatch.setattr(
            TorchIndex,
            "search_self",
            lambda self, k: depths.append(k) or search_self(self, k),
        )
    retrieval_metrics(x, labels, k=(1, 4), backend=backend)
    assert depths == [19]  # max(K=4, largest R=19), not the gallery (109)
    depths.clear()
    faiss_depths.clear()
    # A tight budget (the (110, 19) self-search answer does not fit) splits the queries
    # (sorted by R) so that most search only max(K, R) = 4.
    retrieval_metrics(x, labels, k=(1, 4), backend=backend, memory_budget_bytes=64 * 4 * 90)
    assert sorted(set(depths)) == [4, 19]
    if backend == "faiss":  # + 1 for the query itself, + 1 to see ties at the k-th place
        assert sorted(set(faiss_depths)) == [6, 21]


def test_auto_backend_and_float64():
    assert resolve_backend("auto", torch.device("cpu")) == "faiss"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    x, labels = clustered(2, [5] * 8, dim=8)
    assert retrieval_metrics(x.double(), labels, backend="torch") == pytest.approx(
        retrieval_metrics(x, labels, backend="torch"), abs=1e-12
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_matches_cpu(backend):
    x, labels = clustered(6, class_sizes("sop", 6), dim=32)
    is_query = torch.arange(labels.numel()) % 4 == 0
    for split in (None, is_query):
        cpu = retrieval_metrics(x, labels, is_query=split, backend="torch")
        gpu = retrieval_metrics(x.cuda(), labels.cuda(), is_query=split, backend=backend)
        assert gpu == pytest.approx(cpu, abs=1e-6)
    result = knn(x.cuda(), x.cuda(), 5, backend=backend, exclude=torch.arange(labels.numel()))
    assert result.indices.device.type == "cuda"
    assert torch.equal(
        result.indices.cpu(), knn(x, x, 5, exclude=torch.arange(labels.numel())).indices
    )


# --------------------------------------------------------------------- NMI


def test_nmi_separated_clusters_and_matches_sklearn():
    from sklearn.metrics import normalized_mutual_info_score

    x, labels = clustered(0, [20] * 4, dim=8, spread=0.01)
    x = x + 10 * F.one_hot(labels, 8).float()  # far apart: k-means++ (sklearn) recovers the classes
    assert kmeans_nmi(x, labels, backend="sklearn") == pytest.approx(1.0)
    y, y_labels = clustered(1, [10] * 6, dim=8, spread=2.0)
    for backend in ("faiss", "sklearn"):
        clusters = kmeans_assignments(y, 6, backend=backend, seed=3)
        assert len(set(clusters.tolist())) > 1
        expected = normalized_mutual_info_score(y_labels.numpy(), clusters)
        assert kmeans_nmi(y, y_labels, backend=backend, seed=3) == pytest.approx(expected)
    out = retrieval_metrics(y, y_labels, k=(1,), nmi=True, seed=3)
    assert out["nmi"] == pytest.approx(kmeans_nmi(y, y_labels, seed=3))


# --------------------------------------------------------------------- the Metric


def test_metric_accumulates_batches_and_removes_duplicates_by_index():
    x, labels = clustered(4, class_sizes("skewed", 4), dim=8)
    n = labels.numel()
    metric = RetrievalMetrics(k=(1, 2, 4))
    order = torch.cat([torch.arange(n), torch.arange(7)])  # the first 7 rows twice (padding)
    for chunk in order.split(13):
        metric.update(x[chunk], labels[chunk], indexes=chunk)
    assert metric.compute() == pytest.approx(retrieval_metrics(x, labels, k=(1, 2, 4)), abs=1e-12)
    metric.reset()
    is_query = torch.arange(n) % 2 == 0
    for chunk in torch.arange(n).split(9):
        metric.update(x[chunk], labels[chunk], is_query=is_query[chunk])
    expected = retrieval_metrics(x, labels, k=(1, 2, 4), is_query=is_query)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_calling_the_metric_only_updates_even_for_tiny_batches():
    x, labels = clustered(4, class_sizes("skewed", 4), dim=8)
    called, updated = RetrievalMetrics(k=(1, 2, 4, 8)), RetrievalMetrics(k=(1, 2, 4, 8))
    for chunk in torch.arange(labels.numel()).split(1):  # batches of 1 item: no neighbours within a batch
        assert called(x[chunk], labels[chunk], indexes=chunk) is None
        updated.update(x[chunk], labels[chunk], indexes=chunk)
    assert called.update_count == labels.numel()
    assert called.compute() == updated.compute() == pytest.approx(retrieval_metrics(x, labels, k=(1, 2, 4, 8)))


def test_first_row_per_index():
    rows = first_row_per_index(torch.tensor([5, 2, 5, 9, 2, 0]))
    assert rows.tolist() == [5, 1, 0, 3]  # indexes 0, 2, 5, 9 first seen at rows 5, 1, 0, 3


def test_import_does_not_load_lightning_or_faiss():
    code = (
        "import sys, memvir_pl.metrics as m; "
        "bad = [k for k in ('pytorch_lightning', 'lightning', 'faiss', 'sklearn') if k in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    x, labels = clustered(0, [3, 3], dim=4)
    metric = RetrievalMetrics(k=(1,))
    with pytest.raises(ValueError, match="labels has 5 entries but embeddings have 6 rows"):
        metric.update(x, labels[:5])
    with pytest.raises(ValueError, match="must be 2-D"):
        metric.update(x[0], labels[:1])
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 6 rows"):
        metric.update(x.index_fill(0, torch.tensor([2]), math.nan), labels)
    with pytest.raises(ValueError, match="no data"):
        metric.compute()
    with pytest.raises(TypeError, match="is_query must be a bool tensor"):
        metric.update(x, labels, is_query=torch.ones(6))
    with pytest.raises(ValueError, match=r"k=8 exceeds the 5 gallery items"):
        retrieval_metrics(x, labels, k=(1, 8))
    with pytest.raises(ValueError, match=r"k=4 exceeds the 3 gallery items"):
        retrieval_metrics(x, labels, k=4, is_query=torch.arange(6) < 3)
    with pytest.raises(ValueError, match="marks no gallery items"):
        retrieval_metrics(x, labels, is_query=torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected 1 <= k <= 5"):
        knn(x, x, 6, exclude=torch.arange(6))
    with pytest.raises(ValueError, match="query has 3 dimensions but the gallery has 4"):
        knn(x[:, :3], x, 1)
    with pytest.raises(ValueError, match="distance must be one of"):
        RetrievalMetrics(distance="manhattan")
    with pytest.raises(ValueError, match="backend must be one of"):
        knn(x, x, 1, backend="annoy")
    with pytest.raises(ValueError, match="positive int"):
        RetrievalMetrics(k=(0, 1))
    half = RetrievalMetrics(k=(1,))
    half.update(x[:3], labels[:3], indexes=torch.arange(3))
    half.update(x[3:], labels[3:])
    with pytest.raises(ValueError, match="indexes was given for 3 of 6 rows"):
        half.compute()
