"""Dense inference speed of the three iPS colony methods on one large image, side by side (megapixels per second).

Methods (the networks of the ``ips_histogram`` bundle, untrained: speed does not depend on the weights):

* ``histogram``: ``HistogramNet`` + ``RegionHistogramInferer`` (windows every ``stride`` pixels, convolutions shared
  through ``HistogramNet.dense_forward``), and the same without sharing (windows cropped and batched);
* ``centre-pixel``: the patch-classification baseline, one window per pixel (``CenterPixelInferer(stride=1)``).
  One window per pixel makes its cost linear in the number of pixels, so it is timed on a band of ``--rows`` full
  rows and reported per pixel (the whole image would take hours on a CPU);
* ``fcn``: MONAI ``BasicUNet`` with MONAI's ``SlidingWindowInferer`` (windows of the patch size, 50 % overlap, as
  the bundle evaluates it), and on the whole image in one call (side divisible by 16).

Then the overlap-average step of ``RegionHistogramInferer`` (spreading every window's sub-region pmfs over its
pixels and averaging the windows), as the ``ips_histogram`` bundle serves it (``FlatHistogramNet``, patch 64,
levels 1/2/4, stride 4, a ``--ips_hw`` image, 660 x 550 by default as in the MONAI Label request timings): the
separable transposed-convolution version against the ``torch.nn.functional.fold`` version it replaced (kept below
as ``fold_overlap_average``, the same reference ``tests/inferers`` checks equality against), the step alone and the
whole inferer call, best of ``--repeats`` (at least 3) with the two versions alternating.

Run::

    python benchmarks/bench_dense_inference.py            # 1024 x 1024, patch 64, stride 16
    python benchmarks/bench_dense_inference.py --size 512 --rows 4   # quicker
    python benchmarks/bench_dense_inference.py --only overlap --threads 2   # the overlap-average comparison only
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
import torch.nn.functional as F
from _machine import describe_machine, load_line
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet

import monai_ext.inferers.region_histogram as rh
from monai_ext.inferers import CenterPixelInferer, RegionHistogramInferer
from monai_ext.networks.nets import FlatHistogramNet, HistogramNet


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fold_overlap_average(pmf, grid, sub, stride, crop):
    """The overlap-average before the separable version (``RegionHistogramInferer`` until Dec 2026), same arguments
    as :func:`monai_ext.inferers.region_histogram._overlap_average`: every sub-region pmf repeated to block
    resolution, the windows summed with ``F.fold``, divided by the window count, upsampled by the block size."""
    b, nh, nw = grid
    k, r0, r1 = pmf.shape[1:]
    (c0, c1), (s0, s1) = sub, stride
    p0, p1 = c0 * r0, c1 * r1
    g0, g1 = math.gcd(s0, c0), math.gcd(s1, c1)
    pmf = pmf.repeat_interleave(c0 // g0, 2).repeat_interleave(c1 // g1, 3)
    kh, kw = p0 // g0, p1 // g1
    cols = pmf.reshape(b, nh * nw, k * kh * kw).transpose(1, 2)
    out_size = (((nh - 1) * s0 + p0) // g0, ((nw - 1) * s1 + p1) // g1)
    summed = F.fold(cols, out_size, (kh, kw), stride=(s0 // g0, s1 // g1))
    count = F.fold(torch.ones_like(cols[:1, : kh * kw]), out_size, (kh, kw), stride=(s0 // g0, s1 // g1))
    dense = (summed / count).repeat_interleave(g0, 2).repeat_interleave(g1, 3)
    top, height, left, width = crop
    return dense[:, :, top : top + height, left : left + width].contiguous()


def overlap_average_comparison(hw: tuple[int, int], stride: int, repeats: int) -> None:
    """Separable vs fold overlap-average on the ips_histogram bundle's network and setting (see the module doc)."""
    separable = rh._overlap_average
    torch.manual_seed(0)
    net = FlatHistogramNet(2, 1, 3, 64, (1, 2, 4), (16, 32, 64)).eval()
    image = torch.randn(1, 1, *hw)
    inferer = RegionHistogramInferer(64, stride)
    captured = {}

    def capture(*a):
        captured["args"] = a
        return separable(*a)

    versions = {"fold (before)": fold_overlap_average, "separable (now)": separable}
    step, call = {n: float("inf") for n in versions}, {n: float("inf") for n in versions}
    try:
        with torch.no_grad():
            rh._overlap_average = capture
            inferer(image, net)  # warm-up, and the step's arguments
            for _ in range(max(3, repeats)):
                for name, fn in versions.items():
                    step[name] = min(step[name], _best_time(lambda fn=fn: fn(*captured["args"]), 1))
                    rh._overlap_average = fn
                    call[name] = min(call[name], _best_time(lambda: inferer(image, net), 1))
            diff = (fold_overlap_average(*captured["args"]) - separable(*captured["args"])).abs().max().item()
    finally:
        rh._overlap_average = separable
    print(f"\nRegionHistogramInferer overlap-average, {hw[0]} x {hw[1]} image, FlatHistogramNet patch 64, levels "
          f"1/2/4, stride {stride}, {torch.get_num_threads()} threads (best of {max(3, repeats)}); max |difference| "
          f"{diff:.2g}")
    print("| | fold (before) | separable (now) | ratio |")
    print("|---|---|---|---|")
    for label, t in (("overlap-average step", step), ("whole inferer call", call)):
        print(f"| {label} | {t['fold (before)']:.3f} s | {t['separable (now)']:.3f} s | "
              f"{t['fold (before)'] / t['separable (now)']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--patch", type=int, default=64, help="patch (window) side")
    parser.add_argument("--stride", type=int, default=16, help="window stride of the histogram method")
    parser.add_argument("--rows", type=int, default=8, help="rows timed for the per-pixel centre-pixel method")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats (best is kept) after a warm-up")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64], help="HistogramNet stage widths")
    parser.add_argument("--fcn_features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16],
                        help="BasicUNet features (the bundle's default is 8 8 16 32 64 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--ips_hw", type=int, nargs=2, default=[550, 660],
                        help="height and width of the overlap-average comparison's image")
    parser.add_argument("--ips_stride", type=int, default=4, help="stride of the overlap-average comparison")
    parser.add_argument("--only", choices=["all", "methods", "overlap"], default="all", help="which part to run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe_machine(), flush=True)
    if args.only in ("all", "overlap"):
        overlap_average_comparison(tuple(args.ips_hw), args.ips_stride, args.repeats)
    if args.only == "overlap":
        print(load_line())
        return
    torch.manual_seed(0)
    image = torch.randn(1, 1, args.size, args.size)
    band = image[:, :, : args.rows]
    hist = HistogramNet(2, 1, 3, args.patch, (1, 2, 4), args.channels).eval()
    centre = HistogramNet(2, 1, 3, args.patch, (1,), args.channels).eval()
    fcn = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=tuple(args.fcn_features)).eval()
    small = image[:, :, : 2 * args.patch, : 2 * args.patch]
    with torch.no_grad():  # warm-up of every code path on a small crop (lazy initialisation, allocator)
        RegionHistogramInferer(args.patch, args.stride)(small, hist)
        RegionHistogramInferer(args.patch, args.stride, use_dense_forward=False)(small, hist)
        CenterPixelInferer(args.patch, 1, sw_batch_size=512)(small[:, :, :2], centre)
        SlidingWindowInferer(args.patch, sw_batch_size=16, overlap=0.5, mode="gaussian")(small, fcn)
        fcn(small)
    runs = {
        "histogram (shared convolutions)": (
            lambda: RegionHistogramInferer(args.patch, args.stride)(image, hist), image.numel()),
        "histogram (cropped windows)": (
            lambda: RegionHistogramInferer(args.patch, args.stride, use_dense_forward=False)(image, hist),
            image.numel()),
        "centre-pixel, one window per pixel": (
            lambda: CenterPixelInferer(args.patch, 1, sw_batch_size=512)(band, centre), band.numel()),
        "fcn (BasicUNet, sliding window)": (
            lambda: SlidingWindowInferer(args.patch, sw_batch_size=16, overlap=0.5, mode="gaussian")(image, fcn),
            image.numel()),
        "fcn (BasicUNet, whole image at once)": (lambda: fcn(image), image.numel()),
    }
    results = {}
    with torch.no_grad():
        for name, (fn, pixels) in runs.items():
            seconds = _best_time(fn, args.repeats)
            results[name] = pixels / 1e6 / seconds
            print(f"{name:40s} {results[name]:10.4g} Mpx/s  ({pixels} px in {seconds:.3f} s)", flush=True)
    ref = results["histogram (shared convolutions)"]
    print(f"\nimage {args.size}x{args.size}, patch {args.patch}, histogram stride {args.stride}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| method | Mpx/s | histogram (shared) is faster by |")
    print("|---|---|---|")
    for name, mpx in results.items():
        print(f"| {name} | {mpx:.4g} | {ref / mpx:.3g}x |")
    print(load_line())


if __name__ == "__main__":
    main()
