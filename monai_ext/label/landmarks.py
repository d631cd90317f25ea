"""3D landmark localisation for the MONAI Label app: a landmark bundle's points, drawn as a label volume.

A *landmark bundle* (today ``aneurysm``) has an ``inference.json`` whose ``inferer`` is
:class:`monai_ext.apps.aneurysm.TriPlanarPointInferer` and whose ``ckpt_path`` / ``priors_path`` name the
landmark classifier and the search priors its ``train.json`` writes (``models/model.pt``, a bare ``state_dict`` as
in the model zoo, and ``models/landmark_priors.json``), next to the model's description ``models/model_meta.json``
(:mod:`monai_ext.apps.aneurysm.model_meta`: classes, search, normalisation, template, confidence threshold).
:class:`LandmarkLocaliser` loads them, localises every landmark in a 3D volume exactly as the bundle's own inference
does (same preprocessing, including the ITK alignment of a brain model to its template, same inferer; every point
with its probability and low-confidence flag, the image with an out-of-distribution verdict), and
:func:`render_landmark_spheres` turns the points into something a viewer shows: a label volume on the input's grid
with a small sphere per landmark whose value is the landmark's class. The bundle's training reads such a volume back
as landmarks (:class:`monai_ext.apps.aneurysm.LoadLandmarkCased` with a ``label``), so MONAI Label's stock
``BundleTrainTask`` trains the classifier on corrected spheres.

Nothing here imports ``monailabel``; the infer task in :mod:`monai_ext.label.main` wraps this module.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_ext.utils import load_checkpoint

__all__ = [
    "LANDMARK_INFERER",
    "InvalidInferInput",
    "ModelNotTrained",
    "is_landmark_bundle",
    "landmark_model_files",
    "missing_landmark_files",
    "render_landmark_spheres",
    "LandmarkLocaliser",
]

logger = logging.getLogger(__name__)

LANDMARK_INFERER = "monai_ext.apps.aneurysm.TriPlanarPointInferer"
"""``_target_`` of the ``inferer`` in a landmark bundle's ``inference.json``."""

_SEARCH_KEYS = ("search_radius", "search_step", "refine_radius")


class InvalidInferInput(ValueError):
    """The client sent something the model cannot take (wrong dimension, unreadable file, bad option).

    The MONAI Label app answers it with HTTP 422 and this message; any other error stays a server error.
    """


class ModelNotTrained(FileNotFoundError):
    """The landmark checkpoint or priors file is missing (the message names them and the training command).

    The MONAI Label app answers it with HTTP 503 (the model is unavailable until it is trained again).
    """


def _read_inference(bundle_dir: Path) -> dict[str, Any]:
    with open(bundle_dir / "configs" / "inference.json") as f:
        return json.load(f)


def is_landmark_bundle(bundle_dir: str | os.PathLike) -> bool:
    """Whether ``bundle_dir`` is a landmark bundle (see the module doc); ``False`` for unreadable configs."""
    try:
        cfg = _read_inference(Path(bundle_dir))
    except (OSError, ValueError):
        return False
    inferer = cfg.get("inferer")
    return (
        isinstance(inferer, Mapping)
        and inferer.get("_target_") == LANDMARK_INFERER
        and "ckpt_path" in cfg
        and "priors_path" in cfg
        and "network_def" in cfg
        and "preprocessing" in cfg
    )


def _parser(bundle_dir: Path, ckpt_dir: str | os.PathLike | None) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    parser["ckpt_dir"] = str(Path(ckpt_dir) if ckpt_dir is not None else bundle_dir / "models")
    return parser


