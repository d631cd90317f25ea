"""Seeded synthetic phase-contrast-like iPS colony images: the embedded default data of the ``ips_histogram`` study.

Each image shows culture medium (background) with one or more colonies. Inside a colony, regions of densely packed
small cells (undifferentiated, *good*) meet regions of flattened large cells (differentiated, *bad*); the two are
drawn as Voronoi cell textures of different cell size, brightness and nucleus size, so the classes differ by
texture rather than by intensity alone. Phase-contrast halos surround the colonies, a smooth illumination gradient
and noise cover the whole field, and a band of pixels where good meets bad is marked *ignore* (experts cannot call
it), as in the iPS colony data of the seed study. A low-amplitude crop of scikit-image's bundled ``gravel`` texture
adds debris to the medium.

Labels: ``0`` background, ``1`` good colony, ``2`` bad colony, :data:`IGNORE_LABEL` (255) ignore.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["CLASS_NAMES", "IGNORE_LABEL", "generate_ips_dataset", "synthesize_colony_image"]

IGNORE_LABEL = 255
CLASS_NAMES = ("background", "good", "bad")


def _voronoi_texture(shape: tuple[int, int], spacing: float, rng: np.random.Generator,
                     membrane_width: float, nucleus_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Membrane map, nucleus map and per-cell brightness jitter of a random Voronoi tiling."""
    h, w = shape
    n = max(4, int(h * w / spacing**2))
    pts = rng.uniform((0, 0), (h, w), size=(n, 2))
    yy, xx = np.mgrid[:h, :w]
    d, idx = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], 1), k=2)
    membrane = np.exp(-(((d[:, 1] - d[:, 0]) / membrane_width) ** 2)).reshape(shape)
    nucleus = np.exp(-((d[:, 0] / nucleus_radius) ** 2)).reshape(shape)
    jitter = rng.normal(0.0, 1.0, n)[idx[:, 0]].reshape(shape)
    return membrane, nucleus, jitter


