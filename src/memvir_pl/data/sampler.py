"""Class-balanced batch sampler (m images of each of batch_size/m classes), DDP-aware."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DistributedSampler


class _EpochCounter:
    """Holds the epoch; Lightning calls ``set_epoch`` on ``batch_sampler.sampler``."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class _ChunkUrn:
    """Every class's images, shuffled and cut into chunks of m (the last one filled up
    cyclically from the same class); chunks are drawn without replacement, and a fresh
    shuffle starts when the urn runs out."""

    def __init__(self, class_indices: list[np.ndarray], m: int, rng: np.random.Generator):
        self.class_indices = class_indices
        self.m = m
        self.rng = rng
        self.sizes = np.array([math.ceil(len(idx) / m) for idx in class_indices])
        self._fill()

    def _fill(self) -> None:
        self.chunks = [
            np.resize(self.rng.permutation(idx), (k, self.m))
            for idx, k in zip(self.class_indices, self.sizes, strict=True)
        ]
        self.left = self.sizes.copy()

    def _take(self, classes: np.ndarray) -> list[np.ndarray]:
        self.left[classes] -= 1
        return [self.chunks[c][self.left[c]] for c in classes]

    def _choose(self, count: int, exclude: np.ndarray | None = None) -> np.ndarray:
        weights = self.left.astype(np.float64)
        if exclude is not None:
            weights[exclude] = 0.0
        return self.rng.choice(len(weights), size=count, replace=False, p=weights / weights.sum())

    def draw(self, count: int) -> np.ndarray:
        """Indices of ``count`` chunks of distinct classes, classes drawn with probability
        proportional to their chunks left. Shape (count * m,)."""
        left_over = np.flatnonzero(self.left)
        if len(left_over) >= count:
            return np.concatenate(self._take(self._choose(count)))
        first = self._take(left_over)
        self._fill()
        return np.concatenate(first + self._take(self._choose(count - len(first), left_over)))


class ClassBalancedBatchSampler(BatchSampler):
    """Batches of ``batch_size // m_per_class`` distinct classes with ``m_per_class`` images each.

    An epoch draws every image at least once (classes whose size is not a multiple of m
    repeat some of their images to fill their last group), in ``ceil(K / P)`` batches, or
    ``floor(K / P)`` with ``drop_last``, where K = sum over classes of ceil(n_c / m) and
    P = batch_size // m. Every batch is full. The epoch's batches depend only on
    ``seed`` and the epoch (``set_epoch``); under DDP every rank computes the same list and
    takes every ``num_replicas``-th batch from ``rank`` on, the count rounded to a multiple of
    ``num_replicas`` (down with ``drop_last``, else up with further batches).

    Lightning may re-create this sampler with a ``DistributedSampler`` as ``sampler``: its
    ``num_replicas`` and ``rank`` are then used (its order is not), and it carries the epoch.

    Args:
        labels: (N,) class label of every item of the dataset.
        batch_size: items per batch on one process; a multiple of ``m_per_class``.
        m_per_class: images per class in a batch.
        seed: base seed; an epoch's order is a function of (seed, epoch).
        drop_last: round the number of batches down instead of up.
        num_replicas, rank: the DDP world size and this process's rank (default 1, 0).
        sampler: a DistributedSampler to take ``num_replicas``/``rank``/epoch from.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        m_per_class: int,
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: DistributedSampler | None = None,
    ) -> None:
        labels = np.asarray(labels).reshape(-1)
        if m_per_class < 1 or batch_size % m_per_class:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of m_per_class "
                f"({m_per_class}); change data.batch_size or data.m_per_class"
            )
        classes, inverse = np.unique(labels, return_inverse=True)
        self.classes_per_batch = batch_size // m_per_class
        if len(classes) < self.classes_per_batch:
            raise ValueError(
                f"a batch of {batch_size} with m_per_class={m_per_class} needs "
                f"{self.classes_per_batch} classes, but the data has {len(classes)}"
            )
        if isinstance(sampler, DistributedSampler):
            num_replicas, rank = sampler.num_replicas, sampler.rank
        self.num_replicas = 1 if num_replicas is None else num_replicas
        self.rank = 0 if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, num_replicas={self.num_replicas})")
        self.sampler = sampler if sampler is not None else _EpochCounter()
        self.batch_size = batch_size
        self.m_per_class = m_per_class
        self.seed = seed
        self.drop_last = drop_last
        order = np.argsort(inverse, kind="stable")
        self.class_indices = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        chunks = sum(math.ceil(len(idx) / m_per_class) for idx in self.class_indices)
        rounding = math.floor if drop_last else math.ceil
        self._per_rank = rounding(rounding(chunks / self.classes_per_batch) / self.num_replicas)
        if self._per_rank == 0:
            raise ValueError(
                f"{len(labels)} items make no full batch of {batch_size} on each of "
                f"{self.num_replicas} processes; use drop_last=False or a smaller batch"
            )

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self._per_rank

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of ``epoch`` (rank r gets items r, r + num_replicas, ...)."""
        rng = np.random.default_rng([self.seed, epoch])
        urn = _ChunkUrn(self.class_indices, self.m_per_class, rng)
        return [urn.draw(self.classes_per_batch) for _ in range(self._per_rank * self.num_replicas)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.epoch_batches(self.epoch)[self.rank :: self.num_replicas]:
            yield batch.tolist()
