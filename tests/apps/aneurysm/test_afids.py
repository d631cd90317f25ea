from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_ext.apps.aneurysm.afids import afids_names, generate_afids_mni152_dataset, load_afids, load_mni152
from monai_ext.apps.aneurysm.landmarks import points_to_voxels, read_points


def test_afids_files_and_names():
    names = afids_names()
    assert len(names) == 32 and names[:2] == ["AC", "PC"]
    gt = load_afids()
    assert gt.labels.tolist() == list(range(1, 33))
    # AC and PC on the midline, AC in front of PC by about 25-30 mm (the classic AC-PC distance)
    ac, pc = gt.positions[0], gt.positions[1]
    assert abs(ac[0]) < 2 and abs(pc[0]) < 2
    assert 20 < np.linalg.norm(ac - pc) < 35
    with pytest.raises(ValueError, match="rater must be one of"):
        load_afids("rater09")


@pytest.mark.parametrize("rater", ["rater01", "rater02", "rater03", "rater04"])
def test_raters_close_to_ground_truth(rater):
    gt, r = load_afids(), load_afids(rater)
    np.testing.assert_array_equal(gt.labels, r.labels)
    err = np.linalg.norm(gt.positions - r.positions, axis=1)
    assert np.median(err) < 3.0  # raters agree within a few mm (AFIDs reports ~1-2 mm)


def test_mni152_loads_offline_and_holds_the_fiducials():
    vol, affine = load_mni152()
    assert vol.shape == (197, 233, 189)
    vox = points_to_voxels(load_afids(), affine, vol.shape)  # raises if any fiducial fell outside
    assert vox.shape == (32, 3)


def test_deformed_instances_carry_their_points(tmp_path):
    path = generate_afids_mni152_dataset(tmp_path, seed=0, num_train=1, num_val=1, num_test=1, margin=6, elastic=2.0)
    d = json.loads(path.read_text())
    assert d["landmark_names"] == afids_names()
    assert [len(d[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    vol, affine = load_mni152()
    gt = load_afids()
    template_vox = points_to_voxels(gt, affine, vol.shape)
    ref = ndimage.map_coordinates(vol, template_vox.T, order=1)
    for i, item in enumerate(d["training"] + d["validation"]):
        img = nib.load(tmp_path / item["image"])
        pts = read_points(tmp_path / item["landmarks"])
        vox = points_to_voxels(pts, img.affine, img.shape)
        val = ndimage.map_coordinates(np.asarray(img.dataobj, dtype=np.float32), vox.T, order=1)
        if i == 0:  # the undeformed template: same world positions and intensities
            np.testing.assert_allclose(pts.positions, gt.positions, atol=1e-6)
            np.testing.assert_allclose(val, ref, rtol=1e-4, atol=1e-3)
        else:  # a deformed instance: points moved, yet they still sample the same anatomy
            assert np.linalg.norm(pts.positions - gt.positions, axis=1).mean() > 0.5
            assert np.corrcoef(val, ref)[0, 1] > 0.9
        assert len(item["raters"]) == 4


def test_bad_instance_counts(tmp_path):
    with pytest.raises(ValueError, match="need num_train >= 1"):
        generate_afids_mni152_dataset(tmp_path, num_train=0)
