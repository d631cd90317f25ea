"""Dictionary transforms of the embryo study's inference pipeline: read a sequence, write its scores."""

from __future__ import annotations

import csv
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .data import load_sequence, normalize_sequence

__all__ = ["LoadSequenced", "SaveSequenceScored"]


class LoadSequenced(MapTransform):
    """Load a time-lapse sequence (folder of frames, list of frame files or a 2D+t image) as ``(1, T, H, W)``.

    The sequence is resampled to ``num_frames`` evenly spaced frames and ``image_size`` pixels when given, then
    normalised to zero mean and unit variance over the whole sequence (as in training). The source path is kept in
    ``"<key>_path"``.

    A study trains one model per (method, fold, ...) in one process, each reading the same sequences: with
    ``cache=True`` the loaded arrays are kept in a process-wide cache keyed by path and settings (the embedded data
    set is ~26 MB), so every sequence is read from disk once per process.

    Args:
        keys: keys holding the sequence path.
        num_frames: frames to keep (``None``: all).
        image_size: frame size to resize to (``None``: unchanged).
        cache: keep the loaded sequences in the process-wide cache.
        allow_missing_keys: do not raise for a missing key.
    """

    _cache: dict[tuple, np.ndarray] = {}

    def __init__(self, keys: KeysCollection, num_frames: int | None = None, image_size: int | None = None,
                 cache: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_frames = num_frames
        self.image_size = image_size
        self.cache = bool(cache)

    def _load(self, path: Any) -> np.ndarray:
        key = (str(path), self.num_frames, self.image_size)
        if self.cache and key in self._cache:
            return self._cache[key]
        seq = np.asarray(normalize_sequence(load_sequence(path, self.num_frames, self.image_size)), dtype=np.float32)
        if self.cache:
            self._cache[key] = seq
        return seq

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            d[key] = torch.from_numpy(self._load(path).copy())[None]
            d[f"{key}_path"] = str(path)
        return d


class SaveSequenceScored(MapTransform):
    """Append ``path, probability, frame probabilities`` of one scored sequence to ``<output_dir>/scores.csv``.

    Args:
        keys: key of the sequence logit ``(1,)`` (e.g. ``"pred"``).
        output_dir: folder of ``scores.csv``.
        path_key: key of the source path (written by :class:`LoadSequenced`).
        frame_key: optional key of the ``(T,)`` frame logits.
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | os.PathLike, path_key: str = "image_path",
                 frame_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.path_key = path_key
        self.frame_key = frame_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        out = self.output_dir / "scores.csv"
        new = not out.is_file()
        for key in self.key_iterator(d):
            prob = torch.sigmoid(torch.as_tensor(d[key]).float().reshape(-1)[0]).item()
            row = [d.get(self.path_key, ""), f"{prob:.6f}"]
            if self.frame_key is not None and self.frame_key in d:
                row.append(" ".join(f"{v:.4f}" for v in torch.sigmoid(torch.as_tensor(d[self.frame_key]).float())
                                    .reshape(-1).tolist()))
            with open(out, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["sequence", "live_birth_probability", "frame_probabilities"][: len(row)])
                    new = False
                writer.writerow(row)
        return d
