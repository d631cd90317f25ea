"""Evaluation of the aneurysm study: top-1 and confusion matrix, AdaBoost ROC AUC against the number of weak
learners, and dense landmark localisation with its error in mm."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.data import MetaTensor
from sklearn.ensemble import AdaBoostClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from monai_ext.networks.utils import fuse_batchnorm as _fuse_batchnorm
from monai_ext.transforms import TriPlanarPatch
from monai_ext.utils import as_bool

__all__ = ["confusion_matrix", "adaboost_auc_curve", "left_right_mirror_labels", "localise_landmarks",
           "search_batch_size"]


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


def _plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain tensor: a network run on a ``MetaTensor`` carries its metadata through every layer."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _mirrored_patches(patcher: TriPlanarPatch, image: torch.Tensor, centres: np.ndarray,
                      patches: torch.Tensor | None = None) -> torch.Tensor:
    """The tri-planar patches that the left-right mirror of ``image`` (flipped along voxel axis 0) gives at the
    mirrored ``centres``, read from ``image`` itself: plane 0 (orthogonal to axis 0) is unchanged, planes 1 and 2
    (whose rows run along axis 0) are flipped along their rows. With an even ``patch_size`` the centre sits at row
    ``p // 2``, one sample past the middle, so their window is first moved by one in-plane step along axis 0.
    ``patches``: the patches of ``centres`` when already read (not read again)."""
    p, c = patcher.patch_size, int(image.shape[0])
    step = 1.0
    if patcher.extent_mm is not None:
        spacing = float(np.linalg.norm(np.asarray(image.affine, np.float64)[:3, 0])) if isinstance(
            image, MetaTensor) else 1.0
        step = float(patcher.extent_mm) / p / spacing
    shift = np.array([(2 * (p // 2) - p + 1) * step, 0.0, 0.0])
    same = _plain(patcher(image, centres)) if patches is None else patches
    moved = _plain(patcher(image, centres + shift)) if shift[0] else same
    return torch.cat([same[:, :c], moved[:, c:].flip(-2)], 1)


def _prob_and_log_odds(logits: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probability of class ``lab`` (``(N, 1)`` ids) and its log-odds ``log p / (1 - p)`` in float64, from
    the logits (``logit_lab - logsumexp(other logits)``: no saturation where the probability rounds to 1)."""
    own = logits.gather(1, lab)[:, 0]
    others = logits.scatter(1, lab, float("-inf")).logsumexp(1)
    return torch.softmax(logits, 1).gather(1, lab)[:, 0], (own - others).double()


