"""Multi-level region-histogram loss: per-sub-region class pmfs predicted against ``RegionHistogram`` targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction, ensure_tuple
from torch.nn.modules.loss import _Loss

from monai_ext.transforms.region_histogram import RegionHistogram

from .distribution import check_reduction

__all__ = ["RegionHistogramLoss"]


def _shape_of(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _is_label_patch(target: torch.Tensor, input: object) -> bool:
    """A ``(B, 1, *spatial)`` label map (integer dtype, or one channel where the input has several classes)."""
    if target.ndim not in (4, 5) or target.shape[1] != 1:
        return False
    first = input[0] if isinstance(input, (list, tuple)) else input
    return not target.dtype.is_floating_point or (isinstance(first, torch.Tensor) and first.shape[1] > 1)


class RegionHistogramLoss(_Loss):
    """Weighted sum over grid levels of the divergence between target and predicted sub-region class pmfs.

    For each grid size ``r`` the network predicts ``(B, C, r, r)`` (2D) or ``(B, C, r, r, r)`` (3D) logits, one
    class distribution per sub-region (what ``monai_ext.networks.nets.HistogramNet`` outputs), and the target is the
    matching class pmf of the sub-region's pixels (what ``monai_ext.transforms.RegionHistogram`` gives, batched).
    Per level and sample the loss is the mean over the *valid* sub-regions of

    - ``divergence="kl"``: ``KL(q || p) = sum_c q_c (log q_c - log p_c)`` (0 for a perfect prediction), or
    - ``divergence="ce"``: the soft cross-entropy ``-sum_c q_c log p_c`` (same gradient, offset by the entropy of q),

    where ``p = softmax(input)`` over ``C``. A sub-region whose target is all zeros (every pixel carries the ignore
    label) is skipped, not counted as a zero-loss region. Levels are combined as ``sum_l w_l loss_l``.
    This is the region-histogram training objective of the iPS-colony segmentation study (patch-wise multi-level
    class-histogram prediction instead of centre-pixel classification).

    Besides per-level lists, ``input`` may be the flat ``(B, C, N)`` tensor of
    :class:`~monai_ext.networks.nets.FlatHistogramNet` (levels flattened in raster order and concatenated,
    ``N = sum_l r_l ** d``), and ``target`` may be the same flat pmf tensor or simply the integer *label patch*
    ``(B, 1, *spatial)``: the targets are then computed with :class:`~monai_ext.transforms.RegionHistogram`
    (``ignore_index`` honoured), the way MONAI's ``DiceLoss(to_onehot_y=True)`` takes label maps. This lets a bundle
    train with a plain ``SupervisedTrainer`` on ``(image patch, label patch)`` batches.

    Args:
        grid_sizes: grid size ``r`` of every level, in the order of the inputs.
        level_weights: weight ``w_l >= 0`` of each level (default: 1 for every level).
        divergence: ``"kl"`` or ``"ce"``.
        softmax: ``input`` holds logits (``True``) or pmfs over ``C`` (``False``).
        reduction: ``"mean"`` (per level, the mean over the samples that have a valid sub-region), ``"sum"`` or
            ``"none"`` (``(B,)`` per-sample weighted sums).
        ignore_index: label value left out of the targets computed from a label patch (``None``: every value
            counts).

    Raises:
        ValueError: on a bad option; in ``forward`` when the number of levels or a level's shape does not match
            ``grid_sizes``, or a non-ignored target sub-region is not a pmf.

    Example::

        >>> import torch
        >>> loss = RegionHistogramLoss(grid_sizes=(1, 2))
        >>> logits = [torch.randn(2, 3, 1, 1, requires_grad=True), torch.randn(2, 3, 2, 2, requires_grad=True)]
        >>> target = [torch.softmax(torch.randn(2, 3, r, r), 1) for r in (1, 2)]
        >>> loss(logits, target).backward()
        >>> flat = torch.randn(2, 3, 1 + 4, requires_grad=True)  # FlatHistogramNet output for grid sizes (1, 2)
        >>> labels = torch.randint(0, 3, (2, 1, 8, 8))  # label patches
        >>> loss(flat, labels).backward()
    """

    def __init__(
        self,
        grid_sizes: Sequence[int] | int = (1, 2, 4),
        level_weights: Sequence[float] | None = None,
        divergence: str = "kl",
        softmax: bool = True,
        reduction: LossReduction | str = LossReduction.MEAN,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.grid_sizes = tuple(int(r) for r in ensure_tuple(grid_sizes))
        if not self.grid_sizes or any(r < 1 for r in self.grid_sizes):
            raise ValueError(f"grid_sizes must be one or more positive integers, got {grid_sizes!r}.")
        if level_weights is None:
            level_weights = [1.0] * len(self.grid_sizes)
        level_weights = [float(w) for w in ensure_tuple(level_weights)]
        if len(level_weights) != len(self.grid_sizes) or any(w < 0 for w in level_weights):
            raise ValueError(
                f"level_weights must hold {len(self.grid_sizes)} non-negative numbers (one per grid size), "
                f"got {level_weights!r}."
            )
        self.level_weights = tuple(level_weights)
        if divergence not in ("kl", "ce"):
            raise ValueError(f"divergence must be 'kl' or 'ce', got {divergence!r}.")
        self.divergence = divergence
        self.softmax = bool(softmax)

    def _flat_spatial_dims(self, n: int) -> int:
        for sd in (2, 3):
            if sum(r**sd for r in self.grid_sizes) == n:
                return sd
        raise ValueError(
            f"a flat input must have sum(r ** d) cells over grid_sizes={self.grid_sizes} (d = 2 or 3) along its last "
            f"axis, got {n}."
        )

    def _split_flat(self, x: torch.Tensor, spatial_dims: int, name: str) -> list[torch.Tensor]:
        """``(B, C, N)`` -> per-level ``(B, C, r, r[, r])`` (the inverse of ``FlatHistogramNet``'s flattening)."""
        sizes = [r**spatial_dims for r in self.grid_sizes]
        if x.ndim != 3 or x.shape[2] != sum(sizes):
            raise ValueError(
                f"{name} must be flat (B, C, {sum(sizes)}) for grid_sizes={self.grid_sizes} in {spatial_dims}D, got "
                f"{tuple(x.shape)}."
            )
        parts = torch.split(x, sizes, dim=2)
        return [p.reshape(*x.shape[:2], *([r] * spatial_dims)) for p, r in zip(parts, self.grid_sizes, strict=True)]

    def _as_levels(self, x: Sequence[torch.Tensor] | Mapping[int, torch.Tensor] | torch.Tensor, name: str) -> list:
        if isinstance(x, Mapping):
            missing = [r for r in self.grid_sizes if r not in x]
            if missing:
                raise ValueError(f"{name} is a dict keyed by grid size but lacks levels {missing}.")
            return [x[r] for r in self.grid_sizes]
        if isinstance(x, torch.Tensor):
            x = [x]
        if len(x) != len(self.grid_sizes):
            raise ValueError(
                f"{name} must hold {len(self.grid_sizes)} levels for grid_sizes={self.grid_sizes}, got {len(x)}."
            )
        return list(x)

    def forward(
        self,
        input: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
        target: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
    ) -> torch.Tensor:
        """
        Args:
            input: per-level logits ``(B, C, r, r[, r])``, a list/tuple in ``grid_sizes`` order or a dict keyed by
                ``r``.
            target: per-level pmfs of the same shapes (all zeros for a fully ignored sub-region).

        Returns:
            scalar (``"mean"``/``"sum"``) or ``(B,)`` (``"none"``).

        Raises:
            ValueError: on a level count or shape mismatch, or a target that is neither a pmf nor all zeros.
        """
        if isinstance(target, torch.Tensor) and _is_label_patch(target, input):
            num_classes = (input[0] if isinstance(input, (list, tuple)) else input).shape[1]
            sd = target.ndim - 2
            target = list(RegionHistogram(num_classes, self.grid_sizes, self.ignore_index, spatial_dims=sd)(target))
            if isinstance(input, torch.Tensor) and input.ndim == 3:
                input = self._split_flat(input, sd, "input")
        elif isinstance(input, torch.Tensor) and input.ndim == 3:
            if not isinstance(target, torch.Tensor) or target.shape != input.shape:
                raise ValueError(
                    f"a flat input {tuple(input.shape)} needs a flat target of the same shape or a label patch "
                    f"(B, 1, *spatial), got {_shape_of(target)}."
                )
            sd = self._flat_spatial_dims(input.shape[2])
            input, target = self._split_flat(input, sd, "input"), self._split_flat(target, sd, "target")
        inputs = self._as_levels(input, "input")
        targets = self._as_levels(target, "target")
        total: torch.Tensor | None = None
        for r, w, x, q in zip(self.grid_sizes, self.level_weights, inputs, targets, strict=True):
            if x.ndim not in (4, 5) or tuple(x.shape[2:]) != (r,) * (x.ndim - 2):
                raise ValueError(f"input level r={r} must have shape (B, C, {r}, {r}[, {r}]), got {tuple(x.shape)}.")
            if q.shape != x.shape:
                raise ValueError(
                    f"target level r={r} must have the shape of its input {tuple(x.shape)}, got {tuple(q.shape)}."
                )
            q = q.to(x.dtype)
            mass = q.detach().sum(1)
            valid = mass > 0.5
            if bool(((mass - 1).abs() > 1e-3)[valid].any()) or bool((mass[~valid] != 0).any()) or bool((q < 0).any()):
                raise ValueError(
                    f"target level r={r} must hold a pmf over C (sums to 1) or all zeros (ignored) per sub-region."
                )
            if self.softmax:
                logp = F.log_softmax(x, dim=1)
            else:
                logp = torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))
            div = -(q * logp).sum(1)
            if self.divergence == "kl":
                div = div + torch.xlogy(q, q).sum(1)
            div = torch.where(valid, div, torch.zeros_like(div)).flatten(1)
            n_valid = valid.flatten(1).sum(1)
            per_sample = div.sum(1) / n_valid.clamp_min(1)
            if self.reduction == LossReduction.MEAN.value:
                level = per_sample.sum() / (n_valid > 0).sum().clamp_min(1)
            elif self.reduction == LossReduction.SUM.value:
                level = per_sample.sum()
            elif self.reduction == LossReduction.NONE.value:
                level = per_sample
            else:
                raise ValueError(
                    f'Unsupported reduction: {self.reduction}, available options are ["mean", "sum", "none"].'
                )
            total = w * level if total is None else total + w * level
        assert total is not None
        return total
