"""A natural-image pre-training task built only from images bundled with scikit-image (nothing is downloaded).

The seed study compared landmark-pretrained features with features of a CNN pre-trained on natural images
(CIFAR-10). CIFAR-10 cannot be downloaded here, so the stand-in task is *source-image classification*: 32x32 RGB
patches, randomly cropped, flipped and rescaled, are classified by the scikit-image picture or texture they come
from (photographs: astronaut, cat, coffee, rocket, camera man, coins, moon, clock, Hubble deep field; textures:
grass, gravel, brick). Like CIFAR-10 it is a ~10-class natural-image task on 32x32 colour patches.
"""

from __future__ import annotations

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F

__all__ = ["NATURAL_IMAGE_NAMES", "load_natural_images", "sample_natural_patches"]

#: scikit-image ``data`` functions used as classes (all ship inside the scikit-image wheel).
NATURAL_IMAGE_NAMES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "clock", "hubble_deep_field",
    "grass", "gravel", "brick",
)


def load_natural_images(names: tuple[str, ...] = NATURAL_IMAGE_NAMES) -> list[torch.Tensor]:
    """The images as ``(3, H, W)`` float32 tensors in ``[0, 1]`` (grey images repeated over 3 channels).

    Raises:
        ValueError: for a name that is not a scikit-image data function.
    """
    out = []
    for n in names:
        fn = getattr(skimage.data, n, None)
        if fn is None:
            raise ValueError(f"'{n}' is not a scikit-image data image; choose from {NATURAL_IMAGE_NAMES}.")
        img = np.asarray(fn(), dtype=np.float32) / 255.0
        img = np.repeat(img[None], 3, 0) if img.ndim == 2 else np.moveaxis(img[..., :3], -1, 0)
        out.append(torch.from_numpy(np.ascontiguousarray(img)))
    return out


def sample_natural_patches(images: list[torch.Tensor], num_samples: int, seed: int, patch_size: int = 32,
                           scale_range: tuple[float, float] = (1.0, 3.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``patch_size`` crops of side ``s * patch_size`` (``s`` uniform in ``scale_range``), resized, flipped.

    Returns:
        ``(patches (N, 3, p, p), labels (N,))``; the label is the source image's index.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(images), size=num_samples)
    xs = []
    for lab in labels:
        img = images[lab]
        side = int(round(patch_size * rng.uniform(*scale_range)))
        side = min(side, img.shape[1], img.shape[2])
        y0, x0 = rng.integers(img.shape[1] - side + 1), rng.integers(img.shape[2] - side + 1)
        crop = img[None, :, y0 : y0 + side, x0 : x0 + side]
        crop = F.interpolate(crop, size=(patch_size, patch_size), mode="bilinear", align_corners=False)[0]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        xs.append(crop)
    return torch.stack(xs), torch.as_tensor(labels, dtype=torch.long)
