"""Dictionary transforms of the aneurysm bundle: read one case, then draw tri-planar landmark patches from it.

The training pipeline of ``train.json`` is ``LoadLandmarkCased`` (cached by a ``CacheDataset``) followed by
``RandLandmarkPatchesd``, which returns ``num_samples`` dictionaries ``{"image": (3, p, p), "label": class}`` per
case; MONAI's ``DataLoader`` collates the samples of all cases of a batch into one mini-batch. The validation
pipeline uses :class:`LandmarkPatchesd`, the same draw without augmentation from a fixed per-case seed, so that
the validation patches are cached once and identical at every validation.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from .data import load_case, sample_case_patches

__all__ = ["LandmarkPatchesd", "LoadLandmarkCased", "RandLandmarkPatchesd"]


class LoadLandmarkCased(MapTransform):
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

    def __init__(self, landmark_names: Sequence[str], keys: KeysCollection = ("image", "landmarks"),
                 match_by_label: bool = False, label_key: str = "label") -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image_key, landmarks_key), got {self.keys}.")
        self.names = list(landmark_names)
        self.match_by_label = bool(match_by_label)
        self.label_key = label_key

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
