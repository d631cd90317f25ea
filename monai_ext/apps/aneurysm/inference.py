"""Inference of the aneurysm bundle: classify given points, or localise every landmark in a new volume.

``inference.json`` wires :class:`TriPlanarPointInferer` (the bundle's ``inferer``) and :class:`AneurysmInference`
(its ``evaluator``). Landmark localisation needs the search priors written at training time
(``landmark_priors.json``: mean training position of every landmark in world mm), so it works on volumes with any
grid as long as they are roughly aligned with the training data; put
:class:`~monai_ext.transforms.alignment.AlignToTemplated` into the preprocessing for inputs in any pose, and the
points are mapped back to the input's RAS mm.

Honest confidence: every localised point carries its probability, points below ``confidence_threshold`` are
flagged (``"low_confidence"`` in the JSON and a logged warning), and :class:`FeatureDistributionCheck` says when
the network's features at the search centres are unlike its training features (a model used on data unlike its
training data, e.g. the synthetic-vessel model on a brain).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_ext.transforms import TriPlanarPatch
from monai_ext.transforms.spatial import apply_matrix
from monai_ext.utils import as_bool, default_device, load_checkpoint

from .evaluation import _LATTICES, localise_landmarks, search_batch_size
from .landmarks import PointSet, points_to_voxels, read_points, write_points_fcsv, write_points_json

__all__ = [
    "CONFIDENCE_THRESHOLD",
    "RECENTRE_OVERLAP",
    "IMAGE_EXTENSIONS",
    "image_stem",
    "inference_items",
    "model_input_error",
    "resolve_inference_datalist",
    "AneurysmInference",
    "FeatureDistributionCheck",
    "TriPlanarPointInferer",
    "flag_low_confidence",
    "out_of_distribution_verdict",
    "recentre_mode",
    "load_priors",
    "save_priors",
    "write_landmark_priors",
    "LandmarkPriorsWriter",
]

logger = logging.getLogger(__name__)

#: Default probability below which a localised landmark is flagged: below 0.5 the classifier, at the best point of
#: the search, gives more probability to the other classes (background or another landmark) than to this landmark.
CONFIDENCE_THRESHOLD = 0.5

#: ``recentre="auto"`` of :class:`TriPlanarPointInferer` searches a second time when less than this fraction of the
#: template's brain mask lies inside the scan after the alignment (``alignment["overlap"]``): a scan cut to a box
#: or a slab, where the intensity-based alignment has less to go on. On the brain evaluation's scans the whole heads
#: keep at least 0.98 of it and the scans cut to the fiducials' box at most 0.90.
RECENTRE_OVERLAP = 0.95


def recentre_mode(value: Any, name: str = "recentre") -> bool | str:
    """``True``, ``False`` or ``"auto"`` from a config or command-line value (``"true"``, ``"false"``, ``"auto"``,
    a bool).

    Raises:
        ValueError: for any other value, naming ``name``.

    Example::

        >>> recentre_mode("AUTO"), recentre_mode("false"), recentre_mode(True)
        ('auto', False, True)
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return as_bool(value, name)
    except ValueError:  # one message that lists every accepted value, not as_bool's two
        raise ValueError(f"{name} must be true, false or 'auto', got {value!r}.") from None


