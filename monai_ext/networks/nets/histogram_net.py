"""Patch CNN predicting per-sub-region class logits at several grid levels (iPS colony study).

A patch of size ``p`` is split into ``r x r`` sub-regions for every ``r`` in ``grid_sizes``; the network predicts one
class distribution per sub-region, the target of :class:`monai_ext.transforms.RegionHistogram`. The body is fully
convolutional with *valid* (unpadded) convolutions, so the prediction for a patch depends on the patch pixels only
and is identical whether the patch is cropped first or the body runs once over a whole image; the latter shares the
convolutions between overlapping patches (the dense-scanning idea of Giusti et al., "Fast image scanning with deep
max-pooling convolutional neural networks", ICIP 2013).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Dropout, Pool

__all__ = ["HistogramNet", "FlatHistogramNet"]


def _region_weights_1d(patch_size: int, grid: int, offset: float, jump: int, n_feat: int) -> np.ndarray:
    """Weights ``(n_feat, grid)``: column ``a`` averages, over the pixels of sub-region ``a``, the feature map
    linearly interpolated (edge-replicated) to pixel positions. Feature ``i`` is centred on pixel ``offset + i*jump``.
    """
    w = np.zeros((n_feat, grid), dtype=np.float64)
    for x in range(patch_size):
        a = x * grid // patch_size
        t = min(max((x - offset) / jump, 0.0), n_feat - 1.0)
        i0 = int(np.floor(t))
        frac = t - i0
        w[i0, a] += 1.0 - frac
        if frac > 0:
            w[i0 + 1, a] += frac
    return w / w.sum(axis=0, keepdims=True)


class _RegionLevel(nn.Module):
    """One grid level: a 1x1 class head, then a fixed linear pooling of the logit map into ``r**d`` sub-region cells
    (a strided convolution whose kernel has one output channel per cell)."""

    def __init__(self, head: nn.Module, weight: torch.Tensor, grid: int, spatial_dims: int) -> None:
        super().__init__()
        self.head = head
        self.grid = grid
        self.spatial_dims = spatial_dims
        self.register_buffer("weight", weight)  # (r**d, 1, f, ..., f)

    def forward(self, feat: torch.Tensor, stride: int) -> torch.Tensor:
        logits = self.head(feat)
        b, k = logits.shape[0], logits.shape[1]
        x = logits.reshape((b * k, 1) + logits.shape[2:])
        w = self.weight.to(x.dtype)
        if self.spatial_dims == 2:
            y = F.conv2d(x, w, stride=stride)
        else:
            y = F.conv3d(x, w, stride=stride)
        # (B*K, r**d, *n) -> (B, *n, K, r, ..., r)
        n = y.shape[2:]
        y = y.reshape([b, k] + [self.grid] * self.spatial_dims + list(n))
        d = self.spatial_dims
        perm = [0] + [2 + d + i for i in range(d)] + [1] + [2 + i for i in range(d)]
        return y.permute(perm)


class HistogramNet(nn.Module):
    """Fully convolutional patch classifier with one ``(B, num_classes, r, ..., r)`` logit tensor per grid level.

    Architecture: ``len(channels)`` stages of ``convs_per_stage`` x (valid 3x3 conv - norm - act), with a 2x max
    pooling between stages, then a 1x1 convolution per grid level giving a class-logit map. Each sub-region logit is
    the mean, over the sub-region's pixels, of that logit map linearly interpolated back to the patch grid (a fixed
    linear operator, so it commutes with the 1x1 head). Softmax over dim 1 of each level gives the sub-region pmfs.

    Dense inference (:py:meth:`dense_forward`): the body and the heads run once over the whole image; the fixed
    sub-region pooling is then a strided convolution whose every output position is one patch. Because the
    convolutions are unpadded and patch positions are multiples of :py:attr:`feature_stride`, the result equals
    :py:meth:`forward` on each cropped patch (to float rounding), while the work is shared between overlapping
    patches (for stride ``s`` and patch size ``p`` the body does up to ``(p / s)**2`` times less work than cropping).

    Reference: the histogram targets follow the iPS colony study (sub-region class histograms at several grid
    levels); dense scanning with shared convolutions follows Giusti et al., ICIP 2013.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of input channels (1 for phase-contrast iPS images).
        num_classes: number of classes (3: good colony, bad colony, background).
        patch_size: patch edge length ``p`` in pixels (same along every axis).
        grid_sizes: grid levels ``r``; each sub-region is ``p / r`` pixels wide, so ``p`` must be divisible by each.
        channels: output channels of each stage.
        convs_per_stage: unpadded 3x3 convolutions per stage.
        act: activation type and arguments, a name or ``(name, kwargs)``.
        norm: normalisation type and arguments, a name or ``(name, kwargs)``; ``None`` for none.
        dropout: dropout probability before the 1x1 heads.

    Raises:
        ValueError: if ``spatial_dims`` is not 2 or 3, a grid size does not divide ``patch_size``, or the patch is
            too small for the body (every unpadded stage must leave at least one feature).

    Example::

        >>> net = HistogramNet(spatial_dims=2, in_channels=1, num_classes=3, patch_size=32, grid_sizes=(1, 2, 4))
        >>> [o.shape for o in net(torch.zeros(5, 1, 32, 32))]
        [torch.Size([5, 3, 1, 1]), torch.Size([5, 3, 2, 2]), torch.Size([5, 3, 4, 4])]
        >>> dense = net.dense_forward(torch.zeros(1, 1, 128, 128), stride=8)  # 13 x 13 patch positions
        >>> dense[2].shape  # (B, n_y, n_x, num_classes, r, r)
        torch.Size([1, 13, 13, 3, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 3,
        patch_size: int = 32,
        grid_sizes: Sequence[int] = (1, 2, 4),
        channels: Sequence[int] = (32, 64, 96),
        convs_per_stage: int = 1,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        grid_sizes = tuple(int(r) for r in grid_sizes)
        if len(grid_sizes) == 0 or min(grid_sizes) < 1:
            raise ValueError(f"grid_sizes must be a non-empty sequence of positive integers, got {grid_sizes}.")
        bad = [r for r in grid_sizes if patch_size % r]
        if bad:
            raise ValueError(f"patch_size={patch_size} must be divisible by every grid size, not by {bad}.")
        channels = tuple(int(c) for c in channels)
        if len(channels) == 0 or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels}.")
        if convs_per_stage < 1:
            raise ValueError(f"convs_per_stage must be a positive integer, got {convs_per_stage}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.patch_size = int(patch_size)
        self.grid_sizes = grid_sizes

        layers: list[nn.Module] = []
        prev, size, offset, jump = in_channels, self.patch_size, 0.0, 1
        for s, c in enumerate(channels):
            if s > 0:
                layers.append(Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2))
                size, offset, jump = size // 2, offset + 0.5 * jump, jump * 2
            for _ in range(convs_per_stage):
                layers.append(
                    Convolution(spatial_dims, prev, c, kernel_size=3, padding=0, act=act, norm=norm, bias=norm is None)
                )
                prev, size, offset = c, size - 2, offset + jump
            if size < 1:
                raise ValueError(
                    f"patch_size={patch_size} is too small for channels={channels} with convs_per_stage="
                    f"{convs_per_stage}: stage {s} leaves no feature; use a larger patch or fewer stages."
                )
        self.body = nn.Sequential(*layers)
        #: patch positions for :py:meth:`dense_forward` must be multiples of this (total pooling factor)
        self.feature_stride = jump
        #: spatial size of the body's output for one patch
        self.feature_size = size
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        conv = Conv[Conv.CONV, spatial_dims]
        levels = []
        for r in grid_sizes:
            w1 = _region_weights_1d(self.patch_size, r, offset, jump, size)  # (f, r)
            if spatial_dims == 2:
                w = np.einsum("ia,jb->abij", w1, w1).reshape(r * r, 1, size, size)
            else:
                w = np.einsum("ia,jb,kc->abcijk", w1, w1, w1).reshape(r**3, 1, size, size, size)
            head = conv(prev, num_classes, kernel_size=1)
            levels.append(_RegionLevel(head, torch.as_tensor(w, dtype=torch.float32), r, spatial_dims))
        self.levels = nn.ModuleList(levels)

    def _levels(self, x: torch.Tensor, stride: int) -> list[torch.Tensor]:
        feat = self.dropout(self.body(x))
        out: list[torch.Tensor] = []
        for level in self.levels:
            out.append(level(feat, stride))
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patches ``(B, in_channels, p, p[, p])`` -> list (in ``grid_sizes`` order) of ``(B, num_classes, r, r[, r])``.

        Raises:
            ValueError: if the spatial size of ``x`` is not ``patch_size``.
        """
        return self._patch_levels(x)

    def _patch_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        for s in x.shape[2:]:
            if s != self.patch_size:
                raise ValueError(f"expected patches of size {self.patch_size} along every axis, got {x.shape}.")
        out: list[torch.Tensor] = []
        for y in self._levels(x, 1):
            out.append(y.reshape(y.shape[0:1] + y.shape[1 + self.spatial_dims :]))
        return out

    @torch.jit.export
    def dense_forward(self, image: torch.Tensor, stride: int) -> list[torch.Tensor]:
        """Per-level logits of every patch on a stride grid over ``image``, sharing computation between patches.

        The patch at grid index ``(i, j)`` has its top-left pixel at ``(i * stride, j * stride)``; there are
        ``n = (size - patch_size) // stride + 1`` positions along each axis (patches never leave the image; pad the
        image first to cover its borders). Output level ``l`` has shape ``(B, n_y, n_x, num_classes, r, r)`` (one
        more ``n`` and ``r`` axis in 3D), and ``out[l][b, i, j]`` equals ``forward(patch)[l][b]`` for that patch, so
        ``out[l].reshape(-1, num_classes, r, r)`` lists the patches in raster order.

        Args:
            image: ``(B, in_channels, H, W[, D])`` with every spatial size ``>= patch_size``.
            stride: distance between patch positions in pixels, a positive multiple of :py:attr:`feature_stride`.

        Raises:
            ValueError: if ``stride`` is not a positive multiple of ``feature_stride`` or the image is smaller than
                one patch.
        """
        if stride < 1 or stride % self.feature_stride != 0:
            raise ValueError(
                f"stride must be a positive multiple of feature_stride={self.feature_stride}, got {stride}."
            )
        n: list[int] = []
        for s in image.shape[2:]:
            if s < self.patch_size:
                raise ValueError(f"image spatial size {image.shape} is smaller than patch_size={self.patch_size}.")
            n.append((s - self.patch_size) // stride + 1)
        out: list[torch.Tensor] = []
        for y in self._levels(image, stride // self.feature_stride):
            if self.spatial_dims == 2:
                y = y[:, : n[0], : n[1]]
            else:
                y = y[:, : n[0], : n[1], : n[2]]
            out.append(y)
        return out


class FlatHistogramNet(HistogramNet):
    """:class:`HistogramNet` whose ``forward`` returns one tensor: the levels' cells flattened and concatenated.

    Output ``(B, num_classes, sum_r r**spatial_dims)``, the levels in ``grid_sizes`` order and each level's cells in
    row-major order. It has the same parameters (and ``state_dict``) as :class:`HistogramNet`, so a checkpoint of one
    loads into the other; use this form where a single output tensor is required, e.g. by ``monai.bundle``
    ``verify_net_in_out`` (which reads ``output.shape[1]`` as the channel count) or a plain ``SimpleInferer``.
    ``split_levels`` recovers the list of per-level tensors; ``dense_forward`` is unchanged.

    Example::

        >>> net = FlatHistogramNet(in_channels=1, num_classes=3, patch_size=32, grid_sizes=(1, 2, 4))
        >>> y = net(torch.zeros(5, 1, 32, 32))
        >>> y.shape  # 1 + 4 + 16 cells
        torch.Size([5, 3, 21])
        >>> [t.shape for t in net.split_levels(y)]
        [torch.Size([5, 3, 1, 1]), torch.Size([5, 3, 2, 2]), torch.Size([5, 3, 4, 4])]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Patches ``(B, in_channels, p, p[, p])`` -> ``(B, num_classes, sum_r r**spatial_dims)``."""
        levels = self._patch_levels(x)
        return torch.cat([y.flatten(2) for y in levels], dim=2)

    @torch.jit.export
    def split_levels(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Inverse of the concatenation: ``(B, K, sum_r r**d)`` -> list of ``(B, K, r, ..., r)`` in grid order."""
        out: list[torch.Tensor] = []
        start = 0
        for r in self.grid_sizes:
            n = int(r**self.spatial_dims)  # TorchScript: int ** int is a float
            out.append(y[:, :, start : start + n].reshape([y.shape[0], y.shape[1]] + [r] * self.spatial_dims))
            start += n
        return out
