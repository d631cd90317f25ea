"""Synthetic brains: the tissue template, determinism, landmarks moved with the image (affine and elastic), skull on
and off, held-out contrasts excluded from training, and the datalist writer."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.data import CacheDataset

from monai_ext.apps.aneurysm.landmarks import read_points
from monai_ext.data.synthetic.brain import (
    SynthesizeBraind,
    afids_landmarks,
    crop_grid,
    generate_synthetic_brain_dataset,
    load_mni152_tissues,
)
from monai_ext.transforms import apply_matrix


@pytest.fixture(scope="module")
def tpl():
    return load_mni152_tissues(4)


def test_template_tissues(tpl):
    t1, gm, wm, csf, dist = tpl.tissues
    assert tpl.tissues.shape == (5, 49, 58, 47) and tpl.tissues.dtype == np.float32
    np.testing.assert_allclose(tpl.spacing, 4.0)
    assert (csf >= 0).all() and np.allclose(gm + wm + csf, np.clip(gm + wm + csf, 0, 1 + 1e-5))
    assert (dist[tpl.mask] == 0).all() and (dist[~tpl.mask] >= 4.0 - 1e-5).all()
    csf_lvl, gm_lvl, wm_lvl = tpl.t1_levels
    assert csf_lvl < gm_lvl < wm_lvl
    with pytest.raises(ValueError, match="voxel_size"):
        load_mni152_tissues(1.5)
    t1_img, mask_img = tpl.image("t1"), tpl.mask_image()
    assert t1_img.shape == (1, *tpl.shape) and mask_img.shape == (1, *tpl.shape)
    np.testing.assert_array_equal(t1_img[0], t1)
    np.testing.assert_allclose(mask_img.affine, tpl.affine)
    with pytest.raises(ValueError, match="channel"):
        tpl.image("flair")


def _gen(tpl, **kw):
    names, sets = afids_landmarks()
    return SynthesizeBraind(template=tpl, landmark_sets=sets, **kw)


def test_same_seed_same_brain_and_cacheable(tpl):
    gen = _gen(tpl)
    a, b, c = gen.synthesize(7), gen.synthesize(7), gen.synthesize(8)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    assert not np.allclose(a["landmarks"], c["landmarks"])
    ds = CacheDataset([{"seed": 7}, {"seed": 8}], transform=gen, progress=False)
    np.testing.assert_array_equal(ds[0]["image"], a["image"])  # cached brains equal the direct ones
    assert ds[1]["landmarks"].shape == (32, 3) and ds[1]["raters"].shape == (4, 32, 3)


@pytest.mark.parametrize("elastic", [0.0, 3.0])
def test_landmarks_follow_the_warp(tpl, elastic):
    gen = _gen(tpl, spatial_size=tpl.shape, output_affine=tpl.affine, artefacts=None,
               warp={"elastic_mm": elastic})
    names, sets = afids_landmarks()
    for seed in range(3):
        s = gen.synthesize(seed)
        moved = s["landmarks"]
        # output world x maps to template world M x + u(x); the landmark's image must be its template position
        back = apply_matrix(s["warp"], moved) + gen.warp.displacement(moved).numpy()
        np.testing.assert_allclose(back, sets["groundtruth"], atol=0.05)
        if elastic == 0.0:
            np.testing.assert_allclose(apply_matrix(s["warp"], moved), sets["groundtruth"], atol=1e-6)
        # and the warped brain mask covers the moved landmarks (all AFIDs lie inside the brain)
        vox = np.round(apply_matrix(np.linalg.inv(tpl.affine), moved)).astype(int)
        assert s["brain_mask"][0][tuple(vox.T)].float().mean() > 0.9


def test_skull_present_or_stripped(tpl):
    skull = _gen(tpl, contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 1.0}).synthesize(3)
    bare = _gen(tpl, contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 0.0}).synthesize(3)
    outside = skull["brain_mask"][0] == 0
    assert skull["skull"] and not bare["skull"]
    assert (bare["image"][0][outside] == 0).all()  # stripped: zero outside the brain
    assert (skull["image"][0][outside] > 0).float().mean() > 0.3


def test_training_contrasts_exclude_held_out(tpl):
    gen = _gen(tpl, contrast={"contrasts": ("t1", "random"), "exclude": ("t2", "pd")})
    seen = {gen.synthesize(s)["contrast"] for s in range(6)}
    assert seen <= {"t1", "random"} and seen
    with pytest.raises(ValueError, match="both drawn"):
        _gen(tpl, contrast={"contrasts": ("t2",), "exclude": ("t2",)})
    with pytest.raises(ValueError, match="groundtruth"):
        SynthesizeBraind(template=tpl, landmark_sets={"rater01": np.zeros((2, 3))})


def test_crop_grid_covers_the_points(tpl):
    names, sets = afids_landmarks()
    shape, affine = crop_grid(sets["groundtruth"], tpl, margin_mm=8.0)
    vox = apply_matrix(np.linalg.inv(affine), sets["groundtruth"])
    assert (vox >= 8.0 / 4 - 1).all() and (vox <= np.array(shape) - 8.0 / 4).all()


def test_generate_dataset(tmp_path):
    path = generate_synthetic_brain_dataset(tmp_path, seed=1, num_train=2, num_val=1, num_test=1, voxel_size=4)
    content = json.loads(path.read_text())
    assert len(content["landmark_names"]) == 32
    assert {i["contrast"] for i in content["training"]} <= {"t1", "random"}
    assert content["test_t2"][0]["contrast"] == "t2" and content["test_pd"][0]["contrast"] == "pd"
    assert content["test_t1_skull"][0]["skull"] and not content["test_t1"][0]["skull"]
    item = content["test_displaced"][0]
    img = nib.load(tmp_path / item["image"])
    assert img.shape == (49, 58, 47)
    pts = read_points(tmp_path / item["landmarks"])
    assert len(pts.positions) == 32 and len(item["raters"]) == 4
    mask = nib.load(tmp_path / item["brain_mask"]).get_fdata()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="num_train"):
        generate_synthetic_brain_dataset(tmp_path, num_train=0)


def test_field_of_view_cut(tpl):
    """A cut field of view: zero outside an axis-aligned box that keeps every landmark at least the lower margin
    inside it, in the image and the brain mask; the rest of the brain is the brain of the same seed without a cut."""
    names, sets = afids_landmarks()
    shape, affine = crop_grid(sets["groundtruth"], tpl, margin_mm=40.0)
    plain = _gen(tpl, spatial_size=shape, output_affine=affine)
    cut = _gen(tpl, spatial_size=shape, output_affine=affine,
               field_of_view={"prob": 1.0, "face_prob": 1.0, "margin_mm": (8.0, 16.0)})
    a, b = plain.synthesize(3), cut.synthesize(3)
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    image, mask = np.asarray(b["image"][0]), np.asarray(b["brain_mask"][0])
    seen = np.argwhere(image != 0)
    lo, hi = seen.min(0), seen.max(0)
    vox = apply_matrix(np.linalg.inv(affine), b["landmarks"])
    assert (vox.min(0) - lo >= 8.0 / 4 - 1).all() and (hi - vox.max(0) >= 8.0 / 4 - 1).all()
    assert (vox.min(0) - lo <= 16.0 / 4 + 1).all() and (hi - vox.max(0) <= 16.0 / 4 + 1).all()
    box = np.zeros(shape, bool)
    box[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    assert box.sum() < 0.8 * box.size  # a real cut of this 40 mm margin grid
    assert not mask[~box].any() and not image[~box].any()
    np.testing.assert_array_equal(image[box], np.asarray(a["image"][0])[box])
    np.testing.assert_array_equal(mask[box], np.asarray(a["brain_mask"][0])[box])
    never = _gen(tpl, field_of_view={"prob": 0.0, "face_prob": 1.0, "margin_mm": (8.0, 16.0)}).synthesize(3)
    np.testing.assert_array_equal(never["image"], _gen(tpl).synthesize(3)["image"])
    for bad in ({"prob": 1.0}, {"prob": 2.0, "face_prob": 1.0, "margin_mm": (1, 2)},
                {"prob": 1.0, "face_prob": 1.0, "margin_mm": (5, 2)}):
        with pytest.raises(ValueError, match="field_of_view"):
            _gen(tpl, field_of_view=bad)
