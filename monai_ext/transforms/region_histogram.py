"""Region-histogram targets: per-sub-region class pmfs of a label patch at several grid levels.

Each local label patch is split into ``r x r`` (2D) or ``r x r x r`` (3D) equal sub-regions for every grid size
``r``; the target of a sub-region is the normalised histogram (pmf) of the classes of its pixels. This is the
training target of the iPS colony segmentation study (patch-wise class-histogram prediction, as opposed to
centre-pixel classification of the same patches), and dense maps are recovered by spreading each sub-region's
pmf over its pixels and averaging over overlapping patches.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
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
        self.num_classes = int(num_classes)
        self.grid_sizes = tuple(int(r) for r in sizes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.spatial_dims = spatial_dims

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
        """
        lab = convert_to_tensor(label, track_meta=False)
        shape = tuple(lab.shape)
        sd, batched = _spatial_dims_of(lab.ndim, self.spatial_dims, "label", shape)
        if not batched:
            lab = lab.unsqueeze(0)
        if lab.shape[1] != 1:
            raise ValueError(f"label must have a single channel, got shape {shape}.")
        lab = _as_class_ids(lab[:, 0], "label")
        spatial = tuple(lab.shape[1:])
        bad = [r for r in self.grid_sizes if any(s % r for s in spatial)]
        if bad:
            raise ValueError(
                f"patch sides {spatial} must be divisible by every grid size in {self.grid_sizes}; "
                f"not divisible by {bad}."
            )
        if lab.device.type != "cpu":
            self._check_values(lab)  # an out-of-range scatter index is a device-side assert on accelerators
        try:
            counts = self._counts(lab, spatial)
        except RuntimeError:  # on CPU, scatter_add_ rejects indices outside its bins: name the bad labels instead
            self._check_values(lab)
            raise
        outs = []
        for r in self.grid_sizes:
            c = counts[r]
            total = c.sum(1, keepdim=True)
            pmf = torch.where(total > 0, c / total.clamp_min(1), torch.zeros_like(c))
            outs.append(pmf if batched else pmf[0])
        return tuple(self._wrap(o, label, spatial, r) for o, r in zip(outs, self.grid_sizes, strict=True))

    def _check_values(self, lab: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the labels outside ``0 .. K - 1`` that are not ``ignore_index``."""
        countable = lab if self.ignore_index is None else lab[lab != self.ignore_index]
        bad = countable[(countable < 0) | (countable >= self.num_classes)]
        if bad.numel():
            raise ValueError(
                f"label values must be in [0, {self.num_classes - 1}] or ignore_index={self.ignore_index}, "
                f"found {torch.unique(bad)[:5].tolist()}."
            )

    def _counts(self, lab: torch.Tensor, spatial: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """Per-block class counts ``(B, K, r, ...)`` for each grid size; coarser levels pool finer ones."""
        b, k, sd = lab.shape[0], self.num_classes, len(spatial)
        counts: dict[int, torch.Tensor] = {}
        for r in sorted(set(self.grid_sizes), reverse=True):
            finer = [q for q in counts if q % r == 0]
            view = [b, k]
            if finer:
                q = min(finer)
                for _ in range(sd):
                    view += [r, q // r]
                src = counts[q]
            else:
                src = self._pixel_counts(lab, spatial, r)
                for side in spatial[:-1]:
                    view += [r, side // r]
                view += [r, 1]
            counts[r] = src.reshape(view).sum(dim=tuple(range(3, 2 + 2 * sd, 2)), dtype=torch.int64)
        return {r: c.to(torch.float32) for r, c in counts.items()}

    def _pixel_counts(self, lab: torch.Tensor, spatial: tuple[int, ...], r: int) -> torch.Tensor:
        """Counts per (class, pixel row, block along the last axis), shaped ``(B, K, *spatial[:-1], r)``.

        A batched bincount with no copy of the labels: the last axis is viewed as ``(r, side // r)`` and one
        ``scatter_add_`` adds each pixel into the ``K`` class bins of its block (plus one bin for ignored pixels). The
        scatter doubles as the range check on CPU: indices outside the bins raise, and bin ``K`` must hold exactly the
        ignored pixels.
        """
        k, last = self.num_classes, spatial[-1]
        if self.ignore_index is None:
            idx, n_ignored = lab, 0
        else:
            ignored = lab == self.ignore_index
            idx, n_ignored = torch.where(ignored, k, lab), int(ignored.sum())
        idx = idx.reshape(lab.shape[:-1] + (r, last // r))
        bins = torch.zeros(lab.shape[:-1] + (r, k + 1), dtype=torch.int32, device=lab.device)
        bins.scatter_add_(-1, idx, torch.ones(1, dtype=torch.int32, device=lab.device).expand_as(idx))
        # bin k holds the ignored pixels; anything else there is a label equal to K (out of range)
        if int(bins[..., k].sum()) != n_ignored:
            self._check_values(lab)
        return bins[..., :k].movedim(-1, 1)

    @staticmethod
    def _wrap(out: torch.Tensor, label: NdarrayOrTensor, spatial: tuple[int, ...], r: int) -> NdarrayOrTensor:
        if isinstance(label, MetaTensor):
            meta = deepcopy(dict(label.meta))
            affine = torch.as_tensor(meta.pop("affine", label.affine), dtype=torch.float64)
            block = torch.eye(affine.shape[-1], dtype=torch.float64)
            for i, s in enumerate(spatial[: affine.shape[-1] - 1]):
                block[i, i] = s / r
                block[i, -1] = (s / r - 1) / 2
            return MetaTensor(out, affine=affine @ block, meta=meta)
        if isinstance(label, np.ndarray):
            return out.cpu().numpy()
        return out


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
            for r, pmf in zip(self.histogram.grid_sizes, self.histogram(d[key]), strict=True):
                d[self.hist_key_format.format(key=key, r=r)] = pmf
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
