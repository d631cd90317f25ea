"""Seeded synthetic MRA-like volumes with a named vessel tree, landmarks and saccular aneurysms.

The embedded default data of the ``aneurysm`` bundle. Each case is a bright tubular vessel tree on a dark, noisy
background with a smooth multiplicative bias field (time-of-flight MRA look). The tree always has the same named
branches (a trunk that bifurcates into a left and a right main branch, each bifurcating into an anterior and a
posterior branch, plus a transverse vessel that crosses the trunk), so its structural points have the same class
identity in every case while their positions, radii and angles vary from case to case (anatomical variation):

====  ======================  =====================================================
 id    name                    structural point
====  ======================  =====================================================
  1    trunk_origin            lower end of the trunk
  2    trunk_bifurcation       trunk splits into left and right main branches
  3    left_bifurcation        left main branch splits into anterior/posterior
  4    right_bifurcation       right main branch splits into anterior/posterior
  5    left_anterior_end       end of the left anterior branch
  6    left_posterior_end      end of the left posterior branch
  7    right_anterior_end      end of the right anterior branch
  8    right_posterior_end     end of the right posterior branch
  9    trunk_crossing          transverse vessel passes over the trunk
====  ======================  =====================================================

Some vessels carry saccular aneurysms (spherical bulges on the vessel wall, at bifurcations or along a branch).
Normal-vessel mimics make the candidate classification non-trivial: short side-branch stubs with a conical
origin (infundibulum-like widenings) and local tortuosity. Candidate points are written for every aneurysm
(label 1, at the sac centre) and for normal vessel points (label 0: plain segments, bifurcations and stubs).

Files written under ``out_dir``::

    imagesTr/case_000.nii.gz        float32 volume, 1 channel, affine diag(spacing) (RAS, mm)
    landmarks/case_000.json         landmark file (world mm, see monai_ext.apps.aneurysm.landmarks)
    candidates/case_000.json        candidate points with labels 1 (aneurysm) / 0 (normal vessel)
    dataset.json                    Decathlon-style datalist: training / validation / test sections

Every datalist item is ``{"image": ..., "landmarks": ..., "candidates": ...}``; the top level also has
``"landmark_names"`` (class ``k`` is ``landmark_names[k - 1]``; class 0 is background).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["LANDMARK_NAMES", "generate_aneurysm_dataset", "synthesize_aneurysm_case"]

#: Landmark class names; class id ``k`` (1-based) is ``LANDMARK_NAMES[k - 1]``.
LANDMARK_NAMES: tuple[str, ...] = (
    "trunk_origin",
    "trunk_bifurcation",
    "left_bifurcation",
    "right_bifurcation",
    "left_anterior_end",
    "left_posterior_end",
    "right_anterior_end",
    "right_posterior_end",
    "trunk_crossing",
)

# mean positions as fractions of the volume side, axes (x: right-left, y: posterior-anterior, z: inferior-superior)
_MEAN_POINTS = {
    "trunk_origin": (0.50, 0.50, 0.10),
    "trunk_bifurcation": (0.50, 0.50, 0.45),
    "left_bifurcation": (0.30, 0.50, 0.58),
    "right_bifurcation": (0.70, 0.50, 0.58),
    "left_anterior_end": (0.20, 0.80, 0.80),
    "left_posterior_end": (0.24, 0.20, 0.86),
    "right_anterior_end": (0.80, 0.80, 0.80),
    "right_posterior_end": (0.76, 0.20, 0.86),
}
# (start, end, start radius, end radius) as landmark names; radii in mm for a 64 mm field of view
_SEGMENTS = (
    ("trunk", "trunk_origin", "trunk_bifurcation", 2.4, 2.1),
    ("left_main", "trunk_bifurcation", "left_bifurcation", 1.9, 1.7),
    ("right_main", "trunk_bifurcation", "right_bifurcation", 1.9, 1.7),
    ("left_anterior", "left_bifurcation", "left_anterior_end", 1.5, 0.9),
    ("left_posterior", "left_bifurcation", "left_posterior_end", 1.4, 0.8),
    ("right_anterior", "right_bifurcation", "right_anterior_end", 1.5, 0.9),
    ("right_posterior", "right_bifurcation", "right_posterior_end", 1.4, 0.8),
)


def _bezier(p0: np.ndarray, p1: np.ndarray, ctrl: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1


def _render_tube(vol: np.ndarray, pts: np.ndarray, radii: np.ndarray, softness: float = 0.6) -> None:
    """Max-composite a tube of varying radius (voxel units) along the polyline ``pts`` into ``vol`` in place."""
    pad = float(radii.max()) + 3.0
    lo = np.maximum(np.floor(pts.min(0) - pad).astype(int), 0)
    hi = np.minimum(np.ceil(pts.max(0) + pad).astype(int) + 1, vol.shape)
    if np.any(hi <= lo):
        return
    axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    best = np.full(len(grid), np.inf)
    for start in range(0, len(pts), 64):  # chunks bound the (voxels x points) distance matrix
        d = np.linalg.norm(grid[:, None, :] - pts[None, start : start + 64], axis=-1) - radii[None, start : start + 64]
        best = np.minimum(best, d.min(1))
    value = 1.0 / (1.0 + np.exp(best / softness))
    sub = vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    np.maximum(sub, value.reshape(sub.shape), out=sub)


def _unit_perpendicular(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    v -= v.dot(direction) * direction / max(direction.dot(direction), 1e-12)
    return v / max(np.linalg.norm(v), 1e-12)


def synthesize_aneurysm_case(
    rng: np.random.Generator,
    shape: int = 64,
    max_aneurysms: int = 2,
    num_negative: int = 4,
    noise: float = 0.06,
    variation: float = 0.05,
    aneurysm_at_landmarks: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Draw one case.

    Args:
        rng: numpy random generator (the only source of randomness).
        shape: side of the cubic volume in voxels (the anatomy scales with it).
        max_aneurysms: each case has ``0..max_aneurysms`` aneurysms (uniform).
        num_negative: number of normal-vessel candidate points.
        noise: standard deviation of the Gaussian noise (vessel intensity is about 1).
        variation: standard deviation of the landmark displacement as a fraction of ``shape``.
        aneurysm_at_landmarks: half the aneurysms sit at a bifurcation (a landmark) and bifurcations are among the
            normal candidates, as in real anatomy; ``False`` keeps every candidate off the landmarks (aneurysms on
            branch walls only, normal candidates on plain segments and stubs, none within 4 voxels of a landmark),
            so that landmark pre-training never sees a transfer site (the control experiment of the study).

    Returns:
        A tuple: the float32 volume ``(X, Y, Z)``; a dict from landmark name to voxel position ``(3,)``; the
        candidate voxel positions ``(K, 3)``; the candidate labels ``(K,)`` (1 = aneurysm, 0 = normal vessel).

    Raises:
        ValueError: for ``shape < 24``, negative counts or a negative ``noise``/``variation``.
    """
    if shape < 24:
        raise ValueError(f"shape must be >= 24 voxels, got {shape}.")
    if max_aneurysms < 0 or num_negative < 0:
        raise ValueError(f"max_aneurysms and num_negative must be >= 0, got {max_aneurysms}, {num_negative}.")
    if noise < 0 or variation < 0:
        raise ValueError(f"noise and variation must be >= 0, got {noise}, {variation}.")
    s = float(shape)
    scale = s / 64.0
    # global pose variation: small rotation about the volume centre + isotropic scale
    ang = rng.normal(scale=0.08, size=3)
    c, sn = np.cos(ang), np.sin(ang)
    rx = np.array([[1, 0, 0], [0, c[0], -sn[0]], [0, sn[0], c[0]]])
    ry = np.array([[c[1], 0, sn[1]], [0, 1, 0], [-sn[1], 0, c[1]]])
    rz = np.array([[c[2], -sn[2], 0], [sn[2], c[2], 0], [0, 0, 1]])
    rot = rz @ ry @ rx * (1.0 + rng.normal(scale=0.04))
    centre = np.full(3, (s - 1) / 2)
    points = {}
    for name, frac in _MEAN_POINTS.items():
        p = np.asarray(frac) * (s - 1) + rng.normal(scale=variation * s, size=3)
        # kept inside the field of view: a large displacement must not put a landmark outside the volume
        points[name] = np.clip(rot @ (p - centre) + centre, 0.0, s - 1)
    vol = np.zeros((shape,) * 3, dtype=np.float64)
    centrelines: list[tuple[str, np.ndarray, np.ndarray]] = []
    radius_scale = scale * np.exp(rng.normal(scale=0.12))
    for name, a, b, r0, r1 in _SEGMENTS:
        p0, p1 = points[a], points[b]
        length = np.linalg.norm(p1 - p0)
        ctrl = (p0 + p1) / 2 + _unit_perpendicular(p1 - p0, rng) * rng.uniform(0.05, 0.2) * length
        n = max(int(length * 2), 8)
        pts = _bezier(p0, p1, ctrl, n)
        # local tortuosity: a small sinusoidal wiggle (a normal-vessel mimic of a bulge)
        wiggle = _unit_perpendicular(p1 - p0, rng) * rng.uniform(0.0, 0.8) * scale
        pts = pts + np.sin(np.linspace(0, rng.uniform(2, 5) * np.pi, n))[:, None] * wiggle
        radii = np.linspace(r0, r1, n) * radius_scale * np.exp(rng.normal(scale=0.08))
        _render_tube(vol, pts, radii)
        centrelines.append((name, pts, radii))
    # transverse vessel crossing just in front of the trunk (a "crossing" landmark)
    trunk_pts = centrelines[0][1]
    cross_at = trunk_pts[int(rng.uniform(0.35, 0.55) * len(trunk_pts))]
    offset = np.array([0.0, 1.0, 0.0]) * (centrelines[0][2].mean() + 2.2 * scale) * rng.choice([-1.0, 1.0])
    cross_mid = cross_at + offset
    half = np.array([0.32, 0.0, 0.04]) * s + rng.normal(scale=0.02 * s, size=3)
    cross_pts = _bezier(cross_mid - half, cross_mid + half, cross_mid + rng.normal(scale=0.5 * scale, size=3),
                        int(np.linalg.norm(2 * half) * 2))
    _render_tube(vol, cross_pts, np.full(len(cross_pts), 1.2 * radius_scale))
    points["trunk_crossing"] = np.clip((cross_mid + cross_at) / 2, 0.0, s - 1)
    # normal mimics: short side-branch stubs with a conical (infundibulum-like) origin
    negatives: list[np.ndarray] = []
    for _ in range(3):
        _, pts, radii = centrelines[int(rng.integers(len(centrelines)))]
        i = int(rng.uniform(0.25, 0.75) * len(pts))
        direction = _unit_perpendicular(pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)], rng)
        length = rng.uniform(3.0, 6.0) * scale
        stub = pts[i] + np.linspace(0, 1, 12)[:, None] * direction * (radii[i] + length)
        stub_r = np.linspace(radii[i] * rng.uniform(0.8, 1.1), 0.5 * scale, 12)
        _render_tube(vol, stub, stub_r)
        negatives.append(pts[i] + direction * radii[i])
    # saccular aneurysms: at a bifurcation (the typical site) or on the wall of a branch
    positives: list[np.ndarray] = []
    for _ in range(int(rng.integers(0, max_aneurysms + 1))):
        r_an = rng.uniform(1.3, 2.6) * scale
        if rng.random() < 0.5 and aneurysm_at_landmarks:
            site = points[str(rng.choice(["trunk_bifurcation", "left_bifurcation", "right_bifurcation"]))]
            direction = rng.normal(size=3)
            direction[2] = abs(direction[2]) + 0.5  # the sac points along the flow, away from the parent vessel
            direction /= np.linalg.norm(direction)
            r_vessel = 1.8 * radius_scale
        else:
            _, pts, radii = centrelines[int(rng.integers(len(centrelines)))]
            i = int(rng.uniform(0.2, 0.8) * len(pts))
            site = pts[i]
            direction = _unit_perpendicular(pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)], rng)
            r_vessel = radii[i]
        sac = site + direction * (r_vessel + 0.5 * r_an)
        neck = np.linspace(site, sac, 6)
        _render_tube(vol, neck, np.linspace(0.6 * r_an, r_an, 6))
        _render_tube(vol, sac[None], np.array([r_an]))
        positives.append(sac)
    # normal-vessel candidates: stubs (above), bifurcations and plain segment points away from every aneurysm
    pool = [points[k] for k in ("trunk_bifurcation", "left_bifurcation", "right_bifurcation")
            if aneurysm_at_landmarks]  # without: no candidate of either class sits on a landmark
    pool += [pts[int(rng.uniform(0.15, 0.85) * len(pts))] for _, pts, _ in centrelines for _ in range(2)]
    rng.shuffle(pool)
    negatives += pool
    far = [p for p in negatives if all(np.linalg.norm(p - q) > 6.0 * scale for q in positives)]
    negatives = far[:num_negative]
    # MRA look: dark tissue texture, smooth bias field, Gaussian noise
    tissue = ndimage.gaussian_filter(rng.normal(size=vol.shape), 2.0 * scale)
    tissue = 0.12 + 0.05 * tissue / max(tissue.std(), 1e-6)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, shape)] * 3, indexing="ij"), 0)
    bias = np.exp(np.tensordot(rng.normal(scale=0.15, size=3), grid, axes=1) + rng.normal(scale=0.1) * (grid**2).sum(0))
    img = (tissue + (1.0 - tissue) * vol) * bias + rng.normal(scale=noise, size=vol.shape)
    cand = np.array(positives + negatives, dtype=np.float64).reshape(-1, 3)
    labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.int64)
    inside = np.all((cand >= 0) & (cand <= s - 1), axis=1)
    if not aneurysm_at_landmarks and len(cand):  # and no candidate within 4 voxels (scaled) of a landmark
        marks = np.array(list(points.values()))
        inside &= np.linalg.norm(cand[:, None] - marks[None], axis=-1).min(1) > 4.0 * scale
    return img.astype(np.float32), points, cand[inside], labels[inside]


