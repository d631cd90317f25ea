"""Tests for the dictionary forms TriPlanarPatchd and RandTriPlanarPatchd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_ext.transforms import (
    RandTriPlanarPatchD,
    RandTriPlanarPatchd,
    RandTriPlanarPatchDict,
    TriPlanarPatch,
    TriPlanarPatchD,
    TriPlanarPatchd,
    TriPlanarPatchDict,
    rotation_from_angles,
)

RNG = np.random.default_rng(7)
IMG = RNG.random((1, 24, 24, 24)).astype(np.float32)
LAB = RNG.integers(0, 4, size=(1, 24, 24, 24)).astype(np.int64)
POINTS = np.array([[5.0, 5.0, 5.0], [18.0, 6.0, 12.0], [12.0, 18.0, 18.0]])
POINT_LABELS = np.array([1, 2, 3])


def slice_patch(vol: np.ndarray, ctr, p: int) -> np.ndarray:
    """(3C, p, p) patch by plain slicing, integer centre inside the volume."""
    x, y, z = (int(v) for v in ctr)
    h = p // 2
    planes = [
        vol[:, x, y - h : y - h + p, z - h : z - h + p],
        vol[:, x - h : x - h + p, y, z - h : z - h + p],
        vol[:, x - h : x - h + p, y - h : y - h + p, z],
    ]
    return np.concatenate(planes, 0)


def test_aliases():
    assert TriPlanarPatchD is TriPlanarPatchDict is TriPlanarPatchd
    assert RandTriPlanarPatchD is RandTriPlanarPatchDict is RandTriPlanarPatchd


@pytest.mark.parametrize("as_torch", [False, True])
def test_dict_form_matches_array_form_per_key(as_torch):
    conv = torch.from_numpy if as_torch else np.asarray
    data = {"image": conv(IMG), "label": conv(LAB), "centers": POINTS, "other": "kept"}
    out = TriPlanarPatchd(["image", "label"], patch_size=6, mode=["bilinear", "nearest"])(data)
    assert out["other"] == "kept" and out["centers"] is POINTS
    for key, vol in (("image", IMG), ("label", LAB)):
        expected = np.stack([slice_patch(vol, c, 6) for c in POINTS])
        np.testing.assert_array_equal(np.asarray(out[key]), expected)
        assert isinstance(out[key], torch.Tensor if as_torch else np.ndarray)
    assert np.asarray(out["label"]).dtype == np.int64


def test_dict_form_missing_keys():
    with pytest.raises(KeyError, match="centers_key 'ctr' not found"):
        TriPlanarPatchd("image", centers_key="ctr")({"image": IMG})
    with pytest.raises(KeyError, match="label"):
        TriPlanarPatchd(["image", "label"])({"image": IMG, "centers": POINTS})
    out = TriPlanarPatchd(["image", "label"], patch_size=4, allow_missing_keys=True)({"image": IMG, "centers": POINTS})
    assert out["image"].shape == (3, 3, 4, 4) and "label" not in out


def make_data(image=IMG):
    return {"image": image, "label": LAB, "points": POINTS, "point_labels": POINT_LABELS, "case": "c1"}


@pytest.mark.parametrize("background_prob", [0.0, 0.5, 1.0])
def test_random_samples_are_patches_at_recorded_centres(background_prob):
    t = RandTriPlanarPatchd(
        ["image", "label"],
        num_samples=12,
        patch_size=6,
        background_prob=background_prob,
        min_background_distance=6.0,
        background_margin=3,
        mode=["bilinear", "nearest"],
    )
    t.set_random_state(3)
    samples = t(make_data())
    assert isinstance(samples, list) and len(samples) == 12
    for s in samples:
        assert s["case"] == "c1" and s["points"] is not POINTS  # deep copies of the other items
        assert s["image"].shape == (3, 6, 6) and s["label"].shape == (3, 6, 6)
        ctr = s["patch_center"]
        np.testing.assert_array_equal(s["image"], slice_patch(IMG, ctr, 6))
        np.testing.assert_array_equal(s["label"], slice_patch(LAB, ctr, 6))
        dist = np.linalg.norm(POINTS - ctr, axis=1)
        if s["patch_class"] == 0:
            assert dist.min() >= 6.0
            assert np.all(ctr >= 3) and np.all(ctr <= 24 - 1 - 3)
        else:
            assert POINT_LABELS[np.argmin(dist)] == s["patch_class"] and dist.min() == 0.0
    n_bg = sum(s["patch_class"] == 0 for s in samples)
    if background_prob == 0.0:
        assert n_bg == 0
    if background_prob == 1.0:
        assert n_bg == 12


def test_seeded_reproducibility():
    kwargs = dict(num_samples=6, patch_size=5, jitter=2.0, rotate_range=0.4, scale_range=0.2, min_background_distance=4)
    a = RandTriPlanarPatchd("image", **kwargs).set_random_state(11)(make_data())
    b = RandTriPlanarPatchd("image", **kwargs).set_random_state(11)(make_data())
    c = RandTriPlanarPatchd("image", **kwargs).set_random_state(12)(make_data())
    for sa, sb in zip(a, b, strict=True):
        np.testing.assert_array_equal(sa["image"], sb["image"])
        np.testing.assert_array_equal(sa["patch_center"], sb["patch_center"])
        assert sa["patch_class"] == sb["patch_class"]
    assert any(not np.array_equal(sa["patch_center"], sc["patch_center"]) for sa, sc in zip(a, c, strict=True))


def test_jitter_stays_inside_the_ball_and_rotation_is_applied():
    t = RandTriPlanarPatchd(
        "image", num_samples=40, patch_size=5, background_prob=0.0, jitter=3.0, rotate_range=0.5, scale_range=0.1
    )
    t.set_random_state(5)
    samples = t(make_data())
    offsets = [np.linalg.norm(POINTS - s["patch_center"], axis=1).min() for s in samples]
    assert max(offsets) <= 3.0 + 1e-5 and min(offsets) > 0
    # recompute every patch with the drawn rotation and scale through the array transform
    expected = TriPlanarPatch(patch_size=5)(IMG, t._centers, rotation=t._rotation, scale=t._scale)
    np.testing.assert_allclose(np.stack([s["image"] for s in samples]), expected, atol=1e-6)
    angles_free = TriPlanarPatch(patch_size=5)(IMG, t._centers)
    assert not np.allclose(expected, angles_free)
    assert np.allclose(np.linalg.det(t._rotation), 1.0)


def test_world_points_and_metatensor_meta():
    affine = torch.tensor([[2.0, 0, 0, -20], [0, 2.0, 0, 5], [0, 0, 2.0, 1], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(torch.from_numpy(IMG), affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    world = (affine.numpy() @ np.c_[POINTS, np.ones(3)].T).T[:, :3]
    data = make_data(img)
    data["points"] = world
    # 10 mm = 5 voxels of 2 mm: the distance is measured in mm through the affine
    t = RandTriPlanarPatchd("image", num_samples=8, patch_size=4, coords="world", min_background_distance=10.0)
    t.set_random_state(0)
    samples = t(data)
    for s in samples:
        assert isinstance(s["image"], MetaTensor) and s["image"].meta["filename_or_obj"] == "ct.nii.gz"
        torch.testing.assert_close(s["image"].meta["triplanar_centers"][0].float(), torch.as_tensor(s["patch_center"]))
        vox_dist = np.linalg.norm(POINTS - s["patch_center"], axis=1).min()
        if s["patch_class"] == 0:
            assert 2.0 * vox_dist >= 10.0
        else:
            assert vox_dist == 0.0


def test_no_points_means_all_background():
    data = make_data()
    data["points"], data["point_labels"] = np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)
    samples = RandTriPlanarPatchd("image", num_samples=5, patch_size=4, background_prob=0.0).set_random_state(1)(data)
    assert [s["patch_class"] for s in samples] == [0] * 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples must be a positive integer"),
        ({"background_prob": 1.5}, r"background_prob must be in \[0, 1\]"),
        ({"jitter": -1.0}, "must be non-negative"),
        ({"rotate_range": -0.1}, "rotate_range must be non-negative"),
        ({"scale_range": 1.0}, r"scale_range must be in \[0, 1\)"),
        ({"coords": "ijk"}, "coords must be one of"),
        ({"max_background_tries": 0}, "max_background_tries must be >= 1"),
    ],
)
def test_random_bad_options(kwargs, match):
    args = {"num_samples": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        RandTriPlanarPatchd("image", **args)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"points": POINTS[:, :2]}, ValueError, r"data\['points'\] must have shape \(M, 3\)"),
        ({"point_labels": POINT_LABELS[:2]}, ValueError, r"has 2 labels for 3 points"),
        ({"point_labels": np.array([1.5, 2.0, 3.0])}, ValueError, "must hold integer labels"),
        ({"image": IMG[0]}, ValueError, r"must be channel-first \(C, X, Y, Z\)"),
    ],
)
def test_random_bad_inputs(change, error, match):
    data = {**make_data(), **change}
    with pytest.raises(error, match=match):
        RandTriPlanarPatchd("image", num_samples=2, patch_size=4).set_random_state(0)(data)


def test_random_missing_keys_and_impossible_background():
    data = make_data()
    del data["point_labels"]
    with pytest.raises(KeyError, match="'point_labels' not found"):
        RandTriPlanarPatchd("image", num_samples=2)(data)
    t = RandTriPlanarPatchd("image", num_samples=3, background_prob=1.0, min_background_distance=100.0)
    with pytest.raises(ValueError, match="could not draw 3 background centres.*min_background_distance=100.0"):
        t.set_random_state(0)(make_data())
    with pytest.raises(ValueError, match="background_margin=12 leaves no voxel"):
        RandTriPlanarPatchd("image", num_samples=1, background_prob=1.0, background_margin=12)(make_data())


def test_rotation_helper():
    r = rotation_from_angles(RNG.uniform(-3, 3, size=(5, 3)))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    with pytest.raises(ValueError, match=r"angles must have shape \(3,\) or \(N, 3\)"):
        rotation_from_angles([0.1, 0.2])
