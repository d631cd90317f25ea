"""RandAffineElasticWarpd: points follow the image (blob centres), identity, other output grids, determinism;
resample_to_grid against np.roll."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_ext.transforms import RandAffineElasticWarpd, apply_matrix, resample_to_grid

TRUE = np.array([[20.0, 30.0, 40.0], [40.0, 25.0, 30.0], [30.0, 44.0, 22.0]])


def _blobs(shape=(64, 64, 64), affine=None):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    vol = sum(np.exp(-((g - p) ** 2).sum(-1) / 4.0) for p in TRUE)
    return MetaTensor(torch.as_tensor(vol[None], dtype=torch.float32),
                      affine=torch.as_tensor(np.eye(4) if affine is None else affine))


def _centres(img):
    vol = np.asarray(img[0])
    lab, n = ndimage.label(vol > 0.2)
    com = np.array(ndimage.center_of_mass(vol, lab, range(1, n + 1)))
    return apply_matrix(np.asarray(img.affine, dtype=np.float64), com)  # world mm


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("elastic", [0.0, 1.5])
def test_points_follow_the_image(seed, elastic):
    affine = np.diag([1.5, 1.0, 1.2, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    t = RandAffineElasticWarpd("image", points_keys="points", rotate_range=0.26, scale_range=0.1,
                               translate_range=6.0, elastic_mm=elastic, elastic_sigma_mm=15.0, warp_key="warp")
    t.set_random_state(seed)
    img = _blobs(affine=affine)
    world = apply_matrix(affine, TRUE)
    out = t({"image": img, "points": world})
    found = _centres(out["image"])
    # match each moved point to the nearest blob centre of the warped image
    d = np.linalg.norm(out["points"][:, None] - found[None], axis=-1)
    assert d.min(1).max() < 0.25  # mm: a quarter voxel (thresholded centres of mass of resampled blobs)
    if elastic == 0.0:  # with no field, the points are exactly the inverse affine of the drawn matrix
        np.testing.assert_allclose(apply_matrix(out["warp"], out["points"]), world, atol=1e-9)


def test_identity_and_nan_points():
    t = RandAffineElasticWarpd(["image"], points_keys=["points"])
    img = _blobs()
    pts = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    out = t({"image": img, "points": pts})
    np.testing.assert_allclose(out["image"], img, atol=1e-5)
    np.testing.assert_allclose(out["points"][0], pts[0], atol=1e-9)
    assert np.isnan(out["points"][1]).all()


def test_other_output_grid_and_points_array_shapes():
    crop = np.eye(4)
    crop[:3, 3] = [10.0, 12.0, 14.0]
    t = RandAffineElasticWarpd("image", points_keys="raters", spatial_size=(30, 36, 40), output_affine=crop)
    img = _blobs()
    raters = np.stack([apply_matrix(np.eye(4), TRUE)] * 2)
    out = t({"image": img, "raters": raters})
    np.testing.assert_allclose(out["image"][0], img[0, 10:40, 12:48, 14:54], atol=1e-5)
    np.testing.assert_allclose(out["image"].affine, crop)
    assert out["raters"].shape == (2, 3, 3)


def test_same_seed_same_warp_and_errors():
    a = RandAffineElasticWarpd("image", rotate_range=0.3, elastic_mm=1.0).set_random_state(5)
    b = RandAffineElasticWarpd("image", rotate_range=0.3, elastic_mm=1.0).set_random_state(5)
    img = _blobs()
    np.testing.assert_array_equal(a({"image": img})["image"], b({"image": img})["image"])
    for kwargs, match in (({"rotate_range": -0.1}, "non-negative"), ({"scale_range": 1.0}, r"\[0, 1\)"),
                          ({"elastic_sigma_mm": 0.0}, "elastic_sigma_mm > 0"), ({"mode": "cubic"}, "mode")):
        with pytest.raises(ValueError, match=match):
            RandAffineElasticWarpd("image", **kwargs)
    with pytest.raises(KeyError, match="points key 'pts'"):
        RandAffineElasticWarpd("image", points_keys="pts")({"image": img})


@pytest.mark.parametrize("shift", [(3, 0, 0), (0, -2, 5)])
def test_resample_to_grid_is_a_shift(shift):
    img = _blobs()
    matrix = np.eye(4)
    matrix[:3, 3] = shift  # output world x samples the input at x + shift
    out = resample_to_grid(img, np.eye(4), matrix, img.shape[1:], np.eye(4))
    ref = np.roll(np.asarray(img[0]), [-s for s in shift], axis=(0, 1, 2))
    inner = tuple(slice(6, -6) for _ in range(3))
    np.testing.assert_allclose(np.asarray(out[0])[inner], ref[inner], atol=1e-5)
