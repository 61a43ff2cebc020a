"""NMI of k-means clusters against the labels (the clustering metric of DML papers)."""

from __future__ import annotations

import importlib
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from memvir_pl.metrics.exact_knn import Distance, faiss_available

ClusteringBackend = Literal["auto", "faiss", "sklearn"]


def kmeans_assignments(
    embeddings: Tensor,
    num_clusters: int,
    *,
    distance: Distance = "cosine",
    backend: ClusteringBackend = "auto",
    niter: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Cluster id (N,) of each row of ``embeddings`` (N, D) after k-means with ``num_clusters``.

    Rows are L2-normalised first for ``"cosine"``. ``"auto"`` uses faiss when
    installed (as pytorch-metric-learning does), else scikit-learn.
    """
    if backend not in ("auto", "faiss", "sklearn"):
        raise ValueError(
            f"clustering backend must be 'auto', 'faiss' or 'sklearn', got {backend!r}."
        )
    x = embeddings.detach().to(torch.float32)
    x = (F.normalize(x, dim=1) if distance == "cosine" else x).cpu().contiguous().numpy()
    if backend == "faiss" or (backend == "auto" and faiss_available()):
        faiss = importlib.import_module("faiss")
        kmeans = faiss.Kmeans(x.shape[1], num_clusters, niter=niter, seed=seed, verbose=False)
        kmeans.train(x)
        return kmeans.index.search(x, 1)[1][:, 0]
    cluster = importlib.import_module("sklearn.cluster")
    return cluster.KMeans(num_clusters, n_init=1, max_iter=niter, random_state=seed).fit_predict(x)


def kmeans_nmi(
    embeddings: Tensor,
    labels: Tensor,
    *,
    distance: Distance = "cosine",
    backend: ClusteringBackend = "auto",
    seed: int = 0,
) -> float:
    """NMI in [0, 1] between ``labels`` (N,) and k-means clusters of ``embeddings`` (N, D).

    k-means uses as many clusters as there are distinct labels.
    """
    metrics = importlib.import_module("sklearn.metrics")
    num_clusters = int(labels.unique().numel())
    clusters = kmeans_assignments(
        embeddings, num_clusters, distance=distance, backend=backend, seed=seed
    )
    return float(metrics.normalized_mutual_info_score(labels.cpu().numpy(), clusters))