@torch.no_grad()
def _scores(net: nn.Module, patcher: TriPlanarPatch, image: torch.Tensor, centres: np.ndarray,
            label: int | np.ndarray, device: torch.device, batch_size: int,
            memory_format: torch.memory_format = torch.contiguous_format,
            mirror: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probability of ``label`` and its log-odds ``log p / (1 - p)`` (from the logits, so that it does not
    saturate where the probability rounds to 1) at tri-planar patches of ``centres``; with ``mirror`` (class id ->
    class id of the left-right mirror), the mean of those of the patch and of its mirror image scored for the
    mirrored class."""
    probs, odds = [], []
    labels = torch.as_tensor(np.broadcast_to(np.asarray(label), (len(centres),)).copy(), dtype=torch.long)
    mirrored = None if mirror is None else torch.as_tensor(mirror)[labels]
    for i in range(0, len(centres), batch_size):
        chunk = centres[i : i + batch_size]
        patches = _plain(patcher(image, chunk))
        views = [(patches, labels)]
        if mirrored is not None:
            views.append((_mirrored_patches(patcher, image, chunk, patches), mirrored))
        prob, odd = 0.0, 0.0
        for x, lab_all in views:
            logits = net(x.float().to(device).contiguous(memory_format=memory_format)).float().cpu()
            p, o = _prob_and_log_odds(logits, lab_all[i : i + batch_size, None])
            prob, odd = prob + p / len(views), odd + o / len(views)
        probs.append(prob)
        odds.append(odd)
    if not probs:
        return np.zeros(0), np.zeros(0)
    return torch.cat(probs).numpy(), torch.cat(odds).numpy()


class _LogitCache:
    """The classifier's logits (every class) at tri-planar patches, keyed by ``(mirror view, voxel point)``.

    A forward pass scores a patch for every class at once, so one cache serves every landmark whose search reaches
    the point (and both searches of ``recentre``): a point is put through the network once per view, whichever
    landmarks ask for it. ``fill`` runs the network on the points not yet seen, ``batch_size`` patches at a time, a
    point needed in both views read once; ``scores`` gives the probability and log-odds of one class per point,
    averaged with the mirror view under the mirrored class when asked (the arithmetic of :func:`_scores`).
    """

    def __init__(self, net: nn.Module, patcher: TriPlanarPatch, image: torch.Tensor, device: torch.device,
                 batch_size: int, memory_format: torch.memory_format) -> None:
        self.net, self.patcher, self.image, self.device = net, patcher, image, device
        self.batch_size, self.memory_format = batch_size, memory_format
        self.rows: dict[tuple[bool, tuple[int, int, int]], torch.Tensor] = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float().to(self.device).contiguous(memory_format=self.memory_format)).float().cpu()

    def fill(self, points: Sequence[tuple[int, int, int]], mirrored: bool) -> None:
        """Score ``points`` (plain view, and the mirror view too when ``mirrored``) where not done before."""
        todo = list(dict.fromkeys(p for p in points if (False, p) not in self.rows
                                  or (mirrored and (True, p) not in self.rows)))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            centres = np.asarray(chunk, dtype=np.float64)
            patches = _plain(self.patcher(self.image, centres))
            need = [k for k, p in enumerate(chunk) if (False, p) not in self.rows]
            if need:
                for k, row in zip(need, self._forward(patches[need]), strict=True):
                    self.rows[(False, chunk[k])] = row
            if mirrored:
                need = [k for k, p in enumerate(chunk) if (True, p) not in self.rows]
                if need:
                    views = _mirrored_patches(self.patcher, self.image, centres[need], patches[need])
                    for k, row in zip(need, self._forward(views), strict=True):
                        self.rows[(True, chunk[k])] = row

    def scores(self, points: Sequence[tuple[int, int, int]], labels: np.ndarray,
               mirror: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Probability and log-odds of ``labels`` (one per point) at ``points``, which must have been filled."""
        lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))[:, None]
        views = [(False, lab)] if mirror is None else [(False, lab), (True, torch.as_tensor(mirror)[lab])]
        prob, odd = 0.0, 0.0
        for flipped, lb in views:
            p, o = _prob_and_log_odds(torch.stack([self.rows[(flipped, p)] for p in points]), lb)
            prob, odd = prob + p / len(views), odd + o / len(views)
        return prob.numpy(), odd.numpy()


def left_right_mirror_labels(class_names: Sequence[str]) -> list[int]:
    """Class map of the left-right mirror for landmarks named in the AFIDs way: ``"R<name>"`` and ``"L<name>"``
    swap, every other class (midline landmarks, background) maps to itself.

    Example::

        >>> left_right_mirror_labels(["background", "AC", "RMB", "LMB"])
        [0, 1, 3, 2]
    """
    index = {str(n): i for i, n in enumerate(class_names)}
    out = list(range(len(class_names)))
    for name, i in index.items():
        if len(name) > 1 and name[0] in "RL":
            j = index.get({"R": "L", "L": "R"}[name[0]] + name[1:])
            if j is not None:
                out[i] = j
    return out


def _check_mirror(mirror_labels: Sequence[int] | None, labels: np.ndarray) -> np.ndarray | None:
    if mirror_labels is None:
        return None
    m = np.asarray(mirror_labels)
    if m.ndim != 1 or not np.issubdtype(m.dtype, np.integer) or (m < 0).any() or (m >= len(m)).any() \
            or not (m[m] == np.arange(len(m))).all():
        raise ValueError("mirror_labels must map every class id to a class id (a list indexed by class id) and be its "
                         f"own inverse (mirror of the mirror = the class), got {m.tolist()}.")
    if len(labels) and labels.max() >= len(m):
        raise ValueError(f"mirror_labels covers classes 0..{len(m) - 1}, the search asks for class {labels.max()}.")
    return m.astype(np.int64)