def flag_low_confidence(names: Sequence[str], probabilities: Sequence[float] | np.ndarray,
                        threshold: float = CONFIDENCE_THRESHOLD, source: str = "") -> np.ndarray:
    """``(L,)`` bool: the points whose probability is below ``threshold``; logs one warning naming them.

    Raises:
        ValueError: for a threshold outside ``[0, 1]`` or names and probabilities of different lengths.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(p) != len(names):
        raise ValueError(f"{len(names)} names and {len(p)} probabilities.")
    low = p < threshold
    if low.any():
        listed = ", ".join(f"{n} ({v:.2f})" for n, v, f in zip(names, p, low, strict=True) if f)
        logger.warning("%s%d of %d landmarks below the confidence threshold %.2f: %s", f"{source}: " if source else "",
                       int(low.sum()), len(p), threshold, listed)
    return low


def out_of_distribution_verdict(low_confidence: Sequence[bool] | np.ndarray, max_low_fraction: float = 0.5,
                                feature_verdict: dict[str, Any] | None = None) -> dict[str, Any]:
    """Image-level verdict: is this image unlike the model's training data (so that no point should be trusted)?

    Two signals, either of which flags the image: (1) at least ``max_low_fraction`` of the landmarks are below the
    confidence threshold: a model used on data unlike its own (the synthetic-vessel model on a brain, or the brain
    model on vessel volumes: 91-94 % of points below 0.5 in the feasibility run) finds no confident point; (2) the
    :meth:`FeatureDistributionCheck.assess` verdict, when given (it did not flag the vessel volumes in that run, so
    it complements rather than replaces the first signal).

    Returns:
        ``{"flagged", "low_confidence_fraction", "max_low_fraction", "reasons", "feature_check"}``.

    Raises:
        ValueError: for ``max_low_fraction`` outside ``(0, 1]``.
    """
    if not 0 < max_low_fraction <= 1:
        raise ValueError(f"max_low_fraction must be in (0, 1], got {max_low_fraction}.")
    low = np.asarray(low_confidence, dtype=bool).reshape(-1)
    frac = float(low.mean()) if low.size else 0.0
    reasons = []
    if frac >= max_low_fraction:
        reasons.append(f"{100 * frac:.0f}% of the landmarks are below the confidence threshold")
    if feature_verdict is not None and feature_verdict.get("out_of_distribution"):
        reasons.append(f"{100 * feature_verdict['fraction_above']:.0f}% of the search centres have features beyond "
                       f"the training threshold (Mahalanobis distance > {feature_verdict['threshold']:.1f}; median "
                       f"{feature_verdict['median_distance']:.1f})")
    return {"flagged": bool(reasons), "low_confidence_fraction": frac, "max_low_fraction": max_low_fraction,
            "reasons": reasons, "feature_check": feature_verdict}


class FeatureDistributionCheck:
    """Out-of-distribution check: Mahalanobis distance of penultimate features to the closest training class.

    The score of Lee et al., "A simple unified framework for detecting out-of-distribution samples and adversarial
    attacks", NeurIPS 2018 (eq. 2): class means of the training features and one shared covariance (here with
    Ledoit-Wolf shrinkage, Ledoit and Wolf, J. Multivariate Analysis 88(2), 2004, well conditioned with few samples);
    a feature vector's score is its Mahalanobis distance to the *closest* class mean. The point threshold is the
    ``quantile`` of the scores of held-out in-distribution features (``holdout_features``: best from other images
    than the training ones, scored the same way as at inference), so about ``1 - quantile`` of in-distribution
    points exceed it; an image is flagged out of distribution when at least ``min_fraction`` of its points do.

    Use with the landmark model: fit on ``net.features`` of training patches of every class (landmarks and
    background), threshold on held-out images' patches at the search centres, and at inference score the patches at
    the search centres (the priors on the aligned image): points chosen by the search itself would be biased towards
    whatever looks most like a landmark, in or out of distribution.

    Args:
        quantile: quantile of held-out scores used as the point threshold.
        min_fraction: fraction of points above the threshold that flags the image.

    Raises:
        ValueError: for a quantile or fraction outside ``(0, 1]``.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(400, 4)), np.repeat([1, 2], 200)
        >>> check = FeatureDistributionCheck().fit(x, y)
        >>> check.assess(x[:20] + 10.0)["out_of_distribution"]
        True
    """

    def __init__(self, quantile: float = 0.99, min_fraction: float = 0.5) -> None:
        if not 0 < quantile <= 1 or not 0 < min_fraction <= 1:
            raise ValueError(f"quantile and min_fraction must be in (0, 1], got {quantile}, {min_fraction}.")
        self.quantile, self.min_fraction = float(quantile), float(min_fraction)
        self.means: dict[int, np.ndarray] = {}
        self.precision = np.zeros((0, 0))
        self.threshold = float("nan")

    def fit(self, features: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray, holdout: float = 0.2,
            seed: int = 0, holdout_features: np.ndarray | torch.Tensor | None = None) -> FeatureDistributionCheck:
        """Class means and shared covariance from ``features`` ``(N, F)`` with ``labels`` ``(N,)``; the threshold
        from the scores of ``holdout_features`` ``(M, F)`` when given, else of a random ``holdout`` fraction of
        ``features`` (then not used for the means and covariance; features of training images are tighter than those
        of any new image, so prefer held-out images).

        Raises:
            ValueError: for mismatched lengths or widths, fewer than 10 samples, or ``holdout`` outside ``(0, 1)``.
        """
        from sklearn.covariance import LedoitWolf

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if x.ndim != 2 or len(x) != len(y) or len(x) < 10:
            raise ValueError(f"need features (N, F) and labels (N,) with N >= 10, got {x.shape} and {y.shape}.")
        if holdout_features is not None:
            xf, yf = x, y
            xh = np.asarray(holdout_features, dtype=np.float64)
            if xh.ndim != 2 or xh.shape[1] != x.shape[1] or len(xh) == 0:
                raise ValueError(f"holdout_features must be (M, {x.shape[1]}) with M >= 1, got {xh.shape}.")
        else:
            if not 0 < holdout < 1:
                raise ValueError(f"holdout must be in (0, 1), got {holdout}.")
            held = np.random.default_rng(seed).random(len(x)) < holdout
            if held.all() or not held.any():
                held[:] = False
                held[:: max(2, int(round(1 / holdout)))] = True
            xf, yf, xh = x[~held], y[~held], x[held]
        self.means = {int(k): xf[yf == k].mean(0) for k in np.unique(yf)}
        centred = xf - np.stack([self.means[int(k)] for k in yf])
        self.precision = LedoitWolf().fit(centred).precision_
        self.threshold = float(np.quantile(self.distances(xh), self.quantile))
        return self

    def distances(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Mahalanobis distance of each feature vector ``(N, F)`` to the closest class mean.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        if not self.means:
            raise RuntimeError("call fit() (or from_dict()) before distances().")
        x = np.asarray(features, dtype=np.float64).reshape(-1, self.precision.shape[0])
        means = np.stack(list(self.means.values()))  # (K, F)
        diff = x[:, None, :] - means[None]  # (N, K, F)
        d2 = np.einsum("nkf,fg,nkg->nk", diff, self.precision, diff)
        return np.sqrt(d2.min(1).clip(0)) if len(x) else np.zeros(0)

    def assess(self, features: np.ndarray | torch.Tensor) -> dict[str, Any]:
        """``{"out_of_distribution", "fraction_above", "median_distance", "threshold", "min_fraction"}``."""
        d = self.distances(features)
        frac = float((d > self.threshold).mean()) if len(d) else 0.0
        return {"out_of_distribution": bool(frac >= self.min_fraction), "fraction_above": frac,
                "median_distance": float(np.median(d)) if len(d) else float("nan"), "threshold": self.threshold,
                "min_fraction": self.min_fraction}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (e.g. to store next to a checkpoint)."""
        return {"method": "Mahalanobis distance to the closest class mean (Lee et al. 2018), Ledoit-Wolf covariance",
                "quantile": self.quantile, "min_fraction": self.min_fraction, "threshold": self.threshold,
                "means": {str(k): v.tolist() for k, v in self.means.items()}, "precision": self.precision.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureDistributionCheck:
        """Rebuild a fitted check from :meth:`to_dict`."""
        check = cls(state["quantile"], state["min_fraction"])
        check.means = {int(k): np.asarray(v, dtype=np.float64) for k, v in state["means"].items()}
        check.precision = np.asarray(state["precision"], dtype=np.float64)
        check.threshold = float(state["threshold"])
        return check

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureDistributionCheck:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: a missing file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature-distribution file not found: '{path}'.")
        return cls.from_dict(json.loads(path.read_text()))


def save_priors(cases: Sequence[Any], names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write the mean world (RAS mm) position of every landmark over ``cases`` (:class:`~.data.Case`) as JSON."""
    world = {k: [] for k in range(1, len(names) + 1)}
    for c in cases:
        pts = (c.affine @ np.c_[c.landmarks, np.ones(len(c.landmarks))].T).T[:, :3]
        for p, lab in zip(pts, c.landmark_labels, strict=False):
            world[int(lab)].append(p)
    points = PointSet([names[k - 1] for k in world if world[k]], [k for k in world if world[k]],
                      np.array([np.mean(world[k], 0) for k in world if world[k]]).reshape(-1, 3))
    return write_points_json(points, path)


def write_landmark_priors(datalist: str | os.PathLike, path: str | os.PathLike, section: str = "training",
                          match_by_label: bool = False) -> Path:
    """:func:`save_priors` of a datalist section (what ``train.json`` writes next to ``models/model.pt``, for
    localisation at inference). Under ``torch.distributed`` only rank 0 writes."""
    import torch.distributed as dist

    from .data import landmark_names_of, load_cases

    path = Path(path)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return path
    names = landmark_names_of(datalist)
    return save_priors(load_cases(datalist, section, names, match_by_label=match_by_label), names, path)


class LandmarkPriorsWriter:
    """Ignite handler writing the landmark priors of the *training data* when training starts (``train.json``'s
    handlers), so that ``models/`` holds what localisation at inference needs next to ``model.pt``.

    The priors are the mean world (RAS mm) position of each landmark over ``data`` (the trainer's datalist: the
    bundle's own data, or the labelled images MONAI Label passes as ``train#dataset#data``), read with ``loader``
    (the bundle's :class:`~monai_ext.apps.aneurysm.LoadLandmarkCased`, which also accepts landmark label volumes).
    Under ``torch.distributed`` only rank 0 writes.

    Args:
        data: datalist items.
        loader: dictionary transform giving ``image`` (with its affine), ``points`` (voxels) and ``point_labels``.
        names: landmark names (class ``k`` is ``names[k - 1]``).
        path: the priors file (``<ckpt_dir>/landmark_priors.json``).

    Raises:
        ValueError: when ``data`` is empty.
    """

    def __init__(self, data: Sequence[dict[str, Any]], loader: Callable[[dict[str, Any]], dict[str, Any]],
                 names: Sequence[str], path: str | os.PathLike) -> None:
        self.data, self.loader, self.names, self.path = list(data), loader, list(names), Path(path)
        if not self.data:
            raise ValueError("LandmarkPriorsWriter needs at least one training item.")

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def priors(self) -> PointSet:
        """Mean world position of every landmark present in the data.

        A loader that gives the landmarks in world mm (``landmarks`` array and ``landmark_labels``: the brain model's
        pipeline, after the alignment into template space) is read directly, so landmarks outside the image's grid
        count too; otherwise the voxel ``points`` are mapped through the image's affine.
        """
        world: dict[int, list[np.ndarray]] = {k: [] for k in range(1, len(self.names) + 1)}
        for item in self.data:
            d = self.loader(dict(item))
            if isinstance(d.get("landmarks"), np.ndarray) and "landmark_labels" in d:
                pts, labels = np.asarray(d["landmarks"], dtype=np.float64), np.asarray(d["landmark_labels"])
            else:
                affine = np.asarray(d["image"].affine, dtype=np.float64)
                pts = (affine @ np.c_[np.asarray(d["points"]), np.ones(len(d["points"]))].T).T[:, :3]
                labels = np.asarray(d["point_labels"])
            for p, lab in zip(pts, labels, strict=True):
                world[int(lab)].append(p)
        present = [k for k in world if world[k]]
        return PointSet([self.names[k - 1] for k in present], present,
                        np.array([np.mean(world[k], 0) for k in present]).reshape(-1, 3))

    def __call__(self, engine: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        write_points_json(self.priors(), self.path)


def load_priors(path: str | os.PathLike) -> PointSet:
    """Read the priors written by :func:`save_priors`."""
    return read_points(path)


class TriPlanarPointInferer(Inferer):
    """Tri-planar patch inference at points: class probabilities at given points, or landmark localisation.

    ``mode="classify"``: ``inferer(image, network, points=(N, 3) voxel)`` returns ``(N, num_classes)``
    softmax probabilities of the patches centred on the points (landmark classes for the landmark network, or
    normal/aneurysm for the fine-tuned ``aneurysm_net.pt``).

    ``mode="localise"``: ``inferer(image, network, priors=(L, 3) voxel, labels=(L,))`` returns ``(L, 4)``: the
    predicted voxel position of every landmark and its peak probability
    (:func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`; batched coarse-to-fine by default);
    ``overlap=`` (the alignment's fraction of the template's brain inside the scan) decides ``recentre="auto"``.

    Args:
        mode: ``"classify"`` or ``"localise"``.
        patch_size: plane side used in training.
        extent_mm: physical plane side used in training.
        search_radius: localisation search radius (voxels; half side of the cube for ``method="exhaustive"``).
        search_step: coarse localisation grid step (voxels).
        refine_radius: half side of the unit-step refinement cube of the exhaustive search (voxels).
        batch_size: patches per forward pass; ``None``: 128 on a CPU, 512 on other devices
            (:func:`~monai_ext.apps.aneurysm.evaluation.search_batch_size`).
        method: ``"coarse_to_fine"`` (batched over landmarks) or ``"exhaustive"`` (the original search).
        top_k: candidates refined per landmark and level (coarse-to-fine).
        prior_sigma_mm: Gaussian position prior around the search centres (mm), or ``None`` (see
            :func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`).
        score: ``"probability"`` or ``"log_odds"``, what the search ranks (see
            :func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`).
        mirror_labels: left-right class map for mirror averaging of the search, or ``None`` (see
            :func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`; the brain model's description stores it
            as ``search.mirror_labels`` when its held-out data chose it).
        mirror_coarse: with ``mirror_labels``, mirror-average the coarse lattice too (``True``) or only from the
            refinement on (``False``; the description's ``search.mirror_coarse``, chosen with it).
        recentre: search twice, the second time around the priors mapped by an affine fit of the first search's
            positions (see :func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`; the description's
            ``search.recentre``, off when absent; ``--search_recentre true`` on the aneurysm bundle's command line).
            ``"auto"``: only for a scan that leaves part of the template's brain outside its field of view, i.e.
            when the call's ``overlap`` (the alignment's fraction of the template's brain mask inside the scan) is
            below ``recentre_overlap`` (:meth:`recentres`); a call without ``overlap`` (no alignment) searches once.
        recentre_overlap: the ``overlap`` below which ``recentre="auto"`` searches twice, in ``(0, 1]``
            (:data:`RECENTRE_OVERLAP`).
        coarse_lattice: ``"prior"`` (each landmark's coarse lattice through its rounded prior) or ``"shared"`` (one
            lattice for every landmark, so that overlapping searches score their common points once; see
            :func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`; the description's
            ``search.coarse_lattice``, ``"prior"`` when absent; ``--search_lattice`` on the aneurysm bundle's
            command line).
        protocol_planes: after the search, put the fiducials that the AFIDs protocol defines in the coronal plane
            of another one (:data:`~monai_ext.apps.aneurysm.afids.PROTOCOL_PLANES`: the lateral ventricle at AC and
            at PC) into that plane, through the found anchor and perpendicular to the found AC-PC line, at the
            template's offset from it (:meth:`place_protocol`); their two other coordinates stay the network's.
            Off by default (the description's ``search.protocol_planes``; ``--search_protocol_planes true`` on the
            aneurysm bundle's command line); the bundle README measures it.

    Raises:
        ValueError: for an unknown ``mode`` or ``coarse_lattice``, or missing points/priors at call time.
    """

    def __init__(self, mode: str = "localise", patch_size: int = 32, extent_mm: float | None = None,
                 search_radius: float = 10.0, search_step: float = 3.0, refine_radius: float = 2.0,
                 batch_size: int | None = None, method: str = "coarse_to_fine", top_k: int = 2,
                 prior_sigma_mm: float | None = None, score: str = "probability",
                 mirror_labels: Sequence[int] | None = None, mirror_coarse: bool = True,
                 recentre: bool | str = False, coarse_lattice: str = "prior",
                 recentre_overlap: float = RECENTRE_OVERLAP, protocol_planes: bool = False) -> None:
        super().__init__()
        if mode not in ("classify", "localise"):
            raise ValueError(f"mode must be 'classify' or 'localise', got {mode!r}.")
        if coarse_lattice not in _LATTICES:  # refused here, not at the first image
            raise ValueError(f"coarse_lattice must be one of {_LATTICES}, got {coarse_lattice!r}.")
        self.coarse_lattice = coarse_lattice
        self.mode, self.patch_size, self.extent_mm = mode, int(patch_size), extent_mm
        if batch_size is not None:
            search_batch_size("cpu", batch_size)  # a bad value fails here, not at the first image
        self.search_radius, self.search_step, self.batch_size = float(search_radius), float(search_step), batch_size
        self.refine_radius, self.method, self.top_k = float(refine_radius), method, int(top_k)
        self.prior_sigma_mm, self.score = prior_sigma_mm, score
        self.mirror_labels = None if mirror_labels is None else [int(v) for v in mirror_labels]
        self.mirror_coarse = as_bool(mirror_coarse, "mirror_coarse")
        self.recentre = recentre_mode(recentre, "recentre")
        if isinstance(recentre_overlap, bool) or not isinstance(recentre_overlap, (int, float)) or not (
                0 < recentre_overlap <= 1):
            raise ValueError(f"recentre_overlap must be a number in (0, 1], got {recentre_overlap!r}.")
        self.recentre_overlap = float(recentre_overlap)
        self.protocol_planes = as_bool(protocol_planes, "protocol_planes")

    def place_protocol(self, world: np.ndarray, priors: PointSet) -> tuple[np.ndarray, np.ndarray]:
        """The found points ``world`` (``(L, 3)`` input RAS mm, in the order of ``priors``) with the plane-defined
        fiducials moved into their anchor's coronal plane when ``protocol_planes`` is on
        (:func:`~monai_ext.apps.aneurysm.afids.place_on_protocol_planes`; offsets from the priors' template
        positions, :func:`~monai_ext.apps.aneurysm.afids.protocol_plane_offsets`), and how far each moved (mm, 0
        for the others). Off, or without AC and PC among the priors: ``world`` unchanged and zeros."""
        from .afids import place_on_protocol_planes, protocol_plane_offsets

        world = np.asarray(world, dtype=np.float64)
        if not self.protocol_planes:
            return world, np.zeros(len(world))
        offsets = protocol_plane_offsets(priors.positions, priors.names)
        return place_on_protocol_planes(world, priors.names, offsets)

    def recentres(self, overlap: float | None = None) -> bool:
        """Whether a localisation searches twice: ``recentre`` when it is a bool; with ``"auto"``, whether the
        alignment's ``overlap`` (fraction of the template's brain inside the scan; ``None``: not aligned) is below
        ``recentre_overlap``.

        Example::

            >>> inferer = TriPlanarPointInferer(recentre="auto")
            >>> inferer.recentres(1.0), inferer.recentres(0.8), inferer.recentres(None)
            (False, True, False)
        """
        if self.recentre != "auto":
            return bool(self.recentre)
        return overlap is not None and bool(np.isfinite(overlap)) and float(overlap) < self.recentre_overlap

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any,
                 points: np.ndarray | None = None, priors: np.ndarray | None = None,
                 labels: Sequence[int] | None = None, overlap: float | None = None, **kwargs: Any) -> torch.Tensor:
        image = inputs[0] if inputs.ndim == 5 else inputs  # a batch of one volume is accepted
        device = next(network.parameters()).device if isinstance(network, nn.Module) else torch.device("cpu")
        if self.mode == "classify":
            if points is None or len(points) == 0:
                raise ValueError("mode='classify' needs points=(N, 3) voxel coordinates.")
            patcher = TriPlanarPatch(self.patch_size, self.extent_mm)
            out, batch = [], search_batch_size(device, self.batch_size)
            for i in range(0, len(points), batch):
                x = torch.as_tensor(patcher(image, np.asarray(points)[i : i + batch])).float().to(device)
                out.append(torch.softmax(network(x).float(), 1).cpu())
            return torch.cat(out)
        if priors is None or labels is None:
            raise ValueError("mode='localise' needs priors=(L, 3) voxel positions and labels=(L,).")
        pos, peak = localise_landmarks(network, image, priors, labels, device, self.search_radius, self.search_step,
                                       self.patch_size, self.extent_mm, self.batch_size, self.refine_radius,
                                       method=self.method, top_k=self.top_k, prior_sigma_mm=self.prior_sigma_mm,
                                       score=self.score, mirror_labels=self.mirror_labels,
                                       mirror_coarse=self.mirror_coarse, recentre=self.recentres(overlap),
                                       coarse_lattice=self.coarse_lattice)
        return torch.as_tensor(np.c_[pos, peak])


#: image files :func:`inference_items` picks from a folder (a folder of DICOM files only is read as one series)
IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".mgz")


def image_stem(path: str | os.PathLike) -> str:
    """The name of an image without its image extension (:data:`IMAGE_EXTENSIONS`, any case; else its last
    suffix), the stem of its result files: ``"sub01.T1w.nii.gz"`` -> ``"sub01.T1w"``, a DICOM folder -> its name.

    Example::

        >>> image_stem("/data/sub01.T1w.nii.gz"), image_stem("scan.MHA"), image_stem("dicom/series_3")
        ('sub01.T1w', 'scan', 'series_3')
    """
    name = Path(str(path)).name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return Path(name).stem or name


def _is_dicom(path: Path) -> bool:
    """A DICOM file: ``.dcm`` or, as scanners often export them without an extension, the ``DICM`` preamble."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _dicom_series(folder: Path) -> list[tuple[str, int]]:
    """``(series instance UID, number of files)`` of every DICOM series in ``folder`` (ITK's GDCM reader)."""
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(False)  # one series per series instance UID, as 3D Slicer lists them
    names.SetDirectory(str(folder))
    return [(str(uid), len(names.GetFileNames(uid))) for uid in names.GetSeriesUIDs()]


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(ext) for ext in IMAGE_EXTENSIONS)


def _innermost(error: BaseException) -> str:
    """``"Type: message"`` of ``error`` or, when it is MONAI's wrapper of a transform's error (a ``RuntimeError``
    "applying transform ...", which names the transform, not the file), of the first error it wraps that is not."""
    seen = 0
    while isinstance(error, RuntimeError) and str(error).startswith("applying transform") and seen < 20:
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error, seen = inner, seen + 1
    return f"{type(error).__name__}: {error}"


def model_input_error(error: BaseException | None) -> Exception | None:
    """The :class:`~monai_ext.apps.aneurysm.transforms.ModelInputError` behind ``error`` (MONAI wraps a
    transform's error in a ``RuntimeError``), or ``None``."""
    from .transforms import ModelInputError

    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, ModelInputError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def inference_items(image: str | os.PathLike | None = None, datalist: str | os.PathLike | None = None,
                    section: str = "test", points_key: str | None = "candidates") -> list[dict[str, Any]]:
    """The items ``inference.json`` runs on: one image, every image of a folder, or a datalist section.

    Args:
        image: an image file (NIfTI, NRRD, MHA, ...), or a folder: every file in it with one of
            :data:`IMAGE_EXTENSIONS` (sorted by name), or, when it holds none but DICOM files (``.dcm`` or files
            without an extension that carry the DICOM preamble, as scanners export them), the folder as one
            DICOM series. ``None``: use ``datalist``.
        datalist: a Decathlon-style datalist JSON (items ``{"image"[, points_key]}``; relative paths against its
            folder).
        section: the datalist section.
        points_key: the items' point file key passed on as ``"points"`` (for ``mode="classify"``).

    Returns:
        ``[{"image": path[, "points": path]}, ...]``.

    Raises:
        FileNotFoundError: an image path that does not exist, or a folder without images, naming it.
        ValueError: neither ``image`` nor ``datalist``; a folder of DICOM files that holds more than one series
            (each listed: the reader would take one and drop the others).
    """
    from monai_ext.data import load_datalist

    if image is not None and str(image) != "":
        path = Path(image).expanduser()
        if path.is_file():
            return [{"image": str(path)}]
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if _is_image(p))
            if files:
                return [{"image": str(p)} for p in files]
            if any(_is_dicom(p) for p in path.iterdir()):
                series = _dicom_series(path)
                if len(series) > 1:  # the reader would take one of them and drop the others
                    listed = "; ".join(f"{uid} ({n} files)" for uid, n in series)
                    raise ValueError(f"--image folder '{path}' holds {len(series)} DICOM series ({listed}); give the "
                                     "folder of one series (or convert them first, e.g. with dcm2niix).")
                return [{"image": str(path)}]
            raise FileNotFoundError(f"--image folder '{path}' holds no image file ({', '.join(IMAGE_EXTENSIONS)}) "
                                    "and no DICOM series.")
        raise FileNotFoundError(f"--image '{path}' does not exist (give an image file or a folder of images).")
    if datalist is None:
        raise ValueError("inference needs --image PATH (a file or a folder) or a datalist (--dataset_dir).")
    keys = ("image",) if points_key is None else ("image", points_key)
    items = load_datalist(datalist, section, required_keys=("image",), path_keys=keys)
    return [{"image": i["image"], **({"points": i[points_key]} if points_key and points_key in i else {})}
            for i in items]


def resolve_inference_datalist(dataset_dir: str | os.PathLike | None, model_meta: Mapping[str, Any],
                               output_dir: str | os.PathLike, data_source: str = "synthetic",
                               **generator_kwargs: Any) -> Path:
    """The datalist ``inference.json`` runs on without ``--image``: ``dataset_dir``, else the datalist the model was
    trained with (``model_meta["datalist"]``, when it still exists), else the bundle's synthetic data of
    ``data_source`` under ``output_dir`` (:func:`~monai_ext.apps.aneurysm.data.resolve_aneurysm_datalist`)."""
    from .data import resolve_aneurysm_datalist

    if dataset_dir in (None, "", "synthetic") and model_meta.get("datalist"):
        path = Path(model_meta["datalist"])
        if path.is_file():
            return path
    return resolve_aneurysm_datalist(dataset_dir, output_dir, data_source, **generator_kwargs)


class AneurysmInference:
    """Run :class:`TriPlanarPointInferer` over a list of items and write one JSON point file per item.

    Items are ``{"image": path}`` plus, for ``mode="classify"``, ``"points": path`` of a landmark/candidate file
    (``.fcsv``/``.json``/``.csv``). Outputs (``<output_dir>/<image stem>_<mode>.json``): classified points with
    their probabilities (``label`` = the most likely class), or localised landmarks with their peak probability;
    both readable by :func:`~monai_ext.apps.aneurysm.landmarks.read_points`.

    With ``model_meta`` (the checkpoint folder's ``model_meta.json``, :mod:`~monai_ext.apps.aneurysm.model_meta`)
    the search priors, class names, confidence threshold, image-level threshold and feature check come from it; the
    explicit arguments below override it.

    Localisation output: ``{"image", "coordinate_system": "RAS", "units": "mm", "confidence_threshold",
    "num_low_confidence", "landmarks": [{"name", "label", "position" (RAS mm of the input image), "voxel" (index
    coordinates in the input image), "probability", "low_confidence"}], "recentred" (whether the search ran twice:
    :meth:`TriPlanarPointInferer.recentres`), "out_of_distribution": {"flagged", "reasons", ...}
    (:func:`out_of_distribution_verdict`: most landmarks low-confidence, or the :class:`FeatureDistributionCheck` of
    the patches at the search centres), "model"}``, plus the same points as a 3D
    Slicer ``<stem>_localise.fcsv`` (description ``p=<probability>``, ``LOW`` when flagged). When the preprocessing
    aligned the image to the template (:class:`~monai_ext.apps.aneurysm.AlignToModelTemplated` /
    :class:`~monai_ext.transforms.AlignToTemplated`: ``data["template_to_image"]`` and the MetaTensor's
    ``original_affine``), the search runs on the template grid and the points are mapped back to the input; the
    template-space points are kept as ``"template_position"``, and the alignment's record (the start kept, its
    mutual-information metric, the fraction of the template inside the scan, every start tried) as ``"alignment"``.
    Points below ``confidence_threshold`` and an image
    judged out of distribution are logged as warnings. :meth:`run` prints where the files went.

    Args:
        network: the classifier.
        ckpt_path: the network's weights (a bare ``state_dict`` such as ``models/model.pt``).
        dataset: the items.
        preprocessing: dictionary transform giving ``data["image"]`` as a ``(1, X, Y, Z)`` MetaTensor.
        inferer: a :class:`TriPlanarPointInferer`.
        output_dir: output folder.
        postprocessing: optional dictionary transform applied to ``{"image", "pred"}`` before writing.
        priors_path: ``landmark_priors.json`` (localisation without ``model_meta``).
        class_names: names of the network's classes (class 0 first).
        device: torch device.
        confidence_threshold: probability below which a localised point is flagged (default: the description's,
            else :data:`CONFIDENCE_THRESHOLD`).
        ood_path: JSON of a fitted :class:`FeatureDistributionCheck` (default: the description's).
        max_low_fraction: fraction of low-confidence landmarks that flags the image
            (:func:`out_of_distribution_verdict`; default: the description's, else 0.5).
        model_meta: the checkpoint's ``model_meta.json`` (or its folder), or ``None``.

    Raises:
        FileNotFoundError: missing checkpoint, model description, priors or OOD file (at :meth:`run`).
        ValueError: a corrupt model description, or thresholds outside their ranges.
    """

    def __init__(
        self,
        network: nn.Module,
        ckpt_path: str | os.PathLike,
        dataset: Sequence[dict[str, Any]],
        preprocessing: Callable[[dict[str, Any]], dict[str, Any]],
        inferer: TriPlanarPointInferer,
        output_dir: str | os.PathLike,
        postprocessing: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        priors_path: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        confidence_threshold: float | None = None,
        ood_path: str | os.PathLike | None = None,
        max_low_fraction: float | None = None,
        model_meta: str | os.PathLike | None = None,
    ) -> None:
        self.device = default_device(device)
        self.network = network.to(self.device)
        self.ckpt_path, self.dataset, self.preprocessing = Path(ckpt_path), list(dataset), preprocessing
        self.inferer, self.output_dir, self.postprocessing = inferer, Path(output_dir), postprocessing
        self.priors_path = None if priors_path is None else Path(priors_path)
        self.class_names = list(class_names) if class_names is not None else None
        if confidence_threshold is not None and not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}.")
        if max_low_fraction is not None and not 0 < max_low_fraction <= 1:
            raise ValueError(f"max_low_fraction must be in (0, 1], got {max_low_fraction}.")
        self._threshold, self._max_low = confidence_threshold, max_low_fraction
        self.ood_path = None if ood_path is None else Path(ood_path)
        self.model_meta_path = None if model_meta is None else Path(model_meta)
        self.meta: dict[str, Any] | None = None
        self.priors: PointSet | None = None
        self.ood: FeatureDistributionCheck | None = None
        self._prepared = False

    @property
    def confidence_threshold(self) -> float:
        if self._threshold is not None:
            return float(self._threshold)
        return float((self.meta or {}).get("confidence_threshold", CONFIDENCE_THRESHOLD))

    @property
    def max_low_fraction(self) -> float:
        if self._max_low is not None:
            return float(self._max_low)
        return float((self.meta or {}).get("max_low_fraction", 0.5))

    def prepare(self) -> None:
        """Load the weights, the model description, the priors and the feature check (once; :meth:`run` calls it).

        Raises:
            FileNotFoundError, ValueError: as the class says, naming the file.
        """
        from .model_meta import meta_priors, read_model_meta

        if self._prepared:
            return
        if self.model_meta_path is not None:
            self.meta = read_model_meta(self.model_meta_path)
        state = load_checkpoint(self.ckpt_path, self.device)
        # a bundle's models/*.pt is a bare state_dict; older training checkpoints wrapped it as {"model": ...}
        try:
            self.network.load_state_dict(state["model"] if isinstance(state.get("model"), dict) else state)
        except RuntimeError as e:
            described = f" described by '{self.meta['_path']}'" if self.meta else ""
            raise ValueError(f"checkpoint '{self.ckpt_path}' does not fit the network{described}: {e}") from e
        self.network.eval()
        if self.class_names is None and self.meta is not None:
            self.class_names = list(self.meta["class_names"])
        if self.inferer.mode == "localise":
            self.priors = meta_priors(self.meta) if self.meta is not None else None
            if self.priors is None:
                if self.priors_path is None or not self.priors_path.is_file():
                    raise FileNotFoundError(f"localisation needs the priors file '{self.priors_path}' written by "
                                            "training (or a model_meta.json holding them).")
                self.priors = load_priors(self.priors_path)
            ood_path = self.ood_path
            if ood_path is None and self.meta is not None and self.meta.get("feature_check"):
                ood_path = Path(self.meta["_path"]).parent / self.meta["feature_check"]
            if ood_path is not None:
                self.ood = FeatureDistributionCheck.load(ood_path)
        self._prepared = True

    def _post(self, d: dict[str, Any], pred: torch.Tensor) -> Any:
        d["pred"] = pred
        return self.postprocessing(d)["pred"] if self.postprocessing is not None else pred.numpy()

    @torch.no_grad()
    def _features(self, image: torch.Tensor, voxels: np.ndarray) -> np.ndarray:
        patcher = TriPlanarPatch(self.inferer.patch_size, self.inferer.extent_mm)
        x = torch.as_tensor(patcher(image, voxels)).float().to(self.device)
        return self.network.features(x).float().cpu().numpy()

    def _model_info(self) -> dict[str, Any]:
        return {"checkpoint": str(self.ckpt_path),
                **({"model_meta": self.meta["_path"]} if self.meta is not None else {}),
                "template": (self.meta or {}).get("template", {}) and (self.meta or {})["template"].get("name"),
                "search": {"radius": self.inferer.search_radius, "step": self.inferer.search_step,
                           "score": self.inferer.score, "prior_sigma_mm": self.inferer.prior_sigma_mm,
                           "mirror_averaging": self.inferer.mirror_labels is not None,
                           "mirror_coarse": self.inferer.mirror_labels is not None and self.inferer.mirror_coarse,
                           "recentre": self.inferer.recentre,
                           "coarse_lattice": self.inferer.coarse_lattice,
                           "protocol_planes": self.inferer.protocol_planes}}

    def process(self, item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Preprocess and run one item; returns ``(content, details)``: the JSON content written for it, and
        ``{"data" (the preprocessed dictionary), "output" ((L, 4) search-grid voxels and probability; localise),
        "grid_affine", "template_to_image" (or ``None``)}`` for evaluations."""
        self.prepare()
        try:
            d = self.preprocessing(dict(item))
        except Exception as e:  # MONAI's Compose wraps a transform's error in a RuntimeError
            cause = model_input_error(e)
            if cause is None or self.inferer.mode != "localise":
                raise
            return self._unusable(item, cause), {"data": None, "grid_affine": None, "template_to_image": None}
        image = d["image"]
        affine = np.asarray(image.affine if isinstance(image, MetaTensor) else np.eye(4), dtype=np.float64)
        shape = tuple(image.shape[1:])
        stem = image_stem(item["image"])
        details: dict[str, Any] = {"data": d, "grid_affine": affine, "template_to_image": None}
        if self.inferer.mode == "classify":
            if "points" not in item:
                raise ValueError(f"item {item} needs a 'points' file for mode='classify'.")
            pts = read_points(item["points"])
            vox = points_to_voxels(pts, affine, shape)
            prob = np.asarray(self._post(d, self.inferer(image, self.network, points=vox)))
            world = (affine @ np.c_[vox, np.ones(len(vox))].T).T[:, :3]
            names = self.class_names or [str(i) for i in range(prob.shape[1])]
            content = {"image": str(item["image"]), "coordinate_system": "RAS", "units": "mm", "landmarks": [
                {"name": pts.names[i], "label": int(prob[i].argmax()), "position": world[i].tolist(),
                 "probabilities": {names[c]: float(prob[i, c]) for c in range(prob.shape[1])}}
                for i in range(len(vox))], "model": self._model_info()}
            return content, details
        priors = self.priors
        assert priors is not None
        vox = points_to_voxels(priors, affine, shape, tolerance=1e6)  # priors may lie off a cropped volume
        overlap = (d.get("template_alignment") or {}).get("overlap")
        recentred = self.inferer.recentres(overlap)
        out = np.asarray(self._post(d, self.inferer(image, self.network, priors=vox, labels=priors.labels,
                                                    overlap=overlap)))
        grid_world = apply_matrix(affine, out[:, :3])
        matrix = d.get("template_to_image")
        if matrix is None and isinstance(image, MetaTensor):
            matrix = image.meta.get("template_to_image")
        input_affine = affine
        if matrix is not None:  # the search ran on the template grid: back to the input image
            matrix = np.asarray(matrix, dtype=np.float64)
            world = apply_matrix(matrix, grid_world)
            input_affine = np.asarray(image.meta.get("original_affine", affine), dtype=np.float64)
        else:
            world = grid_world
        world, moved = self.inferer.place_protocol(world, priors)
        if moved.any():  # the search grid's positions follow the points moved into their protocol planes
            grid_world = world if matrix is None else apply_matrix(np.linalg.inv(matrix), world)
            out = np.c_[apply_matrix(np.linalg.inv(affine), grid_world), out[:, 3]]
        input_vox = apply_matrix(np.linalg.inv(input_affine), world)
        low = flag_low_confidence(priors.names, out[:, 3], self.confidence_threshold, source=stem)
        content = {"image": str(item["image"]), "coordinate_system": "RAS", "units": "mm",
                   "confidence_threshold": self.confidence_threshold, "num_low_confidence": int(low.sum()),
                   "landmarks": [
                       {"name": priors.names[i], "label": int(priors.labels[i]), "position": world[i].tolist(),
                        "voxel": input_vox[i].tolist(), "probability": float(out[i, 3]),
                        "low_confidence": bool(low[i]),
                        **({"template_position": grid_world[i].tolist()} if matrix is not None else {}),
                        **({"moved_to_protocol_plane_mm": float(moved[i])} if self.inferer.protocol_planes else {})}
                       for i in range(len(out))],
                   "recentred": recentred}
        feature_verdict = None
        inside = np.all((vox >= 0) & (vox <= np.asarray(shape) - 1), axis=1)
        if self.ood is not None and inside.any():  # scored at the search centres, not where the search ended
            feature_verdict = self.ood.assess(self._features(image, vox[inside]))
        verdict = out_of_distribution_verdict(low, self.max_low_fraction, feature_verdict)
        content["out_of_distribution"] = verdict
        if d.get("template_alignment") is not None:  # AlignToTemplated's record: the start kept, its metric, ...
            content["alignment"] = d["template_alignment"]
        content["model"] = self._model_info()
        if verdict["flagged"]:
            logger.warning("%s: the image looks unlike the model's training data (%s); treat every point as "
                           "unreliable.", stem, "; ".join(verdict["reasons"]))
        details.update(output=out, template_to_image=matrix, low_confidence=low)
        return content, details

    def _unusable(self, item: dict[str, Any], error: Exception) -> dict[str, Any]:
        """The output for an image the model's preprocessing cannot take: no point, judged out of distribution."""
        stem = image_stem(item["image"])
        reason = f"the model's preprocessing cannot take this image ({error})"
        logger.warning("%s: %s; no landmark is returned.", stem, reason)
        verdict = {"flagged": True, "low_confidence_fraction": 1.0, "max_low_fraction": self.max_low_fraction,
                   "reasons": [reason], "feature_check": None}
        return {"image": str(item["image"]), "coordinate_system": "RAS", "units": "mm",
                "confidence_threshold": self.confidence_threshold, "num_low_confidence": 0, "landmarks": [],
                "out_of_distribution": verdict, "model": self._model_info()}

    def run(self) -> list[Path]:
        """Process every item; returns the written files (and prints where they are).

        An image that cannot be processed (unreadable, NaN voxels, ...) stops a run of one image with its error; in a
        run of several, the error is logged naming the file, the other images are processed and written, and the
        run then stops with a ``RuntimeError`` listing every image that failed and why (the first error chained).
        """
        self.prepare()
        stems: dict[str, str] = {}
        for item in self.dataset:  # two inputs must not write the same result files
            other = stems.setdefault(image_stem(item["image"]), str(item["image"]))
            if other != str(item["image"]):
                raise ValueError(f"inputs '{other}' and '{item['image']}' would write the same result files "
                                 f"'{image_stem(item['image'])}_{self.inferer.mode}.*' in {self.output_dir}; rename "
                                 "one or run them into different --output_dir folders.")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        failed: list[tuple[str, Exception]] = []
        for item in self.dataset:
            try:
                content, _ = self.process(item)
            except Exception as e:  # one bad scan of a folder must not cost the others their results
                if len(self.dataset) == 1:
                    raise
                logger.error("'%s' could not be processed: %s; going on with the other images.", item["image"],
                             _innermost(e))
                failed.append((str(item["image"]), e))
                continue
            stem = image_stem(item["image"])
            if self.inferer.mode == "localise" and content["landmarks"]:
                pts = PointSet([p["name"] for p in content["landmarks"]], [p["label"] for p in content["landmarks"]],
                               [p["position"] for p in content["landmarks"]], "RAS", "mm", stem)
                write_points_fcsv(pts, self.output_dir / f"{stem}_{self.inferer.mode}.fcsv",
                                  descriptions=[f"p={p['probability']:.3f}" + (" LOW" if p["low_confidence"] else "")
                                                for p in content["landmarks"]])
            path = self.output_dir / f"{stem}_{self.inferer.mode}.json"
            path.write_text(json.dumps(content, indent=1))
            logger.info("wrote %s", path)
            written.append(path)
        suffix = " (JSON and 3D Slicer .fcsv)" if self.inferer.mode == "localise" else ""
        print(f"{self.inferer.mode}: {len(written)} result file(s){suffix} written to {self.output_dir.resolve()}")
        if failed:
            listed = "; ".join(f"'{path}': {_innermost(e)}" for path, e in failed)
            raise RuntimeError(f"{len(failed)} of {len(self.dataset)} images could not be processed (the results of "
                               f"the other {len(written)} are written to {self.output_dir.resolve()}): {listed}"
                               ) from failed[0][1]
        return written
