"""Figures for sequence classifiers: per-frame score timelines, saliency over time-lapse frames and ROC curves.

These functions are generic: they take arrays (scores, frames, saliency maps) and write PNG files with matplotlib's
``Agg`` backend, so they work on a head-less server. :func:`frame_saliency` computes the saliency maps with MONAI's
``GradCAM`` (Selvaraju et al., "Grad-CAM: Visual explanations from deep networks via gradient-based localization",
ICCV 2017) or ``OcclusionSensitivity`` (Zeiler & Fergus, "Visualizing and understanding convolutional networks",
ECCV 2014).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["frame_saliency", "plot_frame_saliency", "plot_roc_curves", "plot_score_timeline"]

_SALIENCY_METHODS = ("gradcam", "occlusion")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _as_numpy(x: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def plot_score_timeline(frame_scores: np.ndarray | torch.Tensor | Sequence[float], path: str | os.PathLike,
                        sequence_score: float | None = None, threshold: float | None = 0.5,
                        weights: np.ndarray | torch.Tensor | Sequence[float] | None = None,
                        title: str | None = None, ylabel: str = "frame score") -> Path:
    """Plot the score of every frame of a sequence against the frame index.

    Args:
        frame_scores: ``(T,)`` per-frame scores (e.g. probabilities).
        path: PNG destination.
        sequence_score: optional sequence-level score drawn as a horizontal line.
        threshold: optional decision threshold drawn dashed (``None`` for none).
        weights: optional ``(T,)`` temporal pooling weights drawn as bars on a second axis.
        title: figure title.
        ylabel: label of the score axis.

    Returns:
        The PNG path.

    Raises:
        ValueError: when ``frame_scores`` is not 1D and non-empty or ``weights`` has another length.

    Example::

        >>> plot_score_timeline([0.2, 0.4, 0.7], "/tmp/timeline.png", sequence_score=0.43)  # doctest: +SKIP
    """
    s = _as_numpy(frame_scores).astype(np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"frame_scores must be a non-empty 1D sequence, got shape {s.shape}.")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    t = np.arange(s.size)
    if weights is not None:
        w = _as_numpy(weights).astype(np.float64)
        if w.shape != s.shape:
            raise ValueError(f"weights must have the shape of frame_scores {s.shape}, got {w.shape}.")
        ax2 = ax.twinx()
        ax2.bar(t, w, color="tab:grey", alpha=0.3, label="pooling weight")
        ax2.set_ylabel("pooling weight")
    ax.plot(t, s, "o-", color="tab:blue", label="frame")
    if sequence_score is not None:
        ax.axhline(float(sequence_score), color="tab:green", label=f"sequence {float(sequence_score):.3f}")
    if threshold is not None:
        ax.axhline(float(threshold), color="tab:red", ls="--", label=f"threshold {float(threshold):.2f}")
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    ax.set_xticks(t)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def frame_saliency(scorer: torch.nn.Module, frames: torch.Tensor, method: str = "gradcam",
                   target_layers: str | None = None, mask_size: int = 8) -> np.ndarray:
    """Saliency map of every frame for a frame scorer with a single output logit.

    Args:
        scorer: module mapping frames ``(N, C, H, W)`` to ``(N, 1)`` logits (e.g. ``TimeLapseNet.frame_scorer()``).
        frames: ``(N, C, H, W)`` frames.
        method: ``"gradcam"`` (MONAI ``GradCAM``; needs ``target_layers``) or ``"occlusion"`` (MONAI
            ``OcclusionSensitivity``: the drop in the logit when a ``mask_size`` square is masked; positive where
            the region supports a high score).
        target_layers: the layer name for Grad-CAM (e.g. ``"net.encoder.stage2"``).
        mask_size: occlusion square size in pixels.

    Returns:
        ``(N, H, W)`` maps scaled to [0, 1] per frame.

    Raises:
        ValueError: when ``method`` is unknown, ``frames`` is not 4D, or Grad-CAM has no ``target_layers``.
    """
    from monai.visualize import GradCAM, OcclusionSensitivity

    if method not in _SALIENCY_METHODS:
        raise ValueError(f"method must be one of {_SALIENCY_METHODS}, got {method!r}.")
    if frames.ndim != 4:
        raise ValueError(f"frames must be (N, C, H, W), got shape {tuple(frames.shape)}.")
    was_training = scorer.training
    scorer.eval()
    try:
        if method == "gradcam":
            if not target_layers:
                raise ValueError("target_layers is required for method='gradcam' (e.g. 'net.encoder.stage2').")
            cam = GradCAM(nn_module=scorer, target_layers=target_layers)
            maps = cam(frames, class_idx=0)[:, 0]
        else:
            # masked regions are replaced by the frame's mean; raw logits (activate=False), one frame at a time
            occ = OcclusionSensitivity(nn_module=scorer, mask_size=mask_size, n_batch=64, overlap=0.5,
                                       mode="mean_img", activate=False, verbose=False)
            with torch.no_grad():
                base = scorer(frames)[:, 0]
                occ_map = torch.cat([occ(frames[i : i + 1])[0][:, 0] for i in range(frames.shape[0])])
            maps = (base[:, None, None] - occ_map).clamp_min(0)
    finally:
        scorer.train(was_training)
    maps = maps.detach().float().cpu().numpy()
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return (maps - lo) / np.where(hi > lo, hi - lo, 1.0)


def plot_frame_saliency(frames: np.ndarray | torch.Tensor, saliency: np.ndarray | torch.Tensor,
                        path: str | os.PathLike, frame_scores: Sequence[float] | np.ndarray | None = None,
                        alpha: float = 0.45, title: str | None = None) -> Path:
    """Frames in a row with their saliency maps overlaid (jet colour map), each titled with its frame score.

    Args:
        frames: ``(T, H, W)`` grey frames.
        saliency: ``(T, H, W)`` maps in [0, 1].
        path: PNG destination.
        frame_scores: optional ``(T,)`` per-frame scores for the titles.
        alpha: overlay opacity.
        title: figure title.

    Returns:
        The PNG path.

    Raises:
        ValueError: when the shapes differ or are not 3D.
    """
    f, m = _as_numpy(frames).astype(np.float64), _as_numpy(saliency).astype(np.float64)
    if f.ndim != 3 or f.shape != m.shape:
        raise ValueError(f"frames and saliency must both be (T, H, W), got {f.shape} and {m.shape}.")
    if frame_scores is not None and len(frame_scores) != f.shape[0]:
        raise ValueError(f"frame_scores must have {f.shape[0]} entries, got {len(frame_scores)}.")
    plt = _plt()
    n = f.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 4.0), squeeze=False)
    for t in range(n):
        axes[0, t].imshow(f[t], cmap="gray")
        axes[1, t].imshow(f[t], cmap="gray")
        axes[1, t].imshow(m[t], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        axes[0, t].set_title(f"t={t}" if frame_scores is None else f"t={t}\n{float(frame_scores[t]):.2f}", fontsize=8)
        axes[0, t].axis("off")
        axes[1, t].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_curves(curves: Mapping[str, tuple[np.ndarray | Sequence[int], np.ndarray | Sequence[float]]],
                    path: str | os.PathLike, title: str | None = None) -> Path:
    """ROC curves of several methods on one plot, each labelled with its AUC.

    Args:
        curves: ``{name: (labels, scores)}`` with 0/1 labels and real scores.
        path: PNG destination.
        title: plot title.

    Returns:
        The PNG path.

    Raises:
        ValueError: when ``curves`` is empty or a method's labels hold a single class.
    """
    if not curves:
        raise ValueError("curves is empty: pass {name: (labels, scores)} for at least one method.")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for name, (labels, scores) in curves.items():
        y, s = _as_numpy(labels).astype(int).ravel(), _as_numpy(scores).astype(np.float64).ravel()
        if np.unique(y).size != 2:
            raise ValueError(f"curves['{name}'] labels must contain both classes 0 and 1.")
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