def _cube(centre: np.ndarray, radius: float, step: float, shape: Sequence[int]) -> np.ndarray:
    r = np.arange(-radius, radius + 1e-6, step)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) + centre
    return grid[np.all((grid >= 0) & (grid <= np.asarray(shape) - 1), axis=1)]


def _ball_offsets(radius: float, step: int) -> np.ndarray:
    """Integer offsets on a lattice of spacing ``step`` within ``radius`` voxels of the origin (origin first)."""
    n = int(np.floor(radius / step))
    r = np.arange(-n, n + 1) * step
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[np.linalg.norm(grid, axis=1) <= radius + 1e-6]
    return grid[np.argsort(np.abs(grid).sum(1), kind="stable")]


def _lattice_ball(centre: np.ndarray, anchor: np.ndarray, radius: float, step: int) -> np.ndarray:
    """The integer points within ``radius`` voxels of ``centre`` on the lattice of spacing ``step`` through
    ``round(anchor)`` (with the anchor at the centre: ``centre + _ball_offsets(radius, step)``, as a set)."""
    anchor = np.round(np.asarray(anchor, dtype=np.float64))
    base = anchor + step * np.round((np.asarray(centre) - anchor) / step)
    pts = base + _ball_offsets(radius + step, step)  # the ball around base covers the one around centre
    return pts[np.linalg.norm(pts - centre, axis=1) <= radius + 1e-6].astype(np.int64)


_METHODS = ("coarse_to_fine", "exhaustive")
_SCORES = ("probability", "log_odds")
_LATTICES = ("prior", "shared")


#: patches per forward pass on a CPU: the tri-planar classifier's activations for 128 patches stay in the cache,
#: those of 512 (the previous default, kept for other devices) did not on the 2-core Xeon of ``docs/results.md``
CPU_SEARCH_BATCH = 128
#: patches per forward pass on other devices (GPUs: larger batches keep them busy)
DEVICE_SEARCH_BATCH = 512


def search_batch_size(device: torch.device | str, batch_size: int | None = None) -> int:
    """Patches per forward pass of the landmark search: ``batch_size`` when given (a positive integer), else
    :data:`CPU_SEARCH_BATCH` on a CPU and :data:`DEVICE_SEARCH_BATCH` on other devices.

    Raises:
        ValueError: when ``batch_size`` is given and is not a positive integer.
    """
    if batch_size is None:
        return CPU_SEARCH_BATCH if torch.device(device).type == "cpu" else DEVICE_SEARCH_BATCH
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    return int(batch_size)


