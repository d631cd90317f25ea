"""PNG plots of the aneurysm study (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_confusion_matrix", "plot_auc_curves", "plot_localisation_errors"]


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = true class) with counts; returns the PNG path."""
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * n + 2), max(4, 0.35 * n + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_auc_curves(curves: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    """Mean ROC AUC (+- one standard deviation over folds) against the number of weak learners, log x axis."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        c = np.atleast_2d(c)
        m, s = c.mean(0), c.std(0)
        n = np.arange(1, c.shape[1] + 1)
        ax.plot(n, m, label=name)
        ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("number of weak learners (AdaBoost stumps)")
    ax.set_ylabel("ROC AUC (test folds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_localisation_errors(names: Sequence[str], errors: np.ndarray, path: str | os.PathLike,
                             reference: np.ndarray | None = None, reference_label: str = "inter-rater") -> Path:
    """Per-landmark localisation error (mean over cases, bars) with an optional reference (e.g. rater spread)."""
    errors = np.atleast_2d(errors)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names) + 2), 4))
    x = np.arange(len(names))
    ax.bar(x, errors.mean(0), yerr=errors.std(0), alpha=0.7, label="predicted vs ground truth")
    if reference is not None:
        ax.plot(x, reference, "r_", markersize=12, mew=2, label=reference_label)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("error (mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
