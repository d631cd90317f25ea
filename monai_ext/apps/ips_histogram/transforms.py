"""Transforms of the ``ips_histogram`` bundle's inference pipeline: grey conversion and overlay PNGs."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_numpy

from .data import to_grayscale
from .plots import save_overlay_png

__all__ = ["SaveOverlayd", "ToGrayscale", "ToGrayscaled"]


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

    The file is ``<output_dir>/<image file stem>_<postfix>.png``, the stem taken from the image's
    ``filename_or_obj`` metadata (``"image"`` when there is none).

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
        name = Path(str(meta.get("filename_or_obj", "image"))).name.split(".")[0] or "image"
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
