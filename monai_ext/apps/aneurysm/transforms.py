"""Dictionary transforms of the aneurysm bundle: read one case, then draw tri-planar landmark patches from it.

The training pipeline of ``train.json`` is ``LoadLandmarkCased`` (cached by a ``CacheDataset``) followed by
``RandLandmarkPatchesd``, which returns ``num_samples`` dictionaries ``{"image": (3, p, p), "label": class}`` per
case; MONAI's ``DataLoader`` collates the samples of all cases of a batch into one mini-batch. The validation
pipeline uses :class:`LandmarkPatchesd`, the same draw without augmentation from a fixed per-case seed, so that
the validation patches are cached once and identical at every validation.

The brain model (``brain.json``) keeps the landmarks in world coordinates until the image is on its final grid:
:class:`LoadLandmarkImaged` (or :class:`~monai_ext.data.synthetic.brain.SynthesizeBraind`) gives the image and
world landmarks, :class:`AlignToModelTemplated` registers the image to the model's template (ITK) and carries the
landmarks along, :class:`ModelIntensityNormalized` normalises as the model's ``model_meta.json`` says, and
:class:`LandmarkVoxelsd` turns the landmarks into the voxel points the patch samplers read. ``inference.json`` runs the
same two model-described transforms on any input.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_ext.transforms.alignment import ALIGNMENT_SETTINGS

from .data import load_case, sample_case_patches

__all__ = [
    "ModelInputError",
    "AlignToModelTemplated",
    "LandmarkPatchesd",
    "LandmarkVoxelsd",
    "LoadLandmarkCased",
    "LoadLandmarkImaged",
    "ModelIntensityNormalized",
    "RandLandmarkPatchesd",
]


class _LandmarkItemd(MapTransform):
    """Shared constructor of the transforms that read a landmark datalist item: an image key, a landmarks key, the
    landmark names, name or label matching, and the label key used when an item has no points file."""

    def __init__(self, landmark_names: Sequence[str], keys: KeysCollection = ("image", "landmarks"),
                 match_by_label: bool = False, label_key: str = "label") -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, landmarks_key), got {self.keys}.")
        self.names = list(landmark_names)
        self.match_by_label = bool(match_by_label)
        self.label_key = label_key


class LoadLandmarkCased(_LandmarkItemd):
    """Read one case of a landmark datalist: the volume, its landmarks (and candidates, rater files).

    The landmarks come from the item's points file (``landmarks_key``: ``.fcsv``/JSON/CSV, matched to
    ``landmark_names`` by name), or, when the item has none, from a label volume (``label_key``) as MONAI Label's
    train tasks give it (``{"image": volume, "label": label volume}``): on the image's grid, each non-zero value ``k``
    is landmark ``k`` at the centroid of its voxels, e.g. the spheres the app's landmark infer task draws
    (:func:`~monai_ext.apps.aneurysm.data.label_volume_landmarks`).

    Output keys: ``image`` (``(1, X, Y, Z)`` MetaTensor with its affine, intensities normalised as in
    :func:`~monai_ext.apps.aneurysm.data.normalize_intensity`), ``points`` (``(L, 3)`` voxel positions of the
    landmarks), ``point_labels`` (``(L,)`` class ids ``1..len(landmark_names)``), ``spacing`` (``(3,)`` mm), and,
    when the item has them, ``candidates`` / ``candidate_labels``. Every problem (unreadable or non-3D volume,
    NaN voxels, unknown landmark names, points outside the volume, a label volume on another grid than its image or
    with a value above ``len(landmark_names)``) stops with an error naming the file.

    Args:
        landmark_names: class ``k`` is ``landmark_names[k - 1]``.
        keys: ``(image_key, landmarks_key)`` of the datalist items.
        match_by_label: keep the points files' integer labels instead of matching names.
        label_key: key of the label volume read when an item has no ``landmarks_key``.

    Raises:
        ValueError: when ``keys`` does not name an image and a landmarks key.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, landmarks_key = self.keys
        if d.get(landmarks_key):
            item = {**d, "image": d[image_key], "landmarks": d[landmarks_key]}
        elif d.get(self.label_key):
            item = {**d, "image": d[image_key], "landmarks": None, "label": d[self.label_key]}
        else:
            raise KeyError(f"item needs '{landmarks_key}' (a landmark points file) or '{self.label_key}' (a label "
                           f"volume); got keys {sorted(map(str, d))}.")
        case = load_case(item, self.names, match_by_label=self.match_by_label)
        d.update({"image": case.image, "points": case.landmarks, "point_labels": case.landmark_labels,
                  "spacing": case.spacing})
        if len(case.candidates):
            d.update({"candidates": case.candidates, "candidate_labels": case.candidate_labels})
        return d


