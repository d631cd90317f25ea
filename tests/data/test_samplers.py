"""PositiveBatchSampler: at least k labeled positives per batch, coverage, seeding, sharding, DataLoader use."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from monai_ext.data import PositiveBatchSampler

CASES = [
    # n_pos, n_unl, batch_size, k, drop_last
    (100, 1700, 32, 1, False),
    (100, 1700, 32, 4, False),  # enough positives: each used once, >= 4 per batch
    (10, 300, 16, 2, False),  # too few positives: over-sampled to exactly 2 per batch
    (10, 300, 16, 2, True),
    (50, 37, 8, 2, False),
    (50, 37, 8, 2, True),
    (3, 5, 3, 1, False),
    (95, 200, 33, 4, True),
]


@pytest.mark.parametrize("n_pos, n_unl, bs, k, drop_last", CASES)
@pytest.mark.parametrize("kind", ["list", "numpy", "torch"])
def test_every_batch_has_k_positives_and_sizes(n_pos, n_unl, bs, k, drop_last, kind):
    labels = [1] * n_pos + [0] * n_unl
    perm = np.random.default_rng(0).permutation(len(labels))
    labels = [labels[i] for i in perm]
    arg = {"list": labels, "numpy": np.asarray(labels), "torch": torch.tensor(labels)}[kind]
    sampler = PositiveBatchSampler(arg, bs, min_positives=k, drop_last=drop_last, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    counts = Counter(i for b in batches for i in b)
    for b in batches:
        assert sum(labels[i] for i in b) >= k
        assert len(b) == bs if drop_last else len(b) <= bs
    if not drop_last:
        assert set(counts) == set(range(len(labels)))  # every sample at least once per epoch
        sizes = [len(b) for b in batches]
        assert max(sizes) - min(sizes) <= 1
        if n_pos >= k * len(batches):
            assert max(counts.values()) == 1  # nothing repeated when positives suffice
    unl = [i for i in counts if labels[i] == 0]
    assert max(counts[i] for i in unl) == 1  # unlabeled samples are never repeated


def test_seeded_reproducible_and_epochs_differ():
    labels = [1] * 20 + [0] * 200
    a = PositiveBatchSampler(labels, 16, 2, seed=3)
    b = PositiveBatchSampler(labels, 16, 2, seed=3)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    assert list(a) != first_a  # the epoch advances at each iteration
    a.set_epoch(0)
    assert list(a) == first_a
    assert list(PositiveBatchSampler(labels, 16, 2, seed=4)) != first_a
    ordered = list(PositiveBatchSampler(labels, 16, 2, shuffle=False))
    assert ordered == list(PositiveBatchSampler(labels, 16, 2, shuffle=False, seed=9))


@pytest.mark.parametrize("world", [2, 3])
def test_rank_sharding_covers_the_epoch(world):
    labels = [1] * 30 + [0] * 170
    full = list(PositiveBatchSampler(labels, 16, 2, seed=5))
    shards = [list(PositiveBatchSampler(labels, 16, 2, seed=5, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank (DDP needs it)
    assert all(len(s) == len(PositiveBatchSampler(labels, 16, 2, num_replicas=world, rank=0)) for s in shards)
    seen = [b for s in shards for b in s]
    assert all(b in seen for b in full)
    for s in shards:
        assert all(sum(labels[i] for i in b) >= 2 for b in s)


def test_works_as_dataloader_batch_sampler():
    labels = torch.tensor([1] * 12 + [0] * 100)
    ds = TensorDataset(torch.arange(112), labels)
    loader = DataLoader(ds, batch_sampler=PositiveBatchSampler(labels, 10, min_positives=3, seed=0))
    n = 0
    for idx, lab in loader:
        assert int(lab.sum()) >= 3 and torch.equal(labels[idx], lab)
        n += 1
    assert n == len(loader.batch_sampler)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": [0, 0, 0], "batch_size": 2}, "at least one labeled positive"),
        ({"labels": [1, 1, 1], "batch_size": 2}, "at least one unlabeled"),
        ({"labels": [1, 0, 0], "batch_size": 2, "min_positives": 0}, "min_positives"),
        ({"labels": [1, 0, 0], "batch_size": 2, "min_positives": 2}, "batch_size must be larger"),
        ({"labels": [1, 0, 0], "batch_size": 2, "num_replicas": 2, "rank": 2}, "rank"),
        ({"labels": [1, 0, 0], "batch_size": 8, "drop_last": True}, "drop_last=True leaves no complete batch"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PositiveBatchSampler(**kwargs)
