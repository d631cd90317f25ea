"""Side-by-side speed of the monai_ext transforms against their references, printed as ratios (reference / ours).

(a) Region histograms per sample, the way a training pipeline calls them: 512 dict samples, each a 64x64 label patch
    (3 classes, levels (1, 2, 4)), through ``monai.transforms.Compose`` + ``monai.data.DataLoader`` (batch 32,
    ``num_workers=0``), once with ``RegionHistogramd`` and once with the same Compose around a naive transform (a
    numpy loop, one ``np.bincount`` per sub-region). A third pipeline whose transform only writes three empty arrays
    measures the floor that Dataset + Compose + collate cost on their own. Also the bare per-call times of the two
    transforms (no pipeline), for numpy labels, labels with ``ignore_index=255`` and MetaTensor labels.
(b) Region histograms on a batch: 256 label patches 64x64 in one call (``spatial_dims=2``) vs the per-patch loop.
(c) Tri-planar patches: 1024 centres, 32x32 planes, from a 192^3 float32 volume; ours (axis-aligned gather path) vs
    MONAI ``SpatialCrop`` per plane per point, concatenated, and vs a plain numpy slicing loop; what bounds the
    gather (plane 2); the resampling path (grid_sample); and the CUDA paths when a GPU is present.

Run: ``python benchmarks/bench_transforms.py`` (``--quick`` for a smoke run with fewer repeats; ``--threads N`` for N
torch threads, default 1 so that every contender uses one core; ``--clock cpu|wall``, default ``cpu`` with one thread:
the CPU time of this process, which does not charge a contender for the time other jobs on a shared machine held the
core, ``wall`` otherwise). Every output is checked against its reference before it is timed. Contenders are timed
in interleaved rounds (each called twice in a row per round, the faster call kept) and the best is reported, which is
robust to the background load of a shared machine; ratios compare contenders timed side by side in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from _machine import describe_machine, load_line
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, MapTransform, SpatialCrop

from monai_ext.transforms import RegionHistogram, RegionHistogramd, TriPlanarPatch, rotation_from_angles

LEVELS = (1, 2, 4)
NUM_CLASSES = 3
#: the clock of every CPU timing, set by ``--clock`` (CUDA timings always use the wall clock)
CLOCK: Callable[[], float] = time.perf_counter


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, calls: int = 2, clock: Callable[[], float] | None = None
) -> dict[str, float]:
    """Best time (s) of each function over ``repeats`` rounds that call each one ``calls`` times in turn.

    Interleaving exposes every contender to the same background load; calling each one twice in a row and keeping the
    faster call gives each the same warm caches, whichever contender ran before it.
    """
    clock = clock or CLOCK
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            for _ in range(calls):
                t0 = clock()
                fn()
                best[name] = min(best[name], clock() - t0)
    return best


def per_call(fn: Callable[[], object], n: int) -> Callable[[], None]:
    """``n`` calls of ``fn`` as one timed unit (for calls of a few microseconds)."""

    def run() -> None:
        for _ in range(n):
            fn()

    return run


def ratio_line(label: str, t_ref: float, t_ours: float, unit: float = 1e3, suffix: str = "ms") -> str:
    return f"{label:46s} {t_ref * unit:9.2f} vs {t_ours * unit:8.2f} {suffix}   ratio {t_ref / t_ours:6.1f}x"


# ----------------------------------------------------------------------------------------------------------------
# region histograms


def histogram_loop(labels: np.ndarray, num_classes: int, grid_sizes: tuple[int, ...]) -> list[list[np.ndarray]]:
    """Naive reference: for each (1, H, W) patch of ``labels`` and each level, one ``np.bincount`` per sub-region."""
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


class NaiveRegionHistogramd(MapTransform):
    """The same dictionary transform written the plain way: numpy view of the label, then ``histogram_loop``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(d[key].as_tensor() if isinstance(d[key], MetaTensor) else d[key])
            for r, pmf in zip(LEVELS, histogram_loop(label[None], NUM_CLASSES, LEVELS)[0], strict=True):
                d[f"{key}_hist_{r}"] = pmf
        return d


