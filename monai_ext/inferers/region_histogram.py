"""Dense inference from patch predictions: region-histogram pmfs and centre-pixel patch classification.

The region-histogram method predicts, for every local patch, the class pmf of each of its ``r x r`` sub-regions.
A dense map follows by spreading each sub-region's pmf over its pixels and averaging over all overlapping windows
that cover a pixel. Because a single network call labels a whole window, the windows can be placed with a large
stride (a quarter of the patch side by default), which is what makes this method far cheaper than centre-pixel
classification, where every pixel needs its own window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import ensure_tuple_rep

__all__ = ["CenterPixelInferer", "RegionHistogramInferer"]


def _pad_mode(mode: str, pads: Sequence[int], spatial: Sequence[int]) -> str:
    """Reflection needs each pad to be smaller than the side; fall back to edge replication for small images."""
    if mode == "reflect" and (max(pads[0:2]) >= spatial[1] or max(pads[2:4]) >= spatial[0]):
        return "replicate"
    return mode


def _check_roi_stride(roi_size: Sequence[int] | int, stride: Sequence[int] | int | None,
                      default_div: int) -> tuple[tuple[int, int], tuple[int, int]]:
    roi = ensure_tuple_rep(roi_size, 2)
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in roi):
        raise ValueError(f"roi_size must be one or two positive integers, got {roi_size!r}.")
    st = tuple(max(1, r // default_div) for r in roi) if stride is None else ensure_tuple_rep(stride, 2)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in st):
        raise ValueError(f"stride must be one or two positive integers, got {stride!r}.")
    if any(s > r for s, r in zip(st, roi, strict=True)):
        raise ValueError(f"stride {st} must not exceed roi_size {roi} (pixels would be left uncovered).")
    return roi, st  # type: ignore[return-value]


def _check_inputs(inputs: torch.Tensor) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a 2D batch (B, C, H, W), got {shape}.")


def _like_input(out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Keep the input's metadata (same spatial grid) so that savers and inverters downstream find it."""
    out = out.as_tensor() if isinstance(out, MetaTensor) else out
    if isinstance(inputs, MetaTensor):
        out = MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        out.is_batch = inputs.is_batch
    return out


