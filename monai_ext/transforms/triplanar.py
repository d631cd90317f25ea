"""Tri-planar (2.5D) patches: three orthogonal planes through 3D points, stacked as channels.

The representation follows Roth et al., "A new 2.5D representation for lymph node detection using random sets of
deep convolutional neural network observations", MICCAI 2014 (three orthogonal planes through a point, optionally
under random rotations and scales), as used for landmark pre-training in the aneurysm study.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.traits import MultiSampleTrait
from monai.transforms.transform import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple_rep

__all__ = [
    "PLANE_AXES",
    "TriPlanarPatch",
    "TriPlanarPatchd",
    "TriPlanarPatchD",
    "TriPlanarPatchDict",
    "RandTriPlanarPatchd",
    "RandTriPlanarPatchD",
    "RandTriPlanarPatchDict",
    "rotation_from_angles",
]

#: In-plane (row, column) spatial axes of plane ``k``; plane ``k`` is orthogonal to spatial axis ``k``.
PLANE_AXES: tuple[tuple[int, int], ...] = ((1, 2), (0, 2), (0, 1))

_MODES = ("bilinear", "nearest")
_PADDING_MODES = ("zeros", "border", "reflection", "error")
_COORDS = ("voxel", "world")


def rotation_from_angles(angles: NdarrayOrTensor | Sequence[float]) -> torch.Tensor:
    """Rotation matrices ``Rz @ Ry @ Rx`` from angles (radians) about the three spatial axes.

    Args:
        angles: ``(3,)`` or ``(N, 3)`` angles about spatial axes 0, 1 and 2.

    Returns:
        float64 tensor ``(3, 3)`` or ``(N, 3, 3)``.

    Raises:
        ValueError: when the last dimension of ``angles`` is not 3.

    Example::

        >>> rotation_from_angles([0.0, 0.0, 0.0])
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]], dtype=torch.float64)
    """
    a = torch.as_tensor(np.asarray(angles) if not isinstance(angles, torch.Tensor) else angles, dtype=torch.float64)
    if a.shape[-1:] != (3,) or a.ndim > 2:
        raise ValueError(f"angles must have shape (3,) or (N, 3), got {tuple(a.shape)}.")
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c[..., 0]), torch.zeros_like(c[..., 0])

    def _mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx = _mat([[one, zero, zero], [zero, c[..., 0], -s[..., 0]], [zero, s[..., 0], c[..., 0]]])
    ry = _mat([[c[..., 1], zero, s[..., 1]], [zero, one, zero], [-s[..., 1], zero, c[..., 1]]])
    rz = _mat([[c[..., 2], -s[..., 2], zero], [s[..., 2], c[..., 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def _affine_of(img: Any) -> torch.Tensor:
    """4x4 float64 voxel-to-world affine of ``img`` (identity for arrays without metadata)."""
    if isinstance(img, MetaTensor):
        affine = torch.as_tensor(img.affine, dtype=torch.float64).cpu()
        if affine.shape != (4, 4):
            raise ValueError(f"img.affine must be 4x4 for a 3D volume, got shape {tuple(affine.shape)}.")
        return affine
    return torch.eye(4, dtype=torch.float64)


def _spacing_of(affine: torch.Tensor) -> torch.Tensor:
    """Voxel sizes (mm) along the three voxel axes: the norms of the affine's columns."""
    return torch.linalg.norm(affine[:3, :3], dim=0)


