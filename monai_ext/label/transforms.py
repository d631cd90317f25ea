"""What the MONAI Label app adds around a 2D bundle's own pipeline: input layout, input errors and the result grid.

- :class:`SqueezeSingletonAxisd` lets a 2D model take a 2D image stored as a 3D file with one singleton axis, e.g.
  an ``X x Y x 1`` NIfTI or NRRD (how ITK and 3D Slicer save a 2D image);
- :class:`Restore2Dd` brings the model's label back to the input's grid: the stored image's size, and the
  ``X x Y x 1`` grid and affine of such a file;
- :func:`input_error` tells an error of the client's image (unreadable, empty, NaN: answered with HTTP 422) from a
  server error, for the pre-processing the infer task runs step by step.

Nothing here imports ``monailabel``; :mod:`monai_ext.label.main` uses these in its infer task.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform, SqueezeDim
from monai.utils import convert_to_dst_type

from monai_ext.transforms import ImageValidationError

from .landmarks import InvalidInferInput

__all__ = ["SqueezeSingletonAxisd", "Restore2Dd", "singleton_axis", "input_error", "check_not_empty"]


def singleton_axis(spatial_shape: Any) -> int | None:
    """The axis to drop to read a 3D grid as a 2D image: the only spatial axis of size 1, else ``None``.

    Example::

        >>> singleton_axis((660, 550, 1)), singleton_axis((1, 660, 550)), singleton_axis((4, 5, 6))
        (2, 0, None)
        >>> singleton_axis((660, 550)), singleton_axis((1, 1, 5)) is None
        (None, True)
    """
    shape = tuple(int(s) for s in np.asarray(spatial_shape).ravel())
    ones = [i for i, s in enumerate(shape) if s == 1]
    return ones[0] if len(shape) == 3 and len(ones) == 1 else None


class SqueezeSingletonAxisd(MapTransform):
    """Read a channel-first ``(C, X, Y, 1)`` (or ``(C, 1, Y, Z)``, ...) image as the 2D image ``(C, X, Y)``.

    ITK, 3D Slicer and many converters store a 2D image as a 3D file with one singleton axis (an ``X x Y x 1``
    NIfTI or NRRD). A 2D model refuses it (its input check wants ``(C, H, W)``), so this removes the one spatial axis
    of size 1 with MONAI's :class:`~monai.transforms.SqueezeDim`, which also drops that axis from the MetaTensor's
    affine. An image with no singleton axis, or more than one (a line, not an image), is passed on unchanged for the
    bundle's own check to refuse. :class:`Restore2Dd` puts the axis back on the result, from the loader's
    ``spatial_shape``.

    Args:
        keys: keys of the channel-first images.
        allow_missing_keys: do not raise for a missing key.

    Example::

        >>> import torch
        >>> SqueezeSingletonAxisd("image")({"image": torch.zeros(1, 20, 30, 1)})["image"].shape
        torch.Size([1, 20, 30])
    """

    backend = SqueezeDim.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            axis = singleton_axis(img.shape[1:]) if img.ndim == 4 else None
            if axis is not None:
                out = SqueezeDim(dim=axis + 1)(img)
                d[key] = out if isinstance(img, MetaTensor) else convert_to_dst_type(out, img)[0]
        return d


class Restore2Dd:
    """Bring a 2D label back to the input's grid, as one ``uint8`` label image for MONAI Label's writer.

    MONAI Label's ``Restored`` keeps a singleton channel on 2D results, which its writer then saves as a 1-pixel-high
    image; this replaces it for 2D bundles. A ``(1, W, H)`` or ``(W, H)`` label (MONAI's reader layout) is resized
    with nearest neighbour to the input's ``spatial_shape`` when the bundle's preprocessing changed the size. When the
    input was a 3D file with one singleton axis (see :class:`SqueezeSingletonAxisd`), the label gets that axis back
    and the file's affine (``original_affine`` of the loader), so it lies on the input's grid: an ``X x Y x 1``
    NIfTI gives an ``X x Y x 1`` label with the same affine.

    Args:
        key: the label key (the bundle's output key, usually ``pred``).
        ref_image: the image key whose metadata holds the original ``spatial_shape`` (and ``original_affine``).

    Returns:
        the data with ``key`` a ``uint8`` numpy array ``(W, H)``, or for a 3D input grid a ``uint8`` MetaTensor of
        that grid carrying the input's affine.

    Raises:
        ValueError: when the label has several channels (2D bundles must end in a discrete label map), or the input
            grid is 3D without exactly one singleton axis.
    """

    def __init__(self, key: str, ref_image: str):
        self.key = key
        self.ref_image = ref_image

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pred = d[self.key]
        pred = pred.detach().cpu() if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
        if isinstance(pred, MetaTensor):
            pred = pred.as_tensor()
        if pred.ndim == 3:
            if pred.shape[0] != 1:
                raise ValueError(f"2D label '{self.key}' must have one channel, got shape {tuple(pred.shape)}.")
            pred = pred[0]
        if pred.ndim != 2:
            raise ValueError(f"2D label '{self.key}' must be 2D after the channel, got shape {tuple(pred.shape)}.")
        ref = d.get(self.ref_image)
        meta = ref.meta if isinstance(ref, MetaTensor) else d.get(f"{self.ref_image}_meta_dict", {})
        grid = meta.get("spatial_shape")
        grid = None if grid is None else tuple(int(s) for s in np.asarray(grid).ravel())
        axis = None
        if grid is not None and len(grid) == 3:
            axis = singleton_axis(grid)
            if axis is None:
                raise ValueError(f"2D label '{self.key}' cannot be put back on the 3D input grid {grid}: it has no "
                                 "single axis of size 1.")
            plane = grid[:axis] + grid[axis + 1 :]
        else:
            plane = None if grid is None else grid[-2:]
        if plane is not None and tuple(pred.shape) != plane:
            pred = torch.nn.functional.interpolate(pred[None, None].float(), size=plane, mode="nearest")[0, 0]
        label = np.ascontiguousarray(pred.numpy().astype(np.uint8))
        if axis is None:
            d[self.key] = label
        else:
            affine = meta.get("original_affine")
            d[self.key] = MetaTensor(np.expand_dims(label, axis), affine=None if affine is None else affine)
        return d


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        chain.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return chain


def input_error(step: Any, exc: BaseException, image_path: str | os.PathLike | None) -> InvalidInferInput | None:
    """The client's fault, if it is one: an :class:`InvalidInferInput` (HTTP 422) for ``exc`` raised by ``step``.

    - the image failed the bundle's input check (an :class:`~monai_ext.transforms.ImageValidationError` anywhere in
      the chain of causes: NaN or infinite values, a layout the model does not take): its message, which names the
      key, the file, and what was found and expected;
    - the loader (``LoadImaged`` or a wrapper holding one, as MONAI Label's ``LoadImageTensord``) failed: the file is
      empty, or cannot be read as an image; the reader's reason is kept.

    Anything else (a failing step after the image was read and accepted) is a server error: ``None``.

    Args:
        step: the pre-processing transform that raised.
        exc: what it raised.
        image_path: the file the request named (the uploaded copy for an upload).
    """
    name = Path(image_path).name if image_path else "<no file>"
    for e in _cause_chain(exc):
        if isinstance(e, ImageValidationError):
            return InvalidInferInput(str(e))
    if isinstance(step, LoadImaged) or isinstance(getattr(step, "load_image_d", None), LoadImaged):
        if image_path and os.path.isfile(image_path) and os.path.getsize(image_path) == 0:
            return InvalidInferInput(f"cannot read image '{name}': the file is empty (0 bytes).")
        chain = _cause_chain(exc)
        reason = "; ".join(dict.fromkeys(f"{type(e).__name__}: {e}" for e in chain[-2:] if str(e)))
        return InvalidInferInput(f"cannot read image '{name}' as an image: {reason or type(exc).__name__}")
    return None


def check_not_empty(data: Mapping[Hashable, Any], key: str, image_path: str | os.PathLike | None) -> None:
    """Refuse an image without a single pixel (a size-0 axis), which the reader accepts but no model can use.

    Raises:
        InvalidInferInput: naming the file and the shape.
    """
    img = data.get(key)
    shape = getattr(img, "shape", None)
    if shape is not None and int(np.prod(shape)) == 0:
        name = Path(image_path).name if image_path else "<no file>"
        raise InvalidInferInput(f"image '{name}' is empty: it has no pixels (shape {tuple(int(s) for s in shape)} "
                                "as read).")
