"""Pieces of the embryo bundle's ``train.json``: the fold split, the frame subset augmentation and the train-time
network wrapper (the training step itself is :class:`monai_ext.engines.FrameLevelPUIteration`)."""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_ext.data import load_datalist
from monai_ext.networks.nets import TimeLapseNet

from .data import sequence_folds

__all__ = ["FrameOutputs", "RandFrameSubsetd", "datalist_info", "fold_items", "labels_of"]


def fold_items(datalist: str | os.PathLike, fold: int, num_folds: int = 5, val_fraction: float = 0.2,
               seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The ``train`` / ``val`` / ``test`` items of one cross-validation fold of the datalist's ``training`` section.

    Folds are stratified over sequences (:func:`~monai_ext.apps.embryo_pu.data.sequence_folds`, seeded), so no frame
    of a test sequence is seen in training; ``val`` chooses the decision threshold (and the best epoch).

    Raises:
        ValueError: for a ``label`` that is not 0/1 (naming the item) or a fold outside ``0 .. num_folds - 1``.
    """
    items = load_datalist(datalist, "training", ("image", "label"), path_keys=("image",))
    for i, it in enumerate(items):
        if it["label"] not in (0, 1, True, False):
            raise ValueError(f"datalist '{datalist}' item {i} key 'label' must be 0 or 1, got {it['label']!r}.")
        it["label"] = int(it["label"])
    if not 0 <= int(fold) < int(num_folds):
        raise ValueError(f"fold must be in 0 .. {int(num_folds) - 1}, got {fold}.")
    split = sequence_folds([it["label"] for it in items], num_folds, val_fraction, seed)[int(fold)]
    return {k: [items[i] for i in split[k]] for k in ("train", "val", "test")}


def labels_of(items: list[Mapping[str, Any]]) -> list[int]:
    """The 0/1 labels of datalist items (for :class:`~monai_ext.data.PositiveBatchSampler`)."""
    return [int(it["label"]) for it in items]


def datalist_info(datalist: str | os.PathLike) -> dict[str, Any]:
    """The datalist's top-level entries other than its sections (e.g. the synthetic data's true prior)."""
    content = json.loads(Path(datalist).read_text())
    return {k: v for k, v in content.items() if k not in ("training", "validation", "test")}


class RandFrameSubsetd(Randomizable, MapTransform):
    """Keep a random subset of ``num_frames`` frames of a ``(C, T, H, W)`` sequence, in time order.

    Frame-level training sees different frames of a sequence each epoch (and fewer per step); evaluation scores
    every frame. A sequence with at most ``num_frames`` frames is returned unchanged.

    Args:
        keys: keys of the sequences.
        num_frames: frames to keep (``None`` or 0: all).
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(self, keys: KeysCollection, num_frames: int | None = 4, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if num_frames is not None and int(num_frames) < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}.")
        self.num_frames = int(num_frames) if num_frames else 0

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            t = d[key].shape[1]
            if self.num_frames and self.num_frames < t:
                keep = np.sort(self.R.permutation(t)[: self.num_frames])
                d[key] = d[key][:, torch.as_tensor(keep)]
        return d


class FrameOutputs(torch.nn.Module):
    """A :class:`~monai_ext.networks.nets.TimeLapseNet` whose ``forward`` returns what frame-level training needs:
    ``(sequence logit, frame logits, attention, embeddings)`` (``forward_all`` as a tuple).

    ``DistributedDataParallel`` synchronises gradients through ``forward`` only, so the training step calls this
    module's ``forward``; the wrapped network (``net``) is the one saved and served (its ``state_dict`` has no
    prefix).
    """

    def __init__(self, net: TimeLapseNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net.forward_all(x)
        return out.logit, out.frame_logits, out.attention, out.embedding
