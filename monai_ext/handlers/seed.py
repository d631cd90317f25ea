"""Per-epoch reseeding, so that a run resumed from an epoch checkpoint draws exactly what an uninterrupted run draws.

MONAI seeds a run once (``set_determinism`` in ``initialize``) and its random transforms once (when the
``DataLoader`` is built). A run resumed at epoch ``e`` from a checkpoint therefore starts from the random state of a
fresh run, not from the state the interrupted run had at epoch ``e``: shuffling, random crops, augmentation and
dropout differ, and so do the final weights. Saving and restoring every random state (global Python/NumPy/torch
generators, each transform's own ``RandomState``, the sampler's generator, worker seeds) is fragile. Instead,
:class:`EpochSeedHandler` makes every epoch's randomness a pure function of ``(seed, epoch, rank)``: at the start of
each epoch it reseeds the global generators and the given transforms. Resuming then only needs the model, optimiser,
scheduler and engine state that MONAI's ``CheckpointLoader`` restores.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from monai.transforms import Randomizable
from monai.utils import ensure_tuple, min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["EpochSeedHandler", "epoch_seed"]

_MAX_SEED = 2**32 - 1


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """A 32-bit seed derived from ``(seed, epoch, rank, stream)`` with NumPy's ``SeedSequence`` (well mixed: nearby
    tuples give unrelated seeds).

    Example::

        >>> epoch_seed(0, 1) == epoch_seed(0, 1), epoch_seed(0, 1) == epoch_seed(0, 2)
        (True, False)
    """
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank), int(stream)]).generate_state(1)[0])


class EpochSeedHandler:
    """Reseed the global random generators and the given transforms at the start of every epoch.

    At ``EPOCH_STARTED`` of epoch ``e`` (1-based, ignite's ``engine.state.epoch``) on process ``rank``:

    - Python's ``random``, NumPy's global generator and torch's CPU (and CUDA) generators are seeded with
      :func:`epoch_seed` ``(seed, e, rank, 0)``; the ``DataLoader`` shuffle order, worker seeds and dropout draw from
      these;
    - every transform in ``transforms`` (e.g. the training ``Compose``) gets ``set_random_state(seed=...)`` from
      :func:`epoch_seed` ``(seed, e, rank, 1)``; a ``Compose`` passes distinct seeds on to its random members;
    - every sampler in ``samplers`` (e.g. a batch sampler that draws its own permutation per epoch, such as
      :class:`~monai_ext.data.PositiveBatchSampler`) gets ``set_epoch(e - 1)``. (MONAI's workflow already sets the
      epoch of a ``DistributedSampler`` passed as the loader's ``sampler``.)

    Attach it before any handler that draws random numbers at ``EPOCH_STARTED``. With ``num_workers > 0`` use
    non-persistent workers (the default), so that each epoch's workers are seeded from the reseeded generator.

    Args:
        seed: the run's seed.
        transforms: random transforms to reseed (typically ``@train#preprocessing``); ``None`` for none.
        rank: process rank; ``None`` reads it from ``torch.distributed`` (0 when not distributed), so that data
            parallel processes draw different augmentations.
        samplers: objects with ``set_epoch(int)`` to set at every epoch (0-based epoch).

    Example (bundle config)::

        {"_target_": "monai_ext.handlers.EpochSeedHandler", "seed": "@seed", "transforms": "@train#preprocessing"}
    """

    def __init__(self, seed: int, transforms: Randomizable | Sequence[Randomizable] | None = None,
                 rank: int | None = None, samplers: Any = None) -> None:
        self.seed = int(seed)
        self.transforms = [t for t in ensure_tuple(transforms) if t is not None]
        bad = [type(t).__name__ for t in self.transforms if not isinstance(t, Randomizable)]
        if bad:
            raise TypeError(f"transforms must be MONAI Randomizable transforms (e.g. a Compose), got {bad}.")
        self.rank = rank
        # a sampler is iterable itself: only a list/tuple is a collection of samplers
        self.samplers = list(samplers) if isinstance(samplers, (list, tuple)) else [samplers]
        self.samplers = [x for x in self.samplers if x is not None]
        bad = [type(x).__name__ for x in self.samplers if not callable(getattr(x, "set_epoch", None))]
        if bad:
            raise TypeError(f"samplers must have a set_epoch(int) method, got {bad}.")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def _rank(self) -> int:
        if self.rank is not None:
            return int(self.rank)
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def __call__(self, engine: Engine) -> None:
        self.reseed(int(engine.state.epoch))

    def reseed(self, epoch: int) -> None:
        """Seed everything for ``epoch`` (what the handler does at the start of that epoch)."""
        rank = self._rank()
        s = epoch_seed(self.seed, epoch, rank, 0)
        random.seed(s)
        np.random.seed(s)  # noqa: NPY002 - the global generator is what DataLoader workers and MONAI draw from
        torch.manual_seed(s)  # also seeds every CUDA device
        t = epoch_seed(self.seed, epoch, rank, 1)
        for k, transform in enumerate(self.transforms):
            transform.set_random_state(seed=(t + k) % _MAX_SEED)
        for sampler in self.samplers:
            sampler.set_epoch(epoch - 1)
