"""Training batch samplers: order a function of (seed, epoch), DDP-aware, resumable mid-epoch.

Every batch is a :class:`SeededBatch`: the list of item indices plus a seed of its own, from
which the datasets draw the batch's augmentation. A batch's content then depends only on
(seed, epoch, position), never on the global RNG, on worker processes or on how far the
DataLoader prefetched: a run resumed at any batch sees exactly the batches an
uninterrupted run sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import BatchSampler, DistributedSampler

if TYPE_CHECKING:
    import pytorch_lightning as pl


class SeededBatch(list):
    """A batch of dataset indices (a plain ``list``) with ``seed``, the seed of its augmentation."""

    def __init__(self, indices: Sequence[int], seed: int) -> None:
        super().__init__(indices)
        self.seed = seed


def batch_generator(indices: Sequence[int]) -> torch.Generator | None:
    """A CPU generator seeded with the batch's seed (``None`` for a batch without one)."""
    seed = getattr(indices, "seed", None)
    return None if seed is None else torch.Generator().manual_seed(int(seed))


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


class EpochBatchSampler(BatchSampler):
    """Base of the training batch samplers: full batches that depend only on ``seed`` and the epoch.

    A subclass gives ``_num_batches()`` (batches of one process-less epoch before rounding) and
    ``_draw(rng, count)`` (``count`` batches of an epoch from the epoch's generator). Under DDP every
    rank computes the same list and takes every ``num_replicas``-th batch from ``rank`` on, the
    count rounded to a multiple of ``num_replicas`` (down with ``drop_last``, else up with further
    batches). Every batch is a :class:`SeededBatch`.

    Lightning may re-create the sampler with a ``DistributedSampler`` as ``sampler``: its
    ``num_replicas`` and ``rank`` are then used (its order is not), and it carries the epoch.

    Args:
        batch_size: items per batch on one process.
        seed: base seed; an epoch's batches and their seeds are a function of (seed, epoch).
        drop_last: round the number of batches down instead of up.
        num_replicas, rank: the DDP world size and this process's rank (default 1, 0).
        sampler: a DistributedSampler to take ``num_replicas``/``rank``/epoch from.
        resume: ``{"epoch": e, "batches_done": k[, "num_replicas": W]}``: the first iteration of
            epoch ``e`` skips this process's first ``k`` batches (a run resumed mid-epoch); ``None``
            skips nothing. A position saved by ``W`` processes is refused on another count (its
            per-process count would repeat or skip batches of the global order).
    """

    def __init__(
        self,
        batch_size: int,
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: DistributedSampler | None = None,
        resume: Mapping[str, int] | None = None,
    ) -> None:
        if isinstance(sampler, DistributedSampler):
            num_replicas, rank = sampler.num_replicas, sampler.rank
        self.num_replicas = 1 if num_replicas is None else num_replicas
        self.rank = 0 if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, num_replicas={self.num_replicas})")
        self.sampler = sampler if sampler is not None else _EpochCounter()
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.resume = dict(resume) if resume else None
        check_resume_world(self.resume, self.num_replicas)
        rounding = math.floor if drop_last else math.ceil
        self._per_rank = rounding(rounding(self._num_batches()) / self.num_replicas)
        if self._per_rank == 0:
            raise ValueError(
                f"the training split makes no full batch of {batch_size} on each of "
                f"{self.num_replicas} processes; use drop_last=False or a smaller batch"
            )

    def _num_batches(self) -> float:
        raise NotImplementedError

    def _draw(self, rng: np.random.Generator, count: int) -> list[np.ndarray]:
        raise NotImplementedError

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches of a whole epoch on this process (also when resuming mid-epoch)."""
        return self._per_rank

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of ``epoch`` (rank r gets items r, r + num_replicas, ...)."""
        return self._draw(np.random.default_rng([self.seed, epoch]), self._per_rank * self.num_replicas)

    def batch_seeds(self, epoch: int) -> np.ndarray:
        """The augmentation seeds of all ranks' batches of ``epoch``, shape (batches,)."""
        rng = np.random.default_rng([self.seed, epoch, 1])
        return rng.integers(0, 2**63 - 1, size=self._per_rank * self.num_replicas)

    def __iter__(self) -> Iterator[SeededBatch]:
        epoch = self.epoch
        skip = 0
        if self.resume is not None and self.resume["epoch"] == epoch:
            skip = int(self.resume["batches_done"])
            self.resume = None  # only the first iteration of the resumed epoch is shortened
        mine = range(self.rank, self._per_rank * self.num_replicas, self.num_replicas)[skip:]
        batches, seeds = self.epoch_batches(epoch), self.batch_seeds(epoch)
        for j in mine:
            yield SeededBatch(batches[j].tolist(), int(seeds[j]))


