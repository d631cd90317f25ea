"""Self-describing landmark checkpoints: ``model_meta.json`` next to ``models/model.pt``.

A bare ``state_dict`` (the model zoo's ``model.pt``) says nothing about how to use it: how many classes, which
landmark each class is, the patch size, how far to search, how intensities were normalised, in which space the
search priors are, and how confident a point must be. Training writes all of it next to the weights
(:class:`ModelMetaWriter`, a handler of ``train.json`` / ``brain.json``), and ``inference.json`` reads it
(:func:`read_model_meta`), so that inference needs only the image and the checkpoint folder.

``model_meta.json`` (``format`` :data:`MODEL_META_FORMAT`)::

    {"format", "model_file": "model.pt", "num_classes", "class_names" (class 0 = "background"),
     "network": {"name": "MiniVGG", "spatial_dims", "in_channels", "num_classes", "channels", "hidden_features"},
     "patch": {"patch_size", "extent_mm"},
     "search": {"search_radius", "search_step", "refine_radius"  (voxels of the search grid),
                "score": "probability" | "log_odds", "prior_sigma_mm": null | float  (optional, see
                localise_landmarks; ModelMetaWriter chooses prior_sigma_mm on the held-out brains when asked,
                and records the choice in "prior_sigma_selection"), "mirror_labels": null | [int]  (optional:
                mirror averaging of the search, chosen on the same held-out brains, "mirror_selection"),
                "mirror_coarse": bool  (optional, default true: mirror averaging of the coarse lattice too, or only
                from the refinement on; chosen with it), "coarse_lattice": "prior" | "shared"  (optional, default
                "prior": each landmark's coarse lattice through its own prior, or one lattice for every landmark,
                see localise_landmarks; the held-out choices above are made with it), "protocol_planes": bool
                (optional, default false: the AFIDs lateral-ventricle fiducials moved into the coronal planes of
                the found AC and PC after the search, TriPlanarPointInferer)},
     "normalization": {"name": "percentile" | "masked_percentile", ...}  (ModelIntensityNormalized),
     "template": null | BrainTemplateSpace.to_dict()  (null: the search runs on the input's own grid),
     "registration": {...}  (optional: the alignment settings training used, AlignToModelTemplated's
                             ``registration``; inference aligns with the same),
     "priors": {"space": "template" | "image", "coordinate_system": "RAS", "units": "mm", "landmarks": [...]},
     "confidence_threshold", "max_low_fraction"  (flags and the out-of-distribution verdict),
     "feature_check": null | "feature_check.json"  (FeatureDistributionCheck, same folder),
     "data_source", "datalist", "training": {"max_epochs", "epochs_completed", "complete"}}
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .landmarks import PointSet, points_to_voxels, write_points_json

__all__ = [
    "MODEL_META_FILE",
    "MODEL_META_FORMAT",
    "ModelMetaWriter",
    "default_model_meta",
    "landmark_spread_mm",
    "meta_priors",
    "read_model_meta",
]

logger = logging.getLogger(__name__)

#: file name of the description next to ``model.pt``
MODEL_META_FILE = "model_meta.json"
#: value of the ``format`` key
MODEL_META_FORMAT = "monai_ext.aneurysm.landmark_model/1"
_REQUIRED = {"num_classes": int, "class_names": list, "network": dict, "patch": dict, "search": dict,
             "normalization": dict, "confidence_threshold": (int, float)}


def default_model_meta() -> dict[str, Any]:
    """The description of ``train.json``'s default model (the synthetic-vessel landmark classifier: 9 landmarks +
    background, widths 16/32/64, whole-image percentile normalisation, no template).

    Only used to *build* ``inference.json``'s network when no ``model_meta.json`` exists (the model zoo's checks,
    which have no checkpoint); running inference without the file is an error (:class:`AneurysmInference`).
    """
    from monai_ext.data.synthetic.aneurysm import LANDMARK_NAMES

    names = ["background", *LANDMARK_NAMES]
    return {"format": MODEL_META_FORMAT, "model_file": "model.pt", "num_classes": len(names), "class_names": names,
            "network": {"name": "MiniVGG", "spatial_dims": 2, "in_channels": 3, "num_classes": len(names),
                        "channels": [16, 32, 64], "hidden_features": 128},
            "patch": {"patch_size": 32, "extent_mm": None},
            "search": {"search_radius": 10.0, "search_step": 3.0, "refine_radius": 2.0},
            "normalization": {"name": "percentile", "lower": 1.0, "upper": 99.9}, "template": None, "priors": None,
            "confidence_threshold": 0.5, "max_low_fraction": 0.5, "feature_check": None, "data_source": "synthetic",
            "datalist": None}


def _check(meta: Any, source: str) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(meta).__name__}.")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{source}: missing {missing} (a model description written by the aneurysm bundle's "
                         "training has them; was the file edited or truncated?).")
    wrong = [k for k, t in _REQUIRED.items() if not isinstance(meta[k], t) or isinstance(meta[k], bool)]
    if wrong:
        raise ValueError(f"{source}: wrong types for {wrong}: {[type(meta[k]).__name__ for k in wrong]}.")
    if len(meta["class_names"]) != meta["num_classes"]:
        raise ValueError(f"{source}: {len(meta['class_names'])} class_names for num_classes={meta['num_classes']}.")
    if meta["network"].get("num_classes", meta["num_classes"]) != meta["num_classes"]:
        raise ValueError(f"{source}: network num_classes {meta['network']['num_classes']} != num_classes "
                         f"{meta['num_classes']}.")
    if not 0.0 <= float(meta["confidence_threshold"]) <= 1.0:
        raise ValueError(f"{source}: confidence_threshold must be in [0, 1], got {meta['confidence_threshold']}.")
    if meta.get("template") is not None and not isinstance(meta["template"], dict):
        raise ValueError(f"{source}: template must be null or an object, got {meta['template']!r}.")
    if meta.get("registration") is not None and not isinstance(meta["registration"], dict):
        raise ValueError(f"{source}: registration must be null or an object of alignment settings, got "
                         f"{meta['registration']!r}.")
    return meta


def read_model_meta(path: str | os.PathLike, missing_ok: bool = False) -> dict[str, Any]:
    """Read and check a ``model_meta.json``.

    Args:
        path: the file (or the checkpoint folder holding it).
        missing_ok: return :func:`default_model_meta` (with a logged warning) when the file does not exist; for
            building the network of ``inference.json`` without a checkpoint. A corrupt file is always an error.

    Raises:
        FileNotFoundError: a missing file (without ``missing_ok``), naming it and what writes it.
        ValueError: a file that is not valid JSON or lacks / mistypes a required key, naming it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_META_FILE
    if not path.is_file():
        msg = (f"model description '{path}' not found: training writes {MODEL_META_FILE} next to model.pt "
               "(python -m monai.bundle run --config_file bundles/aneurysm/configs/train.json, or "
               "\"['.../train.json','.../brain.json']\" for the brain model); point --ckpt_dir to that folder.")
        if missing_ok:
            logger.warning("%s Using the defaults of train.json's synthetic-vessel model.", msg)
            return default_model_meta()
        raise FileNotFoundError(msg)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"model description '{path}' is not valid JSON: {e}") from e
    meta = _check(meta, f"model description '{path}'")
    meta["_path"] = str(path)
    return meta