class EmptyHistogramd(MapTransform):
    """Writes three empty pmf arrays: the cost of the pipeline around a histogram transform."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for r in LEVELS:
                d[f"{key}_hist_{r}"] = np.zeros((NUM_CLASSES, r, r), dtype=np.float32)
        return d


def epoch(data: list[dict[str, Any]], transform: MapTransform, batch_size: int = 32) -> list[dict[str, Any]]:
    loader = DataLoader(Dataset(data, Compose([transform])), batch_size=batch_size, num_workers=0)
    return list(loader)


def bench_histograms_per_sample(rng: np.random.Generator, reps: int) -> None:
    n = 512
    print(
        f"\n== (a) region histograms per sample: {n} dict samples, label 1x64x64, levels {LEVELS}, {NUM_CLASSES} "
        "classes, Compose + DataLoader (batch 32, num_workers=0) =="
    )
    data = [{"label": rng.integers(0, NUM_CLASSES, size=(1, 64, 64))} for _ in range(n)]
    ours = RegionHistogramd("label", NUM_CLASSES, LEVELS)
    naive, empty = NaiveRegionHistogramd("label"), EmptyHistogramd("label")
    for got, ref in zip(epoch(data, ours), epoch(data, naive), strict=True):
        for r in LEVELS:
            assert torch.equal(got[f"label_hist_{r}"], ref[f"label_hist_{r}"]), f"level {r} differs from the loop"
    t = interleaved(
        {"ours": lambda: epoch(data, ours), "naive": lambda: epoch(data, naive), "empty": lambda: epoch(data, empty)},
        max(1, reps // 3),
    )
    us = 1e6 / n
    print(f"{'pipeline with an empty transform (floor)':46s} {t['empty'] * us:9.2f} us/sample")
    print(ratio_line("pipeline: naive loop vs ours, per sample", t["naive"], t["ours"], us, "us"))
    print(
        f"{'  same, transform time only (minus the floor)':46s} {(t['naive'] - t['empty']) * us:9.2f} vs "
        f"{(t['ours'] - t['empty']) * us:8.2f} us   ratio {(t['naive'] - t['empty']) / (t['ours'] - t['empty']):6.1f}x"
    )

    label = data[0]["label"]
    label_255 = label.copy()
    label_255[0, :20, :20] = 255
    meta = MetaTensor(torch.from_numpy(label), meta={"filename_or_obj": "patch_000.png", "spatial_shape": (64, 64)})
    hist, hist_255 = RegionHistogram(NUM_CLASSES, LEVELS), RegionHistogram(NUM_CLASSES, LEVELS, ignore_index=255)
    calls = 200
    t = interleaved(
        {
            "ours": per_call(lambda: hist(label), calls),
            "loop": per_call(lambda: histogram_loop(label[None], NUM_CLASSES, LEVELS), calls),
            "ours_255": per_call(lambda: hist_255(label_255), calls),
            "ours_torch": per_call(lambda: hist(meta.as_tensor()), calls),
            "ours_meta": per_call(lambda: hist(meta), calls),
        },
        reps,
    )
    us = 1e6 / calls
    print(ratio_line("bare call, numpy label: loop vs ours", t["loop"], t["ours"], us, "us"))
    print(ratio_line("  ignore_index=255 (400 ignored pixels)", t["loop"], t["ours_255"], us, "us"))
    print(ratio_line("  torch label", t["loop"], t["ours_torch"], us, "us"))
    print(ratio_line("  MetaTensor label (3 MetaTensors out)", t["loop"], t["ours_meta"], us, "us"))


def bench_histograms_batched(rng: np.random.Generator, reps: int) -> None:
    print(f"\n== (b) region histograms, one batch: 256 label patches 64x64, levels {LEVELS}, {NUM_CLASSES} classes ==")
    labels = rng.integers(0, NUM_CLASSES, size=(256, 1, 64, 64))
    labels_255 = labels.copy()
    labels_255[:, 0, :20, :20] = 255
    hist = RegionHistogram(NUM_CLASSES, LEVELS, spatial_dims=2)
    hist_255 = RegionHistogram(NUM_CLASSES, LEVELS, ignore_index=255, spatial_dims=2)
    for hist_, labels_ in ((hist, labels), (hist_255, labels_255)):
        got = hist_(labels_)
        for level, r in enumerate(LEVELS):
            ref = [RegionHistogram(NUM_CLASSES, r, hist_.ignore_index)(lab)[0] for lab in labels_[:16]]
            assert np.array_equal(got[level][:16], np.stack(ref)), f"level {r} differs from per-patch calls"
        if hist_.ignore_index is None:
            ref = histogram_loop(labels_, NUM_CLASSES, LEVELS)
            for level, r in enumerate(LEVELS):
                assert np.array_equal(got[level], np.stack([x[level] for x in ref])), f"level {r} differs"
    t = interleaved(
        {
            "ours": lambda: hist(labels),
            "loop": lambda: histogram_loop(labels, NUM_CLASSES, LEVELS),
            "ours_255": lambda: hist_255(labels_255),
            "ours_torch": lambda: hist(torch.from_numpy(labels)),
        },
        reps,
    )
    print(ratio_line("per-patch loop vs ours (one batched call)", t["loop"], t["ours"]))
    print(ratio_line("  ignore_index=255", t["loop"], t["ours_255"]))
    print(ratio_line("  torch labels", t["loop"], t["ours_torch"]))


# ----------------------------------------------------------------------------------------------------------------
# tri-planar patches


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
            crop = SpatialCrop(roi_center=[x, y, z], roi_size=size)(vol)
            planes.append(crop.squeeze(k + 1))
        patches.append(torch.cat(planes, 0))
    return torch.stack(patches)


def bench_triplanar(rng: np.random.Generator, reps: int) -> None:
    size, p, n = 192, 32, 1024
    print(f"\n== (c) tri-planar: {n} centres, {p}x{p}, volume {size}^3 float32 ==")
    vol = rng.random((1, size, size, size), dtype=np.float32)
    vol_t = torch.from_numpy(vol)
    centers = rng.integers(p // 2, size - p // 2, size=(n, 3))
    ours = TriPlanarPatch(patch_size=p)
    ref = numpy_loop(vol, centers, p)
    assert np.array_equal(ours(vol, centers), ref), "gather path differs from the numpy loop"
    assert np.array_equal(ours(vol_t, centers).numpy(), ref), "gather path (torch) differs from the numpy loop"
    assert np.array_equal(monai_crop_loop(vol_t, centers[:8], p).numpy(), ref[:8]), "SpatialCrop reference differs"
    t = interleaved(
        {
            "np": lambda: ours(vol, centers),
            "torch": lambda: ours(vol_t, centers),
            "loop": lambda: numpy_loop(vol, centers, p),
        },
        reps,
    )
    # the SpatialCrop loop takes about 100 times longer: fewer rounds, interleaved with ours to share the load
    tc = interleaved(
        {"crop": lambda: monai_crop_loop(vol_t, centers, p), "np": lambda: ours(vol, centers)},
        max(1, reps // 5),
        calls=1,
    )
    t_ours = min(t["np"], tc["np"])
    print(f"{'ours, gather path (numpy in/out)':46s} {t_ours * 1e3:9.2f} ms")
    print(f"{'ours, gather path (torch in/out)':46s} {t['torch'] * 1e3:9.2f} ms")
    t_loop = t["loop"]
    print(ratio_line("(b) numpy slicing loop vs ours", t_loop, t["np"]))
    # each contender's best estimate: the SpatialCrop loop's best of its rounds, ours' best over all its calls
    print(ratio_line("(a) MONAI SpatialCrop composition vs ours", tc["crop"], t_ours))

    # what bounds the gather: plane 2 (orthogonal to the last, contiguous axis) is a strided gather
    x, y, z = (torch.from_numpy(centers[:, i]) for i in range(3))
    h = p // 2
    order = torch.argsort((z // 64 * size + x) * size + y)
    t = interleaved(
        {
            "p0": lambda: vol_t.unfold(2, p, 1).unfold(3, p, 1)[:, x, y - h, z - h],
            "p2": lambda: vol_t.unfold(1, p, 1).unfold(2, p, 1)[:, x - h, y - h, z],
            "p2_sorted": lambda: vol_t.unfold(1, p, 1).unfold(2, p, 1)[:, x[order] - h, y[order] - h, z[order]],
            "write": lambda: torch.empty(n, 3, p, p).fill_(1.0),
        },
        reps,
    )
    print(f"  plane 0 alone (contiguous rows)                {t['p0'] * 1e3:7.2f} ms")
    print(f"  plane 2 alone (strided gather), callers' order {t['p2'] * 1e3:7.2f} ms")
    print(f"  plane 2 alone, centres sorted by (z//64, x, y) {t['p2_sorted'] * 1e3:7.2f} ms")
    print(f"  writing the {n * 3 * p * p * 4 / 1e6:.1f} MB output alone               {t['write'] * 1e3:7.2f} ms")

    print("\n== (c) tri-planar resampling path (grid_sample, bilinear) and nearest index path ==")
    aniso = MetaTensor(vol_t, affine=torch.diag(torch.tensor([0.8, 0.8, 2.0, 1.0], dtype=torch.float64)))
    mm = TriPlanarPatch(patch_size=p, extent_mm=32.0)
    near = TriPlanarPatch(patch_size=p, mode="nearest")
    rot = rotation_from_angles(rng.uniform(-0.5, 0.5, size=(n, 3)))
    t = interleaved(
        {
            "frac": lambda: ours(vol_t, centers + 0.5),
            "mm": lambda: mm(aniso, centers),
            "rot": lambda: ours(vol_t, centers, rotation=rot),
            "near_rot": lambda: near(vol_t, centers, rotation=rot),
        },
        max(1, reps // 4),
        calls=1,
    )
    print(ratio_line("fractional centres, unit step: (a) vs this", tc["crop"], t["frac"]))
    print(ratio_line("32 mm extent on 0.8x0.8x2 mm: (a) vs this", tc["crop"], t["mm"]))
    print(ratio_line("random rotation per point: (a) vs this", tc["crop"], t["rot"]))
    print(ratio_line("  same, mode='nearest' (index gather)", tc["crop"], t["near_rot"]))

    if not torch.cuda.is_available():
        print("\n(CUDA not available: GPU paths not measured)")
        return
    print(f"\n== (c) tri-planar on CUDA ({torch.cuda.get_device_name()}), CPU contenders from above ==")
    dev = torch.device("cuda")
    vol_c = vol_t.to(dev)
    assert torch.equal(ours(vol_c, centers).cpu(), torch.from_numpy(ref)), "CUDA gather path differs"

    def sync(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            torch.cuda.synchronize()

        return run

    t = interleaved(
        {
            "gather": sync(lambda: ours(vol_c, centers)),
            "rot": sync(lambda: ours(vol_c, centers, rotation=rot)),
            "near_rot": sync(lambda: near(vol_c, centers, rotation=rot)),
        },
        reps,
        clock=time.perf_counter,
    )
    print(ratio_line("gather path: numpy loop vs CUDA", t_loop, t["gather"]))
    print(ratio_line("gather path: SpatialCrop vs CUDA", tc["crop"], t["gather"]))
    print(ratio_line("rotation path: SpatialCrop vs CUDA", tc["crop"], t["rot"]))
    print(ratio_line("nearest rotation path: SpatialCrop vs CUDA", tc["crop"], t["near_rot"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the loops use one core)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default=None,
        help="cpu: CPU time of this process (default with 1 thread: a contender preempted by other jobs on a shared "
        "machine is not charged for the wait); wall: elapsed time (default with several threads)",
    )
    args = parser.parse_args()
    reps = 2 if args.quick else 25
    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    global CLOCK
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, numpy {np.__version__}; timings: {clock} clock (--clock)")
    print(describe_machine())
    start = time.perf_counter()
    bench_histograms_per_sample(rng, reps)
    bench_histograms_batched(rng, reps)
    bench_triplanar(rng, reps)
    print(f"\nwhole run {time.perf_counter() - start:.0f} s; at the end: {load_line()}")


if __name__ == "__main__":
    main()