def train_position(trainer: pl.Trainer) -> dict[str, int] | None:
    """Where the training epoch in progress stands, or ``None`` between epochs::

        {"epoch": e, "batches_done": k, "num_replicas": W, "global_batches_done": k * W}

    ``k``: this process's batches of epoch ``e`` (counted from 0) that are trained, the loop's
    count of batches fetched for training (the count Lightning assumes the train loader skips
    when it restarts mid-epoch); every one of the ``W`` processes has trained as many (they stop
    after the same step), so the epoch's first ``k * W`` batches are done.
    """
    fit_loop = trainer.fit_loop
    epochs = fit_loop.epoch_progress.current
    if epochs.started <= epochs.processed:  # no epoch in progress (before it, or its batches are all done)
        return None
    done, world = int(fit_loop.epoch_loop.batch_progress.current.ready), int(trainer.world_size)
    return {"epoch": int(epochs.processed), "batches_done": done, "num_replicas": world,
            "global_batches_done": done * world}


def check_resume_world(resume: Mapping[str, int] | None, num_replicas: int) -> None:
    """Raise ``ValueError`` when a mid-epoch position saved by ``resume["num_replicas"]`` processes
    is resumed on ``num_replicas`` (a position without the count is taken as this one's)."""
    saved = None if resume is None else resume.get("num_replicas")
    if saved is None or int(saved) == num_replicas:
        return
    raise ValueError(
        f"the checkpoint was written in the middle of epoch {resume['epoch']} by {saved} training process(es) "
        f"({resume.get('global_batches_done', '?')} of the epoch's batches done), and this run has {num_replicas}: "
        f"the batches of an epoch are dealt out by process count, so resuming mid-epoch on another count would "
        f"repeat or skip batches. Resume with {saved} process(es) (trainer.devices x trainer.num_nodes); the "
        f"last.ckpt written at the end of that epoch can then be resumed on any count."
    )


class ClassBalancedBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size // m_per_class`` distinct classes with ``m_per_class`` images each.

    An epoch draws every image at least once (classes whose size is not a multiple of m
    repeat some of their images to fill their last group), in ``ceil(K / P)`` batches, or
    ``floor(K / P)`` with ``drop_last``, where K = sum over classes of ceil(n_c / m) and
    P = batch_size // m. DDP, seeds and resuming: see :class:`EpochBatchSampler`.

    Args:
        labels: (N,) class label of every item of the dataset.
        batch_size: items per batch on one process; a multiple of ``m_per_class``.
        m_per_class: images per class in a batch.
        seed, drop_last, num_replicas, rank, sampler, resume: see :class:`EpochBatchSampler`.
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
        resume: Mapping[str, int] | None = None,
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
        self.m_per_class = m_per_class
        order = np.argsort(inverse, kind="stable")
        self.class_indices = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        super().__init__(batch_size, seed, drop_last, num_replicas, rank, sampler, resume)

    def _num_batches(self) -> float:
        chunks = sum(math.ceil(len(idx) / self.m_per_class) for idx in self.class_indices)
        return chunks / self.classes_per_batch

    def _draw(self, rng: np.random.Generator, count: int) -> list[np.ndarray]:
        urn = _ChunkUrn(self.class_indices, self.m_per_class, rng)
        return [urn.draw(self.classes_per_batch) for _ in range(count)]


class ShuffledBatchSampler(EpochBatchSampler):
    """Plain shuffling: an epoch is a permutation of the N items cut into batches.

    ``floor(N / B)`` batches with ``drop_last``, else ``ceil(N / B)`` full batches (the last
    one, and DDP's rounding, filled up cyclically from the start of the permutation).
    DDP, seeds and resuming: see :class:`EpochBatchSampler`.

    Args:
        num_items: N, the dataset's length.
        batch_size, seed, drop_last, num_replicas, rank, sampler, resume: see :class:`EpochBatchSampler`.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: DistributedSampler | None = None,
        resume: Mapping[str, int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_items = num_items
        super().__init__(batch_size, seed, drop_last, num_replicas, rank, sampler, resume)

    def _num_batches(self) -> float:
        return self.num_items / self.batch_size

    def _draw(self, rng: np.random.Generator, count: int) -> list[np.ndarray]:
        order = np.resize(rng.permutation(self.num_items), (count, self.batch_size))
        return list(order)
