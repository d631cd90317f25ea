"""Side-by-side speed of the monai_ext transforms against their references, printed as ratios.

Tri-planar patches: 1024 centres, 32x32 planes, from a 192^3 float32 volume; ours vs (a) MONAI ``SpatialCrop`` per
plane per point, concatenated, and (b) a plain numpy slicing loop. The axis-aligned (gather) path is compared with
both; the resampling path (physical mm extent, random rotation) is reported separately, and so is the CUDA path
when a GPU is available. Region histograms: 256 label patches 64x64, levels (1, 2, 4); ours (one batched call) vs a
per-patch Python loop.

Run: ``python benchmarks/bench_transforms.py`` (``--quick`` for a smoke run with fewer repeats; ``--threads N``
for N torch threads, default 1 so that every contender uses one core). Each contender is timed as the best of
interleaved repeats, which is robust to the background load of a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialCrop

from monai_ext.transforms import RegionHistogram, TriPlanarPatch, rotation_from_angles


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time (s) of ``repeats`` calls after one warm-up call."""
    return interleaved({"f": fn}, repeats)["f"]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time (s) of each function over ``repeats`` rounds that call them in turn.

    Interleaving exposes every contender to the same background load of a shared machine; the minimum estimates
    the uncontended cost.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def numpy_loop(vol: np.ndarray, centers: np.ndarray, p: int) -> np.ndarray:
    h = p // 2
    out = np.empty((len(centers), 3 * vol.shape[0], p, p), dtype=vol.dtype)
    for n, (x, y, z) in enumerate(centers):
        out[n, 0] = vol[0, x, y - h : y - h + p, z - h : z - h + p]
        out[n, 1] = vol[0, x - h : x - h + p, y, z - h : z - h + p]
        out[n, 2] = vol[0, x - h : x - h + p, y - h : y - h + p, z]
    return out


def monai_crop_loop(vol: torch.Tensor, centers: np.ndarray, p: int) -> torch.Tensor:
    patches = []
    for x, y, z in centers:
        planes = []
        for k, size in enumerate(([1, p, p], [p, 1, p], [p, p, 1])):
            # SpatialCrop window: [c - size // 2, c - size // 2 + size)
            centre = [x, y, z]
            crop = SpatialCrop(roi_center=centre, roi_size=size)(vol)
            planes.append(crop.squeeze(k + 1))
        patches.append(torch.cat(planes, 0))
    return torch.stack(patches)