class RandLandmarkPatchesd(Randomizable, MapTransform):
    """Draw ``num_samples`` tri-planar patches of one case: at jittered landmarks (class = landmark id) and in the
    background (class 0: uniform, at least ``min_background_distance`` mm from every landmark, and "near misses"
    ``near_miss_range`` mm from a landmark, which teach the classifier to peak on the landmark itself).

    With ``augment`` the frame is randomly rotated and scaled and intensities get a random gain, offset, gamma and
    noise (:func:`~monai_ext.apps.aneurysm.data.augment_intensity`). Reads ``image``, ``points``, ``point_labels``
    and ``spacing`` (from :class:`LoadLandmarkCased`); returns a list of ``{"image": (3, p, p), "label": int64}``.

    Args:
        num_samples: patches per case.
        patch_size: plane side.
        extent_mm: physical plane side (``None``: one voxel per pixel).
        jitter, rotate_range, scale_range: landmark jitter (mm), frame rotation (radians) and in-plane scale range.
        background_prob: fraction of uniform background samples.
        near_miss_fraction: near-miss points per landmark.
        augment: geometric and intensity augmentation.
    """

    def __init__(self, num_samples: int = 64, patch_size: int = 32, extent_mm: float | None = None,
                 jitter: float = 1.5, rotate_range: float = 0.15, scale_range: float = 0.1,
                 background_prob: float = 0.3, near_miss_fraction: float = 0.25, augment: bool = True) -> None:
        MapTransform.__init__(self, keys="image")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.kwargs = {"num_samples": int(num_samples), "patch_size": int(patch_size), "extent_mm": extent_mm,
                       "jitter": float(jitter), "rotate_range": float(rotate_range), "scale_range": float(scale_range),
                       "background_prob": float(background_prob), "near_miss_fraction": float(near_miss_fraction),
                       "augment": bool(augment)}
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        self.randomize()
        return _patch_samples(data, self._seed, self.kwargs)


class LandmarkPatchesd(MapTransform):
    """The patches of :class:`RandLandmarkPatchesd` drawn from a fixed seed per case (derived from ``seed`` and the
    image's file name, not its folder), without augmentation by default: a deterministic, cacheable validation set.

    Args:
        seed: base seed.
        kwargs: the arguments of :class:`RandLandmarkPatchesd` (``augment`` defaults to ``False``).
    """

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys="image")
        self.seed = int(seed)
        self.kwargs = RandLandmarkPatchesd(**{"augment": False, **kwargs}).kwargs

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        image = data["image"]
        # the file name, not its folder: the same data copied elsewhere draws the same patches
        name = os.path.basename(str(getattr(image, "meta", {}).get("filename_or_obj", "")))
        return _patch_samples(data, (self.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1), self.kwargs)


def _patch_samples(data: Mapping[Hashable, Any], seed: int, kwargs: dict[str, Any]) -> list[dict[Hashable, Any]]:
    missing = [k for k in ("image", "points", "point_labels", "spacing") if k not in data]
    if missing:
        found = sorted(map(str, data))
        raise KeyError(f"landmark patches need keys {missing} (from LoadLandmarkCased); found {found}.")
    x, y = sample_case_patches(data["image"], np.asarray(data["points"]), np.asarray(data["point_labels"]),
                               np.asarray(data["spacing"]), seed=seed, **kwargs)
    return [{"image": x[i], "label": y[i]} for i in range(len(y))]


