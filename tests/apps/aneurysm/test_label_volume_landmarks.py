"""Landmarks read back from a label volume (``label_volume_landmarks``, ``LoadLandmarkCased`` with a ``label``).

MONAI Label gives a train task ``{"image": volume, "label": label volume}``; for the landmark classifier the label
volume holds one blob per landmark (value = class), e.g. the spheres the app's infer task draws. The expected points
are computed independently: a loop over the classes with ``np.argwhere`` (reference), and the points file of the
same synthetic case rounded to voxel centres (spheres around integer centres have exactly that centroid).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_ext.apps.aneurysm import LoadLandmarkCased
from monai_ext.apps.aneurysm.data import label_volume_landmarks
from monai_ext.data.synthetic.aneurysm import LANDMARK_NAMES, generate_aneurysm_dataset
from monai_ext.label.landmarks import render_landmark_spheres

NAMES = list(LANDMARK_NAMES)


def _reference(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of each non-zero value by a loop (the naive reference)."""
    values = [int(v) for v in np.unique(label) if v != 0]
    return np.array([np.argwhere(label == v).mean(0) for v in values]), np.array(values)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One synthetic case: its image and points item, and a label volume of spheres at its rounded landmarks."""
    root = tmp_path_factory.mktemp("lv")
    datalist = generate_aneurysm_dataset(root, seed=3, num_cases=3, shape=32)
    item = json.loads(datalist.read_text())["training"][0]
    image, landmarks = str(datalist.parent / item["image"]), str(datalist.parent / item["landmarks"])
    nii = nib.load(image)
    raw = json.loads(open(landmarks).read())["landmarks"]
    world = np.array([p["position"] for p in raw])
    voxels = np.round((np.linalg.inv(nii.affine) @ np.c_[world, np.ones(len(world))].T).T[:, :3])
    labels = np.array([NAMES.index(p["name"]) + 1 for p in raw])
    label = root / "label.nii.gz"
    nib.save(nib.Nifti1Image(render_landmark_spheres(nii.shape, voxels, labels, radius=1.5), nii.affine), label)
    return {"image": image, "landmarks": landmarks, "label": str(label), "voxels": voxels, "labels": labels,
            "affine": nii.affine, "shape": nii.shape, "root": root}


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("channel", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_centroids_match_loop_reference(as_torch, channel, dtype):
    rng = np.random.default_rng(0)
    label = np.zeros((9, 10, 11), dtype=dtype)
    for k in (1, 3, 4):  # irregular blobs of random voxels; value 2 absent
        label[tuple(rng.integers(0, s, size=6) for s in label.shape)] = k
    x = label[None] if channel else label
    pts, labs = label_volume_landmarks(torch.as_tensor(x) if as_torch else x, num_landmarks=4)
    ref_pts, ref_labs = _reference(label)
    np.testing.assert_array_equal(labs, ref_labs)
    np.testing.assert_allclose(pts, ref_pts, atol=1e-12)
    assert pts.dtype == np.float64 and labs.dtype == np.int64


def test_sphere_centroid_is_its_centre():
    centres = np.array([[5.0, 6.0, 7.0], [12.0, 3.0, 9.0]])
    vol = render_landmark_spheres((16, 14, 12), centres, [7, 2], radius=2)
    pts, labs = label_volume_landmarks(vol, num_landmarks=9)
    np.testing.assert_array_equal(labs, [2, 7])
    np.testing.assert_allclose(pts, centres[::-1], atol=1e-12)


@pytest.mark.parametrize(
    "label, message",
    [
        (np.full((4, 4, 4), 0.5, dtype=np.float32), "non-integer values"),
        (np.full((4, 4, 4), np.nan, dtype=np.float32), "non-integer values"),
        (np.full((4, 4, 4), 4), r"values \[4\] outside 0\.\.3"),
        (np.full((4, 4, 4), -1), r"values \[-1\] outside 0\.\.3"),
        (np.zeros((4, 4, 4)), "holds no landmark"),
        (np.ones((4, 4)), "expected a single-channel 3D volume"),
        (np.ones((2, 4, 4, 4)), "expected a single-channel 3D volume"),
    ],
)
def test_bad_label_volumes_name_the_file(label, message):
    with pytest.raises(ValueError, match=message) as err:
        label_volume_landmarks(label, num_landmarks=3, path="case_7_label.nii.gz")
    assert "case_7_label.nii.gz" in str(err.value)


def test_load_case_from_label_volume_matches_points_file(case):
    load = LoadLandmarkCased(NAMES)
    from_label = load({"image": case["image"], "label": case["label"]})
    np.testing.assert_array_equal(from_label["point_labels"], np.sort(case["labels"]))
    order = np.argsort(case["labels"])
    np.testing.assert_allclose(from_label["points"], case["voxels"][order], atol=1e-9)
    from_points = load({"image": case["image"], "landmarks": case["landmarks"]})
    torch.testing.assert_close(from_label["image"].as_tensor(), from_points["image"].as_tensor())
    np.testing.assert_allclose(from_label["spacing"], from_points["spacing"])
    # the rounded file points: the same landmarks within half a voxel
    np.testing.assert_allclose(from_label["points"], from_points["points"][np.argsort(from_points["point_labels"])],
                               atol=0.5 + 1e-9)


def test_points_file_wins_when_both_are_given(case):
    load = LoadLandmarkCased(NAMES)
    both = load({"image": case["image"], "landmarks": case["landmarks"], "label": case["label"]})
    points = load({"image": case["image"], "landmarks": case["landmarks"]})
    np.testing.assert_array_equal(both["points"], points["points"])
    np.testing.assert_array_equal(both["point_labels"], points["point_labels"])


@pytest.mark.parametrize("change", ["shape", "affine"])
def test_label_on_another_grid_names_the_file(case, change):
    vol = np.asarray(nib.load(case["label"]).dataobj)
    affine = case["affine"].copy()
    if change == "shape":
        vol = vol[:-2]
    else:
        affine[:3, 3] += 2.0  # shifted 2 mm
    bad = case["root"] / f"bad_{change}.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), bad)
    with pytest.raises(ValueError, match="is not on the grid of its image") as err:
        LoadLandmarkCased(NAMES)({"image": case["image"], "label": str(bad)})
    assert str(bad) in str(err.value) and case["image"] in str(err.value)


def test_label_value_beyond_the_names_names_the_file(case):
    with pytest.raises(ValueError, match=r"values \[9\] outside 0\.\.8") as err:
        LoadLandmarkCased(NAMES[:8])({"image": case["image"], "label": case["label"]})
    assert case["label"] in str(err.value)


def test_item_without_landmarks_or_label(case):
    with pytest.raises(KeyError, match="needs 'landmarks' .* or 'label'"):
        LoadLandmarkCased(NAMES)({"image": case["image"]})
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        LoadLandmarkCased(NAMES)({"image": case["image"], "label": str(case["root"] / "missing.nii.gz")})
