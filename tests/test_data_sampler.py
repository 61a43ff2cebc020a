"""ClassBalancedBatchSampler: m per class, full batches, coverage, determinism, DDP shards."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from memvir_pl.data import ClassBalancedBatchSampler

M, BATCH = 3, 12


def _labels(seed: int = 0) -> np.ndarray:
    """30 classes of 1..9 images each, shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(30), rng.integers(1, 10, size=30))
    return rng.permutation(labels)


@pytest.mark.parametrize("drop_last", [True, False])
def test_batches_hold_m_images_of_distinct_classes(drop_last):
    labels = _labels()
    sampler = ClassBalancedBatchSampler(labels, BATCH, M, seed=1, drop_last=drop_last)
    batches = list(sampler)
    chunks = sum(math.ceil(n / M) for n in np.bincount(labels))
    rounding = math.floor if drop_last else math.ceil
    assert len(batches) == len(sampler) == rounding(chunks / (BATCH // M))
    for batch in batches:
        assert len(batch) == BATCH
        groups = [batch[i : i + M] for i in range(0, BATCH, M)]
        classes = [set(labels[g].tolist()) for g in groups]
        assert all(len(c) == 1 for c in classes)  # each group of m is one class
        assert len({c.pop() for c in classes}) == BATCH // M  # distinct classes
        for group in groups:  # no repeat inside a group unless the class is smaller than m
            n_class = np.sum(labels == labels[group[0]])
            assert len(set(group)) == min(M, n_class)


def test_epoch_without_drop_last_covers_every_image():
    labels = _labels(3)
    sampler = ClassBalancedBatchSampler(labels, BATCH, M, seed=0, drop_last=False)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert {i for batch in sampler for i in batch} == set(range(len(labels)))


def test_order_is_a_function_of_seed_and_epoch():
    labels = _labels()
    a = ClassBalancedBatchSampler(labels, BATCH, M, seed=7)
    b = ClassBalancedBatchSampler(labels, BATCH, M, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again replays the epoch
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(a) != list(ClassBalancedBatchSampler(labels, BATCH, M, seed=8, drop_last=True))


def test_rank_shards_are_the_interleaved_single_process_epoch():
    labels = _labels(5)
    single = ClassBalancedBatchSampler(labels, BATCH, M, seed=4, drop_last=True)
    ranks = [
        ClassBalancedBatchSampler(labels, BATCH, M, seed=4, num_replicas=2, rank=r)
        for r in range(2)
    ]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for sampler in ranks:
            sampler.set_epoch(epoch)
        shards = [list(sampler) for sampler in ranks]
        assert len(shards[0]) == len(shards[1]) == len(single) // 2
        reference = list(single)[: 2 * len(shards[0])]
        assert shards[0] == reference[0::2] and shards[1] == reference[1::2]


def test_two_ranks_partition_the_epoch_when_sizes_divide():
    labels = np.repeat(np.arange(16), 4)  # 16 chunks of m=4, 8 batches of 2 classes
    ranks = [
        ClassBalancedBatchSampler(labels, 8, 4, seed=0, num_replicas=2, rank=r) for r in range(2)
    ]
    seen = [Counter(i for batch in sampler for i in batch) for sampler in ranks]
    assert set(seen[0]).isdisjoint(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(64))
    assert all(count == 1 for counter in seen for count in counter.values())


def test_injected_distributed_sampler_sets_rank_and_carries_the_epoch():
    labels = _labels()
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(labels))
    injected = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    sampler = ClassBalancedBatchSampler(labels, BATCH, M, seed=4, sampler=injected)
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    injected.set_epoch(5)  # what Lightning does to dataloader.batch_sampler.sampler
    reference = ClassBalancedBatchSampler(labels, BATCH, M, seed=4, num_replicas=2, rank=1)
    reference.set_epoch(5)
    assert sampler.epoch == 5 and list(sampler) == list(reference)


def test_invalid_configurations():
    labels = _labels()
    with pytest.raises(ValueError, match="multiple of m_per_class"):
        ClassBalancedBatchSampler(labels, 10, 3)
    with pytest.raises(ValueError, match="needs 40 classes"):
        ClassBalancedBatchSampler(labels, 80, 2)
    with pytest.raises(ValueError, match="rank 2"):
        ClassBalancedBatchSampler(labels, BATCH, M, num_replicas=2, rank=2)
