"""Centre-pixel class of a label patch as a transform: the target of centre-pixel patch classification."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from .region_histogram import center_pixel_label

__all__ = ["CenterPixelLabel", "CenterPixelLabelD", "CenterPixelLabelDict", "CenterPixelLabeld"]


class CenterPixelLabel(Transform):
    """Replace a label patch ``(1, H, W[, D])`` by the class of its centre pixel, as a ``(1,)`` int64 array.

    The centre is at index ``side // 2`` along every axis (MONAI's ``SpatialCrop`` convention, as
    :func:`~monai_ext.transforms.center_pixel_label`). The ``(1,)`` shape makes a batch ``(B, 1)``, which
    ``torch.nn.CrossEntropyLoss`` pairs with the ``(B, C, 1)`` output of a one-level
    :class:`~monai_ext.networks.nets.FlatHistogramNet` (centre-pixel patch classification, the baseline of the iPS
    colony study). An ignore label at the centre stays the ignore label (use the loss's ``ignore_index``).

    Raises:
        ValueError: for a label that is not ``(1, *spatial)`` or holds non-integer values.

    Example::

        >>> CenterPixelLabel()(np.arange(9).reshape(1, 3, 3))
        array([4])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        c = center_pixel_label(label)
        if isinstance(c, np.ndarray):
            return c.reshape(1).astype(np.int64)
        return torch.as_tensor(c).reshape(1).long()


class CenterPixelLabeld(MapTransform):
    """Dictionary form of :class:`CenterPixelLabel`.

    Args:
        keys: keys of the label patches.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = CenterPixelLabel.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = CenterPixelLabel()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


CenterPixelLabelD = CenterPixelLabelDict = CenterPixelLabeld
