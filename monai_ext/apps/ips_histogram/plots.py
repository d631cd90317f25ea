"""Figures of the iPS colony study: label overlays, the qualitative comparison figure and the patch-size sweep plot."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np

__all__ = ["CLASS_COLOURS", "overlay_labels", "plot_patch_size_sweep", "plot_qualitative", "save_overlay_png"]

#: RGB colour per class (background, good, bad); the ignore label is drawn grey
CLASS_COLOURS = np.array([[0, 0, 0], [40, 200, 60], [230, 50, 40]], dtype=np.float64)
IGNORE_COLOUR = np.array([160, 160, 160], dtype=np.float64)


def _to_uint8_grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, (1, 99)) if img.size else (0.0, 1.0)
    return (np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1) * 255).astype(np.uint8)


def overlay_labels(image: np.ndarray, label: np.ndarray, alpha: float = 0.4, ignore_label: int = 255) -> np.ndarray:
    """RGB ``uint8`` overlay of a label map (class colours, background transparent) on a grey image ``(H, W)``.

    Raises:
        ValueError: when image and label shapes differ.
    """
    if np.shape(image) != np.shape(label):
        raise ValueError(f"image and label must have the same shape, got {np.shape(image)} and {np.shape(label)}.")
    grey = _to_uint8_grey(image).astype(np.float64)
    rgb = np.repeat(grey[..., None], 3, -1)
    lab = np.asarray(label).astype(np.int64)
    for k in range(1, len(CLASS_COLOURS)):
        m = lab == k
        rgb[m] = (1 - alpha) * rgb[m] + alpha * CLASS_COLOURS[k]
    m = lab == ignore_label
    rgb[m] = (1 - alpha) * rgb[m] + alpha * IGNORE_COLOUR
    return rgb.clip(0, 255).astype(np.uint8)


def save_overlay_png(image: np.ndarray, label: np.ndarray, path: str | os.PathLike, alpha: float = 0.4) -> Path:
    """Write :func:`overlay_labels` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, overlay_labels(image, label, alpha))
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_qualitative(image: np.ndarray, truth: np.ndarray, predictions: Mapping[str, np.ndarray],
                     path: str | os.PathLike, scores: Mapping[str, float] | None = None) -> Path:
    """Input, ground truth (ignore in grey) and one label map per method side by side, like the seed's figure."""
    plt = _plt()
    n = 2 + len(predictions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4))
    axes[0].imshow(_to_uint8_grey(image), cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(overlay_labels(image, truth, alpha=0.6))
    axes[1].set_title("ground truth")
    for ax, (name, pred) in zip(axes[2:], predictions.items(), strict=True):
        ax.imshow(overlay_labels(image, pred, alpha=0.6))
        title = name if scores is None or name not in scores else f"{name}\nmean J {scores[name]:.1f} %"
        ax.set_title(title)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_patch_size_sweep(rows: Sequence[Mapping[str, object]], path: str | os.PathLike,
                          metric: str = "mean_jaccard") -> Path:
    """Mean Jaccard against patch size, one line per method (rows with ``method``, ``patch_size`` and ``metric``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method in dict.fromkeys(str(r["method"]) for r in rows):
        pts = sorted((int(r["patch_size"]), float(r[metric])) for r in rows if r["method"] == method)
        ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=method)
    ax.set_xlabel("patch size (pixels)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
