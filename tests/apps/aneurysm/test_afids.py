from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_ext.apps.aneurysm.afids import (
    PROTOCOL_PLANES,
    afids_names,
    generate_afids_mni152_dataset,
    load_afids,
    load_mni152,
    place_on_protocol_planes,
    protocol_plane_offsets,
)
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


def _rotation(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def test_protocol_plane_offsets_of_the_template():
    """The AFIDs ground truth (the raters' mean) puts the lateral ventricle points within a millimetre of the
    coronal plane of AC / PC, as the protocol defines them; each rater within 2.3 mm of it (rater03 took the
    template's own coronal slice through AC and PC, which the AC-PC line crosses at about 6 degrees)."""
    gt = load_afids()
    offsets = protocol_plane_offsets(gt.positions, gt.names)
    assert set(offsets) == set(PROTOCOL_PLANES) == {"RLVAC", "LLVAC", "RLVPC", "LLVPC"}
    np.testing.assert_allclose([offsets[k] for k in ("RLVAC", "LLVAC", "RLVPC", "LLVPC")],
                               [0.68, 0.70, 0.88, 0.81], atol=0.01)
    for rater in ("rater01", "rater02", "rater03", "rater04"):
        r = load_afids(rater)
        assert all(-1.1 <= v <= 2.3 for v in protocol_plane_offsets(r.positions, r.names).values())
    # without AC or PC there is no plane: nothing to report
    assert protocol_plane_offsets(gt.positions[2:], gt.names[2:]) == {}


def test_place_on_protocol_planes_moves_along_the_acpc_line_only():
    gt = load_afids()
    offsets = protocol_plane_offsets(gt.positions, gt.names)
    rng = np.random.default_rng(0)
    pts = gt.positions + rng.normal(scale=3.0, size=gt.positions.shape)  # a "subject": off the planes
    placed, moved = place_on_protocol_planes(pts, gt.names, offsets)
    index = {n: i for i, n in enumerate(gt.names)}
    # the plane-defined fiducials are now at the template's offsets from their anchors' planes
    after = protocol_plane_offsets(placed, gt.names)
    np.testing.assert_allclose([after[k] for k in offsets], [offsets[k] for k in offsets], atol=1e-9)
    axis = (pts[index["PC"]] - pts[index["AC"]]) / np.linalg.norm(pts[index["PC"]] - pts[index["AC"]])
    before = protocol_plane_offsets(pts, gt.names)
    for name in offsets:  # moved along the AC-PC line, by the distance reported
        i = index[name]
        step = placed[i] - pts[i]
        np.testing.assert_allclose(np.cross(step, axis), 0.0, atol=1e-9)
        assert moved[i] == pytest.approx(abs(before[name] - offsets[name]))
        assert moved[i] == pytest.approx(np.linalg.norm(step))
    others = [i for n, i in index.items() if n not in offsets]
    np.testing.assert_array_equal(placed[others], pts[others])
    assert not moved[others].any()
    # a rigid motion of the head moves the placed points with it: the planes belong to the anatomy, not the axes
    rot, shift = _rotation(0.2, -0.3, 0.5), np.array([10.0, -20.0, 5.0])
    placed_r, moved_r = place_on_protocol_planes(pts @ rot.T + shift, gt.names, offsets)
    np.testing.assert_allclose(placed_r, placed @ rot.T + shift, atol=1e-9)
    np.testing.assert_allclose(moved_r, moved, atol=1e-9)
    # the input is not changed in place
    assert not np.shares_memory(placed, pts)


def test_place_on_protocol_planes_missing_points_and_errors():
    gt = load_afids()
    offsets = protocol_plane_offsets(gt.positions, gt.names)
    pts = gt.positions + 2.0 * np.eye(3)[1]  # every point 2 mm anterior: the offsets are unchanged
    np.testing.assert_allclose(place_on_protocol_planes(pts, gt.names, offsets)[0], pts, atol=1e-9)
    pts = gt.positions.copy()
    pts[gt.names.index("RLVAC")] += [0.0, 5.0, 0.0]
    pts[gt.names.index("LLVAC")] = np.nan  # a fiducial not found stays not found
    placed, moved = place_on_protocol_planes(pts, gt.names, offsets)
    assert np.isnan(placed[gt.names.index("LLVAC")]).all() and moved[gt.names.index("LLVAC")] == 0
    assert moved[gt.names.index("RLVAC")] == pytest.approx(5.0 * abs(np.eye(3)[1] @ (
        (pts[1] - pts[0]) / np.linalg.norm(pts[1] - pts[0]))), rel=1e-9)
    no_pc = pts.copy()
    no_pc[1] = np.nan  # no AC-PC line: nothing is moved
    placed, moved = place_on_protocol_planes(no_pc, gt.names, offsets)
    np.testing.assert_array_equal(placed, no_pc)
    assert not moved.any()
    with pytest.raises(ValueError, match=r"offsets for \['GENU'\], which the AFIDs protocol does not place"):
        place_on_protocol_planes(gt.positions, gt.names, {"GENU": 0.0})
    with pytest.raises(ValueError, match="one row per name"):
        place_on_protocol_planes(gt.positions[:5], gt.names, offsets)
    same = gt.positions.copy()
    same[1] = same[0]
    with pytest.raises(ValueError, match="AC and PC coincide"):
        place_on_protocol_planes(same, gt.names, offsets)
