"""Real landmark data offline: the AFIDs fiducials on the MNI152 template, as randomly deformed "subjects".

* Landmarks: the 32 AFIDs anatomical fiducials (Lau et al., "A framework for evaluating correspondence between
  brain images using anatomical fiducials", Human Brain Mapping 2019; Taha et al., "Magnetic resonance imaging
  datasets with anatomical fiducials for quality control and registration", Scientific Data 2023), ground truth and
  four raters, shipped in ``monai_ext/data/afids`` (CC-BY-4.0). They were placed on MNI152NLin2009cSym.
* Image: nilearn's bundled MNI152 1 mm T1 template (``nilearn.datasets.load_mni152_template(resolution=1)``,
  MNI152 2009a symmetric; no download). **Approximation**: the fiducials were placed on the 2009c symmetric
  template, and are used here on the 2009a one through their shared MNI world coordinates; the two templates come
  from the same registration family and are close, but local differences of the order of a millimetre are
  expected and add to the errors reported.

One template is one brain, so a classifier trained on it alone would memorise it. :func:`generate_afids_mni152_dataset`
therefore writes *deformed instances*: a random affine (rotation, anisotropic scale, translation) composed with a
smooth random elastic displacement, applied to the image and, by inverting the warp at the points, to every
fiducial (ground truth and raters). Training, validation and test instances use disjoint random deformations; the
generalisation measured on validation/test instances is to anatomy the network has never seen *in shape*, not in
appearance (intensities still come from the one template) — see the bundle README.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .landmarks import PointSet, read_points, write_points_json

__all__ = ["AFIDS_DIR", "PROTOCOL_PLANES", "afids_names", "load_afids", "load_mni152", "generate_afids_mni152_dataset",
           "place_on_protocol_planes", "protocol_plane_offsets"]

#: Folder of the shipped AFIDs coordinate files.
AFIDS_DIR = Path(__file__).resolve().parents[2] / "data" / "afids"
_RATERS = ("groundtruth", "rater01", "rater02", "rater03", "rater04")


def afids_names() -> list[str]:
    """The 32 AFIDs acronyms in label order (``AC``, ``PC``, ...)."""
    lines = (AFIDS_DIR / "afids.csv").read_text().strip().splitlines()[1:]
    return [line.split(",")[2] for line in lines]


def load_afids(rater: str = "groundtruth") -> PointSet:
    """AFIDs fiducials (RAS mm on MNI152NLin2009cSym) of ``rater``: ``"groundtruth"`` or ``"rater01".."rater04"``.

    Raises:
        ValueError: for an unknown rater.
    """
    if rater not in _RATERS:
        raise ValueError(f"rater must be one of {_RATERS}, got {rater!r}.")
    pts = read_points(AFIDS_DIR / f"tpl-MNI152NLin2009cSym_res-1_desc-{rater}_afids.fcsv").to_ras()
    names = afids_names()
    return PointSet([names[k - 1] for k in pts.labels], pts.labels, pts.positions, "RAS", "mm", pts.source)


#: AFIDs fiducials that the protocol places in the coronal plane of another fiducial (fiducial -> anchor): the
#: lateral ventricle "at AC" and "at PC" (Lau et al., Human Brain Mapping 2019, the AFIDs protocol; raters work in
#: AC-PC space, where the coronal plane through a point is the plane through it perpendicular to the AC-PC line).
#: Their position along the AC-PC line is set by the anchor, not by the ventricle, whose roof changes little
#: along it.
PROTOCOL_PLANES: dict[str, str] = {"RLVAC": "AC", "LLVAC": "AC", "RLVPC": "PC", "LLVPC": "PC"}


def _acpc_axis(positions: np.ndarray, index: dict[str, int], what: str) -> np.ndarray | None:
    """Unit vector from AC to PC of ``positions`` (``None`` where AC or PC is missing or NaN)."""
    if "AC" not in index or "PC" not in index:
        return None
    d = positions[index["PC"]] - positions[index["AC"]]
    if not np.isfinite(d).all():
        return None
    n = float(np.linalg.norm(d))
    if n < 1e-6:
        raise ValueError(f"{what}: AC and PC coincide, the AC-PC line is undefined.")
    return d / n


def _checked(positions: np.ndarray | Sequence[Sequence[float]], names: Sequence[str], what: str) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) != len(names):
        raise ValueError(f"{what}: positions must be (L, 3) with one row per name ({len(names)} names), "
                         f"got shape {pos.shape}.")
    return pos


def protocol_plane_offsets(positions: np.ndarray | Sequence[Sequence[float]], names: Sequence[str]) -> dict[str, float]:
    """Signed distance (mm) of each fiducial of :data:`PROTOCOL_PLANES` from the coronal plane of its anchor in
    ``positions`` (e.g. the template's ground truth, :func:`load_afids`): its offset from the anchor along the unit
    vector from AC to PC. The AFIDs ground truth on MNI152NLin2009cSym (the raters' mean) has 0.68 / 0.70 mm (LVAC)
    and 0.88 / 0.81 mm (LVPC): the raters put them in the plane, give or take their spread.

    Args:
        positions: ``(L, 3)`` positions (mm), one per name.
        names: AFIDs acronyms of the rows of ``positions``.

    Returns:
        ``{fiducial: offset}`` for the plane-defined fiducials present with their anchor (empty without AC and PC).

    Raises:
        ValueError: when ``positions`` is not ``(L, 3)`` with one row per name, or AC and PC coincide.
    """
    pos = _checked(positions, names, "protocol_plane_offsets")
    index = {str(n): i for i, n in enumerate(names)}
    axis = _acpc_axis(pos, index, "protocol_plane_offsets")
    if axis is None:
        return {}
    return {f: float((pos[index[f]] - pos[index[a]]) @ axis) for f, a in PROTOCOL_PLANES.items()
            if f in index and np.isfinite(pos[index[f]]).all()}


def place_on_protocol_planes(positions: np.ndarray | Sequence[Sequence[float]], names: Sequence[str],
                             offsets: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Move each fiducial of ``offsets`` (see :data:`PROTOCOL_PLANES`) along the AC-PC line of ``positions`` onto the
    plane perpendicular to that line at distance ``offsets[fiducial]`` (mm, towards PC) from its anchor; its other
    two coordinates stay. The AC-PC line and the anchors are those of ``positions`` themselves (found points at
    inference, the truth in an evaluation). Fiducials without a finite position, and every fiducial when AC or PC
    is missing, are left as they are.

    Args:
        positions: ``(L, 3)`` positions (mm, physical: the planes are perpendicular in millimetres), one per name.
        names: AFIDs acronyms of the rows.
        offsets: ``{fiducial: offset}`` (:func:`protocol_plane_offsets` of the template); keys must be fiducials of
            :data:`PROTOCOL_PLANES`.

    Returns:
        ``(moved positions (L, 3), distance each one moved (L,), 0 for the others)``.

    Raises:
        ValueError: when ``positions`` is not ``(L, 3)`` with one row per name, an offset names a fiducial that
            :data:`PROTOCOL_PLANES` does not define, or AC and PC coincide.
    """
    pos = _checked(positions, names, "place_on_protocol_planes").copy()
    unknown = sorted(set(offsets) - set(PROTOCOL_PLANES))
    if unknown:
        raise ValueError(f"place_on_protocol_planes: offsets for {unknown}, which the AFIDs protocol does not place on "
                         f"an anchor's plane (only {sorted(PROTOCOL_PLANES)}).")
    moved = np.zeros(len(pos))
    index = {str(n): i for i, n in enumerate(names)}
    axis = _acpc_axis(pos, index, "place_on_protocol_planes")
    if axis is None:
        return pos, moved
    for f, off in offsets.items():
        i = index.get(f)
        a = index.get(PROTOCOL_PLANES[f])
        if i is None or a is None or not np.isfinite(pos[i]).all():
            continue
        shift = float(off) - float((pos[i] - pos[a]) @ axis)
        pos[i] = pos[i] + shift * axis
        moved[i] = abs(shift)
    return pos, moved


def load_mni152() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's MNI152 (2009a symmetric) 1 mm T1 template: ``(volume float32 (X, Y, Z), affine 4x4)``."""
    from nilearn.datasets import load_mni152_template

    img = load_mni152_template(resolution=1)
    return np.asarray(img.get_fdata(), dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _random_warp(rng: np.random.Generator, shape: tuple[int, ...], centre: np.ndarray, max_rotation: float,
                 max_scale: float, max_shift: float, elastic: float, elastic_sigma: float
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    ang = rng.uniform(-max_rotation, max_rotation, 3)
    c, s = np.cos(ang), np.sin(ang)
    rx = np.array([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]])
    ry = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
    rz = np.array([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]])
    lin = rz @ ry @ rx @ np.diag(1.0 + rng.uniform(-max_scale, max_scale, 3))
    shift = rng.uniform(-max_shift, max_shift, 3)
    field = []
    for _ in range(3):
        f = ndimage.gaussian_filter(rng.normal(size=shape), elastic_sigma, mode="nearest")
        field.append((f / max(np.abs(f).max(), 1e-12) * elastic).astype(np.float32))
    return lin, shift + centre - lin @ centre, field


def generate_afids_mni152_dataset(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 8, num_val: int = 2,
                                  num_test: int = 4, margin: int = 24, max_rotation_deg: float = 8.0,
                                  max_scale: float = 0.08, max_shift: float = 4.0, elastic: float = 3.0,
                                  elastic_sigma: float = 10.0) -> Path:
    """Write deformed MNI152 instances with warped AFIDs (ground truth + 4 raters) and ``dataset.json``.

    The first training instance is the undeformed template; every other instance gets its own random deformation
    (rotation up to ``max_rotation_deg`` about each axis, scale ``1 +- max_scale`` per axis, shift up to
    ``max_shift`` mm, elastic displacement up to ``elastic`` mm smoothed with ``elastic_sigma`` mm). Volumes are
    cropped to the fiducials' bounding box plus ``margin`` mm.

    Args:
        out_dir: destination folder.
        seed: seed of ``numpy.random.default_rng``.
        num_train: training instances.
        num_val: validation instances.
        num_test: test instances.
        margin: crop margin (mm) around the fiducials.
        max_rotation_deg: rotation range (degrees).
        max_scale: relative scale range.
        max_shift: translation range (mm).
        elastic: maximum elastic displacement (mm).
        elastic_sigma: smoothing of the elastic field (mm).

    Returns:
        The datalist path (items: ``image``, ``landmarks``, ``raters``; top level ``landmark_names``).

    Raises:
        ValueError: for ``num_train < 1`` or ``num_val < 1``.
    """
    if num_train < 1 or num_val < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1, num_val >= 1, num_test >= 0; got {num_train}, {num_val}, {num_test}.")
    out = Path(out_dir)
    for sub in ("images", "landmarks", "raters"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vol, affine = load_mni152()
    inv = np.linalg.inv(affine)
    sets = {r: load_afids(r) for r in _RATERS}
    vox = {r: (inv @ np.c_[p.positions, np.ones(len(p.positions))].T).T[:, :3] for r, p in sets.items()}
    lo = np.maximum(np.floor(vox["groundtruth"].min(0) - margin).astype(int), 0)
    hi = np.minimum(np.ceil(vox["groundtruth"].max(0) + margin).astype(int) + 1, vol.shape)
    shape = tuple(int(v) for v in hi - lo)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), 0)
    centre = vox["groundtruth"].mean(0) - lo
    items = []
    total = num_train + num_val + num_test
    for i in range(total):
        if i == 0:
            lin, off, field = np.eye(3), np.zeros(3), [np.zeros(shape, np.float32)] * 3
        else:
            lin, off, field = _random_warp(rng, shape, centre, np.deg2rad(max_rotation_deg), max_scale, max_shift,
                                           elastic, elastic_sigma)
        # source (cropped template) voxel of output voxel q: lin @ q + off + u(q)
        src = np.einsum("ij,jxyz->ixyz", lin, grid) + off[:, None, None, None] + np.stack(field)
        warped = ndimage.map_coordinates(vol, src + lo[:, None, None, None], order=1, mode="constant", cval=0.0)
        name = f"mni152_{i:02d}"
        nib.save(nib.Nifti1Image(warped.astype(np.float32), crop_affine), out / "images" / f"{name}.nii.gz")
        lin_inv = np.linalg.inv(lin)
        rater_files = []
        for r, p in vox.items():
            target = p - lo
            q = lin_inv @ (target - off).T
            q = q.T
            for _ in range(20):  # fixed point of q = lin^-1 (p - off - u(q)): inverts the smooth warp at the points
                u = np.stack([ndimage.map_coordinates(f, q.T, order=1, mode="nearest") for f in field], 1)
                q = (lin_inv @ (target - off - u).T).T
            world = (crop_affine @ np.c_[q, np.ones(len(q))].T).T[:, :3]
            pts = PointSet(list(sets[r].names), sets[r].labels, world, "RAS", "mm", f"{name} {r}")
            if r == "groundtruth":
                write_points_json(pts, out / "landmarks" / f"{name}.json")
            else:
                write_points_json(pts, out / "raters" / f"{name}_{r}.json")
                rater_files.append(f"raters/{name}_{r}.json")
        items.append({"image": f"images/{name}.nii.gz", "landmarks": f"landmarks/{name}.json", "raters": rater_files})
    datalist = {
        "name": "afids_mni152_deformed",
        "description": "nilearn MNI152 2009a 1 mm template + AFIDs fiducials (placed on 2009c; CC-BY-4.0, Lau et al. "
        "2019, Taha et al. 2023), randomly deformed instances; instance 0 is the undeformed template.",
        "landmark_names": afids_names(),
        "training": items[:num_train],
        "validation": items[num_train : num_train + num_val],
        "test": items[num_train + num_val :],
    }
    path = out / "dataset.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path
