"""Input checks as transforms, for inference pipelines that read their images through MONAI's ``LoadImage``.

The training loaders of every bundle call :mod:`monai_ext.data.validation` directly. An ``inference.json`` (and the
MONAI Label app, which runs the bundle's ``preprocessing``) reads its input with ``LoadImaged`` instead; these
transforms put the same checks into that pipeline, so that a NaN voxel or a 2D image given to a 3D model stops with
an error naming the file instead of a meaningless prediction or a shape error deep inside the network.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from monai_ext.data.validation import validate_image

__all__ = ["ImageValidationError", "ValidateImage", "ValidateImageD", "ValidateImageDict", "ValidateImaged"]


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

    Args:
        ndim: accepted number(s) of dimensions of the channel-first array (e.g. 4 for ``(C, X, Y, Z)``); ``None``
            skips the check.
        channels: accepted number(s) of channels (size of dim 0); ``None`` skips the check.
        layout: the expected layout in words, for the message (e.g. ``"a 3D volume (1, X, Y, Z)"``).
        finite: refuse NaN and infinite values.
        what: what the input is, for the message.

    Raises:
        ImageValidationError: a ``ValueError`` naming the file (``filename_or_obj`` of a MetaTensor, else
            ``"<array>"``), the shape found and the layout expected, or the count and first index of the non-finite
            values.

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
                 layout: str | None = None, finite: bool = True, what: str = "image") -> None:
        self.ndim = ndim
        self.channels = None if channels is None else (
            (int(channels),) if isinstance(channels, int) else tuple(int(c) for c in channels))
        self.layout, self.finite, self.what = layout, bool(finite), what

    def __call__(self, img: NdarrayOrTensor, source: str | None = None) -> NdarrayOrTensor:
        path = source or _source(img, "<array>")
        shape = tuple(int(s) for s in img.shape)
        try:
            validate_image(img, path, ndim=self.ndim, layout=self.layout, finite=self.finite, what=self.what)
        except ValueError as e:
            raise ImageValidationError(str(e), path, shape) from None
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
        ndim, channels, layout, finite: as in :class:`ValidateImage`.
        allow_missing_keys: do not raise for a missing key.
    """

    backend = ValidateImage.backend

    def __init__(self, keys: KeysCollection, ndim: int | Sequence[int] | None = None,
                 channels: int | Sequence[int] | None = None, layout: str | None = None, finite: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.args = {"ndim": ndim, "channels": channels, "layout": layout, "finite": finite}

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            ValidateImage(**self.args, what=f"image (key '{key}')")(d[key])
        return d


ValidateImageD = ValidateImageDict = ValidateImaged
