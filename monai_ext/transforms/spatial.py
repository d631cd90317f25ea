"""Random affine + smooth elastic warps that move landmark points with the image.

MONAI's ``RandAffined`` and ``Rand3DElasticd`` warp images but not point sets, and a landmark model needs both moved
by the same deformation. :class:`RandAffineElasticWarpd` draws one random affine (rotation, per-axis scale,
translation about a centre) composed with a smooth random displacement field, resamples every image key onto an
output grid (which may differ from the input grid: e.g. a crop of a template) and maps the points by inverting the
warp at each point (fixed-point iteration, converged to well below 0.1 mm for the smooth fields used here).

The displacement field follows the common "smoothed white noise" model of elastic augmentation (Simard et al.,
"Best practices for convolutional neural networks applied to visual document analysis", ICDAR 2003), drawn on a
coarse control grid and interpolated trilinearly, so that the field of a 1 mm volume costs little more than its
control grid; the same interpolation is used for the voxels and for the points, which keeps them consistent.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_dst_type, convert_to_tensor, ensure_tuple_rep
from scipy import ndimage

from .triplanar import rotation_from_angles

__all__ = [
    "RandAffineElasticWarpd",
    "RandAffineElasticWarpD",
    "RandAffineElasticWarpDict",
    "apply_matrix",
    "resample_to_grid",
]

_MODES = ("bilinear", "nearest")


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 3)`` points mapped by a ``4x4`` homogeneous matrix."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return pts @ np.asarray(matrix, dtype=np.float64)[:3, :3].T + np.asarray(matrix, dtype=np.float64)[:3, 3]


def _voxel_grid(shape: Sequence[int], affine: np.ndarray) -> torch.Tensor:
    """World coordinates ``(X, Y, Z, 3)`` float32 of every voxel of a grid."""
    a = torch.as_tensor(affine, dtype=torch.float32)
    axes = [torch.arange(int(s), dtype=torch.float32) for s in shape]
    out = a[:3, 3].expand(*[int(s) for s in shape], 3).clone()
    for i, ax in enumerate(axes):  # broadcast sum of one column per axis: no (X, Y, Z, 3) index grid needed
        view = [1, 1, 1, 3]
        view[i] = -1
        out += ax.reshape(*view[:3], 1) * a[:3, i].reshape(1, 1, 1, 3)
    return out


def _sample(vol: torch.Tensor, vol_affine: np.ndarray, world: torch.Tensor, mode: str, cval: float = 0.0,
            padding: str = "zeros") -> torch.Tensor:
    """Interpolate ``vol`` ``(C, X, Y, Z)`` (voxel-to-world ``vol_affine``) at world points ``(..., 3)``.

    Returns ``(C, ...)`` float32; ``cval`` outside (or the border value with ``padding="border"``).
    """
    sizes = np.asarray(vol.shape[1:], dtype=np.float64)
    # world -> voxel -> grid_sample's normalised (align_corners=True) coordinates in (z, y, x) order, as one affine
    to_norm = np.diag([*np.where(sizes > 1, 2.0 / np.maximum(sizes - 1, 1), 0.0), 1.0])
    to_norm[:3, 3] = np.where(sizes > 1, -1.0, 0.0)
    m = (to_norm @ np.linalg.inv(np.asarray(vol_affine, dtype=np.float64)))[[2, 1, 0, 3]]
    mt = torch.as_tensor(m, dtype=torch.float32)
    lead = tuple(world.shape[:-1])
    grid = world.to(torch.float32) @ mt[:3, :3].T + mt[:3, 3]
    grid = grid.reshape(1, *(lead if len(lead) == 3 else (-1, 1, 1)), 3)
    src = vol.float()
    if cval:
        src = src - cval
    out = F.grid_sample(src.unsqueeze(0), grid, mode=mode, padding_mode=padding, align_corners=True)[0]
    out = out.reshape(vol.shape[0], *lead)
    return out + cval if cval else out


def resample_to_grid(img: torch.Tensor | np.ndarray, img_affine: np.ndarray, matrix: np.ndarray,
                     spatial_size: Sequence[int], output_affine: np.ndarray, mode: str = "bilinear",
                     cval: float = 0.0) -> torch.Tensor:
    """Resample a channel-first volume onto another grid through a world-to-world map.

    Output voxel ``q`` (world ``x = output_affine @ q``) takes the input's value at world ``matrix @ x``.

    Args:
        img: ``(C, X, Y, Z)`` input.
        img_affine: ``4x4`` voxel-to-world affine of ``img``.
        matrix: ``4x4`` map from output world to input world.
        spatial_size: output ``(X', Y', Z')``.
        output_affine: ``4x4`` voxel-to-world affine of the output grid.
        mode: ``"bilinear"`` or ``"nearest"``.
        cval: value outside the input.

    Returns:
        ``(C, X', Y', Z')`` float32 tensor.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    vol = convert_to_tensor(img, track_meta=False).cpu()
    world = _voxel_grid(spatial_size, np.asarray(matrix, np.float64) @ np.asarray(output_affine, np.float64))
    return _sample(vol, img_affine, world, mode, cval)


class RandAffineElasticWarpd(Randomizable, MapTransform):
    """Warp images with a random affine plus a smooth random displacement, and move point sets with them.

    The warp maps an output world point ``x`` (RAS mm of the output grid) to the input world point

    ``y = L (x - c) + c + t + u(x)``,   ``L = Rz Ry Rx diag(s)``,

    with angles uniform in ``[-rotate_range, rotate_range]`` (radians) about each axis, per-axis scales ``s`` uniform
    in ``1 +- scale_range``, translation ``t`` uniform in ``+-translate_range`` mm per axis, ``c`` the ``center``
    (world mm), and ``u`` a displacement field: white noise on a control grid of ``control_spacing_mm`` covering the
    output grid, smoothed with a Gaussian of ``elastic_sigma_mm``, each component scaled to a standard deviation of
    ``elastic_mm`` over the grid (the mean length of a displacement is then about ``1.6 * elastic_mm``, whatever the
    grid size), and interpolated trilinearly. Each image key takes the input's value at ``y`` (so the anatomy
    moves by the inverse of the map); each points key (``(N, 3)`` input world mm, or ``(R, N, 3)``; NaN rows are
    kept as NaN) is mapped to the output world point ``x`` whose image is the point, found by the fixed-point
    iteration ``x <- L^-1 (p - c - t - u(x)) + c`` (a contraction while the field's gradient stays below 1, i.e.
    for ``elastic_mm`` well below ``elastic_sigma_mm``).

    The output grid is ``spatial_size`` with ``output_affine`` (default: the input grid of the first key). Images are
    returned as MetaTensors with the output affine. The drawn map is exposed as :attr:`matrix` (``4x4``, output
    world to input world, without ``u``) and, when ``warp_key`` is set, written to ``data[warp_key]``.

    Args:
        keys: image keys, channel-first ``(C, X, Y, Z)`` with their own affine (MetaTensor; identity otherwise).
        points_keys: keys of point arrays in input world mm.
        spatial_size: output spatial shape (``None``: the input's).
        output_affine: output voxel-to-world affine (``None``: the input's).
        rotate_range: maximum absolute angle (radians) about each axis, one or three floats.
        scale_range: maximum relative scale change per axis, one or three floats in ``[0, 1)``.
        translate_range: maximum absolute translation (mm) per axis, one or three floats.
        elastic_mm: standard deviation of each component of the smooth field (mm); 0 disables it.
        elastic_sigma_mm: smoothing of the field (mm).
        control_spacing_mm: spacing of the field's control grid (mm).
        center: centre of rotation and scaling (world mm); ``None``: the centre of the output grid.
        mode: ``"bilinear"`` or ``"nearest"``, one or one per key.
        cval: value outside the input.
        warp_key: optional key receiving :attr:`matrix`.
        point_iterations: fixed-point iterations for the points.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        ValueError: for negative ranges, a scale range outside ``[0, 1)``, a non-positive sigma or spacing, or an
            unknown mode.

    Example::

        >>> import numpy as np, torch
        >>> from monai.data import MetaTensor
        >>> t = RandAffineElasticWarpd("image", points_keys="points", rotate_range=0.2, elastic_mm=0.0)
        >>> _ = t.set_random_state(0)
        >>> out = t({"image": MetaTensor(torch.rand(1, 16, 16, 16)), "points": np.array([[8.0, 8.0, 8.0]])})
        >>> out["image"].shape, out["points"].shape
        (torch.Size([1, 16, 16, 16]), (1, 3))
    """

    def __init__(
        self,
        keys: KeysCollection,
        points_keys: KeysCollection = (),
        spatial_size: Sequence[int] | None = None,
        output_affine: np.ndarray | None = None,
        rotate_range: float | Sequence[float] = 0.0,
        scale_range: float | Sequence[float] = 0.0,
        translate_range: float | Sequence[float] = 0.0,
        elastic_mm: float = 0.0,
        elastic_sigma_mm: float = 10.0,
        control_spacing_mm: float = 5.0,
        center: Sequence[float] | None = None,
        mode: str | Sequence[str] = "bilinear",
        cval: float = 0.0,
        warp_key: str | None = None,
        point_iterations: int = 30,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.points_keys = (points_keys,) if isinstance(points_keys, str) else tuple(points_keys)
        self.rotate_range = np.array(ensure_tuple_rep(rotate_range, 3), dtype=np.float64)
        self.scale_range = np.array(ensure_tuple_rep(scale_range, 3), dtype=np.float64)
        self.translate_range = np.array(ensure_tuple_rep(translate_range, 3), dtype=np.float64)
        for name, v in (("rotate_range", self.rotate_range), ("translate_range", self.translate_range)):
            if (v < 0).any():
                raise ValueError(f"{name} must be non-negative, got {v.tolist()}.")
        if ((self.scale_range < 0) | (self.scale_range >= 1)).any():
            raise ValueError(f"scale_range must be in [0, 1), got {self.scale_range.tolist()}.")
        if elastic_mm < 0 or not elastic_sigma_mm > 0 or not control_spacing_mm > 0:
            raise ValueError(
                "need elastic_mm >= 0, elastic_sigma_mm > 0 and control_spacing_mm > 0, got "
                f"{elastic_mm}, {elastic_sigma_mm}, {control_spacing_mm}."
            )
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        for m in self.mode:
            if m not in _MODES:
                raise ValueError(f"mode must be one of {_MODES}, got {m!r}.")
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.output_affine = None if output_affine is None else np.asarray(output_affine, dtype=np.float64)
        self.elastic_mm, self.elastic_sigma_mm = float(elastic_mm), float(elastic_sigma_mm)
        self.control_spacing_mm = float(control_spacing_mm)
        self.center = None if center is None else np.asarray(center, dtype=np.float64).reshape(3)
        self.cval, self.warp_key, self.point_iterations = float(cval), warp_key, int(point_iterations)
        self.matrix = np.eye(4)
        self._field: torch.Tensor | None = None  # (3, a, b, c) control-grid displacements (mm)
        self._field_affine = np.eye(4)
        self._grid: tuple[tuple[int, ...], np.ndarray] | None = None

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> RandAffineElasticWarpd:
        super().set_random_state(seed, state)
        return self

    # ------------------------------------------------------------------ drawing
    def randomize(self, spatial_size: Sequence[int], output_affine: np.ndarray) -> None:
        """Draw the affine and the displacement field for an output grid ``spatial_size`` / ``output_affine``."""
        shape = tuple(int(s) for s in spatial_size)
        affine = np.asarray(output_affine, dtype=np.float64)
        self._grid = (shape, affine)
        angles = self.R.uniform(-self.rotate_range, self.rotate_range)
        scales = 1.0 + self.R.uniform(-self.scale_range, self.scale_range)
        shift = self.R.uniform(-self.translate_range, self.translate_range)
        lin = rotation_from_angles(angles).numpy() @ np.diag(scales)
        c = self.center if self.center is not None else apply_matrix(affine, (np.array(shape) - 1) / 2.0)[0]
        self.matrix = np.eye(4)
        self.matrix[:3, :3] = lin
        self.matrix[:3, 3] = c + shift - lin @ c
        self._field = None
        if self.elastic_mm > 0:
            # control grid: the output grid's bounding box in its own voxel axes, every `control_spacing_mm`
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            step = self.control_spacing_mm / spacing  # output voxels per control point
            n = np.ceil((np.array(shape) - 1) / step).astype(int) + 1
            noise = self.R.normal(size=(3, *n))
            sigma = self.elastic_sigma_mm / self.control_spacing_mm
            # periodic smoothing keeps the field stationary: "nearest" would inflate it near the grid's faces
            field = np.stack([ndimage.gaussian_filter(f, sigma, mode="wrap") for f in noise])
            std = field.reshape(3, -1).std(1).clip(1e-12)
            self._field = torch.as_tensor(field / std[:, None, None, None] * self.elastic_mm, dtype=torch.float32)
            self._field_affine = affine @ np.diag([*step, 1.0])

    def displacement(self, world: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The drawn field ``u`` (mm) at output world points ``(..., 3)`` (zeros when there is none)."""
        w = torch.as_tensor(np.asarray(world) if not isinstance(world, torch.Tensor) else world)
        if self._field is None:
            return torch.zeros_like(w)
        u = _sample(self._field, self._field_affine, w, "bilinear", padding="border")  # constant beyond the grid
        return u.permute(*range(1, u.ndim), 0).to(w.dtype)

    def source_world(self) -> torch.Tensor:
        """Input world coordinates ``(X', Y', Z', 3)`` sampled by every output voxel (after :meth:`randomize`)."""
        if self._grid is None:
            raise RuntimeError("call randomize() before source_world().")
        shape, affine = self._grid
        x = _voxel_grid(shape, affine)
        m = torch.as_tensor(self.matrix, dtype=torch.float32)
        src = x @ m[:3, :3].T + m[:3, 3]
        if self._field is not None:
            src += self.displacement(x)
        return src

    def source_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box ``(lo, hi)`` of the input region that the output grid samples (after randomize)."""
        if self._grid is None:
            raise RuntimeError("call randomize() before source_bounds().")
        shape, affine = self._grid
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(3, -1).T
        src = apply_matrix(self.matrix, apply_matrix(affine, corners))
        reach = float(self._field.abs().max()) if self._field is not None else 0.0
        return src.min(0) - reach, src.max(0) + reach

    def warp_points(self, points: np.ndarray) -> np.ndarray:
        """Output world positions of input world ``points`` ``(..., 3)`` (after :meth:`randomize`); NaN stays NaN."""
        p = np.asarray(points, dtype=np.float64)
        flat = p.reshape(-1, 3)
        ok = np.isfinite(flat).all(1)
        out = np.full_like(flat, np.nan)
        lin, off = self.matrix[:3, :3], self.matrix[:3, 3]
        inv = np.linalg.inv(lin)
        x = (flat[ok] - off) @ inv.T
        if self._field is not None:
            for _ in range(self.point_iterations):
                x = (flat[ok] - off - self.displacement(x).numpy()) @ inv.T
        out[ok] = x
        return out.reshape(p.shape)

    # ------------------------------------------------------------------ applying
    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        first = self.first_key(d)
        if first == []:
            raise KeyError(f"none of the keys {self.keys} is present in the data; keys present: {list(d)}.")
        ref = d[first]
        ref_affine = np.asarray(ref.affine, np.float64) if isinstance(ref, MetaTensor) else np.eye(4)
        shape = self.spatial_size or tuple(int(s) for s in ref.shape[1:])
        affine = self.output_affine if self.output_affine is not None else ref_affine
        if randomize:
            self.randomize(shape, affine)
        elif self._grid is None or self._grid[0] != tuple(shape):
            raise RuntimeError("randomize=False needs a previous randomize() for the same output grid.")
        src_world: torch.Tensor | None = None
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            if img.ndim != 4:
                raise ValueError(f"data[{key!r}] must be channel-first (C, X, Y, Z), got shape {tuple(img.shape)}.")
            img_affine = np.asarray(img.affine, np.float64) if isinstance(img, MetaTensor) else np.eye(4)
            if src_world is None:
                src_world = self.source_world()
            out = _sample(convert_to_tensor(img, track_meta=False).cpu(), img_affine, src_world, mode, self.cval)
            meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
            meta["affine"] = torch.as_tensor(self._grid[1])
            meta["spatial_shape"] = np.asarray(shape)
            d[key] = MetaTensor(out, meta=meta)
        for key in self.points_keys:
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"points key {key!r} not found in the data; keys present: {list(d)}.")
            pts = d[key]
            moved = self.warp_points(np.asarray(convert_to_tensor(pts, track_meta=False).cpu()))
            d[key] = moved if isinstance(pts, np.ndarray) else convert_to_dst_type(moved, pts)[0]
        if self.warp_key is not None:
            d[self.warp_key] = self.matrix.copy()
        return d


RandAffineElasticWarpD = RandAffineElasticWarpDict = RandAffineElasticWarpd
