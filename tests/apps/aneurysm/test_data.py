from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monai_ext.apps.aneurysm.data import (
    candidate_patches,
    landmark_names_of,
    load_cases,
    normalize_intensity,
    resolve_aneurysm_datalist,
    sample_landmark_patches,
)
from monai_ext.data.synthetic.aneurysm import LANDMARK_NAMES, generate_aneurysm_dataset


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    return generate_aneurysm_dataset(tmp_path_factory.mktemp("an"), seed=1, num_cases=4, shape=32, max_aneurysms=3)


@pytest.mark.parametrize("as_torch", [False, True])
def test_normalize_intensity_matches_numpy(as_torch):
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    lo, hi = np.percentile(x, [1.0, 99.9])
    out = normalize_intensity(torch.as_tensor(x) if as_torch else x)
    np.testing.assert_allclose(out.numpy(), (x - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="constant image"):
        normalize_intensity(np.ones((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        normalize_intensity(x, 50, 10)


def test_load_cases_voxel_points_match_files(datalist):
    cases = load_cases(datalist, "training")
    assert len(cases) == 2 and landmark_names_of(datalist) == list(LANDMARK_NAMES)
    raw = json.loads((datalist.parent / "landmarks/case_000.json").read_text())["landmarks"]
    expected = np.array([p["position"] for p in raw])  # 1 mm voxels, origin 0: world mm == voxel index
    np.testing.assert_allclose(cases[0].landmarks, expected, atol=1e-6)
    assert cases[0].landmark_labels.tolist() == list(range(1, 10))
    assert cases[0].image.shape == (1, 32, 32, 32)
    assert set(np.unique(cases[0].candidate_labels)) <= {0, 1}


def test_landmark_patches_shapes_labels_and_seed(datalist):
    cases = load_cases(datalist, "training")
    x, y = sample_landmark_patches(cases, 20, seed=5)
    assert x.shape == (40, 3, 32, 32) and y.shape == (40,)
    assert y.min() >= 0 and y.max() <= 9 and (y == 0).any() and (y > 0).any()
    x2, y2 = sample_landmark_patches(cases, 20, seed=5)
    torch.testing.assert_close(x, x2)
    torch.testing.assert_close(y, y2)
    x3, _ = sample_landmark_patches(cases, 20, seed=6)
    assert not torch.allclose(x, x3)


def test_unaugmented_landmark_patch_is_plain_slicing(datalist):
    case = load_cases(datalist, "training")[:1]
    case[0].landmarks = np.round(case[0].landmarks)
    x, y = sample_landmark_patches(case, 40, seed=0, augment=False, background_prob=0.0, near_miss_fraction=0.0)
    img = case[0].image.as_tensor()[0]
    for xi, yi in zip(x, y, strict=True):
        cx, cy, cz = (int(v) for v in case[0].landmarks[int(yi) - 1])
        ref = torch.nn.functional.pad(img, (16, 16, 16, 16, 16, 16))[cx + 16, cy : cy + 32, cz : cz + 32]
        torch.testing.assert_close(xi[0], ref)


def test_candidate_patches_originals_and_groups(datalist):
    cases = load_cases(datalist, "training")
    x, y, groups, original = candidate_patches(cases, copies=3, seed=0)
    n = sum(len(c.candidates) for c in cases)
    assert int(original.sum()) == n and len(x) == 3 * n
    assert sorted(set(groups.tolist())) == [0, 1]
    np.testing.assert_array_equal(y[torch.as_tensor(original)].numpy(),
                                  np.concatenate([c.candidate_labels for c in cases]))
    for c in cases:
        c.candidates = np.zeros((0, 3))
    with pytest.raises(ValueError, match="no case has candidate points"):
        candidate_patches(cases)


def test_bad_datalists(tmp_path, datalist):
    d = json.loads(datalist.read_text())
    del d["landmark_names"]
    (tmp_path / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="needs a top-level 'landmark_names'"):
        landmark_names_of(tmp_path)
    with pytest.raises(ValueError, match="data_source must be 'synthetic', 'afids_mni152' or 'synthetic_brain'"):
        resolve_aneurysm_datalist(None, tmp_path, "mri")
    with pytest.raises(ValueError, match=r"landmark name\(s\)"):
        load_cases(datalist, "training", names=["only_one"])
