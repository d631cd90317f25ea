"""Evaluation of the iPS colony study: Jaccard per class and their mean over the non-ignored pixels of a test set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy

__all__ = ["ConfusionAccumulator", "jaccard_from_confusion"]


def jaccard_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class Jaccard ``TP / (TP + FP + FN)`` from a ``(K, K)`` confusion matrix (rows: truth, columns: prediction).

    A class absent from both truth and prediction gets ``nan`` (it does not enter a ``nanmean``).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


class ConfusionAccumulator:
    """Pixel confusion matrix over a whole test set, ignoring pixels whose truth is ``ignore_label``.

    Pooling the pixels of all images (rather than averaging per-image scores) is how the study reports Jaccard:
    an image with a tiny bad region does not weigh as much as one with a large one.

    Args:
        num_classes: number of classes ``K``.
        ignore_label: truth value excluded from the counts.

    Raises:
        ValueError: in :py:meth:`update` for mismatched shapes or labels outside ``0 .. K - 1`` (other than the
            ignore label).

    Example::

        >>> acc = ConfusionAccumulator(3)
        >>> acc.update([[0, 1, 2, 2]], [[0, 1, 1, 255]])
        >>> acc.jaccard().round(2).tolist()
        [1.0, 0.5, 0.0]
    """

    def __init__(self, num_classes: int, ignore_label: int = 255) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: NdarrayOrTensor | Sequence, truth: NdarrayOrTensor | Sequence) -> None:
        """Add a predicted and a true label map of the same shape."""
        p = convert_to_numpy(pred).astype(np.int64) if isinstance(pred, torch.Tensor) else np.asarray(pred, np.int64)
        t = convert_to_numpy(truth).astype(np.int64) if isinstance(truth, torch.Tensor) else np.asarray(truth,
                                                                                                          np.int64)
        if p.shape != t.shape:
            raise ValueError(f"pred and truth must have the same shape, got {p.shape} and {t.shape}.")
        keep = t != self.ignore_label
        p, t = p[keep], t[keep]
        k = self.num_classes
        for name, a in (("pred", p), ("truth", t)):
            if a.size and (a.min() < 0 or a.max() >= k):
                raise ValueError(f"{name} labels must be in 0..{k - 1} (truth may also be {self.ignore_label}), "
                                 f"found {np.unique(a[(a < 0) | (a >= k)])[:5].tolist()}.")
        self.confusion += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def jaccard(self) -> np.ndarray:
        """Per-class Jaccard of everything added so far."""
        return jaccard_from_confusion(self.confusion)

    def summary(self, class_names: Sequence[str]) -> dict[str, float]:
        """``{"jaccard_<class>": ..., "mean_jaccard": ..., "pixel_accuracy": ...}`` in percent."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"class_names must name {self.num_classes} classes, got {list(class_names)}.")
        j = self.jaccard()
        out = {f"jaccard_{n}": float(100 * v) for n, v in zip(class_names, j, strict=True)}
        out["mean_jaccard"] = float(100 * np.nanmean(j)) if np.isfinite(j).any() else float("nan")
        total = self.confusion.sum()
        out["pixel_accuracy"] = float(100 * np.trace(self.confusion) / total) if total else float("nan")
        return out