def _fix_index(idx: torch.Tensor, size: int, padding_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map integer indices into ``[0, size)`` following ``padding_mode``; return them with a validity mask or None."""
    if padding_mode == "border":
        return idx.clamp(0, size - 1), None
    if padding_mode == "reflection":
        if size == 1:
            return torch.zeros_like(idx), None
        period = 2 * (size - 1)
        m = idx.remainder(period)
        return torch.where(m >= size, period - m, m), None
    valid = (idx >= 0) & (idx < size)
    return idx.clamp(0, size - 1), valid


class TriPlanarPatch(Transform):
    """Extract tri-planar 2.5D patches: three orthogonal planes through each of ``N`` points, stacked as channels.

    Plane ``k`` is orthogonal to spatial axis ``k`` and spans the two other axes in increasing order (rows, columns):
    plane 0 is ``img[c, x, :, :]`` around ``(y, z)``, plane 1 is ``img[c, :, y, :]`` around ``(x, z)`` and plane 2
    is ``img[c, :, :, z]`` around ``(x, y)`` (see :data:`PLANE_AXES`). The output channel index is ``plane * C + c``.
    The centre lies at row/column ``patch_size // 2`` of every plane: with integer voxel centres, unit sampling step
    and no rotation or scale, the patch of plane 0 equals
    ``img[c, x, y - p//2 : y - p//2 + p, z - p//2 : z - p//2 + p]`` (the window convention of MONAI's
    ``SpatialCrop``). The representation is the 2.5D tri-planar view of Roth et al., MICCAI 2014.

    Sampling:
        * ``extent_mm=None``: one sample per voxel along the in-plane voxel axes (step 1 voxel).
        * ``extent_mm=e``: the in-plane step is ``e / patch_size`` millimetres along every in-plane axis, with voxel
          sizes taken from the column norms of the MetaTensor affine (1 mm for numpy/torch input), so the patches
          are square in mm on anisotropic volumes. The orthogonal frame then lives in physical space.
        * ``rotation``: a ``(3, 3)`` or ``(N, 3, 3)`` rotation applied to the frame (columns are the rotated frame
          axes, expressed along the voxel axes, in voxel units when ``extent_mm`` is None, in mm otherwise);
          ``scale`` (scalar or ``(N,)``) multiplies the in-plane step.

    Sampling rules, the same on every code path:
        * ``mode="nearest"``: every sample position is rounded half up to a voxel index, ``floor(x + 0.5)`` on each
          axis (so a centre at 10.5 samples voxel 11). Unlike round-half-to-even, this rule commutes with integer
          offsets, so with a unit-step axis-aligned frame the patch is exactly the window around the rounded centre,
          and that window is gathered directly; with a rotation, scale or mm extent the rule is applied to each
          sample and the voxels are gathered by index. Either way there is no interpolation and the dtype is kept
          (integer images are exact).
        * ``mode="bilinear"``: integer centres with a unit-step axis-aligned frame are gathered directly (there is
          nothing to interpolate); otherwise every sample of every point is interpolated at once with
          ``torch.nn.functional.grid_sample`` (``align_corners=True``, so voxel index ``i`` is the centre of voxel
          ``i``).
    All paths run on the input's device.

    Padding rule for samples outside ``[0, size - 1]`` on an axis (``padding_mode``):
        * ``"zeros"``: constant ``cval`` (default 0) outside the volume; bilinear samples within one voxel of the
          border blend with ``cval``.
        * ``"border"``: the nearest border voxel (numpy ``"edge"``).
        * ``"reflection"``: mirrored about the border voxel centres, ``d c b | a b c d | c b a`` (numpy
          ``"reflect"``).
        * ``"error"``: raise ``ValueError`` naming the offending centres.

    Performance (``benchmarks/bench_transforms.py``, figures in ``docs/results.md``): the gather path copies each
    plane with one ``index_select`` over strided window views, so its cost is that of reading the patches. Planes 0
    and 1 read ``p`` contiguous runs of ``p`` voxels each; plane 2 (orthogonal to the last, contiguous axis) reads
    every voxel from a different cache line and dominates the time, as it does for a plain slicing loop. On CPU,
    plane 2 is therefore gathered in the order of the centres' ``(z // 64, x, y)``, so that consecutive windows
    reuse the cache lines and pages of their neighbours, and copied back to the callers' order (one extra copy of
    that plane, far cheaper than the misses it saves). A ``(C, Z, X, Y)`` transposed copy would make plane 2
    contiguous but costs several such calls to build, so it is not made here. The resampling path is bound by the
    trilinear ``grid_sample`` kernel (eight reads per sample).

    Output type follows the input: numpy in, numpy out; torch in, torch out on the same device. The dtype is the
    input dtype, except that bilinear resampling of an integer image returns float32. A MetaTensor input gives a
    MetaTensor whose meta is a copy of the input's meta, with ``affine`` set to the 3x3 identity (the planes of one
    point do not share a single grid in the volume), the volume's affine kept under ``"source_affine"`` and the
    voxel centres ``(N, 3)`` under ``"triplanar_centers"``.

    Args:
        patch_size: side ``p`` of each square plane.
        extent_mm: physical side of each plane in mm (``None``: ``p`` voxels).
        coords: ``"voxel"`` (centres are voxel indices) or ``"world"`` (centres are mapped to voxels through the
            inverse of the MetaTensor affine; identity for numpy/torch input).
        mode: ``"bilinear"`` (trilinear in the volume) or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"error"``, see above.
        cval: value outside the volume for ``padding_mode="zeros"``.

    Raises:
        ValueError: for a non-positive ``patch_size`` or ``extent_mm``, or an unknown ``coords``, ``mode`` or
            ``padding_mode``.

    Example::

        >>> import numpy as np
        >>> img = np.random.rand(1, 64, 64, 64).astype(np.float32)
        >>> patches = TriPlanarPatch(patch_size=32)(img, np.array([[32, 32, 32], [20, 30, 40]]))
        >>> patches.shape
        (2, 3, 32, 32)
        >>> bool((patches[1, 0] == img[0, 20, 14:46, 24:56]).all())
        True
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        patch_size: int = 32,
        extent_mm: float | None = None,
        coords: str = "voxel",
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        cval: float = 0.0,
    ) -> None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}.")
        if extent_mm is not None and not float(extent_mm) > 0:
            raise ValueError(f"extent_mm must be positive or None, got {extent_mm!r}.")
        if coords not in _COORDS:
            raise ValueError(f"coords must be one of {_COORDS}, got {coords!r}.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}.")
        self.patch_size = int(patch_size)
        self.extent_mm = None if extent_mm is None else float(extent_mm)
        self.coords = coords
        self.mode = mode
        self.padding_mode = padding_mode
        self.cval = float(cval)

    def __call__(
        self,
        img: NdarrayOrTensor,
        centers: NdarrayOrTensor | Sequence[Sequence[float]],
        rotation: NdarrayOrTensor | None = None,
        scale: NdarrayOrTensor | float | None = None,
        mode: str | None = None,
    ) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first volume ``(C, X, Y, Z)``.
            centers: ``(N, 3)`` centres in voxel or world coordinates (see ``coords``).
            rotation: optional ``(3, 3)`` or ``(N, 3, 3)`` rotation of the orthogonal frame.
            scale: optional scalar or ``(N,)`` positive factor on the in-plane step.
            mode: overrides ``self.mode`` for this call.

        Returns:
            patches ``(N, 3 * C, p, p)``, channel ``plane * C + c``.

        Raises:
            ValueError: when ``img`` is not 4D, ``centers`` is not ``(N, 3)`` or not finite, ``rotation`` or
                ``scale`` have the wrong shape or values, or ``padding_mode="error"`` and a sample falls outside.
        """
        mode = self.mode if mode is None else mode
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        vol = convert_to_tensor(img, track_meta=False)
        if vol.ndim != 4:
            raise ValueError(f"img must be channel-first (C, X, Y, Z), got shape {tuple(vol.shape)}.")
        device = vol.device
        affine = _affine_of(img)
        ctr = torch.as_tensor(
            np.asarray(centers) if not isinstance(centers, torch.Tensor) else centers.detach(), dtype=torch.float64
        ).cpu()
        if ctr.ndim != 2 or ctr.shape[1] != 3:
            raise ValueError(f"centers must have shape (N, 3), got {tuple(ctr.shape)}.")
        if not torch.isfinite(ctr).all():
            raise ValueError("centers must be finite.")
        if self.coords == "world":
            ctr = (torch.linalg.inv(affine) @ torch.cat([ctr, torch.ones_like(ctr[:, :1])], 1).T).T[:, :3]
        frame = self._frame(ctr.shape[0], affine, rotation, scale)
        if frame is None and (mode == "nearest" or bool((ctr == ctr.round()).all())):
            out = self._gather(vol, torch.floor(ctr + 0.5).long().to(device), ctr)
        elif mode == "nearest":
            pos = self._positions(ctr, frame)
            raw = [torch.floor(pos[..., i] + 0.5).long().to(device) for i in range(3)]  # (N, 3, p, p) each
            vals = self._take(vol, raw, ctr)  # (N, 3, p, p, C)
            out = vals.permute(0, 1, 4, 2, 3).reshape(ctr.shape[0], 3 * vol.shape[0], self.patch_size, self.patch_size)
        else:
            out = self._resample(vol, ctr, frame, mode, vol.shape[1:])
        return self._wrap(out, img, ctr)

    def _frame(
        self, n: int, affine: torch.Tensor, rotation: NdarrayOrTensor | None, scale: NdarrayOrTensor | float | None
    ) -> torch.Tensor | None:
        """``(N, 3, 3)`` in-plane step vectors in voxels (columns = frame axes), or None for the unit-step frame."""
        frame = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        if rotation is not None:
            rot = torch.as_tensor(np.asarray(rotation) if not isinstance(rotation, torch.Tensor) else rotation)
            rot = rot.detach().to(dtype=torch.float64, device="cpu")
            if rot.shape not in ((3, 3), (n, 3, 3)):
                raise ValueError(f"rotation must have shape (3, 3) or ({n}, 3, 3), got {tuple(rot.shape)}.")
            eye = torch.eye(3, dtype=torch.float64)
            if not torch.allclose(rot.transpose(-1, -2) @ rot, eye.expand_as(rot), atol=1e-5):
                raise ValueError("rotation must be orthonormal (R^T R = I).")
            frame = rot.expand(n, 3, 3)
        if scale is not None:
            sc = torch.as_tensor(np.asarray(scale) if not isinstance(scale, torch.Tensor) else scale)
            sc = sc.detach().to(dtype=torch.float64, device="cpu")
            if sc.ndim > 1 or (sc.ndim == 1 and sc.shape[0] != n):
                raise ValueError(f"scale must be a scalar or have shape ({n},), got {tuple(sc.shape)}.")
            if not (sc > 0).all():
                raise ValueError("scale must be positive.")
            frame = frame * sc.reshape(-1, 1, 1)
        if self.extent_mm is not None:
            step = self.extent_mm / self.patch_size
            frame = frame * (step / _spacing_of(affine)).reshape(1, 3, 1)
        if torch.allclose(frame, torch.eye(3, dtype=torch.float64).expand(n, 3, 3), rtol=0, atol=1e-9):
            return None
        return frame

    def _gather(self, vol: torch.Tensor, ctr: torch.Tensor, ctr_float: torch.Tensor) -> torch.Tensor:
        """Axis-aligned unit-step path: copy the windows around the integer centres ``ctr``, no interpolation."""
        p, n, c = self.patch_size, ctr.shape[0], vol.shape[0]
        sizes = torch.tensor(vol.shape[1:], device=ctr.device)
        lo = ctr - p // 2
        out = torch.empty((n, 3, c, p, p), dtype=vol.dtype, device=vol.device)
        inside = bool(((ctr >= 0) & (ctr < sizes) & (lo >= 0) & (lo + p <= sizes)).all())
        if inside:
            # one index_select per plane over all points: a view whose i-th item is the (C, p, p) window starting at
            # flat voxel offset i, written straight into the output (no intermediate copy)
            vol = vol.contiguous()
            strides = vol.stride()[1:]
            for k, (a, b) in enumerate(PLANE_AXES):
                start = [ctr[:, 0], ctr[:, 1], ctr[:, 2]]
                start[a], start[b] = lo[:, a], lo[:, b]
                flat = start[0] * strides[0] + start[1] * strides[1] + start[2] * strides[2]
                n_starts = int(vol[0].numel()) - (p - 1) * (strides[a] + strides[b])
                windows = vol.as_strided(
                    (n_starts, c, p, p), (1, vol.stride(0), strides[a], strides[b]), vol.storage_offset()
                )
                if k == 2 and n > 1 and vol.device.type == "cpu":
                    # every voxel of plane 2 is on its own cache line: visit the centres by (z // 64, x, y) so that
                    # neighbouring windows share lines and pages, then put the rows back in the callers' order
                    key = (ctr[:, 2] // 64 * sizes[0] + ctr[:, 0]) * sizes[1] + ctr[:, 1]
                    order = torch.argsort(key)
                    out[:, k].index_copy_(0, order, torch.index_select(windows, 0, flat[order]))
                else:
                    torch.index_select(windows, 0, flat, out=out[:, k])
            return out.reshape(n, 3 * c, p, p)
        offsets = torch.arange(p, device=ctr.device) - p // 2
        for k, (a, b) in enumerate(PLANE_AXES):
            raw = [ctr[:, i].reshape(n, 1, 1) for i in range(3)]
            raw[a] = raw[a] + offsets.reshape(1, p, 1)
            raw[b] = raw[b] + offsets.reshape(1, 1, p)
            out[:, k] = self._take(vol, list(torch.broadcast_tensors(*raw)), ctr_float).permute(0, 3, 1, 2)
        return out.reshape(n, 3 * c, p, p)

    def _take(self, vol: torch.Tensor, raw: list[torch.Tensor], ctr: torch.Tensor) -> torch.Tensor:
        """Voxels at integer indices ``raw`` (one tensor per axis, shape ``(N, ...)``), padded: ``(N, ..., C)``."""
        n = raw[0].shape[0]
        if self.padding_mode == "error":
            bad = torch.zeros(n, dtype=torch.bool, device=raw[0].device)
            for i in range(3):
                bad |= ((raw[i] < 0) | (raw[i] >= vol.shape[i + 1])).reshape(n, -1).any(1)
            self._raise_outside(bad.cpu(), ctr)
        idx, valid = [], None
        for i in range(3):
            fixed, ok = _fix_index(raw[i], vol.shape[i + 1], self.padding_mode)
            idx.append(fixed)
            if ok is not None:
                valid = ok if valid is None else valid & ok
        vals = vol.permute(1, 2, 3, 0)[idx[0], idx[1], idx[2]]
        if valid is not None:
            cval = torch.as_tensor(self.cval, dtype=vol.dtype, device=vol.device)
            vals = torch.where(valid.unsqueeze(-1), vals, cval)
        return vals

    def _positions(self, ctr: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Voxel coordinates ``(N, 3, p, p, 3)`` (float64, CPU) of every sample of every plane."""
        p, n = self.patch_size, ctr.shape[0]
        offsets = torch.arange(p, dtype=torch.float64) - p // 2
        planes = []
        for a, b in PLANE_AXES:
            pos = (
                ctr.reshape(n, 1, 1, 3)
                + offsets.reshape(1, p, 1, 1) * frame[:, :, a].reshape(n, 1, 1, 3)
                + offsets.reshape(1, 1, p, 1) * frame[:, :, b].reshape(n, 1, 1, 3)
            )
            planes.append(pos)
        return torch.stack(planes, 1)

    def _resample(
        self, vol: torch.Tensor, ctr: torch.Tensor, frame: torch.Tensor | None, mode: str, sizes: Sequence[int]
    ) -> torch.Tensor:
        """Bilinear path: interpolate all samples of all points with one ``grid_sample`` call."""
        p, n, c = self.patch_size, ctr.shape[0], vol.shape[0]
        if frame is None:
            frame = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        pos = self._positions(ctr, frame)  # (N, 3, p, p, 3) voxel coordinates
        size_t = torch.tensor(list(sizes), dtype=torch.float64)
        if self.padding_mode == "error":
            tol = 1e-6
            bad = ((pos < -tol) | (pos > size_t - 1 + tol)).reshape(n, -1).any(1)
            self._raise_outside(bad, ctr)
        norm = torch.where(size_t > 1, 2.0 * pos / (size_t - 1).clamp_min(1) - 1.0, torch.zeros_like(pos))
        work_dtype = vol.dtype if vol.dtype in (torch.float32, torch.float64) else torch.float32
        grid = norm.flip(-1).reshape(1, 3 * n, p, p, 3).to(device=vol.device, dtype=work_dtype)
        src = vol.to(work_dtype)
        shift = self.padding_mode == "zeros" and self.cval != 0.0
        if shift:
            src = src - self.cval
        pad = "zeros" if self.padding_mode in ("zeros", "error") else self.padding_mode
        out = F.grid_sample(src.unsqueeze(0), grid, mode=mode, padding_mode=pad, align_corners=True)
        if shift:
            out = out + self.cval
        out = out.reshape(c, n, 3, p, p).permute(1, 2, 0, 3, 4).reshape(n, 3 * c, p, p)
        if vol.dtype != work_dtype and vol.dtype.is_floating_point:
            out = out.to(vol.dtype)
        return out

    @staticmethod
    def _raise_outside(bad: torch.Tensor, ctr: torch.Tensor) -> None:
        if bool(bad.any()):
            which = torch.nonzero(bad).flatten()[:5].tolist()
            raise ValueError(
                f"padding_mode='error': the patches of {int(bad.sum())} centre(s) reach outside the volume, "
                f"e.g. centre index {which} at voxel {ctr[which].tolist()}; choose 'zeros', 'border' or 'reflection' "
                "to pad instead."
            )

    @staticmethod
    def _wrap(out: torch.Tensor, img: Any, ctr: torch.Tensor) -> NdarrayOrTensor:
        if isinstance(img, MetaTensor):
            meta = deepcopy(dict(img.meta))
            meta["source_affine"] = torch.as_tensor(img.affine).clone()
            meta["triplanar_centers"] = ctr.clone()
            meta.pop("affine", None)
            return MetaTensor(
                out,
                affine=torch.eye(3, dtype=torch.float64),
                meta=meta,
                applied_operations=deepcopy(img.applied_operations),
            )
        if isinstance(img, np.ndarray):
            return out.cpu().numpy()
        return out


