"""Evaluation of the aneurysm study: top-1 and confusion matrix, AdaBoost ROC AUC against the number of weak
learners, and dense landmark localisation with its error in mm."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
from sklearn.ensemble import AdaBoostClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from monai_ext.transforms import TriPlanarPatch

__all__ = ["confusion_matrix", "adaboost_auc_curve", "localise_landmarks"]


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts, rows = true class, columns = predicted class.

    Raises:
        ValueError: when the inputs differ in length or hold a class outside ``0..num_classes - 1``.
    """
    t, p = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}.")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} holds classes outside 0..{num_classes - 1}: {np.unique(v).tolist()}.")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def adaboost_auc_curve(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, original: np.ndarray,
                       n_estimators: int = 200, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Test ROC AUC of ``AdaBoostClassifier`` (decision stumps) after each boosting round, per fold.

    Cases (``groups``) are split into ``n_splits`` stratified folds; each fold trains AdaBoost on every patch of
    the other folds' cases (augmented copies included) and scores the original patches (``original``) of its own
    cases. A boosting run that stops early (perfect training fit) keeps its last AUC for the remaining rounds.

    Args:
        features: ``(N, F)`` features.
        labels: ``(N,)`` 0/1 labels.
        groups: ``(N,)`` case index of each patch (no case is split between training and test).
        original: ``(N,)`` bool, the patches that may be scored.
        n_estimators: maximum number of weak learners.
        n_splits: number of folds.
        seed: seed of the fold assignment and of AdaBoost.

    Returns:
        ``(n_splits, n_estimators)`` AUC values.

    Raises:
        ValueError: when both classes are not present or there are fewer cases than folds.
    """
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels).astype(int)
    groups, original = np.asarray(groups), np.asarray(original, dtype=bool)
    if len(np.unique(y)) != 2:
        raise ValueError(f"labels must contain both classes 0 and 1, got {np.unique(y).tolist()}.")
    if len(np.unique(groups)) < n_splits:
        raise ValueError(f"need at least n_splits={n_splits} cases, got {len(np.unique(groups))}.")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    curves = np.zeros((n_splits, n_estimators))
    for f, (tr, te) in enumerate(folds.split(x, y, groups)):
        te = te[original[te]]
        if len(np.unique(y[te])) < 2 or len(np.unique(y[tr])) < 2:
            raise ValueError(f"fold {f} lacks one class; use fewer folds (n_splits) or more cases.")
        clf = AdaBoostClassifier(n_estimators=n_estimators, random_state=seed).fit(x[tr], y[tr])
        aucs = [roc_auc_score(y[te], s) for s in clf.staged_decision_function(x[te])]
        curves[f, : len(aucs)] = aucs
        curves[f, len(aucs) :] = aucs[-1]
    return curves


@torch.no_grad()
def _probabilities(net: nn.Module, patcher: TriPlanarPatch, image: torch.Tensor, centres: np.ndarray,
                   label: int, device: torch.device, batch_size: int) -> np.ndarray:
    out = []
    for i in range(0, len(centres), batch_size):
        patches = torch.as_tensor(patcher(image, centres[i : i + batch_size])).float().to(device)
        out.append(torch.softmax(net(patches).float(), 1)[:, label].cpu())
    return torch.cat(out).numpy()


def _cube(centre: np.ndarray, radius: float, step: float, shape: Sequence[int]) -> np.ndarray:
    r = np.arange(-radius, radius + 1e-6, step)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) + centre
    return grid[np.all((grid >= 0) & (grid <= np.asarray(shape) - 1), axis=1)]


@torch.no_grad()
def localise_landmarks(net: nn.Module, image: torch.Tensor, priors: np.ndarray, labels: Sequence[int],
                       device: torch.device, search_radius: float = 10.0, step: float = 2.0, patch_size: int = 32,
                       extent_mm: float | None = None, batch_size: int = 512, refine_radius: float = 3.0,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Predict each landmark's voxel position by dense tri-planar classification around a prior position.

    For landmark ``k`` the classifier's probability of class ``k`` is evaluated at every point of a cube of
    half-side ``search_radius`` voxels (spacing ``step``) around ``priors[k]`` (e.g. the mean training position),
    in batches; a second pass with unit spacing covers ``refine_radius`` voxels around the coarse maximum. The
    prediction is the probability-weighted centroid of the refined points whose probability is at least half the
    maximum (robust to the plateau a jitter-trained classifier has around its landmark).

    Args:
        net: landmark classifier (``num_landmarks + 1`` logits, class 0 = background), in eval mode.
        image: ``(1, X, Y, Z)`` volume.
        priors: ``(L, 3)`` voxel search centres.
        labels: ``(L,)`` class ids.
        device: device of ``net``.
        search_radius: half side of the coarse search cube (voxels).
        step: coarse grid spacing (voxels).
        patch_size: plane side.
        extent_mm: physical plane side (as in training).
        batch_size: patches per forward pass.
        refine_radius: half side of the fine search cube (voxels).

    Returns:
        ``(positions (L, 3) voxel, peak probabilities (L,))``.

    Raises:
        ValueError: when ``priors`` and ``labels`` differ in length or the radii/step are not positive.
    """
    priors = np.asarray(priors, dtype=np.float64).reshape(-1, 3)
    if len(priors) != len(labels):
        raise ValueError(f"priors ({len(priors)}) and labels ({len(labels)}) must have the same length.")
    if search_radius < 0 or step <= 0 or refine_radius < 0:
        raise ValueError(f"search_radius, refine_radius must be >= 0 and step > 0, got {search_radius}, "
                         f"{refine_radius}, {step}.")
    net.eval()
    patcher = TriPlanarPatch(patch_size=patch_size, extent_mm=extent_mm)
    shape = image.shape[1:]
    pos, peak = np.zeros_like(priors), np.zeros(len(priors))
    for i, (prior, lab) in enumerate(zip(priors, labels, strict=False)):
        coarse = _cube(np.round(prior), search_radius, step, shape)
        if len(coarse) == 0:
            raise ValueError(f"the search cube of landmark {lab} around voxel {prior.tolist()} lies outside the volume "
                             f"of shape {tuple(shape)}; is the volume aligned with the training data?")
        p = _probabilities(net, patcher, image, coarse, int(lab), device, batch_size)
        best = coarse[int(np.argmax(p))]
        fine = _cube(best, refine_radius, 1.0, shape)
        q = _probabilities(net, patcher, image, fine, int(lab), device, batch_size)
        keep = q >= 0.5 * q.max()
        w = q[keep] / max(q[keep].sum(), 1e-12)
        pos[i] = (fine[keep] * w[:, None]).sum(0)
        peak[i] = q.max()
    return pos, peak
