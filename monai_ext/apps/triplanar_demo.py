"""Tri-planar patch demo: a seeded synthetic vessel volume, 2.5D patches at a few points, a PNG grid.

Run::

    python -m monai_ext.apps.triplanar_demo --output_dir outputs/demo [--seed 0] [--patch_size 32]

The volume holds a few bright tubes (vessels) and blobs (aneurysm-like bulges) over noise. Patches are taken with
:py:class:`monai_ext.transforms.TriPlanarPatch` at tube points, blob centres and one background point; the grid
shows one row per point and one column per plane (orthogonal to axis 0, 1, 2), the 2.5D input of the aneurysm
study (Roth et al., MICCAI 2014).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from monai_ext.transforms import TriPlanarPatch  # noqa: E402

__all__ = ["CELL_INCHES", "DPI", "make_volume", "main"]

#: size of one grid cell in the PNG (inches) and its resolution: each cell is ``CELL_INCHES * DPI`` pixels.
CELL_INCHES = 1.5
DPI = 100


def _segment_distance(grid: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of every voxel (grid ``(3, X, Y, Z)``) to the segment ``a``-``b``."""
    ab = b - a
    rel = grid - a.reshape(3, 1, 1, 1)
    t = np.clip(np.tensordot(ab, rel, axes=(0, 0)) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(rel - t * ab.reshape(3, 1, 1, 1), axis=0)


def make_volume(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A seeded ``(1, size, size, size)`` float32 volume with 3 tubes and 2 blobs, and the points to show.

    Args:
        size: side of the cubic volume in voxels.
        seed: seed of the numpy generator.

    Returns:
        ``(volume, points, names)``: points ``(6, 3)`` integer voxel coordinates (3 tube midpoints, 2 blob centres,
        1 background point far from every structure) and their names.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"))
    vol = rng.normal(0.0, 0.05, size=(size,) * 3).astype(np.float32)
    points, names = [], []
    lo, hi = 0.15 * size, 0.85 * size
    for i in range(3):
        a, b = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
        radius = rng.uniform(1.5, 3.0)
        vol += (_segment_distance(grid, a, b) <= radius).astype(np.float32)
        points.append(np.rint((a + b) / 2))
        names.append(f"tube {i}")
    for i in range(2):
        c = rng.uniform(lo, hi, 3)
        sigma = rng.uniform(2.0, 4.0)
        vol += np.exp(-np.sum((grid - c.reshape(3, 1, 1, 1)) ** 2, 0) / (2 * sigma**2)).astype(np.float32)
        points.append(np.rint(c))
        names.append(f"blob {i}")
    flat = np.argmin(np.abs(vol).ravel() + 10.0 * (_border_weight(size).ravel()))
    points.append(np.array(np.unravel_index(flat, vol.shape), dtype=float))
    names.append("background")
    return vol[None], np.asarray(points, dtype=np.int64), names


def _border_weight(size: int) -> np.ndarray:
    """1 near the faces, 0 in the middle half: keeps the background point away from the border."""
    ax = np.abs(np.arange(size) - (size - 1) / 2) > size / 4
    return (ax[:, None, None] | ax[None, :, None] | ax[None, None, :]).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> Path:
    """Build the volume, extract the patches, write ``triplanar_patches.png`` and return its path."""
    parser = argparse.ArgumentParser(description="Tri-planar 2.5D patches from a synthetic vessel volume.")
    parser.add_argument("--output_dir", default="outputs/demo", help="folder for the PNG (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    parser.add_argument("--patch_size", type=int, default=32, help="side of each plane in voxels")
    parser.add_argument("--volume_size", type=int, default=64, help="side of the cubic volume in voxels")
    args = parser.parse_args(argv)
    if args.patch_size < 1 or args.volume_size < 8:
        parser.error("--patch_size must be >= 1 and --volume_size >= 8")

    vol, points, names = make_volume(args.volume_size, args.seed)
    patches = TriPlanarPatch(patch_size=args.patch_size, padding_mode="zeros")(vol, points)

    rows, cols = len(points), 3
    fig, axes = plt.subplots(rows, cols, figsize=(cols * CELL_INCHES, rows * CELL_INCHES), dpi=DPI, squeeze=False)
    for r in range(rows):
        for k in range(cols):
            ax = axes[r, k]
            ax.imshow(patches[r, k], cmap="gray", vmin=float(vol.min()), vmax=float(vol.max()), origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"plane {k} (axis {k})", fontsize=8)
            if k == 0:
                ax.set_ylabel(f"{names[r]}\n{tuple(int(v) for v in points[r])}", fontsize=7)
    fig.suptitle(f"tri-planar {args.patch_size}x{args.patch_size} patches, seed {args.seed}", fontsize=9)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "triplanar_patches.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {rows}x{cols} tri-planar patch grid to {path.resolve()}")
    return path


if __name__ == "__main__":
    main()
