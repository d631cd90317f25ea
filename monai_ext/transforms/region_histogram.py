"""Region-histogram targets: per-sub-region class pmfs of a label patch at several grid levels.

Each local label patch is split into ``r x r`` (2D) or ``r x r x r`` (3D) equal sub-regions for every grid size
``r``; the target of a sub-region is the normalised histogram (pmf) of the classes of its pixels. This is the
training target of the iPS colony segmentation study (patch-wise class-histogram prediction, as opposed to
centre-pixel classification of the same patches), and dense maps are recovered by spreading each sub-region's
pmf over its pixels and averaging over overlapping patches.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import MetaObj
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple

__all__ = [
    "RegionHistogram",
    "RegionHistogramd",
    "RegionHistogramD",
    "RegionHistogramDict",
    "center_pixel_label",
    "region_pmf_to_dense",
]


def _spatial_dims_of(ndim: int, spatial_dims: int | None, name: str, shape: tuple[int, ...]) -> tuple[int, bool]:
    """Resolve (spatial_dims, batched) from the rank of a channel-first label."""
    if spatial_dims is None:
        if ndim == 3:
            return 2, False
        if ndim == 4:
            return 3, False
        raise ValueError(
            f"{name} must be (1, H, W) or (1, H, W, D) (pass spatial_dims for batched (B, 1, ...) input), "
            f"got shape {shape}."
        )
    if ndim == spatial_dims + 1:
        return spatial_dims, False
    if ndim == spatial_dims + 2:
        return spatial_dims, True
    raise ValueError(
        f"{name} must have {spatial_dims + 1} (1, *spatial) or {spatial_dims + 2} (B, 1, *spatial) dimensions for "
        f"spatial_dims={spatial_dims}, got shape {shape}."
    )


def _as_class_ids(lab: torch.Tensor, name: str) -> torch.Tensor:
    """int64 class ids; reject non-integer values stored in a floating tensor."""
    if lab.dtype.is_floating_point:
        if not bool(torch.isfinite(lab).all()) or not bool((lab == lab.round()).all()):
            bad = lab[~torch.isfinite(lab) | (lab != lab.round())][:3].tolist()
            raise ValueError(f"{name} must hold integer class ids, found non-integer values such as {bad}.")
    elif lab.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class ids, got dtype {lab.dtype}.")
    return lab.long()


#: From this many label pixels on (a batch), CPU input is counted on the packed path (see ``RegionHistogram``).
_PACKED_MIN_PIXELS = 1 << 15
#: Pixels gathered per chunk on the packed path (512 KiB of int64 codes, about an L2 cache).
_PACKED_CHUNK_PIXELS = 1 << 16
#: An ``ignore_index`` farther than this from ``0 .. K - 1`` is moved next to the classes before counting, so that
#: one bincount never spans a huge, mostly empty range of label values.
_MAX_IGNORE_GAP = 1024
_CACHE_SIZE = 32


class _Plan(NamedTuple):
    """Per-input-shape constants of :class:`RegionHistogram` (built once per shape, device and options)."""

    batched: bool
    spatial: tuple[int, ...]
    grid: int  # finest common grid, lcm(grid_sizes)
    lo_ok: int  # smallest label value counted by the bincount
    span: int  # number of label values counted by the bincount
    far_ignore: bool  # ignore_index is remapped to K before counting
    base: NdarrayOrTensor  # (pixels,) bincount bin of each pixel for the value lo_ok
    pool: NdarrayOrTensor  # (g**d, sum_r r**d) 0/1 pooling matrix
    totals: NdarrayOrTensor | None  # (sum_r r**d,) pixels per block of every level when none is ignored
    lut: torch.Tensor | None  # packed-path lookup table, None when that path does not apply
    bits: int  # bits per packed field


def _class_id_values(lab: NdarrayOrTensor, name: str) -> NdarrayOrTensor:
    """Return ``lab`` (bool as int64) after checking that it holds integer class ids; numpy or torch."""
    if isinstance(lab, np.ndarray):
        kind = lab.dtype.kind
        if kind == "b":
            return lab.astype(np.int64)
        if kind == "f":
            rounded = np.round(lab)
            if not (np.isfinite(lab).all() and (lab == rounded).all()):
                bad = lab[~np.isfinite(lab) | (lab != rounded)][:3].tolist()
                raise ValueError(f"{name} must hold integer class ids, found non-integer values such as {bad}.")
            return lab
        if kind not in "iu":
            raise TypeError(f"{name} must hold integer class ids, got dtype {lab.dtype}.")
        return lab
    if lab.dtype == torch.bool:
        return lab.long()
    if lab.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class ids, got dtype {lab.dtype}.")
    if lab.dtype.is_floating_point:
        rounded = lab.round()
        if not bool((torch.isfinite(lab) & (lab == rounded)).all()):
            bad = lab[~torch.isfinite(lab) | (lab != rounded)][:3].tolist()
            raise ValueError(f"{name} must hold integer class ids, found non-integer values such as {bad}.")
    return lab


class RegionHistogram(Transform):
    """Class pmfs of the ``r x r`` (2D) or ``r x r x r`` (3D) sub-regions of a label patch, for several grid sizes.

    For a grid size ``r`` the patch of side ``H`` is split into blocks of ``H / r`` pixels per side; the output
    at block ``(i, j)`` along the class axis is ``n_k(i, j) / sum_k n_k(i, j)``, where ``n_k`` counts the pixels
    of class ``k`` in the block. Pixels equal to ``ignore_index`` are not counted; a block with no countable pixel
    is all zeros (so that a loss can mask it). These are the multi-level region-histogram targets of the iPS colony
    segmentation study (patch-wise histogram regression instead of centre-pixel classification).

    Output type follows the input (numpy in, numpy out; torch in, torch out on the same device), dtype float32.
    A MetaTensor input gives MetaTensors whose meta is a copy of the input's with the affine of the coarse grid
    (block ``(i, j)`` sits at the centre of its pixels: scale ``H / r``, shift ``(H / r - 1) / 2`` voxel units).

    How it counts (``benchmarks/bench_transforms.py``, figures in ``docs/results.md``): the counts on the finest
    common grid ``g = lcm(grid_sizes)`` are pooled to every level by one product with a 0/1 matrix, in float64 on
    integer counts, so every level is exact; shape checks and per-shape constants are computed once per input shape.

    * A single patch (the per-sample call of a MONAI ``Compose``), or any input on an accelerator: a ``min``/``max``
      range check, then one ``bincount`` over the bin ``cell * span + value - v_min`` of every pixel
      (``v_min = min(0, ignore_index)``, ``span`` the number of values from ``v_min`` to the largest class or
      ignore value); bins of values that are neither a class nor ``ignore_index`` must stay empty. A CPU tensor is
      counted through a zero-copy numpy view, because numpy's per-call cost on small arrays is lower than torch's.
    * A CPU batch of ``>= 2**15`` pixels whose ``K`` (+ ignored) per-cell counts fit in an int64: a lookup table
      maps each value to ``2**(b * c)`` for class ``c``, ``2**(b * K)`` for ``ignore_index`` and ``0`` for any other
      value in its range (``b`` bits per field, so a cell's count never carries into the next field); one
      ``index_select`` applies it and also rejects any value outside the table, then one sum per cell adds the
      packed counts, chunk by chunk so that the codes stay in cache. Fields that do not add up to the pixel count
      reveal an invalid value. The labels are read once, instead of the several passes of a scatter or of a
      bincount with its index arithmetic.

    Args:
        num_classes: number of classes ``K``; valid labels are ``0 .. K - 1``.
        grid_sizes: one or more grid sizes ``r`` (levels), e.g. ``(1, 2, 4)``.
        ignore_index: label value that is not counted (may lie outside ``0 .. K - 1``, e.g. 255 or -1).
        spatial_dims: 2 or 3. ``None`` infers it from the rank: ``(1, H, W)`` is 2D and ``(1, H, W, D)`` is 3D;
            set it to pass a batch ``(B, 1, H, W)`` or ``(B, 1, H, W, D)``.

    Raises:
        ValueError: for a ``num_classes`` < 1, an empty or non-positive ``grid_sizes`` or a ``spatial_dims`` not
            in (2, 3, None).

    Example::

        >>> import numpy as np
        >>> label = np.zeros((1, 4, 4), dtype=np.int64)
        >>> label[0, :2, :2] = 1
        >>> h1, h2 = RegionHistogram(num_classes=2, grid_sizes=(1, 2))(label)
        >>> h1[:, 0, 0]
        array([0.75, 0.25], dtype=float32)
        >>> h2[1]
        array([[1., 0.],
               [0., 0.]], dtype=float32)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        num_classes: int,
        grid_sizes: Sequence[int] | int = (1, 2, 4),
        ignore_index: int | None = None,
        spatial_dims: int | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        sizes = tuple(ensure_tuple(grid_sizes))
        if not sizes or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in sizes):
            raise ValueError(f"grid_sizes must be one or more positive integers, got {grid_sizes!r}.")
        if spatial_dims not in (None, 2, 3):
            raise ValueError(f"spatial_dims must be 2, 3 or None, got {spatial_dims!r}.")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
        ):
            raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}.")
        self.num_classes = int(num_classes)
        self.grid_sizes = tuple(int(r) for r in sizes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.spatial_dims = spatial_dims
        self._plans: dict[tuple, _Plan] = {}

    def __call__(self, label: NdarrayOrTensor) -> tuple[NdarrayOrTensor, ...]:
        """
        Args:
            label: integer label patch ``(1, H, W)`` / ``(1, H, W, D)``, or a batch ``(B, 1, ...)`` when
                ``spatial_dims`` is set. Floating tensors are accepted when every value is an integer.

        Returns:
            one array per grid size, in the order of ``grid_sizes``: ``(K, r, r)`` / ``(K, r, r, r)``, or with a
            leading ``B`` for batched input.

        Raises:
            ValueError: for a wrong rank or channel count, non-integer labels, labels outside ``0 .. K - 1`` other
                than ``ignore_index``, or patch sides not divisible by every grid size.
            TypeError: for complex or non-numeric labels.
        """
        if isinstance(label, torch.Tensor):
            lab = (label.as_tensor() if isinstance(label, MetaTensor) else label).detach()
            if lab.dtype == torch.bfloat16:  # no numpy twin; integers up to 256 are exact in float32
                lab = lab.float()
            if lab.device.type == "cpu":
                lab = lab.numpy()  # a view: numpy ops cost less per call than torch ops on small arrays
        else:
            lab = np.asarray(label)
        device = None if isinstance(lab, np.ndarray) else lab.device
        key = (lab.shape, device, self.num_classes, self.grid_sizes, self.ignore_index, self.spatial_dims)
        plan = self._plans.get(key)
        if plan is None:  # shape checks and per-shape constants, once per input shape
            plan = self._plan(tuple(lab.shape), device)
            if len(self._plans) >= _CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        # (1, *spatial) is already a batch of one; (B, 1, *spatial) drops its channel axis
        lab = _class_id_values(lab[:, 0] if plan.batched else lab, "label")
        counts = None
        if plan.lut is not None and lab.dtype.kind in "iu":
            counts = self._packed_counts(lab, plan)
        if counts is None:
            counts = self._bincount_counts(lab, plan)
        pmfs = self._pmfs(counts, plan)
        if not plan.batched:
            pmfs = [p[0] for p in pmfs]
        if isinstance(label, torch.Tensor) and isinstance(pmfs[0], np.ndarray):
            pmfs = [torch.from_numpy(p) for p in pmfs]
        if isinstance(label, MetaTensor):
            pmfs = self._with_meta(pmfs, label, plan.spatial)
        return tuple(pmfs)

    def _plan(self, shape: tuple[int, ...], device: torch.device | None) -> _Plan:
        """Check the shape of a label and build the constants of its counting (numpy when ``device`` is None)."""
        sd, batched = _spatial_dims_of(len(shape), self.spatial_dims, "label", shape)
        if shape[int(batched)] != 1:
            raise ValueError(f"label must have a single channel, got shape {shape}.")
        spatial = shape[-sd:]
        bad = [r for r in self.grid_sizes if any(s % r for s in spatial)]
        if bad:
            raise ValueError(
                f"patch sides {spatial} must be divisible by every grid size in {self.grid_sizes}; "
                f"not divisible by {bad}."
            )
        k, ig = self.num_classes, self.ignore_index
        grid = math.lcm(*self.grid_sizes)  # every level pools from this finest common grid
        far = ig is not None and (ig < -_MAX_IGNORE_GAP or ig >= k + _MAX_IGNORE_GAP)
        lo_ok, hi_ok = (0, k) if far else self._value_range()
        span = hi_ok - lo_ok + 1
        # bincount bin of a pixel: cell * span + (value - lo_ok), so that the counts reshape to (B, cell, value)
        cell = np.zeros((1,) * sd, dtype=np.int64)
        for axis, s in enumerate(spatial):
            cell = cell * grid + (np.arange(s) // (s // grid)).reshape([s if a == axis else 1 for a in range(sd)])
        base = cell.reshape(-1) * span - lo_ok
        # pooling matrix (g**d, sum_r r**d): the column of a level-r block sums the fine cells inside it
        cols = []
        for r in self.grid_sizes:
            coarse = np.zeros((1,) * sd, dtype=np.int64)
            for axis in range(sd):
                coarse = coarse * r + (np.arange(grid) // (grid // r)).reshape(
                    [grid if a == axis else 1 for a in range(sd)]
                )
            block = np.zeros((grid**sd, r**sd))
            block[np.arange(grid**sd), coarse.reshape(-1)] = 1.0
            cols.append(block)
        pool = np.concatenate(cols, 1)
        # without ignore_index every pixel is counted: each block's total is its pixel count
        totals = None if ig is not None else pool.sum(0) * math.prod(s // grid for s in spatial)
        # packed path: CPU batches whose K (+ ignored) per-block counts fit in the bits of an int64
        n_block = math.prod(s // grid for s in spatial)
        bits, n_fields = n_block.bit_length(), k + (ig is not None)  # a block's count < 2**bits never carries
        lut = None
        if device is None and not far and math.prod(shape) >= _PACKED_MIN_PIXELS and bits * n_fields <= 63:
            lut = torch.zeros(span, dtype=torch.int64)
            lut[-lo_ok : -lo_ok + k] = torch.tensor([1 << (bits * c) for c in range(k)], dtype=torch.int64)
            if ig is not None:
                lut[ig - lo_ok] = 1 << (bits * k)
        if device is not None:
            base, pool = torch.as_tensor(base, device=device), torch.as_tensor(pool, device=device)
            totals = None if totals is None else torch.as_tensor(totals, device=device)
        return _Plan(batched, spatial, grid, lo_ok, span, far, base, pool, totals, lut, bits)

    def _value_range(self) -> tuple[int, int]:
        """Smallest and largest label value that may occur: the classes and ``ignore_index``."""
        k, ig = self.num_classes, self.ignore_index
        return (0, k - 1) if ig is None else (min(0, ig), max(k - 1, ig))

    def _values_error(self, lab: NdarrayOrTensor) -> ValueError:
        """The ``ValueError`` naming the labels outside ``0 .. K - 1`` that are not ``ignore_index``.

        Built once a cheap check has shown that some label is invalid.
        """
        countable = lab if self.ignore_index is None else lab[lab != self.ignore_index]
        bad = countable[(countable < 0) | (countable >= self.num_classes)]
        values = np.unique(bad) if isinstance(bad, np.ndarray) else torch.unique(bad)
        found = [int(v) for v in values[:5].tolist()]  # integer-valued floats are shown as the ids they stand for
        return ValueError(
            f"label values must be in [0, {self.num_classes - 1}] or ignore_index={self.ignore_index}, found {found}."
        )

    def _bincount_counts(self, lab: NdarrayOrTensor, plan: _Plan) -> NdarrayOrTensor:
        """Counts ``(B, g**d, K)`` (int64, numpy or torch like ``lab``) from one bincount over (cell, value)."""
        k, ig = self.num_classes, self.ignore_index
        is_np = isinstance(lab, np.ndarray)
        if plan.far_ignore:  # check every value exactly, then count the ignored pixels as the value K
            if bool(((lab != ig) & ((lab < 0) | (lab >= k))).any()):
                raise self._values_error(lab)
            lab = np.where(lab == ig, k, lab) if is_np else torch.where(lab == ig, k, lab)
            ig = k
        else:
            lo, hi = (lab.min(), lab.max()) if is_np else (v.item() for v in torch.aminmax(lab))
            if lo < plan.lo_ok or hi >= plan.lo_ok + plan.span:
                raise self._values_error(lab)
        if not is_np:
            lab = lab.long()
        elif lab.dtype.kind == "f":
            lab = lab.astype(np.int64)
        b, span = lab.shape[0], plan.span
        nbins = plan.pool.shape[0] * span  # span bins per fine cell
        idx = lab.reshape(b, -1) + plan.base
        if b > 1:  # each patch of the batch gets its own block of bins
            idx += (np.arange(0, b * nbins, nbins) if is_np else torch.arange(0, b * nbins, nbins, device=lab.device))[
                :, None
            ]
        counts = (np.bincount if is_np else torch.bincount)(idx.reshape(-1), minlength=b * nbins)
        counts = counts.reshape(b, -1, span)
        first = -plan.lo_ok  # column of class 0
        if ig is not None:
            counts[..., ig - plan.lo_ok] = 0  # ignored pixels are not counted (also when ignore_index is a class id)
        if span > k:  # the other columns are values that are neither a class nor ignore_index: they must be empty
            if (first > 0 and bool(counts[..., :first].any())) or bool(counts[..., first + k :].any()):
                raise self._values_error(lab)
        return counts[..., first : first + k]

    def _packed_counts(self, lab: np.ndarray, plan: _Plan) -> np.ndarray:
        """Counts ``(B, g**d, K)`` int64 from packed per-class fields (see the class docstring)."""
        original = lab
        if lab.dtype not in (np.int32, np.int64) or not lab.dtype.isnative or not lab.flags.writeable:
            lab = lab.astype(np.int32 if lab.dtype.itemsize < 4 else np.int64)
        idx = torch.from_numpy(lab).reshape(-1)
        if plan.lo_ok < 0:
            idx = idx - plan.lo_ok  # an overflow wraps to a negative index, which index_select rejects below
        b, grid, per = lab.shape[0], plan.grid, plan.base.shape[0]
        view = []
        for s in plan.spatial:
            view += [grid, s // grid]
        dims = tuple(range(2, len(view) + 1, 2))
        # a chunk of patches at a time: the codes of a chunk stay in cache between the gather and the block sums
        step = max(1, _PACKED_CHUNK_PIXELS // per)
        packed = torch.empty((b,) + (grid,) * len(plan.spatial), dtype=torch.int64)
        buf = torch.empty(min(step, b) * per, dtype=torch.int64)
        try:
            for start in range(0, b, step):
                n = min(step, b - start)
                code = torch.index_select(plan.lut, 0, idx[start * per : (start + n) * per], out=buf[: n * per])
                torch.sum(code.view([n] + view), dims, out=packed[start : start + n])
        except (IndexError, RuntimeError):  # a value outside the table
            raise self._values_error(original) from None
        code = packed.reshape(b, -1, 1)  # (B, cell, 1) packed counts
        bits, n_fields = plan.bits, self.num_classes + (self.ignore_index is not None)
        fields = (code >> torch.arange(0, bits * n_fields, bits)) & ((1 << bits) - 1)  # (B, cell, field)
        # every pixel adds 1 to one field unless its value is in the table but neither a class nor ignored (code 0)
        if int(fields.sum()) != b * per:
            raise self._values_error(original)
        return fields[..., : self.num_classes].numpy()

    def _pmfs(self, counts: NdarrayOrTensor, plan: _Plan) -> list[NdarrayOrTensor]:
        """float32 pmfs ``(B, K, r, ...)`` of every level from the counts ``(B, g**d, K)`` on the finest grid.

        One matrix product with the 0/1 pooling matrix sums the fine cells of all levels at once (float64, exact
        below 2**53); the float64 quotient rounded to float32 equals the float32 quotient of the counts, because
        double rounding is innocuous for a division when 53 >= 2 * 24 + 2 (Figueroa, SIGNUM Newsletter 1995). An
        empty block has zero counts and gets 0 / 1.
        """
        b, k, sd = counts.shape[0], counts.shape[2], len(plan.spatial)
        if isinstance(counts, np.ndarray):
            c = np.matmul(counts.transpose(0, 2, 1), plan.pool)  # (B, K, cells of all levels), float64
            total = plan.totals if plan.totals is not None else np.maximum(c.sum(1, keepdims=True), 1.0)
            pmf = (c / total).astype(np.float32)
        else:
            c = torch.matmul(counts.transpose(1, 2).to(torch.float64), plan.pool)
            total = plan.totals if plan.totals is not None else c.sum(1, keepdim=True).clamp_min(1.0)
            pmf = (c / total).to(torch.float32)
        outs, start = [], 0
        for r in self.grid_sizes:
            level = pmf[..., start : start + r**sd].reshape((b, k) + (r,) * sd)
            outs.append(np.ascontiguousarray(level) if isinstance(level, np.ndarray) else level.contiguous())
            start += r**sd
        return outs

    def _with_meta(self, pmfs: list[torch.Tensor], label: MetaTensor, spatial: tuple[int, ...]) -> list[MetaTensor]:
        """MetaTensors with the label's meta and the affine of each level's grid (see the class docstring)."""
        affine = np.asarray(label.affine.detach().cpu(), dtype=np.float64)
        items = [(key, v) for key, v in label.meta.items() if key != "affine"]
        outs = []
        for pmf, r in zip(pmfs, self.grid_sizes, strict=True):
            block = np.eye(affine.shape[-1])
            for i, s in enumerate(spatial[: affine.shape[-1] - 1]):
                block[i, i] = s / r
                block[i, -1] = (s / r - 1) / 2
            # MONAI's copy rule for derived MetaTensors (MetaObj.copy_items): every item copied one level deep
            meta = {key: MetaObj.copy_items(v) for key, v in items}
            outs.append(MetaTensor(pmf, affine=torch.from_numpy(affine @ block), meta=meta))
        return outs


class RegionHistogramd(MapTransform):
    """Dictionary-based version of :py:class:`RegionHistogram`.

    For every key, the level ``r`` pmfs are written to ``data[hist_key_format.format(key=key, r=r)]`` (by default
    ``"label_hist_1"``, ``"label_hist_2"``, ``"label_hist_4"`` for ``keys="label"`` and ``grid_sizes=(1, 2, 4)``);
    the label itself is left untouched, so the same dictionary can also feed a centre-pixel or dense target.

    Args:
        keys: keys of the label patches.
        num_classes: number of classes ``K``.
        grid_sizes: one or more grid sizes ``r``.
        ignore_index: label value that is not counted.
        spatial_dims: 2, 3 or None (see :py:class:`RegionHistogram`).
        hist_key_format: format string of the output keys, with fields ``{key}`` and ``{r}``.
        allow_missing_keys: don't raise an exception if a key is missing.

    Raises:
        ValueError: when ``hist_key_format`` does not give a distinct key per level.

    Example::

        >>> import numpy as np
        >>> t = RegionHistogramd("label", num_classes=3, grid_sizes=(1, 2))
        >>> out = t({"label": np.zeros((1, 8, 8), dtype=np.int64)})
        >>> sorted(out)
        ['label', 'label_hist_1', 'label_hist_2']
    """

    backend = RegionHistogram.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        grid_sizes: Sequence[int] | int = (1, 2, 4),
        ignore_index: int | None = None,
        spatial_dims: int | None = None,
        hist_key_format: str = "{key}_hist_{r}",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.histogram = RegionHistogram(num_classes, grid_sizes, ignore_index, spatial_dims)
        names = {hist_key_format.format(key="k", r=r) for r in self.histogram.grid_sizes}
        if len(names) != len(set(self.histogram.grid_sizes)):
            raise ValueError(f"hist_key_format {hist_key_format!r} must contain '{{r}}' to name each level apart.")
        self.hist_key_format = hist_key_format

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            names = [self.hist_key_format.format(key=key, r=r) for r in self.histogram.grid_sizes]
            for name, pmf in zip(names, self.histogram(d[key]), strict=True):
                d[name] = pmf
        return d


RegionHistogramD = RegionHistogramDict = RegionHistogramd


def region_pmf_to_dense(pmf: NdarrayOrTensor, spatial_size: Sequence[int]) -> NdarrayOrTensor:
    """Spread each sub-region's pmf over its pixels: ``(..., K, r, r[, r])`` to ``(..., K, H, W[, D])``.

    This is the per-patch step of dense inference from region histograms: averaging the dense maps of overlapping
    patches gives the per-pixel class probabilities.

    Args:
        pmf: sub-region pmfs with the class axis just before the ``r`` axes.
        spatial_size: patch sides ``(H, W)`` or ``(H, W, D)``, each divisible by ``r``.

    Returns:
        the dense map, same array type as ``pmf``.

    Raises:
        ValueError: when the sides are not divisible by the grid size, or ranks do not match.

    Example::

        >>> import torch
        >>> region_pmf_to_dense(torch.tensor([[[1.0, 0.0], [0.0, 0.5]]]), (4, 4))[0, :, 0]
        tensor([1., 1., 0., 0.])
    """
    t = convert_to_tensor(pmf, track_meta=False)
    sd = len(spatial_size)
    if t.ndim < sd + 1:
        raise ValueError(f"pmf must have a class axis and {sd} grid axes, got shape {tuple(t.shape)}.")
    grid = t.shape[-sd:]
    if any(s % g for s, g in zip(spatial_size, grid, strict=True)):
        raise ValueError(f"spatial_size {tuple(spatial_size)} must be divisible by the grid {tuple(grid)}.")
    for i, (s, g) in enumerate(zip(spatial_size, grid, strict=True)):
        t = t.repeat_interleave(s // g, dim=t.ndim - sd + i)
    return t.cpu().numpy() if isinstance(pmf, np.ndarray) else t


def center_pixel_label(label: NdarrayOrTensor, spatial_dims: int | None = None) -> NdarrayOrTensor:
    """Centre-pixel class of a label patch, the target of the centre-pixel patch-classification baseline.

    The centre is at index ``side // 2`` along every spatial axis (the MONAI ``SpatialCrop`` convention).

    Args:
        label: ``(1, H, W)`` / ``(1, H, W, D)``, or a batch ``(B, 1, ...)`` when ``spatial_dims`` is set.
        spatial_dims: 2, 3 or None (inferred from the rank for unbatched input).

    Returns:
        int64 scalar array (unbatched) or ``(B,)`` array, same array type as ``label``.

    Raises:
        ValueError: for a wrong rank or non-integer labels.

    Example::

        >>> import numpy as np
        >>> center_pixel_label(np.arange(9).reshape(1, 3, 3))
        array(4)
    """
    t = convert_to_tensor(label, track_meta=False)
    sd, batched = _spatial_dims_of(t.ndim, spatial_dims, "label", tuple(t.shape))
    t = t if batched else t.unsqueeze(0)
    t = _as_class_ids(t[:, 0], "label")
    idx = (slice(None),) + tuple(s // 2 for s in t.shape[1:])
    out = t[idx] if batched else t[idx][0]
    return out.cpu().numpy() if isinstance(label, np.ndarray) else out