def landmark_model_files(bundle_dir: str | os.PathLike, ckpt_dir: str | os.PathLike | None = None) -> list[Path]:
    """``[checkpoint, priors, ...]`` of a landmark bundle: its ``ckpt_path`` and ``priors_path`` under ``ckpt_dir``,
    then, when they exist, the model description (``model_meta_path``, ``model_meta.json``) and the feature check
    it names (what the app copies into its served copy of the bundle).

    Args:
        bundle_dir: the bundle folder.
        ckpt_dir: the checkpoint folder (default ``<bundle_dir>/models``, where the bundle's ``train.json``
            writes them).
    """
    parser = _parser(Path(bundle_dir), ckpt_dir)
    files = [Path(parser.get_parsed_content(k)) for k in ("ckpt_path", "priors_path")]
    if "model_meta_path" in parser.config:
        meta = Path(parser.get_parsed_content("model_meta_path"))
        if meta.is_file():
            files.append(meta)
            try:
                check = json.loads(meta.read_text()).get("feature_check")
            except (ValueError, AttributeError):  # a corrupt description is reported when the model loads
                check = None
            if isinstance(check, str) and (meta.parent / check).is_file():
                files.append(meta.parent / check)
    return files


def missing_landmark_files(bundle_dir: str | os.PathLike, ckpt_dir: str | os.PathLike | None = None) -> list[Path]:
    """The checkpoint and priors of :func:`landmark_model_files` that do not exist (empty when the bundle can be
    served; the model description is optional: older checkpoints have none)."""
    return [p for p in landmark_model_files(bundle_dir, ckpt_dir)[:2] if not p.is_file()]