def _colony_masks(size: int, rng: np.random.Generator, num_colonies: int) -> list[np.ndarray]:
    """Irregular colony footprints: ellipses whose radius is perturbed by a few random Fourier modes."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    masks = []
    for _ in range(num_colonies):
        radius = rng.uniform(0.18, 0.34) * size
        cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
        aspect, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
        theta, rho = np.arctan2(v, u), np.hypot(u, v)
        bound = np.ones_like(theta)
        for k in range(2, 6):
            bound += rng.uniform(0.0, 0.12 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        masks.append(rho < radius * bound)
    return masks


def synthesize_colony_image(size: int = 256, seed: int | np.random.Generator = 0, ignore_width: int = 3,
                            noise_std: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic phase-contrast-like colony image and its label map.

    Args:
        size: image side in pixels (square images), at least 64.
        seed: seed or numpy ``Generator``.
        ignore_width: half-width in pixels of the ignore band where good meets bad (0 disables it).
        noise_std: standard deviation of the additive Gaussian noise (image range about 0..1).

    Returns:
        ``(image, label)``: ``uint8`` image ``(size, size)`` and ``uint8`` label ``(size, size)`` with values
        0 (background), 1 (good), 2 (bad) and :data:`IGNORE_LABEL`.

    Raises:
        ValueError: for a ``size`` below 64, a negative ``ignore_width`` or ``noise_std``.

    Example::

        >>> img, lab = synthesize_colony_image(128, seed=1)
        >>> img.shape, lab.dtype.name
        ((128, 128), 'uint8')
    """
    if int(size) < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}.")
    if ignore_width < 0:
        raise ValueError(f"ignore_width must be >= 0, got {ignore_width}.")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    size = int(size)
    shape = (size, size)
    colony = np.zeros(shape, bool)
    for m in _colony_masks(size, rng, int(rng.integers(1, 4))):
        colony |= m
    # good/bad layout: a smooth random field, biased so that differentiation starts at the colony periphery
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=size / rng.uniform(8, 14))
    field = (field - field.mean()) / (field.std() + 1e-8)
    edge_dist = ndimage.distance_transform_edt(colony)
    field = field - rng.uniform(0.0, 1.2) * edge_dist / (edge_dist.max() + 1e-8)
    thr = np.quantile(field[colony], rng.uniform(0.35, 0.75)) if colony.any() else 0.0
    good = colony & (field < thr)
    bad = colony & ~good

    # textures: dense small cells (good) versus flattened large cells with visible nuclei (bad)
    g_mem, g_nuc, g_jit = _voronoi_texture(shape, rng.uniform(4.5, 6.5), rng, 0.9, 1.3)
    b_mem, b_nuc, b_jit = _voronoi_texture(shape, rng.uniform(14.0, 22.0), rng, 0.8, 3.5)
    good_tex = 0.38 + 0.25 * g_mem - 0.10 * g_nuc + 0.04 * g_jit
    bad_tex = 0.58 + 0.14 * b_mem - 0.16 * b_nuc + 0.03 * b_jit
    gx, gy = rng.integers(0, 512 - size + 1, 2) if size <= 512 else (0, 0)
    from skimage import data as skdata  # bundled with scikit-image, no download

    gravel = skdata.gravel().astype(np.float64) / 255.0
    if size > 512:
        gravel = np.tile(gravel, (size // 512 + 1, size // 512 + 1))
    debris = gravel[gy : gy + size, gx : gx + size] - 0.5
    img = 0.55 + 0.06 * debris
    img = np.where(good, good_tex, img)
    img = np.where(bad, bad_tex, img)
    # phase-contrast halo: a bright rim just outside every colony
    outside = ndimage.distance_transform_edt(~colony)
    img = img + 0.30 * np.exp(-outside / 2.5) * (~colony)
    img = ndimage.gaussian_filter(img, 0.6)
    # illumination gradient (linear + vignetting) and noise
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    a, b = rng.uniform(-0.25, 0.25, 2)
    illum = 1.0 + a * yy + b * xx - rng.uniform(0.0, 0.4) * (yy**2 + xx**2)
    img = img * illum * rng.uniform(0.85, 1.15) + rng.normal(0.0, noise_std, shape)
    image = np.clip(img * 255.0, 0, 255).astype(np.uint8)

    label = np.zeros(shape, np.uint8)
    label[good] = 1
    label[bad] = 2
    if ignore_width > 0 and good.any() and bad.any():
        st = np.ones((3, 3), bool)
        band = ndimage.binary_dilation(good, st, ignore_width) & ndimage.binary_dilation(bad, st, ignore_width)
        label[band & colony] = IGNORE_LABEL
    return image, label


def generate_ips_dataset(out_dir: str | os.PathLike, seed: int = 0, num_cases: int = 16, image_size: int = 256,
                         val_fraction: float = 0.2, test_fraction: float = 0.2, ignore_width: int = 3,
                         noise_std: float = 0.04) -> Path:
    """Write a seeded synthetic iPS colony data set (PNG images + PNG label maps) and its ``dataset.json``.

    Layout under ``out_dir``: ``images/case_XXX.png`` (8-bit grey), ``labels/case_XXX.png`` (8-bit, values
    0/1/2/255) and ``dataset.json`` with ``training``, ``validation`` and ``test`` sections of
    ``{"image": ..., "label": ...}`` items (paths relative to the JSON), plus ``labels`` and ``ignore_label``.

    Args:
        out_dir: output folder (created).
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same files.
        num_cases: number of images, at least 3 (one per section at least).
        image_size: image side in pixels (>= 64).
        val_fraction: fraction of the cases in ``validation`` (at least one case).
        test_fraction: fraction of the cases in ``test`` (at least one case).
        ignore_width: half-width of the ignore band where good meets bad.
        noise_std: additive noise level.

    Returns:
        path of the written ``dataset.json``.

    Raises:
        ValueError: for ``num_cases`` < 3 or fractions outside ``[0, 1)`` that leave no training case.

    Example::

        >>> import tempfile
        >>> path = generate_ips_dataset(tempfile.mkdtemp(), num_cases=3, image_size=64)
        >>> path.name
        'dataset.json'
    """
    if int(num_cases) < 3:
        raise ValueError(f"num_cases must be at least 3 (training, validation and test), got {num_cases}.")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got {val_fraction} and "
            f"{test_fraction}."
        )
    num_cases = int(num_cases)
    n_val = max(1, round(num_cases * val_fraction))
    n_test = max(1, round(num_cases * test_fraction))
    if num_cases - n_val - n_test < 1:
        raise ValueError(f"num_cases={num_cases} leaves no training case with these fractions.")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rngs = np.random.default_rng(seed).spawn(num_cases)
    items = []
    for i, rng in enumerate(rngs):
        img, lab = synthesize_colony_image(image_size, rng, ignore_width=ignore_width, noise_std=noise_std)
        iio.imwrite(out / "images" / f"case_{i:03d}.png", img)
        iio.imwrite(out / "labels" / f"case_{i:03d}.png", lab)
        items.append({"image": f"images/case_{i:03d}.png", "label": f"labels/case_{i:03d}.png"})
    n_train = num_cases - n_val - n_test
    content = {
        "name": "synthetic_ips_colonies",
        "description": "Seeded synthetic phase-contrast-like iPS colony images (monai_ext.data.synthetic.ips).",
        "seed": int(seed),
        "labels": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "ignore_label": IGNORE_LABEL,
        "training": items[:n_train],
        "validation": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }
    path = out / "dataset.json"
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
    return path
