"""Tests for TriPlanarPatch: naive slicing / scipy references, padding rules, world coordinates, types, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from scipy.ndimage import map_coordinates

from monai_ext.transforms import TriPlanarPatch, rotation_from_angles

RNG = np.random.default_rng(1234)
VOL = RNG.random((2, 13, 14, 15)).astype(np.float32)


def naive_slices(vol: np.ndarray, centers: np.ndarray, p: int, pad: str = "constant", cval: float = 0.0) -> np.ndarray:
    """Plain slicing of a padded copy, one point and one plane at a time (window [c - p//2, c - p//2 + p))."""
    h = p // 2
    kw = {"constant_values": cval} if pad == "constant" else {}
    padded = np.pad(vol, [(0, 0)] + [(p, p)] * 3, mode=pad, **kw)
    c_num = vol.shape[0]
    out = np.zeros((len(centers), 3 * c_num, p, p), dtype=vol.dtype)
    for n, (x, y, z) in enumerate(np.asarray(centers) + p):
        for c in range(c_num):
            out[n, 0 * c_num + c] = padded[c, x, y - h : y - h + p, z - h : z - h + p]
            out[n, 1 * c_num + c] = padded[c, x - h : x - h + p, y, z - h : z - h + p]
            out[n, 2 * c_num + c] = padded[c, x - h : x - h + p, y - h : y - h + p, z]
    return out


def scipy_reference(vol: np.ndarray, positions: np.ndarray, order: int, mode: str, cval: float = 0.0) -> np.ndarray:
    """Interpolate every channel at voxel positions (..., 3) with scipy (independent of grid_sample)."""
    coords = positions.reshape(-1, 3).T
    vals = [map_coordinates(v.astype(np.float64), coords, order=order, mode=mode, cval=cval) for v in vol]
    return np.stack(vals, 0).reshape((vol.shape[0],) + positions.shape[:-1])


def plane_positions(centers: np.ndarray, frame: np.ndarray, p: int) -> np.ndarray:
    """Sample positions (N, 3, p, p, 3) of the three planes, built point by point with loops."""
    axes = ((1, 2), (0, 2), (0, 1))
    out = np.zeros((len(centers), 3, p, p, 3))
    for n, ctr in enumerate(centers):
        for k, (a, b) in enumerate(axes):
            for i in range(p):
                for j in range(p):
                    out[n, k, i, j] = ctr + (i - p // 2) * frame[n][:, a] + (j - p // 2) * frame[n][:, b]
    return out


def to_channels(ref: np.ndarray) -> np.ndarray:
    """(C, N, 3, p, p) -> (N, 3C, p, p) with channel plane * C + c."""
    c, n, _, p, _ = ref.shape
    return ref.transpose(1, 2, 0, 3, 4).reshape(n, 3 * c, p, p)


INSIDE = np.array([[6, 7, 7], [4, 4, 4], [8, 9, 10]])
NEAR_BORDER = np.array([[0, 0, 0], [12, 13, 14], [1, 12, 3], [6, -2, 7], [15, 7, 7]])


@pytest.mark.parametrize("p", [1, 4, 5, 8])
@pytest.mark.parametrize("as_torch", [False, True])
def test_integer_centres_equal_plain_slicing(p, as_torch):
    img = torch.from_numpy(VOL) if as_torch else VOL
    out = TriPlanarPatch(patch_size=p)(img, INSIDE)
    assert isinstance(out, torch.Tensor if as_torch else np.ndarray)
    out = np.asarray(out)
    assert out.shape == (3, 6, p, p) and out.dtype == np.float32
    np.testing.assert_array_equal(out, naive_slices(VOL, INSIDE, p))


@pytest.mark.parametrize(
    "padding_mode, np_mode",
    [("zeros", "constant"), ("border", "edge"), ("reflection", "reflect")],
)
@pytest.mark.parametrize("cval", [0.0, -3.0])
def test_padding_rules_match_numpy_pad(padding_mode, np_mode, cval):
    t = TriPlanarPatch(patch_size=6, padding_mode=padding_mode, cval=cval)
    out = t(VOL, NEAR_BORDER)
    expected = naive_slices(VOL, NEAR_BORDER, 6, np_mode, cval if padding_mode == "zeros" else 0.0)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "padding_mode, scipy_mode",
    [("zeros", "grid-constant"), ("border", "nearest"), ("reflection", "mirror")],
)
@pytest.mark.parametrize("cval", [0.0, 2.5])
def test_bilinear_fractional_centres_match_scipy(padding_mode, scipy_mode, cval):
    centers = np.array([[6.3, 7.5, 7.1], [0.2, 12.7, 13.9], [11.5, 1.25, 3.0]])
    p = 5
    out = TriPlanarPatch(patch_size=p, padding_mode=padding_mode, cval=cval)(VOL, centers)
    pos = plane_positions(centers, np.stack([np.eye(3)] * 3), p)
    ref = scipy_reference(VOL, pos, order=1, mode=scipy_mode, cval=cval if padding_mode == "zeros" else 0.0)
    np.testing.assert_allclose(out, to_channels(ref), atol=1e-5)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_gather_path_equals_resampling_path(padding_mode):
    # the same integer centres through both code paths: direct gather vs grid_sample
    t = TriPlanarPatch(patch_size=7, padding_mode=padding_mode, cval=1.5)
    fast = t(VOL, NEAR_BORDER)
    slow = t._resample(
        torch.from_numpy(VOL), torch.as_tensor(NEAR_BORDER, dtype=torch.float64), None, "bilinear", VOL.shape[1:]
    )
    np.testing.assert_allclose(fast, slow.numpy(), atol=1e-5)


def test_nearest_rounds_centres():
    centers = np.array([[6.4, 7.6, 7.0], [3.2, 4.9, 10.1]])
    out = TriPlanarPatch(patch_size=4, mode="nearest")(VOL, centers)
    np.testing.assert_array_equal(out, naive_slices(VOL, np.rint(centers).astype(int), 4))


def test_integer_image_keeps_dtype_and_nearest_is_exact():
    labels = RNG.integers(0, 5, size=(1, 12, 12, 12)).astype(np.int16)
    out = TriPlanarPatch(patch_size=4)(labels, INSIDE)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, naive_slices(labels, INSIDE, 4))
    rot = rotation_from_angles([0.3, -0.2, 0.5])
    near = TriPlanarPatch(patch_size=4, mode="nearest")(labels, INSIDE, rotation=rot)
    assert near.dtype == np.int16 and set(np.unique(near)) <= set(range(5))
    lin = TriPlanarPatch(patch_size=4, mode="bilinear")(labels, INSIDE + 0.5)
    assert lin.dtype == np.float32


def test_rotation_matches_scipy():
    centers = np.array([[6.0, 7.0, 7.0], [5.5, 6.2, 8.1]])
    rot = rotation_from_angles(np.array([[0.4, -0.3, 1.1], [0.0, 0.7, -0.2]])).numpy()
    p = 6
    out = TriPlanarPatch(patch_size=p, padding_mode="border")(VOL, centers, rotation=rot)
    ref = scipy_reference(VOL, plane_positions(centers, rot, p), order=1, mode="nearest")
    np.testing.assert_allclose(out, to_channels(ref), atol=1e-5)


def test_rotation_by_quarter_turn_about_axis_0():
    # a quarter turn about axis 0 keeps plane 0 in place but swaps and flips its in-plane axes
    rot = rotation_from_angles([np.pi / 2, 0.0, 0.0])
    c = np.array([[6, 7, 7]])
    out = TriPlanarPatch(patch_size=5, mode="nearest")(VOL, c, rotation=rot)
    # frame axis 1 -> +axis 2, frame axis 2 -> -axis 1: row i, column j samples (x, y - j, z + i)
    x, y, z = c[0]
    i = np.arange(5) - 2
    expected = VOL[0, x, y - i[None, :], z + i[:, None]]
    np.testing.assert_array_equal(out[0, 0], expected)


def test_extent_mm_on_anisotropic_volume_matches_scipy():
    spacing = np.array([0.5, 1.0, 2.0])
    affine = np.diag(np.r_[spacing, 1.0])
    img = MetaTensor(torch.from_numpy(VOL), affine=torch.as_tensor(affine))
    p, extent = 4, 6.0
    centers = np.array([[6.0, 7.0, 7.0], [3.0, 5.0, 9.0]])
    out = TriPlanarPatch(patch_size=p, extent_mm=extent)(img, centers)
    frame = np.stack([np.diag(extent / p / spacing)] * len(centers))
    ref = scipy_reference(VOL, plane_positions(centers, frame, p), order=1, mode="grid-constant")
    np.testing.assert_allclose(out.numpy(), to_channels(ref), atol=1e-5)


def test_scale_multiplies_step():
    out = TriPlanarPatch(patch_size=4)(VOL, INSIDE, scale=2.0)
    pos = plane_positions(INSIDE.astype(float), np.stack([2 * np.eye(3)] * 3), 4)
    np.testing.assert_allclose(out, to_channels(scipy_reference(VOL, pos, 1, "grid-constant")), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    axis=st.integers(0, 2),
    p=st.integers(1, 6),
    centers=st.lists(st.tuples(*[st.floats(0, 12, allow_nan=False)] * 3), min_size=1, max_size=4),
)
def test_volume_constant_along_an_axis(axis, p, centers):
    """Constant along ``axis``: plane ``axis`` depends only on the in-plane coordinates; the two other planes are
    constant along their rows/columns that run along ``axis``."""
    base = RNG.random((13, 13)).astype(np.float32)
    vol = np.expand_dims(base, axis).repeat(13, axis)[None]
    ctr = np.asarray(centers)
    out = TriPlanarPatch(patch_size=p, padding_mode="border")(vol, ctr)
    shifted = ctr.copy()
    shifted[:, axis] = 0.0
    moved = TriPlanarPatch(p, padding_mode="border")(vol, shifted)
    for k, (row_axis, _) in enumerate(((1, 2), (0, 2), (0, 1))):
        if k == axis:
            np.testing.assert_allclose(out[:, k], moved[:, k], atol=1e-5)
        else:
            along = 1 if row_axis == axis else 2  # rows run along the first in-plane axis, columns along the second
            np.testing.assert_allclose(out[:, k], np.take(out[:, k], [0], axis=along).repeat(p, along), atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    centers=st.lists(st.tuples(*[st.floats(-2, 15, allow_nan=False)] * 3), min_size=1, max_size=4),
    mode=st.sampled_from(["bilinear", "nearest"]),
)
def test_world_and_voxel_centres_agree_under_identity_affine(centers, mode):
    ctr = np.asarray(centers)
    img = MetaTensor(torch.from_numpy(VOL))  # default identity affine
    world = TriPlanarPatch(patch_size=4, coords="world", mode=mode)(img, ctr)
    voxel = TriPlanarPatch(patch_size=4, coords="voxel", mode=mode)(VOL, ctr)
    np.testing.assert_allclose(world.numpy(), voxel, atol=1e-6)


def test_world_centres_use_the_affine():
    affine = torch.tensor([[2.0, 0, 0, -10], [0, 0.5, 0, 3], [0, 0, 1.5, 7], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(torch.from_numpy(VOL), affine=affine)
    world = (affine.numpy() @ np.c_[INSIDE, np.ones(len(INSIDE))].T).T[:, :3]
    out = TriPlanarPatch(patch_size=5, coords="world")(img, world)
    np.testing.assert_allclose(out.numpy(), naive_slices(VOL, INSIDE, 5), atol=1e-5)


def test_metatensor_metadata():
    affine = torch.diag(torch.tensor([0.7, 0.7, 1.2, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.from_numpy(VOL), affine=affine, meta={"filename_or_obj": "vol.nii.gz", "study": "x"})
    out = TriPlanarPatch(patch_size=4)(img, INSIDE)
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "vol.nii.gz" and out.meta["study"] == "x"
    torch.testing.assert_close(out.meta["source_affine"], affine)
    torch.testing.assert_close(out.meta["triplanar_centers"], torch.as_tensor(INSIDE, dtype=torch.float64))
    torch.testing.assert_close(out.affine, torch.eye(3, dtype=torch.float64))
    assert img.meta["filename_or_obj"] == "vol.nii.gz" and "source_affine" not in img.meta  # input untouched


def test_torch_centres_and_float64_volume():
    vol64 = torch.from_numpy(VOL.astype(np.float64))
    out = TriPlanarPatch(patch_size=3)(vol64, torch.as_tensor(INSIDE))
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), naive_slices(VOL.astype(np.float64), INSIDE, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_follows_input():
    img = torch.from_numpy(VOL).cuda()
    out = TriPlanarPatch(patch_size=4)(img, INSIDE)
    assert out.is_cuda
    np.testing.assert_array_equal(out.cpu().numpy(), naive_slices(VOL, INSIDE, 4))
    rot = rotation_from_angles([0.1, 0.2, 0.3])
    out_r = TriPlanarPatch(patch_size=4)(img, INSIDE, rotation=rot)
    ref_r = TriPlanarPatch(patch_size=4)(VOL, INSIDE, rotation=rot)
    np.testing.assert_allclose(out_r.cpu().numpy(), ref_r, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patch_size": 0}, "patch_size must be a positive integer"),
        ({"patch_size": 3.5}, "patch_size must be a positive integer"),
        ({"extent_mm": -1.0}, "extent_mm must be positive"),
        ({"coords": "index"}, "coords must be one of"),
        ({"mode": "bicubic"}, "mode must be one of"),
        ({"padding_mode": "wrap"}, "padding_mode must be one of"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TriPlanarPatch(**kwargs)


@pytest.mark.parametrize(
    "img, centers, kwargs, match",
    [
        (VOL[0], INSIDE, {}, r"img must be channel-first \(C, X, Y, Z\), got shape \(13, 14, 15\)"),
        (VOL[None], INSIDE, {}, r"img must be channel-first"),
        (VOL, INSIDE[:, :2], {}, r"centers must have shape \(N, 3\), got \(3, 2\)"),
        (VOL, INSIDE[0], {}, r"centers must have shape \(N, 3\)"),
        (VOL, np.array([[1.0, np.nan, 2.0]]), {}, "centers must be finite"),
        (VOL, INSIDE, {"rotation": np.eye(4)}, r"rotation must have shape \(3, 3\) or \(3, 3, 3\)"),
        (VOL, INSIDE, {"rotation": 2 * np.eye(3)}, "rotation must be orthonormal"),
        (VOL, INSIDE, {"scale": np.ones(2)}, r"scale must be a scalar or have shape \(3,\)"),
        (VOL, INSIDE, {"scale": -1.0}, "scale must be positive"),
        (VOL, INSIDE, {"mode": "area"}, "mode must be one of"),
    ],
)
def test_bad_inputs(img, centers, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TriPlanarPatch(patch_size=4)(img, centers, **kwargs)


@pytest.mark.parametrize(
    "centers, kwargs",
    [
        (np.array([[6, 7, 7], [0, 7, 7]]), {}),  # gather path: window starts at -2 on axis 0
        (np.array([[6, 7, 7], [6, 7, 14]]), {}),  # window ends past the last voxel on axis 2
        (np.array([[6.5, 7, 7], [6, 7, 13.5]]), {}),  # resampling path
        (np.array([[2, 7, 7]]), {"rotation": rotation_from_angles([0.0, 0.0, np.pi / 4])}),  # fits only unrotated
    ],
)
def test_padding_error_names_the_centres(centers, kwargs):
    t = TriPlanarPatch(patch_size=5, padding_mode="error")
    with pytest.raises(ValueError, match=r"padding_mode='error'.*reach outside the volume.*centre index \["):
        t(VOL, centers, **kwargs)


def test_padding_error_accepts_patches_touching_the_border():
    t = TriPlanarPatch(patch_size=5, padding_mode="error")
    c = np.array([[2, 2, 2], [10, 11, 12]])
    np.testing.assert_array_equal(t(VOL, c), naive_slices(VOL, c, 5))