class TriPlanarPatchd(MapTransform):
    """Dictionary-based version of :py:class:`TriPlanarPatch`.

    Reads the ``(N, 3)`` centres from ``data[centers_key]`` and replaces each ``data[key]`` (a ``(C, X, Y, Z)``
    volume) by its ``(N, 3 * C, p, p)`` tri-planar patches; all keys share the centres (Roth et al., MICCAI 2014).

    Args:
        keys: keys of the volumes to sample.
        centers_key: key of the ``(N, 3)`` centres (voxel or world coordinates, see ``coords``).
        patch_size: side ``p`` of each plane.
        extent_mm: physical side of each plane in mm (``None``: ``p`` voxels).
        coords: ``"voxel"`` or ``"world"``.
        mode: ``"bilinear"`` or ``"nearest"``, one for all keys or a sequence (e.g. nearest for labels).
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"error"`` (see :py:class:`TriPlanarPatch`).
        cval: value outside the volume for ``padding_mode="zeros"``.
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        KeyError: when ``centers_key`` is missing.

    Example::

        >>> import numpy as np
        >>> t = TriPlanarPatchd(keys="image", centers_key="centers", patch_size=16)
        >>> out = t({"image": np.zeros((1, 32, 32, 32)), "centers": np.array([[16, 16, 16]])})
        >>> out["image"].shape
        (1, 3, 16, 16)
    """

    backend = TriPlanarPatch.backend

    def __init__(
        self,
        keys: KeysCollection,
        centers_key: str = "centers",
        patch_size: int = 32,
        extent_mm: float | None = None,
        coords: str = "voxel",
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str = "zeros",
        cval: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.centers_key = centers_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.patcher = TriPlanarPatch(patch_size, extent_mm, coords, self.mode[0], padding_mode, cval)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.centers_key not in d:
            raise KeyError(f"centers_key {self.centers_key!r} not found in the data; keys present: {list(d)}.")
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.patcher(d[key], d[self.centers_key], mode=mode)
        return d


class RandTriPlanarPatchd(Randomizable, MapTransform, MultiSampleTrait):
    """Sample ``num_samples`` tri-planar patches per volume around labelled points and from the background.

    Each sample is centred either on a labelled point (chosen uniformly, then jittered uniformly inside a ball of
    radius ``jitter`` mm) with that point's label, or, with probability ``background_prob``, on a voxel drawn
    uniformly from the volume (at least ``background_margin`` voxels from its faces) whose distance to every
    labelled point is at least ``min_background_distance`` mm, with label ``background_label``. Distances use the
    MetaTensor affine of the first key (1 mm voxels otherwise). Optionally each sample's orthogonal frame is
    rotated by angles drawn uniformly in ``[-rotate_range, rotate_range]`` about each axis and its in-plane step
    scaled by ``1 + U(-scale_range, scale_range)``: the random 2.5D views of Roth et al., MICCAI 2014.

    Typical uses in the aneurysm study: landmark pre-training (points = landmark positions, labels = landmark class
    ids ``1..L``, background class 0 = non-landmark) and aneurysm classification (points = candidate positions,
    labels = 0/1, ``background_prob=0``).

    Keys read: ``data[points_key]`` ``(M, 3)`` point coordinates (voxel or world, see ``coords``; ``M`` may be 0, then
    every sample is background) and ``data[point_labels_key]`` ``(M,)`` integer labels. Keys written in each of the
    returned dictionaries: ``data[key]`` the ``(3 * C, p, p)`` patch of every key in ``keys``, ``data[class_key]``
    the sample's label (int) and ``data[center_key]`` its ``(3,)`` float voxel centre; all other items are deep
    copies of the input's. A MetaTensor patch carries the meta described in :py:class:`TriPlanarPatch`, with
    ``"triplanar_centers"`` of shape ``(1, 3)``.

    Args:
        keys: keys of the ``(C, X, Y, Z)`` volumes to sample (same spatial shape).
        num_samples: number of dictionaries returned.
        points_key: key of the labelled points.
        point_labels_key: key of their integer labels.
        patch_size: side ``p`` of each plane.
        extent_mm: physical side of each plane in mm (``None``: ``p`` voxels).
        coords: ``"voxel"`` or ``"world"`` coordinates of the points.
        background_prob: probability that a sample is a background point.
        min_background_distance: minimum distance (mm) of a background centre to every labelled point.
        background_label: label given to background samples.
        background_margin: background centres are at least this many voxels inside the volume.
        jitter: radius (mm) of the uniform jitter of labelled centres.
        rotate_range: maximum absolute rotation angle (radians) about each axis, a float or three floats.
        scale_range: maximum relative change of the in-plane step, in ``[0, 1)``.
        mode: ``"bilinear"`` or ``"nearest"``, one or one per key.
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"error"``.
        cval: value outside the volume for ``padding_mode="zeros"``.
        class_key: output key of each sample's label.
        center_key: output key of each sample's voxel centre.
        max_background_tries: rounds of vectorised rejection sampling before giving up on background centres.
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        ValueError: for a non-positive ``num_samples``, a probability outside ``[0, 1]``, negative distances or
            ranges, mismatched points/labels, or when no background centre satisfies the distance constraint.
        KeyError: when ``points_key`` or ``point_labels_key`` is missing.

    Example::

        >>> import numpy as np
        >>> t = RandTriPlanarPatchd("image", num_samples=4, patch_size=8, min_background_distance=5.0)
        >>> t.set_random_state(0)  # doctest: +ELLIPSIS
        <...RandTriPlanarPatchd object at ...>
        >>> data = {"image": np.zeros((1, 32, 32, 32), np.float32),
        ...         "points": np.array([[10.0, 10.0, 10.0]]), "point_labels": np.array([3])}
        >>> samples = t(data)
        >>> len(samples), samples[0]["image"].shape
        (4, (3, 8, 8))
    """

    backend = TriPlanarPatch.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_samples: int,
        points_key: str = "points",
        point_labels_key: str = "point_labels",
        patch_size: int = 32,
        extent_mm: float | None = None,
        coords: str = "voxel",
        background_prob: float = 0.5,
        min_background_distance: float = 16.0,
        background_label: int = 0,
        background_margin: int = 0,
        jitter: float = 0.0,
        rotate_range: float | Sequence[float] = 0.0,
        scale_range: float = 0.0,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str = "zeros",
        cval: float = 0.0,
        class_key: str = "patch_class",
        center_key: str = "patch_center",
        max_background_tries: int = 20,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if not 0.0 <= background_prob <= 1.0:
            raise ValueError(f"background_prob must be in [0, 1], got {background_prob}.")
        if min_background_distance < 0 or jitter < 0 or background_margin < 0:
            raise ValueError(
                "min_background_distance, jitter and background_margin must be non-negative, got "
                f"{min_background_distance}, {jitter}, {background_margin}."
            )
        rot = ensure_tuple_rep(rotate_range, 3)
        if any(r < 0 for r in rot):
            raise ValueError(f"rotate_range must be non-negative, got {rotate_range}.")
        if not 0.0 <= scale_range < 1.0:
            raise ValueError(f"scale_range must be in [0, 1), got {scale_range}.")
        if max_background_tries < 1:
            raise ValueError(f"max_background_tries must be >= 1, got {max_background_tries}.")
        self.num_samples = int(num_samples)
        self.points_key = points_key
        self.point_labels_key = point_labels_key
        self.background_prob = float(background_prob)
        self.min_background_distance = float(min_background_distance)
        self.background_label = int(background_label)
        self.background_margin = int(background_margin)
        self.jitter = float(jitter)
        self.rotate_range = tuple(float(r) for r in rot)
        self.scale_range = float(scale_range)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.class_key = class_key
        self.center_key = center_key
        self.max_background_tries = int(max_background_tries)
        # the patcher always works on voxel centres: world points are converted in `randomize`
        self.coords = coords
        if coords not in _COORDS:
            raise ValueError(f"coords must be one of {_COORDS}, got {coords!r}.")
        self.patcher = TriPlanarPatch(patch_size, extent_mm, "voxel", self.mode[0], padding_mode, cval)
        self._centers = np.zeros((0, 3))
        self._classes = np.zeros((0,), dtype=np.int64)
        self._rotation: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandTriPlanarPatchd:
        """Seed ``self.R``, the only source of randomness of this transform (the patcher is deterministic)."""
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Mapping[Hashable, Any]) -> None:
        """Draw the centres, labels, rotations and scales of ``num_samples`` samples of ``data``."""
        for k in (self.points_key, self.point_labels_key):
            if k not in data:
                raise KeyError(f"{k!r} not found in the data; keys present: {list(data)}.")
        ref_key = self.first_key(dict(data))
        if ref_key == []:
            raise KeyError(f"none of the keys {self.keys} is present in the data.")
        ref = data[ref_key]
        shape = np.asarray(ref.shape[1:])
        if len(shape) != 3:
            raise ValueError(f"data[{ref_key!r}] must be channel-first (C, X, Y, Z), got shape {tuple(ref.shape)}.")
        affine = _affine_of(ref).numpy()
        lin = affine[:3, :3]
        pts = np.asarray(convert_to_tensor(data[self.points_key], track_meta=False).cpu(), dtype=np.float64)
        labels = np.asarray(convert_to_tensor(data[self.point_labels_key], track_meta=False).cpu())
        pts = pts.reshape(-1, 3) if pts.size == 0 else pts
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"data[{self.points_key!r}] must have shape (M, 3), got {pts.shape}.")
        labels = labels.reshape(-1)
        if labels.shape[0] != pts.shape[0]:
            raise ValueError(f"data[{self.point_labels_key!r}] has {labels.shape[0]} labels for {pts.shape[0]} points.")
        if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"data[{self.point_labels_key!r}] must hold integer labels.")
        if self.coords == "world" and len(pts):
            pts = (np.linalg.inv(affine) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
        n = self.num_samples
        is_bg = self.R.random_sample(n) < self.background_prob if len(pts) else np.ones(n, dtype=bool)
        pick = self.R.randint(len(pts), size=n) if len(pts) else np.zeros(n, dtype=np.int64)
        # uniform in a ball of radius `jitter` mm: direction from a normal draw, radius ~ r * u^(1/3)
        direction = self.R.normal(size=(n, 3))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        radius = self.jitter * np.cbrt(self.R.random_sample((n, 1)))
        jitter_vox = (np.linalg.inv(lin) @ (direction * radius).T).T
        centers = np.zeros((n, 3))
        classes = np.full(n, self.background_label, dtype=np.int64)
        if len(pts):
            centers[~is_bg] = pts[pick[~is_bg]] + (jitter_vox[~is_bg] if self.jitter > 0 else 0.0)
            classes[~is_bg] = labels[pick[~is_bg]].astype(np.int64)
        n_bg = int(is_bg.sum())
        if n_bg:
            centers[is_bg] = self._draw_background(n_bg, shape, lin, pts)
        angles = np.stack([self.R.uniform(-r, r, size=n) for r in self.rotate_range], 1)
        self._rotation = rotation_from_angles(angles).numpy() if any(r > 0 for r in self.rotate_range) else None
        scales = 1.0 + self.R.uniform(-self.scale_range, self.scale_range, size=n)
        self._scale = scales if self.scale_range > 0 else None
        self._centers, self._classes = centers, classes

    def _draw_background(self, n_bg: int, shape: np.ndarray, lin: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Vectorised rejection sampling of integer voxel centres far enough from every labelled point."""
        m = self.background_margin
        if np.any(shape - 2 * m < 1):
            raise ValueError(f"background_margin={m} leaves no voxel inside a volume of spatial shape {tuple(shape)}.")
        found: list[np.ndarray] = []
        need = n_bg
        for _ in range(self.max_background_tries):
            cand = np.stack([self.R.randint(m, s - m, size=4 * need + 16) for s in shape], 1).astype(np.float64)
            if len(pts) and self.min_background_distance > 0:
                diff = (cand[:, None, :] - pts[None, :, :]) @ lin.T  # (K, M, 3) in mm
                ok = np.linalg.norm(diff, axis=-1).min(1) >= self.min_background_distance
                cand = cand[ok]
            found.append(cand[:need])
            need -= len(found[-1])
            if need == 0:
                return np.concatenate(found, 0)
        raise ValueError(
            f"could not draw {n_bg} background centres at least min_background_distance="
            f"{self.min_background_distance} mm from every labelled point in {self.max_background_tries} tries; "
            "lower min_background_distance or background_margin."
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        self.randomize(d)
        ret: list[dict[Hashable, Any]] = [{} for _ in range(self.num_samples)]
        for i in range(self.num_samples):
            for key in set(d).difference(self.keys):
                ret[i][key] = deepcopy(d[key])
            ret[i][self.class_key] = int(self._classes[i])
            ret[i][self.center_key] = self._centers[i].astype(np.float32)
        for key, mode in self.key_iterator(d, self.mode):
            patches = self.patcher(d[key], self._centers, rotation=self._rotation, scale=self._scale, mode=mode)
            for i in range(self.num_samples):
                sample = patches[i]
                if isinstance(patches, MetaTensor):
                    meta = deepcopy(patches.meta)
                    meta["triplanar_centers"] = meta["triplanar_centers"][i : i + 1]
                    sample = MetaTensor(
                        patches.as_tensor()[i], meta=meta, applied_operations=deepcopy(patches.applied_operations)
                    )
                ret[i][key] = sample
        return ret


TriPlanarPatchD = TriPlanarPatchDict = TriPlanarPatchd
RandTriPlanarPatchD = RandTriPlanarPatchDict = RandTriPlanarPatchd
