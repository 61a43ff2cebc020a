"""Retrieval metrics (Recall@K, R-Precision, MAP@R, NMI) and exact, memory-bounded kNN.

Importing this package needs torch only: torchmetrics is imported on first use
of :class:`RetrievalMetrics`, faiss when a faiss backend is used, scikit-learn
when NMI is computed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from memvir_pl.metrics.clustering import kmeans_nmi
from memvir_pl.metrics.exact_knn import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    ExactIndex,
    FaissIndex,
    KNNResult,
    TorchIndex,
    build_index,
    faiss_available,
    knn,
    resolve_backend,
)
from memvir_pl.metrics.retrieval import metric_names, retrieval_metrics

if TYPE_CHECKING:  # pragma: no cover
    from memvir_pl.metrics.metric import RetrievalMetrics

__all__ = [
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "ExactIndex",
    "FaissIndex",
    "KNNResult",
    "RetrievalMetrics",
    "TorchIndex",
    "build_index",
    "faiss_available",
    "kmeans_nmi",
    "knn",
    "metric_names",
    "resolve_backend",
    "retrieval_metrics",
]


def __getattr__(name: str) -> Any:
    if name == "RetrievalMetrics":
        return importlib.import_module("memvir_pl.metrics.metric").RetrievalMetrics
    raise AttributeError(f"module 'memvir_pl.metrics' has no attribute {name!r}")
