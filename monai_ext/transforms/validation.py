"""Input checks as transforms, for inference pipelines that read their images through MONAI's ``LoadImage``.

The training loaders of every bundle call :mod:`monai_ext.data.validation` directly. An ``inference.json`` (and the
MONAI Label app, which runs the bundle's ``preprocessing``) reads its input with ``LoadImaged`` instead; these
transforms put the same checks into that pipeline, so that a NaN voxel or a 2D image given to a 3D model stops with
an error naming the file instead of a meaningless prediction or a shape error deep inside the network.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from monai_ext.data.validation import validate_image

__all__ = ["ImageValidationError", "ValidateImage", "ValidateImageD", "ValidateImageDict", "ValidateImaged"]

logger = logging.getLogger(__name__)
_FINITE = (True, False, "fill")


class ImageValidationError(ValueError):
    """A :class:`ValueError` raised by :class:`ValidateImage`; ``path`` and ``shape`` say which input failed, so a
    caller (e.g. a server answering a request) can phrase its own message."""

    def __init__(self, message: str, path: str, shape: tuple[int, ...]) -> None:
        super().__init__(message)
        self.path, self.shape = path, shape


def _source(img: Any, default: str) -> str:
    """The file an image was read from (``filename_or_obj`` of a MetaTensor), else ``default``."""
    meta = getattr(img, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return default


class ValidateImage(Transform):
    """Check the number of dimensions, the number of channels and that every value is finite; return the input.

    Some pipelines write NaN where they have no data (e.g. SPM's normalised images outside the source's field of
    view). Such an image is refused by default; with ``finite="fill"`` its NaN and infinite values are read as
    background instead, set to its lowest finite value, and a warning names the file and how many were replaced
    (never silently).

    Args:
        ndim: accepted number(s) of dimensions of the channel-first array (e.g. 4 for ``(C, X, Y, Z)``); ``None``
            skips the check.
        channels: accepted number(s) of channels (size of dim 0); ``None`` skips the check.
        layout: the expected layout in words, for the message (e.g. ``"a 3D volume (1, X, Y, Z)"``).
        finite: ``True``: refuse NaN and infinite values; ``"fill"``: replace them by the lowest finite value
            (logged); ``False``: no check.
        what: what the input is, for the message.
        hint: appended to the error about non-finite values (e.g. how to rerun with ``finite="fill"``).

    Raises:
        ImageValidationError: a ``ValueError`` naming the file (``filename_or_obj`` of a MetaTensor, else
            ``"<array>"``), the shape found and the layout expected, or the count and first index of the non-finite
            values (and ``hint``); with ``finite="fill"``, an image without a single finite value.
        ValueError: at construction, for a ``finite`` other than ``True``, ``False`` or ``"fill"``.

    Example::

        >>> import torch
        >>> try:
        ...     ValidateImage(ndim=4, layout="a 3D volume (1, X, Y, Z)")(torch.zeros(1, 8, 8))
        ... except ValueError as e:  # an ImageValidationError is a ValueError
        ...     print(type(e).__name__, e)
        ImageValidationError image '<array>' has shape (1, 8, 8) (3 dimensions); expected a 3D volume (1, X, Y, Z).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, ndim: int | Sequence[int] | None = None, channels: int | Sequence[int] | None = None,
                 layout: str | None = None, finite: bool | str = True, what: str = "image",
                 hint: str | None = None) -> None:
        if not any(finite is f or (isinstance(f, str) and finite == f) for f in _FINITE):
            raise ValueError(f"finite must be True, False or 'fill', got {finite!r}.")
        self.ndim = ndim
        self.channels = None if channels is None else (
            (int(channels),) if isinstance(channels, int) else tuple(int(c) for c in channels))
        self.layout, self.finite, self.what, self.hint = layout, finite, what, hint

    def _fill(self, img: NdarrayOrTensor, path: str, shape: tuple[int, ...]) -> NdarrayOrTensor:
        """``img`` with its NaN / infinite values set to its lowest finite value (a warning says how many)."""
        t = torch.as_tensor(img)
        if not (t.is_floating_point() or t.is_complex()):
            return img
        bad = ~torch.isfinite(t)
        n = int(bad.sum())
        if not n:
            return img
        if n == t.numel():
            raise ImageValidationError(f"{self.what} '{path}' holds no finite value (shape {shape}).", path, shape)
        low = t[~bad].min()
        logger.warning("%s '%s': %d NaN or infinite value(s) of %d read as background (set to its lowest finite "
                       "value, %g).", self.what, path, n, t.numel(), float(low))
        if isinstance(img, np.ndarray):
            return np.where(np.isfinite(img), img, np.asarray(low.item(), dtype=img.dtype))
        return torch.where(bad, low, img)  # a MetaTensor keeps its meta

    def __call__(self, img: NdarrayOrTensor, source: str | None = None) -> NdarrayOrTensor:
        path = source or _source(img, "<array>")
        shape = tuple(int(s) for s in img.shape)
        if isinstance(self.finite, str):
            img = self._fill(img, path, shape)
        try:
            validate_image(img, path, ndim=self.ndim, layout=self.layout, finite=bool(self.finite), what=self.what)
        except ValueError as e:
            message = str(e)
            if self.hint and "expected finite intensities" in message:
                message = f"{message} {self.hint}"
            raise ImageValidationError(message, path, shape) from None
        if self.channels is not None and (img.ndim == 0 or int(img.shape[0]) not in self.channels):
            expected = " or ".join(str(c) for c in self.channels)
            raise ImageValidationError(
                f"{self.what} '{path}' has {int(img.shape[0]) if img.ndim else 0} channel(s) (shape "
                f"{tuple(img.shape)}); expected {expected} channel(s)"
                + (f": {self.layout}." if self.layout else "."),
                path,
                shape,
            )
        return img


class ValidateImaged(MapTransform):
    """Dictionary form of :class:`ValidateImage`; the message names the key and the file.

    Args:
        keys: keys of the images to check.
        ndim, channels, layout, finite, hint: as in :class:`ValidateImage` (with ``finite="fill"`` the filled
            image replaces the key's value).
        allow_missing_keys: do not raise for a missing key.
    """

    backend = ValidateImage.backend

    def __init__(self, keys: KeysCollection, ndim: int | Sequence[int] | None = None,
                 channels: int | Sequence[int] | None = None, layout: str | None = None,
                 finite: bool | str = True, hint: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.args = {"ndim": ndim, "channels": channels, "layout": layout, "finite": finite, "hint": hint}
        ValidateImage(**self.args)  # argument errors at construction

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = ValidateImage(**self.args, what=f"image (key '{key}')")(d[key])
        return d


ValidateImageD = ValidateImageDict = ValidateImaged
