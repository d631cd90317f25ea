"""Batch samplers for positive-unlabeled training."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PositiveBatchSampler"]


def _even_split(total: int, parts: int) -> np.ndarray:
    """``parts`` non-negative integers summing to ``total`` that differ by at most one."""
    base, extra = divmod(total, parts)
    return np.array([base + (1 if i < extra else 0) for i in range(parts)], dtype=np.int64)


class PositiveBatchSampler(Sampler[list[int]]):
    """Batches that each hold at least ``min_positives`` labeled positives (for PU losses such as AUC-nnPU).

    PU risks need labeled positives *and* unlabeled samples in every batch; with 100 positives among 1800
    samples, a plain random batch of 32 often has none or one. Each epoch this sampler shuffles the positives and
    the unlabeled samples separately (seeded), spreads the positives evenly over the batches, and fills the batches
    with unlabeled samples:

    - When there are at least ``min_positives * n_batches`` positives, every sample is used exactly once per
      epoch and each batch gets ``floor`` or ``ceil`` of ``n_pos / n_batches`` positives.
    - Otherwise positives are drawn again (cycling through reshuffled copies) so that every batch gets exactly
      ``min_positives``: positives are over-sampled in that epoch (this changes the effective class balance of
      what the network sees; PU risks use the prior, not the batch ratio, so they stay unbiased).

    Without ``drop_last`` the number of batches is ``ceil(T / batch_size)`` with ``T`` the number of samples drawn
    (after over-sampling) and batch sizes differ by at most one; with ``drop_last`` it is ``floor(T / batch_size)``,
    every batch has ``batch_size`` samples and the left-over unlabeled samples are skipped this epoch.

    Use it as ``DataLoader(dataset, batch_sampler=PositiveBatchSampler(labels, 32, min_positives=4))``. For
    distributed training pass ``num_replicas`` and ``rank``: every rank builds the same global list of batches from
    the same seed and takes every ``num_replicas``-th batch (the list is padded by repeating batches so that every
    rank gets the same number). The epoch advances automatically at each ``iter()``; call ``set_epoch`` to set it
    explicitly (as with ``DistributedSampler``).

    Args:
        labels: per-sample labels, ``1`` (or ``True``) for a labeled positive, anything else unlabeled.
        batch_size: samples per batch (at least ``min_positives + 1`` so that a batch can hold an unlabeled sample).
        min_positives: ``k >= 1``, labeled positives per batch at least.
        shuffle: shuffle each epoch (``False``: positives and unlabeled in index order, still spread evenly).
        drop_last: drop the incomplete last batch (see above).
        seed: base seed; epoch ``e`` uses ``seed + e``.
        num_replicas: number of distributed processes (default 1).
        rank: this process's rank in ``0 .. num_replicas - 1`` (default 0).

    Raises:
        ValueError: when there is no labeled positive or no unlabeled sample, or on bad sizes / ranks.

    Example::

        >>> labels = [1] * 10 + [0] * 90
        >>> sampler = PositiveBatchSampler(labels, batch_size=16, min_positives=2, seed=0)
        >>> all(sum(labels[i] for i in b) >= 2 for b in sampler)
        True
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        min_positives: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        lab = lab.reshape(-1)
        self.positives = np.flatnonzero(lab == 1)
        self.unlabeled = np.flatnonzero(lab != 1)
        if self.positives.size == 0:
            raise ValueError("labels must contain at least one labeled positive (value 1).")
        if self.unlabeled.size == 0:
            raise ValueError("labels must contain at least one unlabeled sample (a value other than 1).")
        if int(min_positives) < 1:
            raise ValueError(f"min_positives must be >= 1, got {min_positives!r}.")
        if int(batch_size) <= int(min_positives):
            raise ValueError(f"batch_size must be larger than min_positives={min_positives}, got {batch_size!r}.")
        num_replicas = 1 if num_replicas is None else int(num_replicas)
        rank = 0 if rank is None else int(rank)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be in 0 .. num_replicas - 1 with num_replicas >= 1, got {rank}, {num_replicas}."
            )
        self.batch_size = int(batch_size)
        self.min_positives = int(min_positives)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._plan()  # raises early when drop_last leaves no valid batch

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` at the next ``iter()`` (then continue from there)."""
        self.epoch = int(epoch)

    def _plan(self) -> tuple[np.ndarray, np.ndarray]:
        """Per global batch: (labeled positives, batch size); the same every epoch."""
        n_pos, n_unl, bs, k = self.positives.size, self.unlabeled.size, self.batch_size, self.min_positives
        if self.drop_last:
            n_b = (n_pos + n_unl) // bs
            if n_pos < k * n_b:  # over-sample: exactly k positives and bs - k unlabeled per batch
                n_b = min(n_b, n_unl // (bs - k))
                pos_counts = np.full(n_b, k, dtype=np.int64)
            else:  # every positive once, at most bs - 1 per batch so that each batch keeps an unlabeled sample
                pos_counts = np.minimum(_even_split(n_pos, max(n_b, 1)), bs - 1)[:n_b]
                if int((bs - pos_counts).sum()) > n_unl:
                    n_b = 0
            if n_b == 0:
                raise ValueError(
                    f"drop_last=True leaves no complete batch of {bs} holding {k} positives and an unlabeled sample "
                    f"({n_pos} positives, {n_unl} unlabeled)."
                )
            return pos_counts, np.full(n_b, bs, dtype=np.int64)
        n_b = math.ceil((n_pos + n_unl) / bs)
        if n_pos >= k * n_b:
            return _even_split(n_pos, n_b), _even_split(n_pos + n_unl, n_b)
        # over-sample positives: exactly k per batch; enough batches that k + (unlabeled share) fits in bs
        n_b = max(n_b, math.ceil(n_unl / (bs - k)))
        return np.full(n_b, k, dtype=np.int64), _even_split(k * n_b + n_unl, n_b)

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + epoch)
        pos_counts, sizes = self._plan()
        n_pos_drawn = int(pos_counts.sum())
        pos_stream: list[np.ndarray] = []
        got = 0
        while got < n_pos_drawn:
            p = rng.permutation(self.positives) if self.shuffle else self.positives
            pos_stream.append(p)
            got += p.size
        pos = np.concatenate(pos_stream)[:n_pos_drawn]
        unl = rng.permutation(self.unlabeled) if self.shuffle else self.unlabeled
        batches: list[list[int]] = []
        ip = iu = 0
        for c, s in zip(pos_counts, sizes, strict=True):
            u = int(s - c)
            b = np.concatenate([pos[ip : ip + c], unl[iu : iu + u]])
            ip, iu = ip + int(c), iu + u
            if self.shuffle:
                b = rng.permutation(b)
            batches.append([int(i) for i in b])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._global_batches(self.epoch)
        self.epoch += 1
        if self.num_replicas > 1:
            per_rank = math.ceil(len(batches) / self.num_replicas)
            batches = (batches * math.ceil(per_rank * self.num_replicas / len(batches)))[: per_rank * self.num_replicas]
            batches = batches[self.rank :: self.num_replicas]
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self._plan()[0]) / self.num_replicas)
