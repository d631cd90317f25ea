"""Clip preparation and clip transforms of the ``sperm_emd`` bundle.

:func:`prepare_clip_datalist` resolves the video datalist (the embedded synthetic videos by default), tracks every
video once (cached by a signature of the settings) and writes the clip datalist; ``train.json`` calls it for its
``datalist``. :class:`LoadClipd` turns a clip item (a window of a track's crop array) into ``(1, T, H, W)`` in
``0..1`` with its ``(K,)`` grade distribution; MONAI's ``RandRotate90d`` / ``RandFlipd`` do the augmentation.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_ext.data import resolve_datalist
from monai_ext.utils import save_results_table

from .data import CROP_MODES, build_clip_datalist

__all__ = ["LoadClipd", "prepare_clip_datalist"]

logger = logging.getLogger(__name__)


def prepare_clip_datalist(dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike, seed: int = 0,
                          generator_kwargs: Mapping[str, Any] | None = None,
                          clip_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Track the videos of the datalist once and return the clip datalist ``<output_dir>/clips/clips.json``.

    Args:
        dataset_dir: video datalist folder or JSON; ``None`` generates the embedded synthetic videos (seeded) under
            ``<output_dir>/synthetic_data``.
        output_dir: the bundle's output folder (``clips/``, ``tracking_quality.{csv,md}``).
        seed: seed of the synthetic generator.
        generator_kwargs: arguments of :func:`~monai_ext.data.synthetic.sperm.generate_sperm_dataset`.
        clip_kwargs: arguments of :func:`~monai_ext.apps.sperm_emd.data.build_clip_datalist` (``crop_size``,
            ``crop_mode``, ``clip_length``, ``clip_stride``, ``detector_kwargs``, ``tracker_kwargs``).

    The tracking is redone only when the settings change. Under ``torch.distributed`` rank 0 prepares while the
    other ranks wait.

    Raises:
        ValueError: for an unknown ``crop_mode``, or when a section (training, validation or test) yields no labelled
            clip (naming it).
    """
    from monai_ext.data.synthetic.sperm import generate_sperm_dataset

    clip_kwargs = dict(clip_kwargs or {})
    if clip_kwargs.get("crop_mode", "clip") not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {clip_kwargs.get('crop_mode')!r}.")
    out, clip_dir = Path(output_dir), Path(output_dir) / "clips"
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    datalist = resolve_datalist(dataset_dir, out, generate_sperm_dataset, {"seed": seed, **(generator_kwargs or {})})
    signature = json.dumps({"datalist": str(datalist), **clip_kwargs}, sort_keys=True, default=str)
    stamp = clip_dir / ".signature.json"
    if not distributed or dist.get_rank() == 0:
        if not (stamp.is_file() and stamp.read_text() == signature and (clip_dir / "clips.json").is_file()):
            logger.info("tracking the videos of %s", datalist)
            _, rows = build_clip_datalist(datalist, clip_dir, **clip_kwargs)
            # a video without annotated sperm has no tracking metrics: its row shows them as NaN
            columns = list(dict.fromkeys(k for r in rows for k in r))
            rows = [{c: r.get(c, float("nan")) for c in columns} for r in rows]
            save_results_table(rows, out / "tracking_quality",
                               title="Tracking quality against the annotated head tracks (motmetrics)")
            stamp.write_text(signature)
    if distributed:
        dist.barrier()
    content = json.loads((clip_dir / "clips.json").read_text())
    # an empty section is an error, never a silent fallback to another section (training would then select its
    # checkpoint on training clips, or a "test" score would be measured on validation clips)
    empty = [k for k in ("training", "validation", "test") if not content.get(k)]
    if empty:
        raise ValueError(f"no labelled clip was extracted for section(s) {empty} into '{clip_dir}' (each video "
                         "section needs at least one annotated sperm followed for clip_length frames); check the "
                         "annotations, clip_length and the detector threshold.")
    return clip_dir / "clips.json"


class LoadClipd(MapTransform):
    """Read a clip item ``{"image": track array (.npy), "start", "length", "label"}`` as ``image`` ``(1, T, H, W)``
    float32 in ``0..1`` and ``label`` the ``(K,)`` float32 grade distribution.

    Track arrays are cached in memory (a track holds every clip of that sperm).

    Args:
        keys: ``(image_key, label_key)``.

    Raises:
        ValueError: when an item's window runs past the end of its track array (naming the file).
    """

    def __init__(self, keys: KeysCollection = ("image", "label")) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, label_key), got {self.keys}.")
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, label_key = self.keys
        path = str(d[image_key])
        if path not in self._cache:
            self._cache[path] = np.load(path)
        arr = self._cache[path]
        s, n = int(d["start"]), int(d["length"])
        if s + n > len(arr):
            raise ValueError(f"clip of '{path}': frames {s}..{s + n} run past its {len(arr)} frames.")
        d[image_key] = torch.from_numpy(arr[s : s + n].astype(np.float32) / 255.0)[None]
        d[label_key] = torch.as_tensor(d[label_key], dtype=torch.float32)
        return d
