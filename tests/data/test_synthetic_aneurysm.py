from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from monai_ext.data.synthetic.aneurysm import LANDMARK_NAMES, generate_aneurysm_dataset, synthesize_aneurysm_case


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("aneurysm")
    return generate_aneurysm_dataset(out, seed=3, num_cases=4, shape=40, max_aneurysms=3)


def _read(path, rel):
    return json.loads((path.parent / rel).read_text())


def test_datalist_layout(dataset):
    d = json.loads(dataset.read_text())
    assert d["landmark_names"] == list(LANDMARK_NAMES)
    assert [len(d[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    for item in d["training"] + d["validation"] + d["test"]:
        img = nib.load(dataset.parent / item["image"])
        assert img.shape == (40, 40, 40)
        lm = _read(dataset, item["landmarks"])
        assert [p["label"] for p in lm["landmarks"]] == list(range(1, len(LANDMARK_NAMES) + 1))
        assert [p["name"] for p in lm["landmarks"]] == list(LANDMARK_NAMES)
        cand = _read(dataset, item["candidates"])
        assert {p["label"] for p in cand["landmarks"]} <= {0, 1}


def test_same_seed_same_files_and_other_seed_differs(tmp_path, dataset):
    again = generate_aneurysm_dataset(tmp_path, seed=3, num_cases=4, shape=40, max_aneurysms=3)
    a = nib.load(dataset.parent / "imagesTr/case_000.nii.gz").get_fdata()
    b = nib.load(again.parent / "imagesTr/case_000.nii.gz").get_fdata()
    np.testing.assert_array_equal(a, b)
    lm = "landmarks/case_001.json"
    assert (dataset.parent / lm).read_text() == (again.parent / lm).read_text()
    other = generate_aneurysm_dataset(tmp_path / "o", seed=4, num_cases=4, shape=40)
    c = nib.load(other.parent / "imagesTr/case_000.nii.gz").get_fdata()
    assert not np.allclose(a, c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structure_points_are_on_bright_vessels(seed):
    rng = np.random.default_rng(seed)
    img, points, cand, labels = synthesize_aneurysm_case(rng, shape=48, max_aneurysms=3, noise=0.0)
    background = np.median(img)
    # bifurcations and the trunk origin lie on a vessel centreline: clearly brighter than the tissue
    for name in ("trunk_origin", "trunk_bifurcation", "left_bifurcation", "right_bifurcation"):
        idx = tuple(np.round(points[name]).astype(int))
        assert img[idx] > background + 0.3, name
    # aneurysm candidates sit at the sac centre: bright too; all candidates inside the volume
    for p in cand[labels == 1]:
        assert img[tuple(np.round(p).astype(int))] > background + 0.3
    assert np.all((cand >= 0) & (cand <= 47))


@pytest.mark.parametrize("seed", range(4))
def test_landmarks_stay_inside_the_volume_under_large_variation(seed):
    # a displacement of 30 % of the field of view pushes mean points past the border; they are clamped and the
    # vessels are drawn to the clamped points, so every landmark is a valid, bright voxel of the volume
    rng = np.random.default_rng(seed)
    img, points, _, _ = synthesize_aneurysm_case(rng, shape=32, variation=0.3, noise=0.0)
    for name, p in points.items():
        assert np.all((p >= 0) & (p <= 31)), (name, p)
    for name in ("trunk_origin", "trunk_bifurcation", "left_bifurcation", "right_bifurcation"):
        assert img[tuple(np.round(points[name]).astype(int))] > np.median(img) + 0.3, name


def test_anatomical_variation_but_consistent_identity():
    pos = np.array([[synthesize_aneurysm_case(np.random.default_rng(s), shape=48)[1][n] for n in LANDMARK_NAMES]
                    for s in range(4)])  # (cases, landmarks, 3)
    spread = pos.std(0).mean()
    assert spread > 0.5  # positions vary between cases
    # ... but less than the distance between landmark classes: left stays left, right stays right
    left, right = LANDMARK_NAMES.index("left_bifurcation"), LANDMARK_NAMES.index("right_bifurcation")
    assert np.all(pos[:, left, 0] < pos[:, right, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_cases": 2}, "leaves no training case"),
        ({"num_cases": 4, "spacing": 0.0}, "spacing must be positive"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_aneurysm_dataset(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": 16}, "shape must be >= 24"),
        ({"max_aneurysms": -1}, "must be >= 0"),
        ({"noise": -0.1}, "must be >= 0"),
    ],
)
def test_bad_case_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize_aneurysm_case(np.random.default_rng(0), **kwargs)


def test_spacing_is_written_to_affine_and_world_coordinates(tmp_path):
    path = generate_aneurysm_dataset(tmp_path, seed=0, num_cases=3, shape=32, spacing=0.5)
    img = nib.load(tmp_path / "imagesTr/case_000.nii.gz")
    np.testing.assert_allclose(np.diag(img.affine), [0.5, 0.5, 0.5, 1.0])
    lm = json.loads((tmp_path / "landmarks/case_000.json").read_text())["landmarks"]
    vox = np.array([p["position"] for p in lm]) / 0.5
    assert np.all((vox > -1) & (vox < 32)), path