def _windows(x: torch.Tensor, roi: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """A strided view ``(B, C, nh, nw, P0, P1)`` of all windows (no copy)."""
    return x.unfold(2, roi[0], stride[0]).unfold(3, roi[1], stride[1])


def _run_batched(view: torch.Tensor, batch_size: int, network: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> list[Any]:
    """Call the network on batches of windows taken (copied batch by batch) from the strided view."""
    b, c, nh, nw = view.shape[:4]
    total = b * nh * nw
    outs = []
    for start in range(0, total, batch_size):
        idx = torch.arange(start, min(start + batch_size, total), device=view.device)
        bi, rest = idx // (nh * nw), idx % (nh * nw)
        patches = view[bi, :, rest // nw, rest % nw]  # (n, C, P0, P1)
        outs.append(network(patches, *args, **kwargs))
    return outs


def _block_indicator(regions: int, blocks: int, like: torch.Tensor) -> torch.Tensor:
    """``conv_transpose1d`` weight ``(regions, 1, regions * blocks)``: sub-region ``u`` covers blocks
    ``u * blocks .. (u + 1) * blocks - 1`` of its window."""
    eye = torch.eye(regions, dtype=like.dtype, device=like.device)
    return eye.repeat_interleave(blocks, 1)[:, None]


def _overlap_average(pmf: torch.Tensor, grid: tuple[int, int, int], sub: tuple[int, int],
                     stride: tuple[int, int], crop: tuple[int, int, int, int]) -> torch.Tensor:
    """Spread each window's sub-region pmfs over their pixels and average over the windows covering each pixel.

    Args:
        pmf: ``(B * nh * nw, K, r0, r1)`` pmfs of the windows in raster order.
        grid: ``(B, nh, nw)``.
        sub: sub-region side ``(c0, c1)`` in pixels.
        stride: window step ``(s0, s1)`` in pixels.
        crop: ``(top, height, left, width)`` of the output in the padded image.

    Returns:
        ``(B, K, height, width)``.

    The work is done on blocks of ``g = gcd(s, c)`` pixels (a window starts and a sub-region ends only on block
    borders), and separably: the window sum is a sum of outer products of two 0/1 indicators (rows covered by
    sub-region ``u`` of window row ``i``, columns by ``v`` of window column ``j``), so it is one transposed 1D
    convolution with stride ``s / g`` over the window rows, with the ``r0`` sub-region rows as input channels, and
    one over the window columns. This touches each pmf value once per pass instead of materialising every window at
    block resolution (``torch.nn.functional.fold`` of ``K * (P / g)^2`` values per window, which cost ~1 s for a
    660 x 550 image); the number of windows covering a pixel is the outer product of the two 1D counts.
    """
    b, nh, nw = grid
    k, r0, r1 = pmf.shape[1:]
    (c0, c1), (s0, s1) = sub, stride
    g0, g1 = math.gcd(s0, c0), math.gcd(s1, c1)
    w0, w1 = _block_indicator(r0, c0 // g0, pmf), _block_indicator(r1, c1 // g1, pmf)
    # pass 1, window rows i with sub-region rows u as channels: (B, nw, K, r1) x (r0, nh) -> (.., H')
    x = pmf.reshape(b, nh, nw, k, r0, r1).permute(0, 2, 3, 5, 4, 1).reshape(-1, r0, nh)
    rows = F.conv_transpose1d(x, w0, stride=s0 // g0)
    hb = rows.shape[-1]
    # pass 2, window columns j with sub-region columns v as channels: (B, K, H') x (r1, nw) -> (.., W')
    y = rows.reshape(b, nw, k, r1, hb).permute(0, 2, 4, 3, 1).reshape(-1, r1, nw)
    summed = F.conv_transpose1d(y, w1, stride=s1 // g1).reshape(b, k, hb, -1)
    ones = pmf.new_ones(1, 1, 1)
    n0 = F.conv_transpose1d(ones.expand(1, 1, nh), w0.sum(0, keepdim=True), stride=s0 // g0)[0, 0]
    n1 = F.conv_transpose1d(ones.expand(1, 1, nw), w1.sum(0, keepdim=True), stride=s1 // g1)[0, 0]
    mean = summed / (n0[:, None] * n1[None, :])
    # back to pixels: output pixel (y, x) lies in block ((y + top) // g0, (x + left) // g1)
    top, height, left, width = crop
    iy = torch.div(torch.arange(top, top + height, device=pmf.device), g0, rounding_mode="floor")
    ix = torch.div(torch.arange(left, left + width, device=pmf.device), g1, rounding_mode="floor")
    return mean[:, :, iy[:, None], ix[None, :]]


def _dense_forward_fn(network: Any, roi: tuple[int, int], stride: tuple[int, int], enabled: bool
                      ) -> Callable[..., Any] | None:
    """The network's shared-computation entry point ``dense_forward(image, stride)`` when it applies, else None."""
    net = getattr(network, "module", network)  # DistributedDataParallel / DataParallel wrappers
    fn = getattr(net, "dense_forward", None)
    fs = getattr(net, "feature_stride", None)
    if not enabled or fn is None or not isinstance(fs, int):
        return None
    if stride[0] != stride[1] or stride[0] % fs or roi[0] != roi[1]:
        return None
    if getattr(net, "patch_size", roi[0]) != roi[0]:
        raise ValueError(f"roi_size {roi} must equal the network's patch_size {net.patch_size}.")
    return fn


class RegionHistogramInferer(Inferer):
    """Dense class probabilities from the per-sub-region pmfs a region-histogram network predicts for each window.

    Windows of ``roi_size`` are placed every ``stride`` pixels over the (padded) image; the network maps a batch
    of windows ``(N, C, P, P)`` to one logits tensor per grid level ``(N, K, r, r)`` (e.g.
    :py:class:`monai_ext.networks.nets.HistogramNet`), or to the levels flattened into one tensor
    ``(N, K, sum r*r)`` when it has a ``split_levels`` method that undoes this
    (:py:class:`monai_ext.networks.nets.FlatHistogramNet`). The softmax of each sub-region is spread over the
    ``P / r`` pixels of its side, and a pixel's probability is the average over every window covering it: the
    dense inference of the multi-level region-histogram method for iPS colony segmentation (the seed study of the
    ``ips_histogram`` bundle, see its README).

    ``combine="finest"`` uses the finest level only (default); ``combine="mean"`` averages the levels after
    spreading each to pixels (every level's pmf is an estimate of the class distribution of the pixels it covers).

    Computation is shared in three ways: each window labels all of its pixels, so there are only
    ``(H / stride) * (W / stride)`` windows instead of one per pixel; when the network has a
    ``dense_forward(image, stride)`` method (:py:meth:`monai_ext.networks.nets.HistogramNet.dense_forward`) and
    ``stride`` is a multiple of its ``feature_stride``, the convolutions run once over the padded image and are
    shared by all overlapping windows (``use_dense_forward``); and the overlap-average is done at the resolution of
    the coarsest common block (``gcd(stride, P / r)`` pixels) as two separable transposed 1D convolutions with 0/1
    kernels (rows, then columns) before one nearest upsampling, so no window-sized maps are ever materialised
    (``benchmarks/bench_dense_inference.py`` times it against the earlier ``torch.nn.functional.fold`` version).
    Otherwise windows are cropped (views, copied batch by batch) and passed to the network ``sw_batch_size`` at a
    time.

    The image is padded by ``P - stride`` on each side (``padding_mode``, reflection by default, edge replication
    when the image is smaller than the pad), so every pixel, borders included, is covered by the same number of
    windows when ``stride`` divides ``P``; the output is cropped back to the input size.

    Args:
        roi_size: window side(s) ``P`` (an int or ``(P0, P1)``), divisible by every grid size of the network.
        stride: window step(s) in pixels; default ``P // 4``. Must not exceed ``roi_size``.
        combine: ``"finest"`` or ``"mean"`` (see above).
        sw_batch_size: number of windows per network call.
        padding_mode: ``torch.nn.functional.pad`` mode, ``"reflect"``, ``"replicate"`` or ``"constant"``.
        use_dense_forward: use the network's ``dense_forward`` when it has one and the stride allows it.

    Raises:
        ValueError: for bad ``roi_size``, ``stride``, ``combine``, ``sw_batch_size`` or ``padding_mode``.

    Example::

        >>> import torch
        >>> class Const(torch.nn.Module):
        ...     def forward(self, x):
        ...         return [torch.zeros(x.shape[0], 3, 4, 4)]
        >>> out = RegionHistogramInferer(roi_size=16, stride=4)(torch.rand(1, 1, 40, 30), Const())
        >>> out.shape, round(float(out.sum(1).mean()), 4)
        (torch.Size([1, 3, 40, 30]), 1.0)
    """

    def __init__(self, roi_size: Sequence[int] | int, stride: Sequence[int] | int | None = None,
                 combine: str = "finest", sw_batch_size: int = 64, padding_mode: str = "reflect",
                 use_dense_forward: bool = True) -> None:
        super().__init__()
        self.roi_size, self.stride = _check_roi_stride(roi_size, stride, 4)
        if combine not in ("finest", "mean"):
            raise ValueError(f"combine must be 'finest' or 'mean', got {combine!r}.")
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}.")
        if padding_mode not in ("reflect", "replicate", "constant"):
            raise ValueError(f"padding_mode must be 'reflect', 'replicate' or 'constant', got {padding_mode!r}.")
        self.combine = combine
        self.sw_batch_size = sw_batch_size
        self.padding_mode = padding_mode
        self.use_dense_forward = bool(use_dense_forward)

    def _levels_to_pmf(self, out: Any) -> torch.Tensor:
        """Softmax per level and combination into one ``(N, K, r, r)`` pmf grid at the finest level."""
        levels = [out] if isinstance(out, torch.Tensor) else list(out)
        if not levels or any(not isinstance(t, torch.Tensor) or t.ndim != 4 for t in levels):
            shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in levels]
            raise ValueError(f"network must return per-level logits (N, K, r, r), got {shapes}.")
        for t in levels:
            r0, r1 = t.shape[2:]
            if self.roi_size[0] % r0 or self.roi_size[1] % r1:
                raise ValueError(f"roi_size {self.roi_size} must be divisible by the network's grid {(r0, r1)}.")
        finest = max(levels, key=lambda t: t.shape[2] * t.shape[3])
        if self.combine == "finest":
            return torch.softmax(finest.float(), dim=1)
        rf = finest.shape[2:]
        acc = torch.zeros_like(finest, dtype=torch.float32)
        for t in levels:
            if rf[0] % t.shape[2] or rf[1] % t.shape[3]:
                raise ValueError(f"combine='mean' needs nested grids, got {tuple(t.shape[2:])} and {tuple(rf)}.")
            p = torch.softmax(t.float(), dim=1)
            acc += p.repeat_interleave(rf[0] // t.shape[2], 2).repeat_interleave(rf[1] // t.shape[3], 3)
        return acc / len(levels)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """
        Args:
            inputs: image batch ``(B, C, H, W)`` of any size.
            network: callable mapping ``(N, C, P0, P1)`` windows to per-level logits ``(N, K, r, r)``.
            args: positional arguments passed on to ``network``.
            kwargs: keyword arguments passed on to ``network``.

        Returns:
            class probabilities ``(B, K, H, W)`` (float32, summing to one over ``K``).

        Raises:
            ValueError: for a non-4D input or network outputs of the wrong form.
        """
        _check_inputs(inputs)
        (p0, p1), (s0, s1) = self.roi_size, self.stride
        b, _, h, w = inputs.shape
        # pad P - s before, and after enough to land the last window on the far edge
        ph = (p0 - s0, p0 - s0 + (-(h + p0 - s0 - p0) % s0))
        pw = (p1 - s1, p1 - s1 + (-(w + p1 - s1 - p1) % s1))
        pads = (pw[0], pw[1], ph[0], ph[1])
        x = F.pad(inputs, pads, mode=_pad_mode(self.padding_mode, pads, (h, w)))
        view = _windows(x, self.roi_size, self.stride)
        nh, nw = view.shape[2:4]
        dense_fn = None if (args or kwargs) else _dense_forward_fn(network, self.roi_size, self.stride,
                                                                     self.use_dense_forward)
        if dense_fn is not None:
            levels = dense_fn(x, s0)  # per level (B, nh, nw, K, r, r): every window in raster order
            pmf = self._levels_to_pmf([t.reshape((-1,) + tuple(t.shape[3:])) for t in levels])
        else:
            outs = _run_batched(view, self.sw_batch_size, network, *args, **kwargs)
            split = getattr(getattr(network, "module", network), "split_levels", None)
            if split is not None:  # single-tensor form (FlatHistogramNet): (N, K, sum r*r) back to levels
                outs = [split(o) if isinstance(o, torch.Tensor) and o.ndim == 3 else o for o in outs]
            pmf = torch.cat([self._levels_to_pmf(o) for o in outs])
        r0, r1 = pmf.shape[2:]
        dense = _overlap_average(pmf, (b, nh, nw), (p0 // r0, p1 // r1), (s0, s1), (ph[0], h, pw[0], w))
        return _like_input(dense, inputs)


class CenterPixelInferer(Inferer):
    """Dense class probabilities from a centre-pixel patch classifier (the patch-classification baseline).

    A window of ``roi_size`` is centred on every ``stride``-th pixel (centre at index ``P // 2``, the MONAI
    ``SpatialCrop`` convention) and classified; ``stride=1`` is the exact per-pixel method (one network call per
    pixel), larger strides classify a sub-grid of pixels and interpolate the probabilities bilinearly in between.
    When the network has ``dense_forward(image, stride)`` (a one-level
    :py:class:`~monai_ext.networks.nets.HistogramNet`) and ``stride`` is a multiple of its ``feature_stride``, the
    convolutions are shared between the overlapping windows (``use_dense_forward``).

    Args:
        roi_size: window side(s) ``P``.
        stride: centre spacing in pixels (default 1: every pixel).
        sw_batch_size: number of windows per network call.
        padding_mode: ``"reflect"``, ``"replicate"`` or ``"constant"``.
        use_dense_forward: use the network's ``dense_forward`` when it has one and the stride allows it.

    Raises:
        ValueError: for bad ``roi_size``, ``stride``, ``sw_batch_size`` or ``padding_mode``.

    Example::

        >>> import torch
        >>> net = lambda x: torch.zeros(x.shape[0], 3)
        >>> CenterPixelInferer(roi_size=9, stride=4)(torch.rand(1, 1, 20, 21), net).shape
        torch.Size([1, 3, 20, 21])
    """

    def __init__(self, roi_size: Sequence[int] | int, stride: Sequence[int] | int = 1, sw_batch_size: int = 256,
                 padding_mode: str = "reflect", use_dense_forward: bool = True) -> None:
        super().__init__()
        self.roi_size, self.stride = _check_roi_stride(roi_size, stride, 1)
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}.")
        if padding_mode not in ("reflect", "replicate", "constant"):
            raise ValueError(f"padding_mode must be 'reflect', 'replicate' or 'constant', got {padding_mode!r}.")
        self.sw_batch_size = sw_batch_size
        self.padding_mode = padding_mode
        self.use_dense_forward = bool(use_dense_forward)

    @staticmethod
    def _logits(out: Any) -> torch.Tensor:
        t = out if isinstance(out, torch.Tensor) else list(out)[0]
        if t.ndim == 4 and t.shape[2:] == (1, 1):
            t = t[:, :, 0, 0]
        if t.ndim != 2:
            raise ValueError(f"network must return class logits (N, K) or (N, K, 1, 1), got {tuple(t.shape)}.")
        return t.float()

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """
        Args:
            inputs: image batch ``(B, C, H, W)``.
            network: callable mapping ``(N, C, P0, P1)`` windows to logits ``(N, K)`` (or a list whose first item
                is ``(N, K)`` / ``(N, K, 1, 1)``, e.g. a one-level ``HistogramNet``).
            args: positional arguments passed on to ``network``.
            kwargs: keyword arguments passed on to ``network``.

        Returns:
            class probabilities ``(B, K, H, W)``.

        Raises:
            ValueError: for a non-4D input or network outputs of the wrong form.
        """
        _check_inputs(inputs)
        (p0, p1), (s0, s1) = self.roi_size, self.stride
        b, _, h, w = inputs.shape
        n0, n1 = -(-(h - 1) // s0) + 1, -(-(w - 1) // s1) + 1  # centres 0, s, ..., reaching the last pixel
        ph = (p0 // 2, (n0 - 1) * s0 - (h - 1) + p0 - 1 - p0 // 2)
        pw = (p1 // 2, (n1 - 1) * s1 - (w - 1) + p1 - 1 - p1 // 2)
        pads = (pw[0], pw[1], ph[0], ph[1])
        x = F.pad(inputs, pads, mode=_pad_mode(self.padding_mode, pads, (h, w)))
        dense_fn = None if (args or kwargs) else _dense_forward_fn(network, self.roi_size, self.stride,
                                                                     self.use_dense_forward)
        if dense_fn is not None:
            first = dense_fn(x, s0)[0]  # (B, n0, n1, K, 1, 1) for a one-level network
            logits = self._logits(first.reshape((-1,) + tuple(first.shape[3:])))
        else:
            view = _windows(x, self.roi_size, self.stride)
            outs = _run_batched(view, self.sw_batch_size, network, *args, **kwargs)
            logits = torch.cat([self._logits(o) for o in outs])
        prob = torch.softmax(logits, 1).reshape(b, n0, n1, -1).permute(0, 3, 1, 2)
        if (s0, s1) != (1, 1):
            size = ((n0 - 1) * s0 + 1, (n1 - 1) * s1 + 1)
            prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=True) if min(n0, n1) > 1 else (
                F.interpolate(prob, size=size, mode="nearest"))
        return _like_input(prob[:, :, :h, :w].contiguous(), inputs)
