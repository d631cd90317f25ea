"""Image loading, grey conversion and the patch sampler shared by the three methods of the iPS colony study."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_dst_type, convert_to_tensor

from monai_ext.data import read_image, validate_image, validate_label_map

__all__ = [
    "PatchSampler",
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


class PatchSampler:
    """Random square patches with their label patches; the *same* sampler feeds all three methods.

    Centres are drawn class-balanced (each of the ``num_classes`` classes gets the same share of centres, drawn
    uniformly among the pixels of that class over all images); ignore pixels are never centres. Images are padded
    by reflection and labels by ``ignore_label`` so centres may lie on the border. Each patch gets a random element of
    the dihedral group (flips and 90 degree rotations) when ``augment``. Each method then derives its own target
    from the label patch (region histograms, centre-pixel class, or the dense label), so the three methods see
    exactly the same pixels for the same ``seed`` and epoch.

    Args:
        images: normalised grey images ``(H, W)``.
        labels: label maps ``(H, W)`` with values ``0 .. num_classes - 1`` or ``ignore_label``.
        patch_size: patch side ``P``; the centre is at index ``P // 2``.
        num_classes: number of classes.
        ignore_label: label value that is never a centre and pads the labels.
        augment: random flips / 90 degree rotations.
        seed: base seed; epoch ``e`` draws from ``numpy.random.default_rng([seed, e])``.

    Raises:
        ValueError: for empty or mismatched inputs, a ``patch_size`` < 2, or labels with no countable pixel.
    """

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], patch_size: int,
                 num_classes: int = 3, ignore_label: int = 255, augment: bool = True, seed: int = 0) -> None:
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(f"images and labels must be non-empty and of equal length, got {len(images)} and "
                             f"{len(labels)}.")
        if int(patch_size) < 2:
            raise ValueError(f"patch_size must be >= 2, got {patch_size}.")
        self.patch_size = int(patch_size)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.augment = augment
        self.seed = int(seed)
        lo, hi = self.patch_size // 2, self.patch_size - 1 - self.patch_size // 2
        self.images, self.labels = [], []
        self.centres: list[np.ndarray] = []  # per class: (n, 3) rows (image, y, x)
        per_class: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            if img.shape != lab.shape or img.ndim != 2:
                raise ValueError(f"image {i} and its label must be 2D of equal shape, got {img.shape}, {lab.shape}.")
            mode = "reflect" if min(img.shape) > max(lo, hi) else "edge"
            self.images.append(np.pad(img.astype(np.float32), ((lo, hi), (lo, hi)), mode=mode))
            self.labels.append(np.pad(lab.astype(np.int64), ((lo, hi), (lo, hi)), constant_values=self.ignore_label))
            for k in range(self.num_classes):
                yy, xx = np.nonzero(lab == k)
                per_class[k].append(np.stack([np.full_like(yy, i), yy, xx], 1))
        self.centres = [np.concatenate(c) for c in per_class]
        if all(len(c) == 0 for c in self.centres):
            raise ValueError("labels hold no pixel of any class (all background-free and ignored?).")

    def sample(self, num_patches: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_patches`` patches for ``epoch``.

        Returns:
            ``(images (N, 1, P, P) float32, labels (N, 1, P, P) int64)``.
        """
        rng = np.random.default_rng([self.seed, int(epoch)])
        present = [k for k in range(self.num_classes) if len(self.centres[k])]
        cls = rng.choice(present, size=int(num_patches))
        rows = np.empty((int(num_patches), 3), np.int64)
        for k in present:
            sel = np.nonzero(cls == k)[0]
            rows[sel] = self.centres[k][rng.integers(0, len(self.centres[k]), len(sel))]
        p = self.patch_size
        imgs = np.empty((len(rows), 1, p, p), np.float32)
        labs = np.empty((len(rows), 1, p, p), np.int64)
        for n, (i, y, x) in enumerate(rows):
            imgs[n, 0] = self.images[i][y : y + p, x : x + p]
            labs[n, 0] = self.labels[i][y : y + p, x : x + p]
        if self.augment:
            ops = rng.integers(0, 8, len(rows))
            for n, op in enumerate(ops):
                if op:
                    imgs[n, 0] = _dihedral(imgs[n, 0], op)
                    labs[n, 0] = _dihedral(labs[n, 0], op)
        return torch.from_numpy(imgs), torch.from_numpy(labs)


def _dihedral(a: np.ndarray, op: int) -> np.ndarray:
    """Element ``op`` (0..7) of the dihedral group: ``op % 4`` quarter turns, then a left-right flip if ``op >= 4``.

    Targets are derived after augmentation, so image and targets always agree.
    """
    a = np.rot90(a, op % 4)
    return np.ascontiguousarray(a[:, ::-1] if op >= 4 else a)
