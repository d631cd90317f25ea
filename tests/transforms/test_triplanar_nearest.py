"""TriPlanarPatch: one nearest-neighbour rounding rule (half up) on every path, and the reordered plane-2 gather."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.transforms import TriPlanarPatch

RNG = np.random.default_rng(7)
VOL = RNG.random((2, 13, 14, 15)).astype(np.float32)
#: frame axes 0, 1, 2 -> voxel axes 1, 2, 0 (a cyclic permutation: exact, no rounding in the positions)
CYCLIC = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
HALF_CENTRES = np.array([[6.5, 7.0, 7.5], [4.5, 4.5, 4.5], [8.0, 9.5, 10.5], [3.5, 2.5, 5.0]])


def half_up_reference(vol: np.ndarray, centers: np.ndarray, frame: np.ndarray, p: int, cval: float) -> np.ndarray:
    """Loops over points, planes and samples: voxel floor(position + 0.5), ``cval`` outside the volume."""
    axes = ((1, 2), (0, 2), (0, 1))
    c_num = vol.shape[0]
    out = np.zeros((len(centers), 3 * c_num, p, p), dtype=vol.dtype)
    for n, ctr in enumerate(centers):
        for k, (a, b) in enumerate(axes):
            for i in range(p):
                for j in range(p):
                    pos = ctr + (i - p // 2) * frame[:, a] + (j - p // 2) * frame[:, b]
                    idx = np.floor(pos + 0.5).astype(int)
                    inside = all(0 <= idx[d] < vol.shape[d + 1] for d in range(3))
                    for c in range(c_num):
                        out[n, k * c_num + c, i, j] = vol[(c, *idx)] if inside else cval
    return out


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_half_integer_centres_agree_between_gather_and_index_paths(padding_mode, as_torch):
    """The cyclic frame samples the same positions as the plain frame, on the other (index) path, with the planes
    permuted: (plane 0, 1, 2) of the rotated call = (plane 1^T, plane 2^T, plane 0) of the plain call."""
    vol = torch.from_numpy(VOL) if as_torch else VOL
    t = TriPlanarPatch(patch_size=6, mode="nearest", padding_mode=padding_mode, cval=-1.0)
    centres = np.concatenate([HALF_CENTRES, [[0.5, 12.5, 14.5], [-0.5, 6.5, 7.0]]])  # also across the borders
    plain = np.asarray(t(vol, centres))
    rotated = np.asarray(t(vol, centres, rotation=CYCLIC))
    c = VOL.shape[0]
    planes = [plain[:, k * c : (k + 1) * c] for k in range(3)]
    expected = np.concatenate(
        [planes[1].transpose(0, 1, 3, 2), planes[2].transpose(0, 1, 3, 2), planes[0]], axis=1
    )
    np.testing.assert_array_equal(rotated, expected)


@pytest.mark.parametrize(
    "kwargs, frame",
    [
        ({}, np.eye(3)),  # gather path
        ({"rotation": CYCLIC}, CYCLIC),  # index path
        ({"scale": 2.0}, 2.0 * np.eye(3)),  # index path, two voxels per step
        ({"rotation": CYCLIC, "scale": 0.5}, 0.5 * CYCLIC),  # half-voxel steps: every other sample is a tie
    ],
)
def test_nearest_rounds_every_sample_half_up(kwargs, frame):
    out = TriPlanarPatch(patch_size=5, mode="nearest", cval=-1.0)(VOL, HALF_CENTRES, **kwargs)
    np.testing.assert_array_equal(out, half_up_reference(VOL, HALF_CENTRES, frame, 5, -1.0))


def test_nearest_index_path_is_exact_for_large_integers():
    labels = RNG.integers(2**40, 2**40 + 100, size=(1, 12, 12, 12))
    out = TriPlanarPatch(patch_size=4, mode="nearest")(labels, HALF_CENTRES[:3] - 1, rotation=CYCLIC)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, half_up_reference(labels, HALF_CENTRES[:3] - 1, CYCLIC, 4, 0))


def test_nearest_error_padding_judges_the_rounded_indices():
    t = TriPlanarPatch(patch_size=4, mode="nearest", padding_mode="error")
    # the window of a centre at 2.4 starts at voxel 0 once rounded: inside; at 1.4 it starts at -1: outside
    t(VOL, [[2.4, 6.0, 7.0]], rotation=CYCLIC)
    with pytest.raises(ValueError, match=r"padding_mode='error'.*1 centre\(s\).*centre index \[0\]"):
        t(VOL, [[1.4, 6.0, 7.0]], rotation=CYCLIC)


@pytest.mark.parametrize("as_torch", [False, True])
def test_reordered_plane_2_gather_keeps_the_callers_order(as_torch):
    vol = RNG.integers(-1000, 1000, size=(2, 40, 36, 150)).astype(np.int32)
    centres = np.stack([RNG.integers(4, s - 4, size=300) for s in vol.shape[1:]], 1)
    centres[10] = centres[20]  # a repeated centre
    out = TriPlanarPatch(patch_size=8)(torch.from_numpy(vol) if as_torch else vol, centres)
    h = 4
    for n, (x, y, z) in enumerate(centres):
        np.testing.assert_array_equal(np.asarray(out[n, 4:]), vol[:, x - h : x + h, y - h : y + h, z])
        np.testing.assert_array_equal(np.asarray(out[n, :2]), vol[:, x, y - h : y + h, z - h : z + h])
