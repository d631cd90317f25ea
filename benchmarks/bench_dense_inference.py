"""Dense inference speed of the three iPS colony methods on one large image, side by side (megapixels per second).

Methods (the networks of the ``ips_histogram`` bundle, untrained: speed does not depend on the weights):

* ``histogram``: ``HistogramNet`` + ``RegionHistogramInferer`` (windows every ``stride`` pixels, convolutions shared
  through ``HistogramNet.dense_forward``), and the same without sharing (windows cropped and batched);
* ``centre-pixel``: the patch-classification baseline, one window per pixel (``CenterPixelInferer(stride=1)``).
  One window per pixel makes its cost linear in the number of pixels, so it is timed on a band of ``--rows`` full
  rows and reported per pixel (the whole image would take hours on a CPU);
* ``fcn``: MONAI ``BasicUNet`` with MONAI's ``SlidingWindowInferer`` (windows of the patch size, 50 % overlap, as
  the bundle evaluates it), and on the whole image in one call (side divisible by 16).

Run::

    python benchmarks/bench_dense_inference.py            # 1024 x 1024, patch 64, stride 16
    python benchmarks/bench_dense_inference.py --size 512 --rows 4   # quicker
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet

from monai_ext.inferers import CenterPixelInferer, RegionHistogramInferer
from monai_ext.networks.nets import HistogramNet


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
