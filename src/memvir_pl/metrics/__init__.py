"""Retrieval metrics (Recall@K, R-Precision, MAP@R, NMI) and exact, memory-bounded kNN.

Importing this package needs torch and torchmetrics only: faiss is imported
when a faiss backend is used, scikit-learn when NMI falls back to it.
"""

from memvir_pl.metrics.clustering import kmeans_nmi
from memvir_pl.metrics.knn import (
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
from memvir_pl.metrics.metric import RetrievalMetrics
from memvir_pl.metrics.retrieval import metric_names, retrieval_metrics

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
