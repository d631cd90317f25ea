"""Loading the aneurysm study's cases and sampling tri-planar patch sets from them.

A case is one volume with its landmark file and (optionally) its candidate file, listed in a datalist (see
:mod:`monai_ext.data.synthetic.aneurysm` for the format). :func:`load_cases` reads a datalist section into memory
(volumes are small); the ``sample_*`` functions turn cases into ``(patches, labels)`` tensors.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose, LoadImage, RandomizableTrait, Transform

from monai_ext.data import load_datalist, read_image, validate_image
from monai_ext.transforms import RandTriPlanarPatchd, TriPlanarPatch
from monai_ext.utils import as_bool

from .landmarks import points_to_voxels, read_points

__all__ = [
    "Case",
    "landmark_names_of",
    "label_volume_landmarks",
    "load_case",
    "load_cases",
    "normalize_intensity",
    "sample_case_patches",
    "sample_landmark_patches",
    "candidate_patches",
    "augment_intensity",
    "resolve_aneurysm_datalist",
    "RollingCacheDataset",
]


@dataclass
class Case:
    """One volume with its landmarks and candidates in voxel coordinates.

    Attributes:
        name: file stem of the image.
        image: ``(1, X, Y, Z)`` float32 MetaTensor (with the affine), intensities normalised by
            :func:`normalize_intensity`.
        affine: ``4x4`` voxel-to-RAS affine (float64 numpy).
        landmarks: ``(L, 3)`` voxel positions.
        landmark_labels: ``(L,)`` class ids (``1..num_landmarks``).
        candidates: ``(K, 3)`` voxel positions (``K = 0`` when the case has no candidate file).
        candidate_labels: ``(K,)`` 0/1 labels (1 = aneurysm).
        extra_points: other point sets of the case keyed by datalist key (e.g. rater annotations), voxel positions
            and labels.
    """

    name: str
    image: torch.Tensor
    affine: np.ndarray
    landmarks: np.ndarray
    landmark_labels: np.ndarray
    candidates: np.ndarray
    candidate_labels: np.ndarray
    extra_points: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def normalize_intensity(img: np.ndarray | torch.Tensor, lower: float = 1.0, upper: float = 99.9) -> torch.Tensor:
    """Map the ``lower`` and ``upper`` intensity percentiles to 0 and 1 (no clipping), float32.

    Raises:
        ValueError: when the percentiles are not ``0 <= lower < upper <= 100`` or the image is constant.
    """
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}.")
    x = torch.as_tensor(np.asarray(img), dtype=torch.float32)
    lo, hi = np.percentile(x.numpy(), [lower, upper])
    if not hi > lo:
        raise ValueError(f"cannot normalise a constant image (percentiles {lower}/{upper} are both {lo}).")
    return (x - float(lo)) / float(hi - lo)


def landmark_names_of(datalist: str | os.PathLike) -> list[str]:
    """The datalist's ``landmark_names`` (class ``k`` is ``names[k - 1]``).

    Raises:
        FileNotFoundError: when the datalist does not exist.
        ValueError: when the datalist is not JSON or has no non-empty ``landmark_names`` list of strings.
    """
    path = Path(datalist)
    path = path / "dataset.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"datalist JSON not found: '{path}'.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist '{path}' is not valid JSON: {e}") from e
    names = content.get("landmark_names") if isinstance(content, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"datalist '{path}' needs a top-level 'landmark_names' list of strings (class k is names[k - 1]); "
            f"got {names!r}."
        )
    return names


def load_cases(datalist: str | os.PathLike, section: str, names: Sequence[str] | None = None,
               extra_keys: Sequence[str] = (), max_cases: int | None = None,
               match_by_label: bool = False) -> list[Case]:
    """Read the cases of one datalist section into memory.

    Args:
        datalist: datalist JSON (or folder holding ``dataset.json``).
        section: ``"training"``, ``"validation"`` or ``"test"``.
        names: landmark names (defaults to the datalist's ``landmark_names``); file points are mapped to class ids by
            name unless ``match_by_label``.
        extra_keys: further point-file keys to read (e.g. ``"raters"``, a list of files per item).
        max_cases: read at most this many cases.
        match_by_label: keep the files' integer labels instead of matching names (AFIDs raters spell names
            differently).

    Raises:
        FileNotFoundError: a missing datalist, image or point file (names it).
        ValueError: from the datalist, an unreadable (truncated, corrupt) image, an image that is not a 3D volume or
            holds NaN / infinite voxels, the landmark files, or points outside their volume (names the file).
    """
    names = list(names) if names is not None else landmark_names_of(datalist)
    items = load_datalist(datalist, section, required_keys=("image", "landmarks"),
                          path_keys=("image", "landmarks", "candidates", *extra_keys))
    return [load_case(item, names, extra_keys, match_by_label, what=f"{section} image") for item in items[:max_cases]]


def label_volume_landmarks(label: np.ndarray | torch.Tensor, num_landmarks: int,
                           path: str | os.PathLike = "label volume") -> tuple[np.ndarray, np.ndarray]:
    """The landmarks drawn in a label volume: each value ``k >= 1`` is landmark ``k`` at the centroid of its voxels.

    This reads back what a viewer stores for a landmark model: MONAI Label keeps a submitted label as a volume on the
    image's grid, e.g. the spheres :func:`monai_ext.label.landmarks.render_landmark_spheres` draws around each
    localised landmark (value = class), corrected in 3D Slicer's Segment Editor. The centroid of a sphere (or any
    blob symmetric about its centre) is its centre; all voxels of one value are one landmark.

    Args:
        label: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` integer-valued label volume (0 = no landmark).
        num_landmarks: number of landmark names; values must lie in ``0..num_landmarks``.
        path: the file, for the messages.

    Returns:
        ``(points (L, 3) float64 voxel coordinates, labels (L,) int64)``, sorted by label, one row per value present.

    Raises:
        ValueError: for a volume that is not 3D, values that are not integers, negative values or values above
            ``num_landmarks``, or a volume without any landmark (every voxel 0); the message names ``path``.

    Example::

        >>> vol = np.zeros((5, 5, 5), dtype=np.uint8)
        >>> vol[1:3, 1, 1] = 2  # two voxels of landmark 2
        >>> label_volume_landmarks(vol, num_landmarks=3)
        (array([[1.5, 1. , 1. ]]), array([2]))
    """
    lab = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if lab.ndim == 4 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.ndim != 3:
        raise ValueError(f"label volume '{path}' has shape {lab.shape}; expected a single-channel 3D volume.")
    if not (np.issubdtype(lab.dtype, np.integer) or np.issubdtype(lab.dtype, np.bool_)):
        if not np.isfinite(lab).all() or not np.array_equal(lab, np.round(lab)):
            raise ValueError(f"label volume '{path}' must hold integer landmark classes; it has non-integer values.")
    lab = lab.astype(np.int64)
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi > num_landmarks:
        bad = sorted(int(v) for v in np.unique(lab[(lab < 0) | (lab > num_landmarks)]))
        raise ValueError(
            f"label volume '{path}' holds values {bad[:10]} outside 0..{num_landmarks}: value k marks landmark k of "
            f"the {num_landmarks} landmark names."
        )
    idx = np.nonzero(lab)
    if not idx[0].size:
        raise ValueError(f"label volume '{path}' holds no landmark (every voxel is 0).")
    values = lab[idx]
    counts = np.bincount(values, minlength=num_landmarks + 1)
    present = np.flatnonzero(counts[1:]) + 1
    centroids = np.stack(
        [np.bincount(values, weights=i.astype(np.float64), minlength=num_landmarks + 1)[present] for i in idx], 1
    ) / counts[present, None]
    return centroids, present.astype(np.int64)


def load_case(item: dict, names: Sequence[str], extra_keys: Sequence[str] = (), match_by_label: bool = False,
              what: str = "image") -> Case:
    """Read one datalist item ``{"image", "landmarks"[, "candidates"][, extra keys]}`` (absolute paths).

    An item without ``landmarks`` may give its landmarks as a label volume ``{"image", "label"}`` (what MONAI Label
    hands a train task): a volume on the image's grid where value ``k`` marks landmark ``k``
    (:func:`label_volume_landmarks`).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_cases`, naming the file; also a label volume on another grid
            than its image (shape or affine), or with values that are not landmark classes ``0..len(names)``.
    """
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    img = read_image(item["image"], loader, what=what)
    validate_image(img, item["image"], ndim=4, what=what,
                   layout="a 3D volume (X, Y, Z), read channel-first as (1, X, Y, Z)")
    affine = np.asarray(img.affine, dtype=np.float64)
    shape = tuple(img.shape[1:])
    if img.shape[0] != 1:
        raise ValueError(f"{item['image']}: expected a single-channel volume, got {img.shape[0]} channels.")

    def read(path: str, by_name: bool) -> tuple[np.ndarray, np.ndarray]:
        pts = read_points(path, names=names if by_name else None)
        return points_to_voxels(pts, affine, shape), pts.labels

    if not item.get("landmarks") and item.get("label"):
        lm, lm_labels = _read_label_landmarks(item["label"], loader, img, item["image"], len(names))
    else:
        lm, lm_labels = read(item["landmarks"], not match_by_label)
        bad = lm_labels[(lm_labels < 1) | (lm_labels > len(names))]
        if bad.size:
            raise ValueError(f"{item['landmarks']}: labels {bad.tolist()} outside 1..{len(names)}.")
    if item.get("candidates"):
        pts = read_points(item["candidates"])
        cand, cand_labels = points_to_voxels(pts, affine, shape), pts.labels
        if not np.isin(cand_labels, (0, 1)).all():
            raise ValueError(f"{item['candidates']}: candidate labels must be 0 or 1, got {np.unique(cand_labels)}.")
    else:
        cand, cand_labels = np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)
    extra = {}
    for key in extra_keys:
        files = item.get(key, [])
        for j, f in enumerate(files if isinstance(files, list) else [files]):
            extra[f"{key}{j}"] = read(f, False)
    meta = {"filename_or_obj": str(item["image"])}
    image = MetaTensor(normalize_intensity(img.as_tensor()), affine=torch.as_tensor(affine), meta=meta)
    return Case(Path(item["image"]).name.split(".")[0], image, affine, lm, lm_labels, cand, cand_labels, extra)


def _read_label_landmarks(path: str, loader: LoadImage, image: MetaTensor, image_path: str,
                          num_landmarks: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`label_volume_landmarks` of the file ``path``, which must be on the grid of ``image``."""
    lab = read_image(path, loader, what="landmark label volume")
    validate_image(lab, path, ndim=4, what="landmark label volume",
                   layout="a 3D label volume (X, Y, Z), read channel-first as (1, X, Y, Z)")
    if lab.shape[0] != 1:
        raise ValueError(f"landmark label volume '{path}' has {lab.shape[0]} channels; expected one.")
    lab_affine = np.asarray(lab.affine, dtype=np.float64)
    img_affine = np.asarray(image.affine, dtype=np.float64)
    if tuple(lab.shape[1:]) != tuple(image.shape[1:]) or not np.allclose(lab_affine, img_affine, rtol=0, atol=1e-3):
        raise ValueError(
            f"landmark label volume '{path}' is not on the grid of its image '{image_path}': shape "
            f"{tuple(lab.shape[1:])} vs {tuple(image.shape[1:])}, affine {np.round(lab_affine, 3).tolist()} vs "
            f"{np.round(img_affine, 3).tolist()}; save the label on the image's grid."
        )
    return label_volume_landmarks(lab.as_tensor(), num_landmarks, path)


