"""Image loading and grey conversion of the iPS colony study (its training patches come from MONAI transforms)."""

from __future__ import annotations

import os

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_dst_type, convert_to_tensor

from monai_ext.data import read_image, validate_image, validate_label_map

__all__ = [
    "load_case",
    "normalize_image",
    "to_grayscale",
]

# ITU-R BT.601 luma weights
_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(image: NdarrayOrTensor) -> NdarrayOrTensor:
    """Channel-first image ``(C, H, W)`` with ``C`` in 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) to ``(1, H, W)``.

    RGB(A) uses the BT.601 luma weights; alpha channels are dropped.

    Args:
        image: channel-first 2D image, numpy or torch.

    Returns:
        float32 ``(1, H, W)`` of the same array type.

    Raises:
        ValueError: when the image is not ``(C, H, W)`` with ``C`` in 1..4.
    """
    t = convert_to_tensor(image, track_meta=False)
    if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"image must be channel-first (C, H, W) with C in 1..4, got shape {tuple(t.shape)}.")
    t = t.float()
    if t.shape[0] >= 3:
        w = torch.tensor(_LUMA, dtype=t.dtype, device=t.device).view(3, 1, 1)
        t = (t[:3] * w).sum(0, keepdim=True)
    else:
        t = t[:1]
    out, *_ = convert_to_dst_type(t, image, dtype=torch.float32 if isinstance(image, torch.Tensor) else np.float32)
    return out


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (a constant image becomes zeros), as ``NormalizeIntensityd`` does."""
    image = np.asarray(image, dtype=np.float32)
    std = float(image.std())
    return (image - image.mean()) / (std if std > 0 else 1.0)


def load_case(image_path: str | os.PathLike, label_path: str | os.PathLike | None = None,
              num_classes: int | None = None, ignore_label: int | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one case: normalised grey image ``(H, W)`` float32 and label ``(H, W)`` int64 (or ``None``).

    Args:
        image_path: grey or colour 2D image (PNG, TIFF...).
        label_path: label map of the same size (class ids; colour label files use their first channel).
        num_classes: when given, the label map is checked with :func:`~monai_ext.data.validate_label_map`: class
            ids ``0..num_classes - 1`` or ``ignore_label`` only, not all ignore, at least one foreground pixel.
        ignore_label: value of the unlabelled pixels.

    Raises:
        FileNotFoundError: when a file does not exist.
        ValueError: when a file cannot be read (truncated, corrupt), the image is not 2D (grey or colour) or holds
            NaN / infinite values, the label's shape differs from the image's, or the label map is invalid or empty
            (each names the file).
    """
    img = np.asarray(read_image(image_path, what="image"))
    if img.ndim == 3 and img.shape[-1] in (1, 2, 3, 4):
        img = np.moveaxis(img, -1, 0)
    elif img.ndim == 2:
        img = img[None]
    else:
        raise ValueError(f"image '{image_path}' must be a 2D grey or colour image, got shape {img.shape}.")
    validate_image(img, image_path)
    image = normalize_image(to_grayscale(img)[0])
    if label_path is None:
        return image, None
    lab = np.asarray(read_image(label_path, what="label map"))
    if lab.ndim == 3 and lab.shape[-1] in (1, 2, 3, 4):
        lab = lab[..., 0]
    if lab.shape != image.shape:
        raise ValueError(f"label '{label_path}' has shape {lab.shape}, expected the image's {image.shape}.")
    if num_classes is not None:
        validate_label_map(lab, label_path, num_classes, ignore_label)
    return image, lab.astype(np.int64)
