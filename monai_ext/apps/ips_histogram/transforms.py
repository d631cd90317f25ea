"""Transforms of the ``ips_histogram`` bundle: case loading with checks, grey conversion and overlay PNGs."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_numpy

from monai_ext.data import output_name

from .data import load_case, to_grayscale
from .plots import save_overlay_png

__all__ = ["LoadColonyCased", "SaveOverlayd", "ToGrayscale", "ToGrayscaled"]


class ToGrayscale(Transform):
    """Array transform form of :func:`to_grayscale` (for bundle pre-processing of grey or colour microscopy)."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        out = to_grayscale(img)
        if hasattr(img, "meta") and hasattr(out, "meta"):
            out.meta = dict(img.meta)  # type: ignore[union-attr]
            # the grey result is a single-channel image like a grey file: writers must not look for a colour axis
            out.meta["original_channel_dim"] = "no_channel"  # type: ignore[union-attr]
        return out


class ToGrayscaled(MapTransform):
    """Dictionary form of :class:`ToGrayscale`.

    Args:
        keys: keys of the channel-first images.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = ToGrayscale.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToGrayscale()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class SaveOverlayd(MapTransform):
    """Write a PNG overlay of a label map (``(1, H, W)`` or ``(H, W)``) on its image (``(1, H, W)``).

    The file is ``<output_dir>/<name>_<postfix>.png``, ``<name>`` the image's ``filename_or_obj`` metadata without
    its extension as ``SaveImaged`` names its files (:func:`~monai_ext.data.output_name`; ``"image"`` when there
    is none).

    Args:
        keys: keys of the label maps.
        image_key: key of the (grey, channel-first) image.
        output_dir: folder of the PNG files (created).
        postfix: file name postfix.
        alpha: opacity of the class colours.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", output_dir: str | os.PathLike = ".",
                 postfix: str = "overlay", alpha: float = 0.4, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.alpha = float(alpha)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        image = d[self.image_key]
        meta = getattr(image, "meta", None) or d.get(f"{self.image_key}_meta_dict", {}) or {}
        name = output_name(str(meta.get("filename_or_obj", "image"))) or "image"
        img = np.squeeze(convert_to_numpy(image)).astype(np.float32)
        if img.ndim == 3:  # colour image that was not converted: show its mean
            img = img.mean(0)
        for key in self.key_iterator(d):
            lab = np.squeeze(convert_to_numpy(d[key]))
            if lab.shape != img.shape:
                raise ValueError(f"label '{key}' of shape {lab.shape} does not match image '{self.image_key}' "
                                 f"of shape {img.shape}.")
            save_overlay_png(img, lab, self.output_dir / f"{name}_{self.postfix}.png", self.alpha)
        return d


def _meta(path: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    # what a MONAI reader records and SaveImaged needs to write a prediction on the image's grid
    return {"filename_or_obj": str(path), "spatial_shape": np.asarray(shape), "original_channel_dim": "no_channel"}


class LoadColonyCased(MapTransform):
    """Read and check one colony case: the image as normalised grey ``(1, H, W)`` and its label map ``(1, H, W)``.

    Uses :func:`~monai_ext.apps.ips_histogram.data.load_case`, so that every file problem stops with an error naming
    the file (unreadable or truncated file, not a 2D image, NaN / infinite pixels, label of another size, values
    that are not class ids, an empty label map). The outputs are ``MetaTensor`` objects whose ``filename_or_obj``
    is the file read. This is the first transform of the bundle's training and validation pipelines (a
    ``CacheDataset`` runs it once per case, before the first epoch, so a bad file fails the run before training).

    Args:
        keys: ``(image_key, label_key)``; the label key may be absent from an item only with
            ``allow_missing_keys`` (inference on unlabelled images).
        num_classes: number of classes (background 0 first).
        ignore_label: label value of the pixels that are not scored.
        allow_missing_keys: allow items without a label.

    Raises:
        ValueError: when ``keys`` does not name exactly an image and a label key.
    """

    def __init__(self, keys: KeysCollection = ("image", "label"), num_classes: int = 3, ignore_label: int = 255,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, label_key), got {self.keys}.")
        self.num_classes, self.ignore_label = int(num_classes), int(ignore_label)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, label_key = self.keys
        if label_key not in d and not self.allow_missing_keys:
            raise KeyError(f"item has no '{label_key}' (keys: {sorted(map(str, d))}).")
        label_path = d.get(label_key)
        image, label = load_case(d[image_key], label_path, self.num_classes, self.ignore_label)
        d[image_key] = MetaTensor(torch.from_numpy(image[None]), meta=_meta(d[image_key], image.shape))
        if label is not None:
            d[label_key] = MetaTensor(torch.from_numpy(label[None]), meta=_meta(label_path, label.shape))
        return d