def _split(num_cases: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    n_val = max(1, round(num_cases * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(num_cases * test_fraction)) if test_fraction > 0 else 0
    n_train = num_cases - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"num_cases={num_cases} leaves no training case with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction}."
        )
    return n_train, n_val, n_test


def generate_aneurysm_dataset(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_cases: int = 24,
    shape: int = 64,
    spacing: float = 1.0,
    max_aneurysms: int = 3,
    num_negative: int = 4,
    noise: float = 0.06,
    val_fraction: float = 0.25,
    test_fraction: float = 0.25,
    aneurysm_at_landmarks: bool = True,
) -> Path:
    """Write ``num_cases`` synthetic MRA-like cases + landmark and candidate files + ``dataset.json``.

    Args:
        out_dir: destination folder (created).
        seed: seed of ``numpy.random.default_rng``; the same arguments give identical files.
        num_cases: total number of cases (split into training / validation / test, in this order).
        shape: side of the cubic volumes in voxels.
        spacing: isotropic voxel size in mm (written into the NIfTI affine; landmark files are in world mm).
        max_aneurysms: each case has ``0..max_aneurysms`` aneurysms.
        num_negative: normal-vessel candidates per case.
        noise: Gaussian noise standard deviation.
        val_fraction: fraction of cases in the validation section (at least one when > 0).
        test_fraction: fraction of cases in the test section (at least one when > 0).
        aneurysm_at_landmarks: see :func:`synthesize_aneurysm_case`.

    Returns:
        Path of the written ``dataset.json``.

    Raises:
        ValueError: when the split leaves no training case, or for a non-positive ``spacing``.

    Example::

        >>> import tempfile
        >>> path = generate_aneurysm_dataset(tempfile.mkdtemp(), num_cases=3, shape=32)
        >>> path.name
        'dataset.json'
    """
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}.")
    n_train, n_val, n_test = _split(num_cases, val_fraction, test_fraction)
    out = Path(out_dir)
    for sub in ("imagesTr", "landmarks", "candidates"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    items = []
    for i in range(num_cases):
        img, points, cand, labels = synthesize_aneurysm_case(
            rng, shape=shape, max_aneurysms=max_aneurysms, num_negative=num_negative, noise=noise,
            aneurysm_at_landmarks=aneurysm_at_landmarks
        )
        name = f"case_{i:03d}"
        nib.save(nib.Nifti1Image(img, affine), out / "imagesTr" / f"{name}.nii.gz")
        landmarks = {
            "coordinate_system": "RAS",
            "units": "mm",
            "landmarks": [
                {"label": k + 1, "name": n, "position": [float(v) * spacing for v in points[n]]}
                for k, n in enumerate(LANDMARK_NAMES)
            ],
        }
        (out / "landmarks" / f"{name}.json").write_text(json.dumps(landmarks, indent=1))
        candidates = {
            "coordinate_system": "RAS",
            "units": "mm",
            "landmarks": [
                {"label": int(lab), "name": "aneurysm" if lab else "normal",
                 "position": [float(v) * spacing for v in p]}
                for p, lab in zip(cand, labels, strict=False)
            ],
        }
        (out / "candidates" / f"{name}.json").write_text(json.dumps(candidates, indent=1))
        items.append(
            {"image": f"imagesTr/{name}.nii.gz", "landmarks": f"landmarks/{name}.json",
             "candidates": f"candidates/{name}.json"}
        )
    datalist = {
        "name": "synthetic_aneurysm",
        "description": "Seeded synthetic MRA-like vessel trees with landmarks and saccular aneurysms "
        "(monai_ext.data.synthetic.aneurysm).",
        "landmark_names": list(LANDMARK_NAMES),
        "training": items[:n_train],
        "validation": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }
    path = out / "dataset.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path