def meta_priors(meta: Mapping[str, Any]) -> PointSet | None:
    """The search priors stored in a model description (``None`` when it has none)."""
    priors = meta.get("priors")
    if not priors or not priors.get("landmarks"):
        return None
    pts = priors["landmarks"]
    return PointSet([p["name"] for p in pts], [p["label"] for p in pts], [p["position"] for p in pts],
                    priors.get("coordinate_system", "RAS"), priors.get("units", "mm"),
                    f"priors of {meta.get('_path', 'the model description')}")


def _priors_dict(points: PointSet, space: str) -> dict[str, Any]:
    return {"space": space, "coordinate_system": points.coordinate_system, "units": points.units,
            "landmarks": [{"name": n, "label": int(k), "position": [float(v) for v in p]}
                          for n, k, p in zip(points.names, points.labels, points.positions, strict=True)]}


def landmark_spread_mm(items: Iterable[Mapping[str, Any]], priors: PointSet) -> tuple[float, int]:
    """Per-axis standard deviation (mm) of the landmarks of ``items`` around their priors: for each image
    ``sqrt(mean |x - prior|^2 / 3)`` over its landmarks (the ``sigma`` of an isotropic Gaussian position prior),
    then the median over images, so that an image whose alignment failed (its landmarks tens of mm off) does not
    set the prior of every other one.

    Args:
        items: dictionaries with ``"landmarks"`` (``(N, 3)`` world mm, in the priors' space: for the brain model,
            after the alignment into template space) and ``"landmark_labels"`` (``(N,)`` class ids); items without
            them are skipped.
        priors: the search priors (world mm).

    Returns:
        ``(sigma_mm, number of landmarks used)``; ``(nan, 0)`` when no landmark matches a prior.
    """
    where = {int(k): np.asarray(p, dtype=np.float64) for k, p in zip(priors.labels, priors.positions, strict=True)}
    per_image, count = [], 0
    for item in items:
        if "landmarks" not in item or "landmark_labels" not in item:
            continue
        pts = np.asarray(item["landmarks"], dtype=np.float64).reshape(-1, 3)
        d2 = [float(((p - where[int(lab)]) ** 2).sum())
              for p, lab in zip(pts, np.asarray(item["landmark_labels"]).reshape(-1), strict=True)
              if int(lab) in where and np.isfinite(p).all()]
        if d2:
            per_image.append(np.sqrt(np.mean(d2) / 3.0))
            count += len(d2)
    if not per_image:
        return float("nan"), 0
    return float(np.median(per_image)), count