def augment_intensity(patches: torch.Tensor, generator: torch.Generator, gamma: float = 0.3, gain: float = 0.2,
                      noise: float = 0.03) -> torch.Tensor:
    """Per-patch random gain, offset, gamma-like contrast change and Gaussian noise (drawn from ``generator``)."""
    n = patches.shape[0]
    shape = (n,) + (1,) * (patches.ndim - 1)
    g = 1.0 + gain * (2 * torch.rand(shape, generator=generator) - 1)
    off = 0.05 * (2 * torch.rand(shape, generator=generator) - 1)
    exp = torch.exp(gamma * (2 * torch.rand(shape, generator=generator) - 1))
    x = torch.sign(patches) * patches.abs() ** exp
    return x * g + off + noise * torch.randn(patches.shape, generator=generator)


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _ring_points(landmarks: np.ndarray, rng: np.random.Generator, count: int, r_min: float, r_max: float,
                 spacing: np.ndarray) -> np.ndarray:
    """``count`` points at a distance in ``[r_min, r_max]`` mm from randomly chosen landmarks (voxel units)."""
    if count == 0 or len(landmarks) == 0:
        return np.zeros((0, 3))
    d = rng.normal(size=(count, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = rng.uniform(r_min, r_max, size=(count, 1))
    return landmarks[rng.integers(len(landmarks), size=count)] + d * r / spacing


def sample_case_patches(image: torch.Tensor, points: np.ndarray, point_labels: np.ndarray, spacing: np.ndarray,
                        num_samples: int, seed: int, patch_size: int = 32, extent_mm: float | None = None,
                        jitter: float = 1.5, rotate_range: float = 0.15, scale_range: float = 0.1,
                        background_prob: float = 0.3, near_miss_fraction: float = 0.25,
                        near_miss_range: tuple[float, float] = (4.0, 8.0), min_background_distance: float = 4.0,
                        augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Tri-planar patches of one case at (jittered) landmarks (class = landmark id) and background points (class 0).

    Background samples are of two kinds: uniform over the volume at least ``min_background_distance`` mm from
    every landmark (via :class:`~monai_ext.transforms.RandTriPlanarPatchd`), and "near misses" at
    ``near_miss_range`` mm from a landmark, which teach the classifier to peak on the landmark itself (needed for
    localisation). With ``augment=False`` the frame is neither rotated nor scaled and intensities are untouched.
    Every draw comes from ``seed``.

    Returns:
        ``(patches (num_samples, 3, p, p) float32, labels (num_samples,) int64)``.
    """
    rng = np.random.default_rng(seed)
    n_near = int(round(near_miss_fraction * len(points)))
    near = _ring_points(points, rng, n_near, *near_miss_range, spacing)
    inside = np.all((near >= 0) & (near <= np.asarray(image.shape[1:]) - 1), axis=1)
    near = near[inside]
    sampler = RandTriPlanarPatchd(
        "image", num_samples=num_samples, patch_size=patch_size, extent_mm=extent_mm,
        background_prob=background_prob, min_background_distance=min_background_distance,
        jitter=jitter if augment else 0.0, rotate_range=rotate_range if augment else 0.0,
        scale_range=scale_range if augment else 0.0, background_margin=2,
    )
    sampler.set_random_state(int(rng.integers(2**31)))
    out = sampler({
        "image": image,
        "points": np.concatenate([points, near], 0),
        "point_labels": np.concatenate([point_labels, np.zeros(len(near), dtype=np.int64)]),
    })
    x = torch.stack([_plain(o["image"]) for o in out]).float()
    if augment:
        x = augment_intensity(x, torch.Generator().manual_seed(int(seed)))
    return x, torch.tensor([o["patch_class"] for o in out], dtype=torch.long)


def sample_landmark_patches(cases: Sequence[Case], samples_per_case: int, seed: int, augment: bool = True,
                            **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_case_patches` of every case (case ``i`` drawn from seed ``(seed, i)``), concatenated.

    Returns:
        ``(patches (N, 3, p, p) float32, labels (N,) int64)`` with ``N = len(cases) * samples_per_case``.
    """
    xs, ys = [], []
    for i, case in enumerate(cases):
        s = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0] % (2**31 - 1))
        x, y = sample_case_patches(case.image, case.landmarks, case.landmark_labels, case.spacing,
                                   samples_per_case, s, augment=augment, **kwargs)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def candidate_patches(cases: Sequence[Case], patch_size: int = 32, extent_mm: float | None = None,
                      copies: int = 1, seed: int = 0, jitter: float = 1.0, rotate_range: float = 0.15
                      ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Tri-planar patches at every candidate point of every case.

    Args:
        cases: cases with candidates.
        patch_size: plane side.
        extent_mm: physical plane side (``None``: one voxel per pixel).
        copies: ``1`` gives the plain patch; more adds ``copies - 1`` randomly rotated and jittered views per
            candidate (training-time augmentation).
        seed: seed of the augmentation.
        jitter: jitter radius (mm) of the augmented views.
        rotate_range: maximum rotation (radians) of the augmented views.

    Returns:
        ``(patches (N, 3, p, p), labels (N,), case index (N,), original (N,) bool)``; ``original`` marks the plain
        (non-augmented) patch of each candidate.
    """
    patcher = TriPlanarPatch(patch_size=patch_size, extent_mm=extent_mm)
    sampler = RandTriPlanarPatchd("image", num_samples=1, patch_size=patch_size, extent_mm=extent_mm,
                                  background_prob=0.0, jitter=jitter, rotate_range=rotate_range)
    sampler.set_random_state(seed)
    xs, ys, groups, original = [], [], [], []
    for ci, case in enumerate(cases):
        if len(case.candidates) == 0:
            continue
        xs.append(_plain(patcher(case.image, case.candidates)).float())
        ys.append(torch.as_tensor(case.candidate_labels))
        groups.append(np.full(len(case.candidates), ci))
        original.append(np.ones(len(case.candidates), dtype=bool))
        if copies > 1:
            sampler.num_samples = (copies - 1) * len(case.candidates)
            out = sampler({"image": case.image, "points": case.candidates, "point_labels": case.candidate_labels})
            xs.append(torch.stack([_plain(o["image"]) for o in out]).float())
            ys.append(torch.tensor([o["patch_class"] for o in out]))
            groups.append(np.full(len(out), ci))
            original.append(np.zeros(len(out), dtype=bool))
    if not xs:
        raise ValueError("no case has candidate points: the transfer stage needs a 'candidates' file per case.")
    return torch.cat(xs), torch.cat(ys).long(), np.concatenate(groups), np.concatenate(original)


def resolve_aneurysm_datalist(dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike,
                              data_source: str = "synthetic", seed: int = 0, num_cases: int = 32,
                              volume_size: int = 64, afids_instances: Sequence[int] = (8, 2, 4),
                              aneurysm_at_landmarks: bool = True, brain_instances: Sequence[int] = (1, 4, 3),
                              brain_voxel_size: int = 1) -> Path:
    """The datalist the bundle uses: the user's (``dataset_dir``), or one generated once under ``output_dir``.

    Args:
        dataset_dir: folder with ``dataset.json`` or a datalist path; ``None`` selects ``data_source``.
        output_dir: the bundle's output folder.
        data_source: ``"synthetic"`` (:func:`~monai_ext.data.synthetic.aneurysm.generate_aneurysm_dataset`),
            ``"afids_mni152"`` (:func:`~monai_ext.apps.aneurysm.afids.generate_afids_mni152_dataset`) or
            ``"synthetic_brain"`` (:func:`~monai_ext.data.synthetic.brain.generate_synthetic_brain_dataset`: the
            brain model's validation and test brains, ``brain.json``).
        seed: generator seed.
        num_cases: synthetic cases.
        volume_size: synthetic volume side (voxels).
        afids_instances: deformed MNI152 instances ``(train, validation, test)``.
        aneurysm_at_landmarks: synthetic data: ``False`` keeps every aneurysm candidate off the landmarks (see
            :func:`~monai_ext.data.synthetic.aneurysm.synthesize_aneurysm_case`).
        brain_instances: synthetic brains ``(train, validation, test per test section)``.
        brain_voxel_size: voxel size (mm) of the synthetic brains.

    Under ``torch.distributed`` rank 0 writes the data while the other ranks wait.

    Raises:
        ValueError: for an unknown ``data_source``.
    """
    import torch.distributed as dist

    from monai_ext.data import resolve_datalist
    from monai_ext.data.synthetic.aneurysm import generate_aneurysm_dataset

    from .afids import generate_afids_mni152_dataset

    if data_source == "synthetic":
        kwargs = {"seed": seed, "num_cases": num_cases, "shape": volume_size}
        # only then, so that the default data keep their generator signature (and their cached files)
        if not as_bool(aneurysm_at_landmarks, "aneurysm_at_landmarks"):
            kwargs["aneurysm_at_landmarks"] = False
        gen, folder = generate_aneurysm_dataset, "synthetic_data"
    elif data_source == "afids_mni152":
        n_train, n_val, n_test = (int(v) for v in afids_instances)
        gen, kwargs, folder = generate_afids_mni152_dataset, {"seed": seed, "num_train": n_train, "num_val": n_val,
                                                              "num_test": n_test}, "afids_mni152_data"
    elif data_source == "synthetic_brain":
        from monai_ext.data.synthetic.brain import generate_synthetic_brain_dataset

        n_train, n_val, n_test = (int(v) for v in brain_instances)
        gen, kwargs, folder = generate_synthetic_brain_dataset, {"seed": seed, "num_train": n_train, "num_val": n_val,
                                                                 "num_test": n_test,
                                                                 "voxel_size": int(brain_voxel_size)}, "brain_data"
    else:
        raise ValueError(f"data_source must be 'synthetic', 'afids_mni152' or 'synthetic_brain', got {data_source!r}.")
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and dist.get_rank() != 0:
        dist.barrier()
    path = resolve_datalist(dataset_dir, output_dir, gen, kwargs, folder_name=folder)
    if distributed and dist.get_rank() == 0:
        dist.barrier()
    return path


class RollingCacheDataset(Dataset):
    """A cache of ``cache_num`` items of ``data`` of which ``replace_num`` are replaced every epoch, as a pure
    function of the epoch, so that an interrupted and resumed run sees the same items.

    The idea of MONAI's :class:`~monai.data.SmartCacheDataset` (a cache that keeps ``cache_num`` expensive items and
    replaces a fraction of them every epoch, so that training sees a stream of new items at the cost of a few per
    epoch), without its background threads and run-dependent state: at epoch ``e`` (:meth:`set_epoch`, called by
    :class:`~monai_ext.handlers.EpochSeedHandler` through its ``samplers``) the cache holds the items
    ``(e * replace_num + i) % len(data)`` for ``i < cache_num``. The deterministic prefix of ``transform`` (up to
    its first random transform, as in :class:`~monai.data.CacheDataset`) is computed once per item while it stays
    in the cache; the random rest runs at every access. Each cached item is visited ``repeats`` times per epoch
    (``len(self) == cache_num * repeats``).

    Used by ``brain.json``: ``data`` is a list of seeds ``{"seed": s}`` and the deterministic prefix synthesises a
    brain from its seed (:class:`~monai_ext.data.synthetic.brain.SynthesizeBraind`, about 1 s per brain), so 12
    brains stay in memory and 3 new ones are made per epoch; with a datalist of real brains the prefix reads and
    aligns each one (a ``cache_num >= len(data)`` keeps them all).

    Args:
        data: the items.
        transform: a :class:`~monai.transforms.Compose` (or a callable, then applied whole at every access).
        cache_num: items in the cache (at most ``len(data)``).
        replace_num: items replaced per epoch.
        repeats: visits of each cached item per epoch.
        copy_cache: give the random transforms a deep copy of the cached item (they may change it in place).

    Raises:
        ValueError: for empty ``data`` or non-positive sizes.

    Example::

        >>> ds = RollingCacheDataset([{"x": i} for i in range(10)], transform=lambda d: d, cache_num=4, replace_num=3)
        >>> ds.set_epoch(2)
        >>> [ds[i]["x"] for i in range(len(ds))]
        [6, 7, 8, 9]
    """

    def __init__(self, data: Sequence[Any], transform: Any = None, cache_num: int = 12, replace_num: int = 3,
                 repeats: int = 1, copy_cache: bool = True) -> None:
        super().__init__(data=data, transform=transform)
        if len(self.data) == 0:
            raise ValueError("RollingCacheDataset needs at least one item in data.")
        if cache_num < 1 or replace_num < 0 or repeats < 1:
            raise ValueError(f"need cache_num >= 1, replace_num >= 0, repeats >= 1; got {cache_num}, {replace_num}, "
                             f"{repeats}.")
        self.cache_num, self.replace_num = min(int(cache_num), len(self.data)), int(replace_num)
        self.repeats, self.copy_cache = int(repeats), bool(copy_cache)
        self.epoch = 0
        self._cache: dict[int, Any] = {}
        first = None
        if isinstance(transform, Compose):
            first = transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait)
                                                 or not isinstance(t, Transform))
        self._first_random = 0 if not isinstance(transform, Compose) else (
            len(transform.transforms) if first is None else first)

    def window(self, epoch: int | None = None) -> list[int]:
        """Indices into ``data`` of the cached items at ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else int(epoch)
        return [(e * self.replace_num + i) % len(self.data) for i in range(self.cache_num)]

    def set_epoch(self, epoch: int) -> None:
        """Move the cache to ``epoch`` (0-based): drop the items that left it and prepare the new ones (here, in the
        main process, so that ``DataLoader`` workers start with a full cache)."""
        self.epoch = int(epoch)
        keep = self.window()
        self._cache = {k: v for k, v in self._cache.items() if k in set(keep)}
        for k in keep:
            self._prepared(k)

    def _prepared(self, index: int) -> Any:
        if index not in self._cache:
            item = self.data[index]
            if self._first_random > 0:
                item = self.transform(item, end=self._first_random)
            self._cache[index] = item
        return self._cache[index]

    def __len__(self) -> int:
        return self.cache_num * self.repeats

    def _transform(self, index: int) -> Any:
        item = self._prepared(self.window()[index % self.cache_num])
        if self.transform is None:
            return item
        if self.copy_cache:
            item = copy.deepcopy(item)
        if not isinstance(self.transform, Compose):
            return self.transform(item)
        return self.transform(item, start=self._first_random)