@torch.no_grad()
def localise_landmarks(net: nn.Module, image: torch.Tensor, priors: np.ndarray, labels: Sequence[int],
                       device: torch.device, search_radius: float = 10.0, step: float = 2.0, patch_size: int = 32,
                       extent_mm: float | None = None, batch_size: int | None = None, refine_radius: float = 3.0,
                       method: str = "coarse_to_fine", top_k: int = 2, channels_last: bool = True,
                       prior_sigma_mm: float | None = None, score: str = "probability",
                       mirror_labels: Sequence[int] | None = None, mirror_coarse: bool = True,
                       fuse_batchnorm: bool = True, recentre: bool = False,
                       coarse_lattice: str = "prior") -> tuple[np.ndarray, np.ndarray]:
    """Predict each landmark's voxel position by dense tri-planar classification around a prior position.

    ``method="coarse_to_fine"`` (default; all landmarks batched together): the classifier's probability of class
    ``k`` is evaluated for landmark ``k`` on the integer lattice of spacing ``step`` inside the *ball* of radius
    ``search_radius`` voxels around ``round(priors[k])``, all landmarks' points in the same batches. Then, with the
    spacing halved (rounded, down to 1 voxel), the 3x3x3 neighbourhood of each of the ``top_k`` best points
    evaluated so far is added (points already evaluated are not recomputed; refinement may thus reach up to
    ``step`` voxels beyond the ball), until the spacing is one voxel. The
    prediction is the probability-weighted centroid of the unit-spaced neighbours of the best point (3x3x3) whose
    probability is at least half the best, and the reported probability is the best one. With a probability peak
    wider than ``step / 2`` (a classifier trained with jitter), this finds the peak that the exhaustive search finds
    at a fraction of its evaluations (``benchmarks/bench_localisation.py`` compares both).

    With ``prior_sigma_mm``, points are ranked by the maximum a posteriori score ``p_k(x) * exp(-|x - prior|^2 /
    (2 sigma^2))`` (distances in mm from the image's affine) instead of ``p_k(x)`` alone: a Gaussian prior on the
    landmark's position around its search centre, which stops a distant look-alike from winning over a slightly
    weaker response near the expected position; set ``sigma`` to the spread of the landmarks around the priors
    (about 4-6 mm after affine alignment). The reported probability stays the classifier's own.

    ``score="log_odds"`` ranks (and weights the final centroid) by the log-odds ``log p_k / (1 - p_k)`` computed
    from the logits instead of the probability: a classifier trained with near misses saturates its softmax at 1 over
    a plateau of several voxels around the landmark, where the probability no longer says which point is best but the
    logits still do (the centroid weights are then the odds, times the prior when one is given).

    ``mirror_labels`` (class id -> class id of the left-right mirror, e.g. :func:`left_right_mirror_labels`) turns
    on mirror averaging, a test-time augmentation: every point is scored by the mean of the classifier's output for
    its patch and for the mirror image of that patch (what the volume flipped along voxel axis 0 shows at the
    mirrored point) under the mirrored class, so a right fiducial is also looked for as the left one of the mirrored
    brain (test-time augmentation as in Wang et al., Neurocomputing 2019). Only meaningful when voxel axis 0 is the
    left-right axis of a left-right symmetric space (the brain model's search grid: RAS axes of the symmetric MNI152
    2009a template); it doubles the network evaluations. With ``mirror_coarse=False`` the coarse lattice (the
    coarse cube of the exhaustive search), where most points are, is scored without it, and mirror averaging starts
    with the refinement: the ``2 * top_k`` best coarse points of each landmark (exhaustive: its best one) are
    scored again with it, and only points scored with it are ranked from then on. This saves most of the extra
    evaluations (the coarse lattice holds most points); whether it costs accuracy is for held-out data to say
    (``search.mirror_selection``).
    :class:`~monai_ext.apps.aneurysm.ModelMetaWriter` decides per model on its held-out data and records both errors
    (``search.mirror_selection``; the aneurysm bundle README shows the brain model's).

    ``recentre`` runs the search twice: the first search's positions give an affine map of the priors
    (:func:`recentred_priors`: least squares over every landmark, refitted without the quarter that fits it worst),
    and the second search is centred, its position prior included, on the mapped priors. It corrects what an
    intensity-based alignment of the whole image left (a few mm on scans cut to a box or of an unusual contrast)
    from the landmarks themselves. With ``method="coarse_to_fine"`` the second search costs a fraction of the first:
    its ball (radius ``search_radius`` around the mapped prior) is made of the points of the first search's lattice,
    and every point the first search scored is read back from its scores instead of being evaluated again, then
    ranked under the second search's own position prior (so this changes the cost, never the answer);
    ``benchmarks/bench_localisation.py --recentre`` measures it. The exhaustive search runs whole twice. On
    development heads (synthetic, seed 7, none of the published evaluation's; local experiment of 7 Dec 2026, the
    published brain model, the second search then on a lattice of its own) it lowered the mean error on 33 of 44
    heads, by 0.11 mm on average (from 1.72 to 1.53 mm on the 4 validation brains, 2.07 to 1.86 on 10 whole-head
    PD-like heads, 2.06 to 1.93 on 10 PD-like boxes, 1.65 to 1.61 on T2-like boxes, 1.09 to 1.05 on skull boxes).
    On the published evaluation's rows it was closer on the scans cut to the fiducials' box and further on the
    whole-head T1 rows (bundle README, "re-centred search"), so it is off by default. The aneurysm bundle turns it
    on with ``--search_recentre true``, or only for scans that leave part of the template's brain outside the field
    of view with ``--search_recentre auto`` (:class:`~monai_ext.apps.aneurysm.TriPlanarPointInferer`); with
    another network of the same training command neither the box rows nor development whole heads were closer
    with it (bundle README).

    The network scores a patch for every class in one forward pass, so the coarse-to-fine search puts each point
    through it once, whichever landmarks' searches reach the point: the logits are kept and read back for the
    others (this changes the cost, never the answer). ``coarse_lattice`` decides how often that happens on the
    coarse lattice, where most points are: ``"prior"`` (default, as before) centres each landmark's lattice on its
    rounded prior, so two landmarks' lattices meet only where their priors differ by a multiple of ``step`` along
    every axis; ``"shared"`` takes every landmark's coarse points from the one lattice of spacing ``step`` through
    voxel ``(0, 0, 0)`` (the ball of radius ``search_radius`` around the rounded prior, made of that lattice's
    points), so overlapping searches share their coarse points, and the refinement's points of spacing ``step / 2``
    too. The two lattices differ by at most ``step / 2`` voxels along each axis, so the searches differ, a little;
    ``benchmarks/bench_localisation.py --shared_lattice`` measures the cost and the aneurysm bundle README the
    accuracy (``--search_lattice shared``).

    ``method="exhaustive"`` (the original search): every point of the *cube* of half side ``search_radius``
    (spacing ``step``), then every unit-spaced point within ``refine_radius`` of the best one; the prediction is the
    probability-weighted centroid of the refined points with at least half the maximum probability. Landmarks are
    processed one after the other.

    Args:
        net: landmark classifier (``num_landmarks + 1`` logits, class 0 = background), in eval mode.
        image: ``(1, X, Y, Z)`` volume.
        priors: ``(L, 3)`` voxel search centres.
        labels: ``(L,)`` class ids.
        device: device of ``net``.
        search_radius: radius (coarse-to-fine) or half side (exhaustive) of the search region (voxels).
        step: coarse grid spacing (voxels; rounded to an integer >= 1 for coarse-to-fine).
        patch_size: plane side.
        extent_mm: physical plane side (as in training).
        batch_size: patches per forward pass; ``None``: :func:`search_batch_size` of ``device``.
        refine_radius: half side of the unit-step refinement cube of the exhaustive search (voxels).
        method: ``"coarse_to_fine"`` or ``"exhaustive"``.
        top_k: points refined per landmark and level (coarse-to-fine).
        channels_last: run the network on channels-last patches (faster convolutions on CPU; the network is put
            back into contiguous format afterwards).
        prior_sigma_mm: standard deviation (mm) of the Gaussian position prior; ``None``: no prior.
        score: ``"probability"`` or ``"log_odds"``, what points are ranked and weighted by.
        mirror_labels: left-right class map (a list indexed by class id, its own inverse) for mirror averaging, or
            ``None``.
        mirror_coarse: with ``mirror_labels``, also mirror-average the coarse lattice (``True``, every point) or
            start mirror averaging with the refinement (``False``, see above).
        fuse_batchnorm: search with a copy of ``net`` whose batch normalisations are folded into the preceding
            convolutions (:func:`~monai_ext.networks.utils.fuse_batchnorm`: same outputs up to float rounding, less
            time on a CPU); ``net`` itself is not changed. ``False``: use ``net`` as it is.
        recentre: search a second time around the priors mapped by the affine fit of the first search's
            positions (see above).
        coarse_lattice: ``"prior"`` (each landmark's coarse lattice through its rounded prior) or ``"shared"``
            (one lattice through voxel ``(0, 0, 0)`` for every landmark; see above). Coarse-to-fine only.

    Returns:
        ``(positions (L, 3) voxel, peak probabilities (L,))``.

    Raises:
        ValueError: when ``priors`` and ``labels`` differ in length, the radii/step are not positive, ``method`` or
            ``score`` is unknown, ``mirror_labels`` is not an involution over the class ids, ``mirror_coarse`` is a
            string other than true/false, ``coarse_lattice`` is unknown, or a landmark's search region lies
            outside the volume.
    """
    priors = np.asarray(priors, dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(priors) != len(labels):
        raise ValueError(f"priors ({len(priors)}) and labels ({len(labels)}) must have the same length.")
    if search_radius < 0 or step <= 0 or refine_radius < 0:
        raise ValueError(f"search_radius, refine_radius must be >= 0 and step > 0, got {search_radius}, "
                         f"{refine_radius}, {step}.")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}.")
    if prior_sigma_mm is not None and not prior_sigma_mm > 0:
        raise ValueError(f"prior_sigma_mm must be positive or None, got {prior_sigma_mm}.")
    mirror_coarse = as_bool(mirror_coarse, "mirror_coarse")  # a command line's "false" is a string
    if coarse_lattice not in _LATTICES:
        raise ValueError(f"coarse_lattice must be one of {_LATTICES}, got {coarse_lattice!r}.")
    mirror = _check_mirror(mirror_labels, labels)
    batch_size = search_batch_size(device, batch_size)
    lin = np.asarray(image.affine, dtype=np.float64)[:3, :3] if isinstance(image, MetaTensor) else np.eye(3)

    def rank(prob: np.ndarray, log_odds: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Log of the ranking score: log p (or the log-odds) plus the log of the Gaussian prior."""
        if score == "probability":  # float64 first: 1e-300 is 0 in float32, and log(0) warns
            out = np.log(np.maximum(np.asarray(prob, dtype=np.float64), 1e-300))
        else:
            out = np.asarray(log_odds, dtype=np.float64)
        if prior_sigma_mm is None:
            return out
        d2 = (((np.asarray(points, dtype=np.float64) - centre) @ lin.T) ** 2).sum(-1)
        return out - d2 / (2.0 * prior_sigma_mm**2)

    net.eval()
    if fuse_batchnorm:
        net = _fuse_batchnorm(net)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    try:
        patcher = TriPlanarPatch(patch_size=patch_size, extent_mm=extent_mm)

        cache = _LogitCache(net, patcher, image, device, batch_size, fmt)  # every search's logits, shared

        def search(centres: np.ndarray, anchors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            if method == "exhaustive":
                return _localise_exhaustive(net, patcher, image, centres, labels, device, search_radius, step,
                                            batch_size, refine_radius, fmt, rank, mirror, mirror_coarse)
            if coarse_lattice == "shared":  # every landmark's lattice through voxel (0, 0, 0)
                anchors = np.zeros_like(centres)
            return _localise_coarse_to_fine(net, patcher, image, centres, labels, device, search_radius,
                                            max(1, int(round(step))), batch_size, top_k, fmt, rank, mirror,
                                            mirror_coarse, cache=cache, anchors=anchors)

        found = search(priors)
        if recentre:
            found = search(recentred_priors(priors, found[0], image.shape[1:]), anchors=np.round(priors))
        return found
    finally:
        net.to(memory_format=torch.contiguous_format)


def recentred_priors(priors: np.ndarray, found: np.ndarray, shape: Sequence[int] | None = None,
                     trim: float = 0.25, min_points: int = 8) -> np.ndarray:
    """The priors mapped by the affine transform that best carries them onto the found positions: least squares
    over every landmark, then again without the fraction ``trim`` of them that fit worst (landmarks the first
    search missed). A mapped prior that falls outside a volume of ``shape`` keeps its original position; with fewer
    than ``min_points`` landmarks (an affine map has 12 parameters) the priors are returned as they are.

    Args:
        priors: ``(L, 3)`` positions (voxel or world; ``found`` in the same coordinates).
        found: ``(L, 3)`` positions a search found for them.
        shape: the volume's spatial shape when the positions are voxels (``None``: no check).
        trim: fraction of the landmarks left out of the second fit, in ``[0, 1)``.
        min_points: fewest landmarks for a fit.

    Returns:
        ``(L, 3)`` new search centres (float64).

    Raises:
        ValueError: for shapes that differ or are not ``(L, 3)``, or a ``trim`` outside ``[0, 1)``.

    Example::

        >>> p = np.random.default_rng(0).uniform(0, 50, (10, 3))
        >>> np.allclose(recentred_priors(p, p * 1.1 + 2), p * 1.1 + 2)
        True
    """
    priors = np.asarray(priors, dtype=np.float64)
    found = np.asarray(found, dtype=np.float64)
    if priors.ndim != 2 or priors.shape[1] != 3 or priors.shape != found.shape:
        raise ValueError(f"priors and found must both be (L, 3), got {priors.shape} and {found.shape}.")
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}.")
    if len(priors) < max(int(min_points), 4):
        return priors.copy()
    x = np.c_[priors, np.ones(len(priors))]
    fit, *_ = np.linalg.lstsq(x, found, rcond=None)
    residual = np.linalg.norm(x @ fit - found, axis=1)
    keep = residual <= np.quantile(residual, 1.0 - trim)
    if keep.sum() >= 4:
        fit, *_ = np.linalg.lstsq(x[keep], found[keep], rcond=None)
    centres = x @ fit
    if shape is not None:
        outside = ~np.all((centres >= 0) & (centres <= np.asarray(shape, dtype=np.float64) - 1), axis=1)
        centres[outside] = priors[outside]
    return centres


def _outside_error(lab: int, prior: np.ndarray, shape: Sequence[int]) -> ValueError:
    return ValueError(f"the search region of landmark {lab} around voxel {prior.tolist()} lies outside the volume "
                      f"of shape {tuple(shape)}; is the volume aligned with the training data?")


def _localise_exhaustive(net: nn.Module, patcher: TriPlanarPatch, image: torch.Tensor, priors: np.ndarray,
                         labels: np.ndarray, device: torch.device, search_radius: float, step: float,
                         batch_size: int, refine_radius: float, fmt: torch.memory_format,
                         rank: Callable[..., np.ndarray], mirror: np.ndarray | None = None,
                         mirror_coarse: bool = True) -> tuple[np.ndarray, np.ndarray]:
    shape = image.shape[1:]
    pos, peak = np.zeros_like(priors), np.zeros(len(priors))
    for i, (prior, lab) in enumerate(zip(priors, labels, strict=False)):
        coarse = _cube(np.round(prior), search_radius, step, shape)
        if len(coarse) == 0:
            raise _outside_error(int(lab), prior, shape)
        p, o = _scores(net, patcher, image, coarse, int(lab), device, batch_size, fmt,
                       mirror if mirror_coarse else None)
        best = coarse[int(np.argmax(rank(p, o, coarse, prior)))]
        fine = _cube(best, refine_radius, 1.0, shape)
        q, o = _scores(net, patcher, image, fine, int(lab), device, batch_size, fmt, mirror)
        pos[i], peak[i] = _centroid(fine, rank(q, o, fine, prior), q)
    return pos, peak


def _localise_coarse_to_fine(net: nn.Module, patcher: TriPlanarPatch, image: torch.Tensor, priors: np.ndarray,
                             labels: np.ndarray, device: torch.device, search_radius: float, step: int,
                             batch_size: int, top_k: int, fmt: torch.memory_format,
                             rank: Callable[..., np.ndarray], mirror: np.ndarray | None = None,
                             mirror_coarse: bool = True, cache: _LogitCache | None = None,
                             anchors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The coarse-to-fine search of :func:`localise_landmarks`.

    ``cache`` (:class:`_LogitCache`, filled here; a new one when ``None``): the classifier's logits at the points
    evaluated before, by this search for any landmark or by an earlier search of the same image; a point found
    there is not put through the network again. Only the points this search asks for are ranked (under its own
    ``priors``), so a cache changes what the search costs, never what it returns.
    ``anchors`` (``(L, 3)`` voxels): put the coarse lattice of each landmark on the lattice through its anchor (the
    ball of radius ``search_radius`` around ``round(priors)`` is then made of the points of that lattice), so that
    a second search near the first one meets the points that the first one evaluated; ``None``: the lattice
    through ``round(priors)``.
    """
    shape = np.asarray(image.shape[1:])
    n = len(priors)
    if cache is None:
        cache = _LogitCache(net, patcher, image, device, batch_size, fmt)
    seen: list[dict[tuple[int, int, int], tuple[float, float]]] = [{} for _ in range(n)]

    def inside(pts: np.ndarray) -> np.ndarray:
        return pts[np.all((pts >= 0) & (pts <= shape - 1), axis=1)]

    def evaluate(requests: list[np.ndarray], mirror: np.ndarray | None = mirror) -> None:
        """Scores of the not yet ranked points of every landmark; the network only for points no landmark's search
        has scored yet (in that view), all landmarks' points in one batch stream."""
        owner, pts = [], []
        for i, req in enumerate(requests):
            for p in {tuple(int(v) for v in p) for p in inside(req)} - seen[i].keys():
                pts.append(p)
                owner.append(i)
        if not pts:
            return
        centres = np.asarray(pts, dtype=np.float64)
        cache.fill(pts, mirror is not None)
        prob, odds = cache.scores(pts, labels[np.asarray(owner)], mirror)
        owners = np.asarray(owner)
        ranked = np.zeros(len(centres))
        for i in np.unique(owners):
            sel = owners == i
            ranked[sel] = rank(prob[sel], odds[sel], centres[sel], priors[i])
        for i, p, q, r in zip(owner, pts, prob, ranked, strict=True):
            seen[i][p] = (float(r), float(q))  # (log ranking score, classifier probability)

    starts = np.round(priors).astype(np.int64)
    if anchors is None:
        ball = _ball_offsets(search_radius, step)
        coarse = [s + ball for s in starts]
    else:
        coarse = [_lattice_ball(s, a, search_radius, step) for s, a in zip(starts, anchors, strict=True)]
    evaluate(coarse, mirror if mirror_coarse else None)
    for i in range(n):
        if not seen[i]:
            raise _outside_error(int(labels[i]), priors[i], shape)
    if mirror is not None and not mirror_coarse:  # mirror averaging from here on: rescore the seeds, rank only those
        seeds = [np.asarray([p for p, _ in sorted(seen[i].items(), key=lambda kv: -kv[1][0])[:2 * top_k]])
                 for i in range(n)]
        seen = [{} for _ in range(n)]
        evaluate(seeds)
    cube = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    s = step
    while s > 1:
        s = max(1, int(round(s / 2)))
        requests = []
        for i in range(n):
            best = sorted(seen[i].items(), key=lambda kv: -kv[1][0])[:top_k]
            requests.append(np.concatenate([np.asarray(p) + cube * s for p, _ in best]))
        evaluate(requests)
    # final: the unit neighbourhood of the best point, then its probability-weighted centroid
    best_pts = [np.asarray(max(seen[i].items(), key=lambda kv: kv[1][0])[0]) for i in range(n)]
    evaluate([b + cube for b in best_pts])
    pos, peak = np.zeros_like(priors), np.zeros(n)
    for i, b in enumerate(best_pts):
        nb = inside(b + cube)
        score = np.array([seen[i][tuple(int(v) for v in p)] for p in nb])  # (log score, probability) rows
        pos[i], peak[i] = _centroid(nb, score[:, 0], score[:, 1])
    return pos, peak


def _centroid(points: np.ndarray, log_score: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, float]:
    """Score-weighted centroid of the points scoring at least half the best, and the probability at the best."""
    w = np.exp(log_score - log_score.max())
    keep = w >= 0.5
    w = w[keep] / w[keep].sum()
    return (points[keep] * w[:, None]).sum(0), float(prob[int(np.argmax(log_score))])