class ModelMetaWriter:
    """Ignite handler of the trainer writing ``model_meta.json`` (and the search priors) next to ``model.pt``.

    - ``STARTED``: the priors (``priors.priors()``: mean training position of every landmark, world mm; e.g. a
      :class:`~monai_ext.apps.aneurysm.LandmarkPriorsWriter` of the training data, or a
      :class:`~monai_ext.apps.aneurysm.brain.BrainTemplateSpace` whose priors are the template's fiducials) are
      written to ``priors_path`` (``landmark_priors.json``, what MONAI Label's landmark task reads) and into the
      description with ``meta``, so an interrupted run leaves a usable description.
    - ``COMPLETED``: a :class:`~monai_ext.apps.aneurysm.inference.FeatureDistributionCheck` is fitted to the
      penultimate features (``network.features``) of the best model (``model_path``, else the final weights):
      class means and covariance from the patches of ``feature_data`` (batches ``{"image": (B, 3, p, p),
      "label": (B,)}``, e.g. the validation loader), the threshold from the patches at the search centres (the
      priors) of the images of ``holdout_data`` (items with an ``"image"`` on the search grid: the validation
      images after the inference preprocessing), or, without it, from a random fifth of ``feature_data``. It is
      saved as ``feature_check.json`` and named in the description. When it cannot be fitted (fewer than 10
      patches) the description says why and the out-of-distribution verdict relies on the confidence flags.
      With ``prior_sigma_candidates`` and ``holdout_data`` items that carry their landmarks (world mm on the
      search grid's space), the best model localises every held-out image once per candidate position prior
      (``None`` = no prior) with the description's search settings, and the candidate with the lowest median
      (over images) of the mean localisation error is written as ``search.prior_sigma_mm``, with every candidate's
      error and the landmarks' spread around the priors (:func:`landmark_spread_mm`) in
      ``search.prior_sigma_selection``: the prior is chosen on held-out data of the training distribution, never on
      test data. (The network's log-odds are not calibrated log-likelihoods, so the physical spread alone does not
      give the right weight of the prior; it is reported next to the choice.) With ``mirror_labels`` as well, the
      held-out images are localised at the chosen prior with mirror averaging
      (:func:`~monai_ext.apps.aneurysm.localise_landmarks`) from the refinement on (``mirror_coarse=False``) and
      everywhere; of the three searches (without, from the refinement, everywhere: in the order of their cost)
      the one with the lowest median error is kept, the cheaper one on a tie, so that a search never pays for
      evaluations that did not help on held-out data. ``search.mirror_labels`` is the map (``null`` without) and
      ``search.mirror_coarse`` whether the coarse lattice is mirror-averaged too; the three errors are in
      ``search.mirror_selection``.

    Under ``torch.distributed`` only rank 0 writes.

    Args:
        path: the description file (``<ckpt_dir>/model_meta.json``).
        meta: the model's description (see the module docstring; ``num_classes``, ``class_names``, ``network``,
            ``patch``, ``search``, ``normalization``, ``template``, ``confidence_threshold``...).
        priors: object with ``priors() -> PointSet`` (world mm), or a :class:`PointSet`.
        priors_path: where the priors are also written as JSON (``None``: ``landmark_priors.json`` beside ``path``).
        feature_data: iterable of labelled patch batches for the feature check (``None``: no check).
        holdout_data: iterable of items with a search-grid ``"image"`` for the check's threshold.
        model_path: the best model's weights (bare ``state_dict``), fitted instead of the final weights.
        prior_sigma_candidates: position priors (mm, ``None`` for none) to choose ``search.prior_sigma_mm`` from
            on ``holdout_data`` (see above); ``None``: no choice, the description's search settings are kept.
        mirror_labels: left-right class map (:func:`~monai_ext.apps.aneurysm.left_right_mirror_labels`) whose
            mirror averaging is tried on ``holdout_data`` after the prior is chosen (needs
            ``prior_sigma_candidates``); only for a search grid whose voxel axis 0 is the left-right axis of a
            symmetric space (the brain template); ``None``: not tried.

    Raises:
        ValueError: for a description missing a required key.
    """

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any], priors: Any,
                 priors_path: str | os.PathLike | None = None, feature_data: Iterable[Any] | None = None,
                 holdout_data: Iterable[Any] | None = None, model_path: str | os.PathLike | None = None,
                 prior_sigma_candidates: Sequence[float | None] | None = None,
                 mirror_labels: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        self.meta = _check(json.loads(json.dumps(dict(meta), default=_json_default)), "ModelMetaWriter meta")
        self.priors_source = priors
        self.priors_path = Path(priors_path) if priors_path is not None else self.path.parent / "landmark_priors.json"
        self.feature_data, self.holdout_data = feature_data, holdout_data
        self.model_path = Path(model_path) if model_path is not None else None
        self.prior_sigma_candidates = None if prior_sigma_candidates is None else list(prior_sigma_candidates)
        for c in self.prior_sigma_candidates or []:
            if c is not None and not float(c) > 0:
                raise ValueError(f"prior_sigma_candidates must be positive numbers or None, got {c!r}.")
        self.mirror_labels = None if mirror_labels is None else [int(v) for v in mirror_labels]
        if self.mirror_labels is not None and len(self.mirror_labels) != int(self.meta["num_classes"]):
            raise ValueError(f"mirror_labels has {len(self.mirror_labels)} entries, the model "
                             f"{self.meta['num_classes']} classes.")
        self.priors: PointSet | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    @staticmethod
    def _rank_zero() -> bool:
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)

    def _write(self, meta: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=_json_default) + "\n")
        os.replace(tmp, self.path)

    def description(self, engine: Any = None, feature_check: str | None = None,
                    note: str | None = None) -> dict[str, Any]:
        """The description written now (priors included)."""
        assert self.priors is not None
        meta = {"format": MODEL_META_FORMAT, "model_file": "model.pt", **copy.deepcopy(self.meta)}
        space = "template" if meta.get("template") else "image"
        meta["priors"] = _priors_dict(self.priors, space)
        meta["feature_check"] = feature_check
        if note:
            meta["feature_check_note"] = note
        if engine is not None:
            state = engine.state
            meta["training"] = {"max_epochs": int(state.max_epochs or 0), "epochs_completed": int(state.epoch),
                                "complete": bool(state.max_epochs and state.epoch >= state.max_epochs)}
        return meta

    def started(self, engine: Any) -> None:
        if not self._rank_zero():
            return
        pts = self.priors_source.priors() if hasattr(self.priors_source, "priors") else self.priors_source
        if not isinstance(pts, PointSet) or len(pts.labels) == 0:
            raise ValueError(f"ModelMetaWriter: priors must give a non-empty PointSet, got {pts!r}.")
        self.priors = pts
        write_points_json(pts, self.priors_path)
        self._write(self.description(engine))
        logger.info("wrote %s and %s", self.path, self.priors_path)

    def completed(self, engine: Any) -> None:
        if not self._rank_zero():
            return
        if self.priors is None:
            self.started(engine)
        check_file, note = None, None
        if self.feature_data is not None:
            try:
                check = self.fit_feature_check(engine.network)
            except ValueError as e:
                note = f"not fitted: {e}"
                logger.warning("feature-distribution check %s; the out-of-distribution verdict uses the confidence "
                               "flags only.", note)
            else:
                check_file = "feature_check.json"
                check.save(self.path.parent / check_file)
        if self.prior_sigma_candidates and self.holdout_data is not None:
            selection = self.select_prior_sigma(engine.network)
            if selection is None:
                logger.warning("prior_sigma_candidates: the held-out items carry no landmarks; no position prior.")
            else:
                self.meta["search"]["prior_sigma_mm"] = selection["chosen"]
                self.meta["search"]["prior_sigma_selection"] = selection
                logger.info("position prior of the search: %s (median held-out error by candidate: %s)",
                            selection["chosen"], dict(zip(map(str, selection["candidates"]),
                                                          selection["median_error_mm"], strict=True)))
                if self.mirror_labels is not None:
                    mirror = self.select_mirror(engine.network)
                    if mirror is not None:
                        chosen = mirror["chosen"]
                        self.meta["search"]["mirror_labels"] = None if chosen == "without" else self.mirror_labels
                        self.meta["search"]["mirror_coarse"] = chosen == "everywhere"
                        self.meta["search"]["mirror_selection"] = mirror
                        logger.info("mirror averaging of the search: %s (median held-out error by candidate: %s)",
                                    chosen, dict(zip(mirror["candidates"], mirror["median_error_mm"], strict=True)))
        self._write(self.description(engine, check_file, note))
        logger.info("wrote %s (feature check: %s)", self.path, check_file or note or "none")

    def _best_network(self, network: torch.nn.Module) -> torch.nn.Module:
        net = copy.deepcopy(getattr(network, "module", network))
        if self.model_path is not None and self.model_path.is_file():
            net.load_state_dict(torch.load(self.model_path, map_location="cpu", weights_only=True))
        return net.eval()

    def _holdout(self) -> list[Any]:
        if self.holdout_data is not None and not isinstance(self.holdout_data, list):
            self.holdout_data = list(self.holdout_data)  # loaded (and aligned) once for every use
        return self.holdout_data or []

    def _holdout_errors(self, net: torch.nn.Module, settings: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """``(len(settings), images)`` mean localisation errors (mm) of the held-out items that carry landmarks,
        one row per set of :func:`localise_landmarks` keyword arguments (over the description's search settings);
        an image whose search region leaves the volume, or that has no error for some setting, is left out. ``None``
        when no image is left."""
        from monai_ext.transforms import apply_matrix

        from .evaluation import localise_landmarks

        assert self.priors is not None
        device = next(net.parameters()).device
        search, patch = self.meta["search"], self.meta["patch"]
        truth_of = [it for it in self._holdout() if {"image", "landmarks", "landmark_labels"} <= set(it)]
        if not truth_of:
            return None
        errors = np.full((len(settings), len(truth_of)), np.nan)
        for j, item in enumerate(truth_of):
            image = item["image"]
            affine = np.asarray(image.affine, dtype=np.float64)
            vox = points_to_voxels(self.priors, affine, image.shape[1:], tolerance=1e6)
            truth = {int(k): np.asarray(p, np.float64) for k, p in zip(
                np.asarray(item["landmark_labels"]).reshape(-1), np.asarray(item["landmarks"]).reshape(-1, 3),
                strict=True)}
            for i, extra in enumerate(settings):
                kwargs = {"refine_radius": float(search.get("refine_radius", 2.0)),
                          "prior_sigma_mm": search.get("prior_sigma_mm"), "score": search.get("score", "probability"),
                          "mirror_labels": search.get("mirror_labels"),
                          "mirror_coarse": search.get("mirror_coarse", True),
                          "coarse_lattice": search.get("coarse_lattice", "prior"), **extra}
                try:
                    pos, _ = localise_landmarks(net, image, vox, self.priors.labels, device,
                                                float(search["search_radius"]), float(search["search_step"]),
                                                int(patch["patch_size"]), patch.get("extent_mm"), **kwargs)
                except ValueError as e:  # a search region outside this image: it cannot score any setting
                    logger.warning("held-out image %d skipped (%s)", j, e)
                    break
                world = apply_matrix(affine, pos)
                d = [np.linalg.norm(w - truth[int(k)]) for w, k in zip(world, self.priors.labels, strict=True)
                     if int(k) in truth]
                errors[i, j] = float(np.mean(d)) if d else np.nan
        used = np.isfinite(errors).all(0)
        return errors[:, used] if used.any() else None

    @torch.no_grad()
    def select_prior_sigma(self, network: torch.nn.Module) -> dict[str, Any] | None:
        """Choose the search's position prior among ``prior_sigma_candidates`` on ``holdout_data`` (the class
        docstring says how); ``None`` when no held-out item carries landmarks."""
        assert self.priors is not None
        candidates = list(self.prior_sigma_candidates or [])
        errors = self._holdout_errors(self._best_network(network), [{"prior_sigma_mm": c, "mirror_labels": None}
                                                                      for c in candidates])
        if errors is None:
            return None
        median = np.median(errors, axis=1)
        best = int(np.argmin(median))
        spread, _ = landmark_spread_mm(
            [it for it in self._holdout() if {"image", "landmarks", "landmark_labels"} <= set(it)], self.priors)
        return {"chosen": candidates[best], "candidates": candidates,
                "median_error_mm": [round(float(v), 3) for v in median], "images": int(errors.shape[1]),
                "landmark_spread_mm": round(float(spread), 3),
                "on": "held-out items of the training distribution (holdout_data)"}

    @torch.no_grad()
    def select_mirror(self, network: torch.nn.Module) -> dict[str, Any] | None:
        """Mirror averaging (``mirror_labels``) of the search at the description's position prior: without, from
        the refinement on, or everywhere, whichever has the lowest median held-out error (the cheaper on a tie);
        ``None`` when no held-out item carries landmarks or none could be searched."""
        settings = {"without": {"mirror_labels": None},
                    "from the refinement": {"mirror_labels": self.mirror_labels, "mirror_coarse": False},
                    "everywhere": {"mirror_labels": self.mirror_labels, "mirror_coarse": True}}
        errors = self._holdout_errors(self._best_network(network), list(settings.values()))
        if errors is None:
            return None
        median = np.median(errors, axis=1)
        candidates = list(settings)
        return {"chosen": candidates[int(np.argmin(median))], "candidates": candidates,
                "median_error_mm": [round(float(v), 3) for v in median],
                "mean_error_mm": [round(float(v), 3) for v in errors.mean(1)], "images": int(errors.shape[1]),
                "prior_sigma_mm": self.meta["search"].get("prior_sigma_mm"),
                "on": "held-out items of the training distribution (holdout_data)"}

    @torch.no_grad()
    def fit_feature_check(self, network: torch.nn.Module) -> Any:
        """The :class:`~monai_ext.apps.aneurysm.inference.FeatureDistributionCheck` of ``network`` (the class
        docstring says on what).

        Raises:
            ValueError: fewer than 10 patches in ``feature_data``.
        """
        from monai_ext.transforms import TriPlanarPatch

        from .inference import FeatureDistributionCheck

        net = self._best_network(network)
        device = next(net.parameters()).device
        feats, labels = [], []
        for batch in self.feature_data or []:
            x = torch.as_tensor(batch["image"]).float().to(device)
            feats.append(net.features(x).float().cpu().numpy())
            labels.append(np.asarray(torch.as_tensor(batch["label"]).cpu()).reshape(-1))
        if not feats:
            raise ValueError("feature_data gave no patches")
        x, y = np.concatenate(feats), np.concatenate(labels)
        held = None
        if self.holdout_data is not None and self.priors is not None:
            patch = self.meta["patch"]
            patcher = TriPlanarPatch(int(patch["patch_size"]), patch.get("extent_mm"))
            held_list = []
            for item in self._holdout():
                image = item["image"]
                vox = points_to_voxels(self.priors, np.asarray(image.affine, np.float64), image.shape[1:],
                                       tolerance=1e6)
                inside = np.all((vox >= 0) & (vox <= np.asarray(image.shape[1:]) - 1), axis=1)
                if inside.any():
                    p = torch.as_tensor(patcher(image, vox[inside])).float().to(device)
                    held_list.append(net.features(p).float().cpu().numpy())
            held = np.concatenate(held_list) if held_list else None
        return FeatureDistributionCheck().fit(x, y, holdout_features=held)

    def __call__(self, engine: Any) -> None:
        self.started(engine)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray | torch.Tensor):
        return np.asarray(o).tolist()
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