def histogram_loop(labels: np.ndarray, num_classes: int, grid_sizes: tuple[int, ...]) -> list[np.ndarray]:
    outs = []
    for lab in labels:
        levels = []
        for r in grid_sizes:
            side = lab.shape[-1] // r
            pmf = np.zeros((num_classes, r, r), dtype=np.float32)
            for i in range(r):
                for j in range(r):
                    block = lab[0, i * side : (i + 1) * side, j * side : (j + 1) * side]
                    counts = np.bincount(block.ravel(), minlength=num_classes)[:num_classes]
                    if counts.sum():
                        pmf[:, i, j] = counts / counts.sum()
            levels.append(pmf)
        outs.append(levels)
    return outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the loops use one core)")
    args = parser.parse_args()
    reps = 2 if args.quick else 25
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    size, p, n = 192, 32, 1024
    vol = rng.random((1, size, size, size), dtype=np.float32)
    vol_t = torch.from_numpy(vol)
    centers = rng.integers(p // 2, size - p // 2, size=(n, 3))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (load inflates timings)")

    print(f"\n== tri-planar: {n} centres, {p}x{p}, volume {size}^3 float32 ==")
    ours = TriPlanarPatch(patch_size=p)
    ref = numpy_loop(vol, centers, p)
    got = ours(vol, centers)
    assert np.array_equal(got, ref), "gather path differs from the numpy loop"
    assert np.array_equal(monai_crop_loop(vol_t, centers[:8], p).numpy(), ref[:8]), "SpatialCrop reference differs"
    t = interleaved(
        {
            "np": lambda: ours(vol, centers),
            "torch": lambda: ours(vol_t, centers),
            "loop": lambda: numpy_loop(vol, centers, p),
        },
        reps,
    )
    t_ours_np, t_ours_t, t_loop = t["np"], t["torch"], t["loop"]
    t_crop = best_of(lambda: monai_crop_loop(vol_t, centers, p), max(1, reps // 5))
    print(f"ours (numpy in/out)        {t_ours_np * 1e3:9.2f} ms")
    print(f"ours (torch in/out)        {t_ours_t * 1e3:9.2f} ms")
    print(f"numpy slicing loop (b)     {t_loop * 1e3:9.2f} ms   ratio b/ours {t_loop / t_ours_np:6.2f}x")
    print(f"MONAI SpatialCrop loop (a) {t_crop * 1e3:9.2f} ms   ratio a/ours {t_crop / t_ours_np:6.1f}x")

    # what bounds the time: plane 2 (orthogonal to the last, contiguous axis) is a strided gather
    x, y, z = (torch.from_numpy(centers[:, i]) for i in range(3))
    h = p // 2
    vol_zxy = vol_t.permute(0, 3, 1, 2).contiguous()
    t = interleaved(
        {
            "p0": lambda: vol_t.unfold(2, p, 1).unfold(3, p, 1)[:, x, y - h, z - h],
            "p2": lambda: vol_t.unfold(1, p, 1).unfold(2, p, 1)[:, x - h, y - h, z],
            "p2_cached": lambda: vol_zxy.unfold(2, p, 1).unfold(3, p, 1)[:, z, x - h, y - h],
            "write": lambda: torch.empty(n, 3, p, p).fill_(1.0),
        },
        reps,
    )
    t_p0, t_p2, t_p2_cached, t_write = t["p0"], t["p2"], t["p2_cached"], t["write"]
    t_transpose = best_of(lambda: vol_t.permute(0, 3, 1, 2).contiguous(), max(1, reps // 3))
    print(f"  plane 0 alone (contiguous rows)  {t_p0 * 1e3:7.2f} ms")
    print(f"  plane 2 alone (strided gather)   {t_p2 * 1e3:7.2f} ms")
    print(f"  plane 2 from a cached (Z,X,Y) copy {t_p2_cached * 1e3:5.2f} ms")
    print(f"  making that transposed copy      {t_transpose * 1e3:7.2f} ms")
    saved = t_p2 - t_p2_cached
    if saved > 0:
        print(f"  -> the cached copy pays off after ~{t_transpose / saved:.1f} calls of {n} centres on the same volume")
    print(f"  writing the {n * 3 * p * p * 4 / 1e6:.1f} MB output alone  {t_write * 1e3:7.2f} ms")

    print("\n== tri-planar resampling path (grid_sample, bilinear) ==")
    aniso = MetaTensor(vol_t, affine=torch.diag(torch.tensor([0.8, 0.8, 2.0, 1.0], dtype=torch.float64)))
    mm = TriPlanarPatch(patch_size=p, extent_mm=32.0)
    rot = rotation_from_angles(rng.uniform(-0.5, 0.5, size=(n, 3)))
    t = interleaved(
        {
            "frac": lambda: ours(vol_t, centers + 0.5),
            "mm": lambda: mm(aniso, centers),
            "rot": lambda: ours(vol_t, centers, rotation=rot),
        },
        max(1, reps // 3),
    )
    t_frac, t_mm, t_rot = t["frac"], t["mm"], t["rot"]
    print(f"fractional centres, unit step     {t_frac * 1e3:9.2f} ms   ratio a/this {t_crop / t_frac:6.1f}x")
    print(f"32 mm extent on 0.8x0.8x2 mm      {t_mm * 1e3:9.2f} ms   ratio a/this {t_crop / t_mm:6.1f}x")
    print(f"random rotation per point         {t_rot * 1e3:9.2f} ms   ratio a/this {t_crop / t_rot:6.1f}x")

    if torch.cuda.is_available():
        print("\n== tri-planar on CUDA ==")
        dev = torch.device("cuda")
        vol_c = vol_t.to(dev)

        def sync(fn: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                fn()
                torch.cuda.synchronize()

            return run

        t_cg = best_of(sync(lambda: ours(vol_c, centers)), reps)
        t_cr = best_of(sync(lambda: ours(vol_c, centers, rotation=rot)), reps)
        print(f"gather path   {t_cg * 1e3:9.3f} ms   ratio b/this {t_loop / t_cg:6.1f}x")
        print(f"rotation path {t_cr * 1e3:9.3f} ms   ratio a/this {t_crop / t_cr:6.1f}x")
    else:
        print("\n(CUDA not available: GPU path not measured)")

    print("\n== region histograms: 256 label patches 64x64, levels (1, 2, 4), 3 classes ==")
    labels = rng.integers(0, 3, size=(256, 1, 64, 64))
    hist = RegionHistogram(num_classes=3, grid_sizes=(1, 2, 4), spatial_dims=2)
    got_h = hist(labels)
    ref_h = histogram_loop(labels, 3, (1, 2, 4))
    for level, r in enumerate((1, 2, 4)):
        assert np.allclose(got_h[level], np.stack([x[level] for x in ref_h]), atol=1e-6), f"level {r} differs"
    t = interleaved({"ours": lambda: hist(labels), "loop": lambda: histogram_loop(labels, 3, (1, 2, 4))}, reps)
    t_h, t_hl = t["ours"], t["loop"]
    print(f"ours (batched)        {t_h * 1e3:9.2f} ms")
    print(f"per-patch Python loop {t_hl * 1e3:9.2f} ms   ratio loop/ours {t_hl / t_h:6.1f}x")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