def render_landmark_spheres(
    shape: Sequence[int],
    points: np.ndarray | Sequence[Sequence[float]],
    labels: np.ndarray | Sequence[int],
    radius: float = 2.0,
) -> np.ndarray:
    """A label volume with a solid sphere of ``radius`` voxels around each point, valued with the point's label.

    Voxel ``v`` belongs to the sphere of point ``p`` when ``||v - p|| <= radius`` (voxel indices, 0-based, the
    centre of voxel ``i`` at ``i``). Where spheres overlap, the voxel takes the label of the nearest centre (ties: the
    earlier point). Points may lie anywhere inside the volume, fractional positions included; a sphere crossing the
    border is cut by it.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        points: ``(L, 3)`` voxel coordinates.
        labels: ``(L,)`` labels, integers ``>= 1`` (0 is the background).
        radius: sphere radius in voxels, ``> 0``; radius ``r`` draws a voxel-ball of about ``4/3 pi r^3`` voxels.

    Returns:
        ``uint8`` array of ``shape`` (``uint16`` when a label exceeds 255).

    Raises:
        ValueError: for a ``shape`` that is not 3 positive sizes, ``points`` not ``(L, 3)`` finite numbers, a
            different number of labels, a label ``< 1`` or ``> 65535``, a non-positive ``radius``, or a point outside
            the volume (more than half a voxel beyond the border voxel centres).

    Example::

        >>> vol = render_landmark_spheres((5, 5, 5), [[2, 2, 2]], [3], radius=1)
        >>> int(vol.sum() // 3), int(vol[2, 2, 2])
        (7, 3)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes (X, Y, Z), got {shape}.")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.isfinite(pts).all():
        raise ValueError(f"points must be (L, 3) finite voxel coordinates, got shape {pts.shape}.")
    labs = np.asarray(labels)
    if labs.shape != (len(pts),) or (labs.size and not np.issubdtype(labs.dtype, np.integer)):
        raise ValueError(f"labels must be {len(pts)} integers (one per point), got {labs.tolist()!r}.")
    if labs.size and (labs.min() < 1 or labs.max() > 65535):
        raise ValueError(f"labels must be in 1..65535 (0 is the background), got {labs.tolist()}.")
    if not radius > 0:
        raise ValueError(f"radius must be > 0 voxels, got {radius!r}.")
    outside = np.any((pts < -0.5) | (pts > np.asarray(shape) - 0.5), axis=1)
    if outside.any():
        raise ValueError(
            f"points {pts[outside].round(2).tolist()} lie outside the volume of shape {shape} (voxel coordinates)."
        )
    out = np.zeros(shape, dtype=np.uint8 if labs.size == 0 or labs.max() <= 255 else np.uint16)
    best = np.full(shape, np.inf)
    for p, lab in zip(pts, labs, strict=True):
        lo = np.maximum(np.floor(p - radius).astype(int), 0)
        hi = np.minimum(np.floor(p + radius).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        idx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
        d2 = sum((i - c) ** 2 for i, c in zip(idx, p, strict=True))
        take = (d2 <= radius**2) & (d2 < best[box])
        out[box][take] = lab
        best[box][take] = d2[take]
    return out


class LandmarkLocaliser:
    """Localise every landmark of a landmark bundle in a 3D volume, as the bundle's own inference does.

    The bundle's ``inference.json`` gives the preprocessing, the network (``network_def``) and the
    :class:`~monai_ext.apps.aneurysm.TriPlanarPointInferer` settings; the checkpoint, the priors (mean training
    position of each landmark, world mm) and the model description ``model_meta.json`` come from ``ckpt_dir``
    (:mod:`monai_ext.apps.aneurysm.model_meta`: number of classes, search settings, normalisation, template,
    confidence threshold, feature check). When ``inference.json`` splits its preprocessing into ``load_transforms``
    (read the file) and ``model_transforms`` (what the model needs: for the brain model an ITK alignment to its
    template and a normalisation inside the template's brain mask), :meth:`load_image` runs the first (the image
    stays on the input's grid, where the app draws its spheres) and :meth:`localise` the second; the search runs on
    the model's grid and the points come back to the input. A checkpoint folder without ``model_meta.json`` (older
    trainings) is served as before: ``num_classes`` = highest prior label + 1 and the description's defaults. The
    files are reloaded when they change.

    Honest confidence: every point carries its probability and ``low_confidence`` (below the model's
    ``confidence_threshold``); the result holds ``num_low_confidence`` and the image-level ``out_of_distribution``
    verdict (:func:`~monai_ext.apps.aneurysm.out_of_distribution_verdict`: most landmarks low-confidence, or the
    feature check), and both are logged as warnings.

    Args:
        bundle_dir: the bundle folder (``configs/inference.json``).
        ckpt_dir: folder of the checkpoint, priors and description (default ``<bundle_dir>/models``).

    Raises:
        ModelNotTrained: (a ``FileNotFoundError``) when the checkpoint or the priors file is missing; the message
            names them and how to train.
        ValueError: when the checkpoint does not fit ``network_def`` (e.g. trained with other ``channels``), or the
            model description is corrupt.

    Example::

        loc = LandmarkLocaliser("bundles/aneurysm")
        image = loc.load_image("case_000.nii.gz")            # (1, X, Y, Z) MetaTensor on the input's grid
        result = loc.localise(image)                          # {"landmarks": [{name, label, position, voxel, ...}]}
        label = render_landmark_spheres(image.shape[1:], [p["voxel"] for p in result["landmarks"]],
                                        [p["label"] for p in result["landmarks"]])
    """

    def __init__(self, bundle_dir: str | os.PathLike, ckpt_dir: str | os.PathLike | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self._parser = _parser(self.bundle_dir, ckpt_dir)
        self.ckpt_path, self.priors_path = (Path(self._parser.get_parsed_content(k)) for k in ("ckpt_path",
                                                                                                "priors_path"))
        self.meta_path = (Path(self._parser.get_parsed_content("model_meta_path"))
                          if "model_meta_path" in self._parser.config else None)
        self._split = "load_transforms" in self._parser.config and "model_transforms" in self._parser.config
        self.meta: dict[str, Any] | None = None
        self._stamp: tuple[int, ...] | None = None
        self._networks: dict[str, torch.nn.Module] = {}
        # the server answers /info (which reloads) while an inference runs in another thread
        self._lock = threading.RLock()
        self.reload()

    def _files_stamp(self) -> tuple[int, ...]:
        missing = [str(p) for p in (self.ckpt_path, self.priors_path) if not p.is_file()]
        if missing:
            raise ModelNotTrained(
                f"landmark model of '{self.bundle_dir.name}' is not trained: missing {missing}; train it with "
                f"MONAI Label's /train/{self.bundle_dir.name} or python -m monai.bundle run --config_file "
                f"<bundle>/configs/train.json (both write the two files)."
            )
        meta = self.meta_path.stat().st_mtime_ns if self.meta_path is not None and self.meta_path.is_file() else 0
        return self.ckpt_path.stat().st_mtime_ns, self.priors_path.stat().st_mtime_ns, meta

    def reload(self) -> bool:
        """Load the priors, the description and the checkpoint when they changed on disk; returns ``True`` when it
        (re)loaded.

        Thread-safe: a call during :meth:`localise` in another thread does not change the model that call uses.

        Raises:
            ModelNotTrained: a file is missing.
            ValueError: the checkpoint does not fit ``network_def``, or the description is corrupt.
        """
        with self._lock:
            return self._reload()

    def _reload(self) -> bool:
        from monai.transforms import Compose

        from monai_ext.apps.aneurysm import FeatureDistributionCheck, load_priors, read_model_meta

        from .bundles import extract_state_dict

        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        priors = load_priors(self.priors_path)
        if len(priors.labels) == 0 or priors.labels.min() < 1:
            raise ValueError(f"priors '{self.priors_path}' must list landmarks with labels >= 1.")
        meta = read_model_meta(self.meta_path) if stamp[2] else None
        num_classes = int(meta["num_classes"]) if meta else int(priors.labels.max()) + 1
        if num_classes <= int(priors.labels.max()):
            raise ValueError(f"priors '{self.priors_path}' hold label {int(priors.labels.max())}, but the model "
                             f"'{self.meta_path}' has {num_classes} classes.")
        self._parser["num_classes"] = num_classes
        net = self._parser.get_parsed_content("network_def", lazy=False)
        # a bare state_dict (models/model.pt, the zoo's format); the {"model": ...} of older checkpoints works too
        sd = extract_state_dict(load_checkpoint(self.ckpt_path), source=f"'{self.ckpt_path}'")
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"checkpoint '{self.ckpt_path}' does not fit network_def of '{self.bundle_dir}/configs/"
                f"inference.json' with num_classes={num_classes} (from "
                f"{'the model description' if meta else 'the priors'}); was it trained with other "
                f"channels/hidden_features? {e}"
            ) from e
        self.preprocessing = self._parser.get_parsed_content("preprocessing")
        if self._split:
            self.load_transforms = Compose(self._parser.get_parsed_content("load_transforms"))
            self.model_transforms = Compose(self._parser.get_parsed_content("model_transforms"))
        else:  # an inference.json without the split: everything at load time, nothing more at localisation
            self.load_transforms, self.model_transforms = self.preprocessing, Compose([])
        inferer = self._parser.get_parsed_content("inferer")
        self.inferer_args = {
            "patch_size": inferer.patch_size,
            "extent_mm": inferer.extent_mm,
            "search_radius": inferer.search_radius,
            "search_step": inferer.search_step,
            "refine_radius": inferer.refine_radius,
            "batch_size": inferer.batch_size,
            "method": inferer.method,
            "top_k": inferer.top_k,
            "prior_sigma_mm": inferer.prior_sigma_mm,
            "score": inferer.score,
            "mirror_labels": inferer.mirror_labels,
            "mirror_coarse": inferer.mirror_coarse,
            "recentre": inferer.recentre,
            "recentre_overlap": inferer.recentre_overlap,
            "coarse_lattice": inferer.coarse_lattice,
            "protocol_planes": inferer.protocol_planes,
        }
        check = None
        if meta and meta.get("feature_check"):
            check = FeatureDistributionCheck.load(Path(meta["_path"]).parent / meta["feature_check"])
        self.priors, self.network, self.meta, self.feature_check = priors, net.eval(), meta, check
        self._networks = {}
        self._stamp = stamp
        logger.info("loaded %s (%d landmarks), %s and %s", self.ckpt_path, len(priors.labels), self.priors_path,
                    meta["_path"] if meta else "no model description (defaults)")
        return True

    @property
    def confidence_threshold(self) -> float:
        """Probability below which a point is flagged (the model description's, else the default)."""
        from monai_ext.apps.aneurysm import CONFIDENCE_THRESHOLD

        return float((self.meta or {}).get("confidence_threshold", CONFIDENCE_THRESHOLD))

    @property
    def labels(self) -> dict[str, int]:
        """Landmark name -> class value in the label volume (background 0 omitted)."""
        return {n: int(k) for n, k in zip(self.priors.names, self.priors.labels, strict=True)}

    def _network(self, device: torch.device) -> torch.nn.Module:
        key = str(device)
        if key not in self._networks:
            import copy

            self._networks[key] = copy.deepcopy(self.network).to(device).eval()
        return self._networks[key]

    def load_image(self, path: str | os.PathLike) -> Any:
        """Load ``path`` with the bundle's load transforms; returns a ``(1, X, Y, Z)`` MetaTensor on the input's grid
        (with the whole preprocessing when ``inference.json`` does not split it).

        Raises:
            InvalidInferInput: when the file cannot be read, or is not a single-channel 3D volume.
        """
        from monai.data import MetaTensor

        from monai_ext.transforms import ImageValidationError

        try:
            image = self.load_transforms({"image": str(path)})["image"]
        except Exception as e:  # MONAI's Compose wraps a transform's error in RuntimeError
            invalid = e
            while invalid is not None and not isinstance(invalid, ImageValidationError):
                invalid = invalid.__cause__
            if invalid is None or (len(invalid.shape) == 4 and invalid.shape[0] == 1):  # unreadable, or NaN / Inf
                reason = invalid if invalid is not None else (e.__cause__ or e)
                raise InvalidInferInput(f"cannot read image '{Path(path).name}' as a volume: {reason}") from e
            shape = invalid.shape  # the bundle's ValidateImaged refused the layout: this task's wording below
        else:
            ok = isinstance(image, MetaTensor) and image.ndim == 4 and image.shape[0] == 1
            shape = None if ok else tuple(image.shape)
        if shape is not None:
            raise InvalidInferInput(
                f"model '{self.bundle_dir.name}' localises landmarks in a single-channel 3D volume (e.g. NIfTI "
                f"X x Y x Z); got an image of shape {shape} (channel first) from '{Path(path).name}', i.e. "
                f"{len(shape) - 1} spatial dimension(s) and {shape[0]} channel(s)."
            )
        return image

    def localise(self, image: Any, device: str | torch.device = "cpu",
                 **search: float) -> dict[str, Any]:
        """Localise every landmark in ``image`` (from :meth:`load_image`).

        Args:
            image: ``(1, X, Y, Z)`` MetaTensor; its affine maps voxel indices to RAS world mm.
            device: torch device of the network.
            search: optional ``search_radius``, ``search_step`` and ``refine_radius`` (voxels of the model's search
                grid, as in ``inference.json``) for this call.

        Returns:
            ``{"coordinate_system": "RAS", "units": "mm", "landmarks": [{"name", "label", "position" (RAS mm),
            "voxel" (0-based voxel coordinates of the input grid), "probability", "low_confidence"}],
            "confidence_threshold", "num_low_confidence", "out_of_distribution": {"flagged", "reasons",
            "low_confidence_fraction", ...}, "template_aligned", "recentred"}`` (``recentred``: whether the
            search ran twice, see :meth:`~monai_ext.apps.aneurysm.TriPlanarPointInferer.recentres`), plus
            ``"alignment"`` (the start kept, its metric, the fraction of the template inside the scan, every start
            tried: :class:`~monai_ext.transforms.AlignToTemplated`) when the image was aligned to the model's
            template.

        Raises:
            InvalidInferInput: for a bad search option, or priors whose search cubes all miss the volume (a volume
                far from the training data's world position). An image the model's transforms cannot take (e.g.
                constant inside the template's brain mask after alignment: not a brain) is no error: the result
                has no landmark and is flagged out of distribution with the reason.
            ModelNotTrained: the checkpoint or priors file has gone.
        """
        from monai.data import MetaTensor

        from monai_ext.apps.aneurysm import (
            TriPlanarPointInferer,
            flag_low_confidence,
            model_input_error,
            out_of_distribution_verdict,
            points_to_voxels,
        )
        from monai_ext.transforms import TriPlanarPatch, apply_matrix

        unknown = sorted(set(search) - set(_SEARCH_KEYS))
        if unknown:
            raise InvalidInferInput(f"unknown search option(s) {unknown}; expected {list(_SEARCH_KEYS)}.")
        for k, v in search.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v < 0 or (
                k == "search_step" and v <= 0
            ):
                raise InvalidInferInput(f"{k} must be a number {'> 0' if k == 'search_step' else '>= 0'} (voxels), "
                                        f"got {v!r}.")
        device = torch.device(device)
        with self._lock:  # one consistent (priors, network, transforms) set for this call
            self.reload()
            priors, network, transforms = self.priors, self._network(device), self.model_transforms
            inferer_args, check, threshold = dict(self.inferer_args), self.feature_check, self.confidence_threshold
            max_low = float((self.meta or {}).get("max_low_fraction", 0.5))
        try:
            d = transforms({"image": image})
        except Exception as e:  # the alignment / normalisation could not take this image
            cause = model_input_error(e)
            if cause is None:
                raise InvalidInferInput(f"the model's preprocessing failed on this image: {e.__cause__ or e}") from e
            reason = f"the model's preprocessing cannot take this image ({cause})"
            logger.warning("%s: %s; no landmark is returned.", self.bundle_dir.name, reason)
            return {"coordinate_system": "RAS", "units": "mm", "landmarks": [], "confidence_threshold": threshold,
                    "num_low_confidence": 0, "template_aligned": False, "recentred": False,
                    "out_of_distribution": {"flagged": True, "low_confidence_fraction": 1.0,
                                            "max_low_fraction": max_low, "reasons": [reason],
                                            "feature_check": None}}
        grid = d["image"]
        grid_affine = np.asarray(grid.affine, dtype=np.float64)
        shape = tuple(int(s) for s in grid.shape[1:])
        matrix = d.get("template_to_image")
        # priors far outside the volume are not an error here: the inferer clips each search cube to the volume
        vox_priors = points_to_voxels(priors, grid_affine, shape, tolerance=1e6)
        inferer = TriPlanarPointInferer(mode="localise", **{**inferer_args, **search})
        try:
            overlap = (d.get("template_alignment") or {}).get("overlap")
            out = inferer(grid.to(device), network, priors=vox_priors, labels=priors.labels, overlap=overlap)
        except ValueError as e:
            raise InvalidInferInput(str(e)) from e
        out = out.cpu().numpy().astype(np.float64)
        world = apply_matrix(grid_affine, out[:, :3])
        if matrix is not None:
            world = apply_matrix(np.asarray(matrix, dtype=np.float64), world)
        world, moved = inferer.place_protocol(world, priors)
        input_affine = np.asarray(image.affine if isinstance(image, MetaTensor) else grid_affine, dtype=np.float64)
        input_vox = apply_matrix(np.linalg.inv(input_affine), world)
        low = flag_low_confidence(priors.names, out[:, 3], threshold, source=self.bundle_dir.name)
        feature_verdict = None
        inside = np.all((vox_priors >= 0) & (vox_priors <= np.asarray(shape) - 1), axis=1)
        if check is not None and inside.any():  # scored at the search centres, as the bundle's inference does
            patcher = TriPlanarPatch(inferer.patch_size, inferer.extent_mm)
            with torch.no_grad():
                x = torch.as_tensor(patcher(grid, vox_priors[inside])).float().to(device)
                feature_verdict = check.assess(network.features(x).float().cpu().numpy())
        verdict = out_of_distribution_verdict(low, max_low, feature_verdict)
        if verdict["flagged"]:
            logger.warning("%s: the image looks unlike the model's training data (%s); treat every point as "
                           "unreliable.", self.bundle_dir.name, "; ".join(verdict["reasons"]))
        return {
            "coordinate_system": "RAS",
            "units": "mm",
            "landmarks": [
                {"name": n, "label": int(k), "position": world[i].tolist(), "voxel": input_vox[i].tolist(),
                 "probability": float(out[i, 3]), "low_confidence": bool(low[i]),
                 **({"moved_to_protocol_plane_mm": float(moved[i])} if inferer.protocol_planes else {})}
                for i, (n, k) in enumerate(zip(priors.names, priors.labels, strict=True))
            ],
            "confidence_threshold": threshold,
            "num_low_confidence": int(low.sum()),
            "out_of_distribution": verdict,
            "template_aligned": matrix is not None,
            "recentred": inferer.recentres(overlap),
            **({"alignment": d["template_alignment"]} if d.get("template_alignment") is not None else {}),
        }