class LoadLandmarkImaged(_LandmarkItemd):
    """Read one landmark image as it is on disk: the volume (no intensity change) and its landmarks in RAS mm.

    The brain model's counterpart of :class:`LoadLandmarkCased`: the intensities are normalised later, after the
    alignment to the template (:class:`ModelIntensityNormalized`), and the landmarks stay in world coordinates so that
    the alignment can carry them into template space (:class:`AlignToModelTemplated`). The same keys as
    :class:`~monai_ext.data.synthetic.brain.SynthesizeBraind` writes, so a datalist of real brains and synthetic
    brains feed the same pipeline.

    Output keys: ``image`` (``(1, X, Y, Z)`` float32 MetaTensor with its affine and file name), ``landmarks``
    (``(L, 3)`` RAS mm) and ``landmark_labels`` (``(L,)`` class ids ``1..len(landmark_names)``). The landmarks come
    from the item's points file (``.fcsv``/JSON/CSV, matched to ``landmark_names`` by name) or, without one, from a
    label volume (``label_key``: value ``k`` marks landmark ``k``, at the centroid of its voxels).

    Args:
        landmark_names: class ``k`` is ``landmark_names[k - 1]``.
        keys: ``(image_key, landmarks_key)`` of the datalist items.
        match_by_label: keep the points files' integer labels instead of matching names.
        label_key: key of the label volume read when an item has no ``landmarks_key``.

    Raises:
        ValueError: when ``keys`` does not name an image and a landmarks key; at call time (naming the file) for an
            unreadable or non-3D volume, NaN voxels, unknown landmark names or labels outside the class range.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import torch
        from monai.data import MetaTensor
        from monai.transforms import LoadImage

        from monai_ext.data import read_image, validate_image
        from monai_ext.transforms import apply_matrix

        from .data import _read_label_landmarks
        from .landmarks import read_points

        d = dict(data)
        image_key, landmarks_key = self.keys
        path = d[image_key]
        loader = LoadImage(image_only=True, ensure_channel_first=True)
        img = read_image(path, loader, what="image")
        validate_image(img, path, ndim=4, what="image",
                       layout="a 3D volume (X, Y, Z), read channel-first as (1, X, Y, Z)")
        if img.shape[0] != 1:
            raise ValueError(f"{path}: expected a single-channel volume, got {img.shape[0]} channels.")
        affine = np.asarray(img.affine, dtype=np.float64)
        if d.get(landmarks_key):
            pts = read_points(d[landmarks_key], names=None if self.match_by_label else self.names).to_ras()
            if pts.units != "mm":
                raise ValueError(f"{d[landmarks_key]}: landmarks must be world coordinates (mm), got {pts.units}.")
            world, labels = pts.positions, pts.labels
        elif d.get(self.label_key):
            vox, labels = _read_label_landmarks(d[self.label_key], loader, img, path, len(self.names))
            world = apply_matrix(affine, vox)
        else:
            raise KeyError(f"item needs '{landmarks_key}' (a landmark points file) or '{self.label_key}' (a label "
                           f"volume); got keys {sorted(map(str, d))}.")
        bad = labels[(labels < 1) | (labels > len(self.names))]
        if bad.size:
            raise ValueError(f"{d.get(landmarks_key) or d.get(self.label_key)}: labels {bad.tolist()} outside "
                             f"1..{len(self.names)}.")
        meta = {**dict(img.meta), "filename_or_obj": str(path)}
        d[image_key] = MetaTensor(img.as_tensor().float(), affine=torch.as_tensor(affine), meta=meta)
        d["landmarks"], d["landmark_labels"] = np.asarray(world, dtype=np.float64), np.asarray(labels, dtype=np.int64)
        return d


class ModelInputError(ValueError):
    """The image cannot be brought into the model's space or intensity range (e.g. after alignment to the brain
    template it is constant inside the template's brain mask: not a brain). Inference reports such an image as out
    of distribution instead of failing (:class:`~monai_ext.apps.aneurysm.AneurysmInference`)."""


class AlignToModelTemplated(MapTransform):
    """Align the image to the template a model was trained in, as its ``model_meta.json`` describes it.

    With a template description (:meth:`~monai_ext.apps.aneurysm.brain.BrainTemplateSpace.to_dict`, what
    ``brain.json`` stores), the image is registered to the template with ITK and resampled onto the model's search
    grid (:class:`~monai_ext.transforms.AlignToTemplated`, built on first use), the template's brain mask is written
    to ``mask_key``, the template-to-image matrix to ``matrix_key`` (and the image's meta), and the world points
    under ``points_keys`` (RAS mm of the input) are carried into template space. Without one (``None``: a model
    with no template, e.g. the synthetic-vessel model of ``train.json``), the data pass through unchanged.

    Args:
        keys: image keys (the first is registered).
        template: the model's template description, a
            :class:`~monai_ext.apps.aneurysm.brain.BrainTemplateSpace`, or ``None``.
        points_keys: keys of ``(N, 3)`` world points to map into template space.
        mask_key: key of the written brain mask.
        matrix_key: key of the written template-to-image matrix.
        allow_missing_keys: don't raise for missing keys.
        registration: settings of the alignment (``None``: the defaults): :func:`~monai_ext.transforms.register_affine`
            settings (``bias_voxel_mm``, ``iterations``, ...) and :class:`~monai_ext.transforms.AlignToTemplated`'s
            own (``min_overlap``, ``head_height_mm``, ...). ``brain.json``'s ``registration`` sets them for training
            and stores them in ``model_meta.json``, where ``inference.json`` reads them.

    Raises:
        ValueError: for a template description that does not rebuild (:meth:`BrainTemplateSpace.from_dict`), or a
            ``registration`` that is not a mapping or names an unknown setting (naming it);
            :class:`ModelInputError` at call time when ITK's registration fails.
    """

    def __init__(self, keys: KeysCollection = "image", template: Mapping[str, Any] | Any | None = None,
                 points_keys: KeysCollection = (), mask_key: str = "brain_mask",
                 matrix_key: str = "template_to_image", allow_missing_keys: bool = False,
                 registration: Mapping[str, Any] | None = None) -> None:
        from .brain import BrainTemplateSpace

        super().__init__(keys, allow_missing_keys)
        if template is None or isinstance(template, BrainTemplateSpace):
            self.space = template
        else:
            self.space = BrainTemplateSpace.from_dict(template)
        self.points_keys = [points_keys] if isinstance(points_keys, str) else list(points_keys)
        self.mask_key, self.matrix_key = mask_key, matrix_key
        if registration is not None and not isinstance(registration, Mapping):
            raise ValueError(f"registration must be a mapping of alignment settings, got {registration!r}.")
        self.registration = dict(registration or {})
        unknown = sorted(set(self.registration) - set(ALIGNMENT_SETTINGS))
        if unknown:
            raise ValueError(f"registration: unknown alignment settings {unknown}; the settings are "
                             f"{sorted(ALIGNMENT_SETTINGS)}.")
        self._aligner: Any = None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai_ext.transforms import apply_matrix

        d = dict(data)
        if self.space is None:
            return d
        if self._aligner is None:
            self._aligner = self.space.aligner(self.keys, mask_key=self.mask_key, matrix_key=self.matrix_key,
                                               allow_missing_keys=self.allow_missing_keys, **self.registration)
        try:
            d = self._aligner(d)
        except RuntimeError as e:  # ITK's registration failures (e.g. no overlap with the template at all)
            raise ModelInputError(f"the alignment to the model's template failed: {e}") from e
        inv = np.linalg.inv(np.asarray(d[self.matrix_key], dtype=np.float64))
        for key in self.points_keys:
            if key in d:
                d[key] = apply_matrix(inv, np.asarray(d[key], dtype=np.float64))
        return d


class ModelIntensityNormalized(MapTransform):
    """Normalise intensities the way a model was trained, from its ``model_meta.json`` ``"normalization"``.

    - ``{"name": "percentile", "lower", "upper"}``: whole-image percentiles to 0 and 1
      (:func:`~monai_ext.apps.aneurysm.data.normalize_intensity`; the synthetic-vessel model, whose volumes have no
      skull or background that would move them);
    - ``{"name": "masked_percentile", "lower", "upper", "erode_mm"[, "b_min", "b_max", "min_voxels"]}``: percentiles
      inside the brain mask under ``mask_key`` (the template's, after :class:`AlignToModelTemplated`), eroded by
      ``erode_mm`` (:class:`~monai_ext.transforms.MaskedPercentileNormalize`; the brain model: independent of the
      skull and of the field of view).

    The MetaTensor's metadata are kept.

    Args:
        keys: image keys.
        normalization: the description above.
        mask_key: key of the brain mask (``masked_percentile``).
        allow_missing_keys: don't raise for missing keys.

    Raises:
        ValueError: for an unknown ``name`` or missing settings; ``KeyError`` at call time when the mask is missing;
            :class:`ModelInputError` when the image is constant inside the mask.
    """

    _SETTINGS = {"percentile": ("lower", "upper"), "masked_percentile": ("lower", "upper", "erode_mm")}

    def __init__(self, keys: KeysCollection = "image", normalization: Mapping[str, Any] | None = None,
                 mask_key: str = "brain_mask", allow_missing_keys: bool = False) -> None:
        from monai_ext.transforms import MaskedPercentileNormalize

        super().__init__(keys, allow_missing_keys)
        spec = dict(normalization or {})
        name = spec.get("name")
        if name not in self._SETTINGS:
            raise ValueError(f"normalization name must be one of {sorted(self._SETTINGS)}, got {spec!r}.")
        missing = [k for k in self._SETTINGS[name] if k not in spec]
        if missing:
            raise ValueError(f"normalization {name!r} needs {missing}; got {spec!r}.")
        self.spec, self.mask_key = spec, mask_key
        self.masked = None
        if name == "masked_percentile":
            extra = {k: spec[k] for k in ("b_min", "b_max", "min_voxels") if k in spec}
            self.masked = MaskedPercentileNormalize(spec["lower"], spec["upper"], erode_mm=spec["erode_mm"], **extra)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data import MetaTensor

        from .data import normalize_intensity

        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if self.masked is not None:
                if self.mask_key not in d:
                    raise KeyError(f"masked_percentile normalisation reads the brain mask '{self.mask_key}', which "
                                   f"the data lack (keys {sorted(map(str, d))}); align the image first.")
                try:
                    out = self.masked(img, d[self.mask_key])
                except ValueError as e:
                    raise ModelInputError(f"cannot normalise the image inside the brain mask: {e} The image does "
                                          "not look like a brain after the alignment to the template.") from e
            else:
                plain = img.as_tensor() if isinstance(img, MetaTensor) else img
                out = normalize_intensity(plain, self.spec["lower"], self.spec["upper"])
                if isinstance(img, MetaTensor):
                    out = MetaTensor(out, meta=dict(img.meta))
            d[key] = out
        return d


class LandmarkVoxelsd(MapTransform):
    """World landmarks (``landmarks``, RAS mm) to the voxel points the patch samplers read.

    Writes ``points`` (``(K, 3)`` voxel coordinates on the image's grid), ``point_labels`` and ``spacing`` for
    :class:`RandLandmarkPatchesd` / :class:`LandmarkPatchesd`. A landmark whose position lies outside the volume
    (a synthetic brain warped partly out of the crop, or a scan that does not cover it) cannot be sampled: it is
    left out of ``points`` and its label listed under ``landmarks_outside``.

    Args:
        image_key: the image (a MetaTensor with its affine).
        points_key: the world points.
        labels_key: their labels.
    """

    def __init__(self, image_key: str = "image", points_key: str = "landmarks",
                 labels_key: str = "landmark_labels") -> None:
        super().__init__(image_key)
        self.image_key, self.points_key, self.labels_key = image_key, points_key, labels_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai_ext.transforms import apply_matrix

        d = dict(data)
        missing = [k for k in (self.image_key, self.points_key, self.labels_key) if k not in d]
        if missing:
            raise KeyError(f"LandmarkVoxelsd needs keys {missing}; found {sorted(map(str, d))}.")
        image = d[self.image_key]
        affine = np.asarray(image.affine, dtype=np.float64)
        vox = apply_matrix(np.linalg.inv(affine), np.asarray(d[self.points_key], dtype=np.float64))
        labels = np.asarray(d[self.labels_key], dtype=np.int64)
        inside = np.isfinite(vox).all(1) & np.all((vox >= 0) & (vox <= np.asarray(image.shape[1:]) - 1), axis=1)
        d.update({"points": vox[inside], "point_labels": labels[inside],
                  "spacing": np.linalg.norm(affine[:3, :3], axis=0), "landmarks_outside": labels[~inside]})
        return d
