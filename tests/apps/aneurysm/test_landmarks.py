from __future__ import annotations

import json

import numpy as np
import pytest

from monai_ext.apps.aneurysm.landmarks import PointSet, points_to_voxels, read_points, write_points_json

POS = np.array([[1.5, -2.0, 3.25], [10.0, 20.0, -30.0]])


def _fcsv(path, system="0", label_style="name"):
    rows = []
    for i, p in enumerate(POS):
        label, desc = ("AC", "") if i == 0 else ("PC", "")
        if label_style == "afids":
            label, desc = str(i + 1), ["AC", "PC"][i]
        rows.append(f"vtkMRMLMarkupsFiducialNode_{i},{p[0]},{p[1]},{p[2]},0,0,0,1,1,1,0,{label},{desc},vol")
    path.write_text(
        "# Markups fiducial file version = 4.6\n"
        f"# CoordinateSystem = {system}\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n" + "\n".join(rows) + "\n"
    )
    return path


def _json(path, system="RAS", units="mm"):
    points = [{"name": "AC", "label": 1, "position": POS[0].tolist()},
              {"name": "PC", "label": 2, "position": POS[1].tolist()}]
    path.write_text(json.dumps({"coordinate_system": system, "units": units, "landmarks": points}))
    return path


def _csv(path):
    path.write_text("label,name,x,y,z\n" + "\n".join(f"{i + 1},{n},{p[0]},{p[1]},{p[2]}"
                                                    for i, (n, p) in enumerate(zip(["AC", "PC"], POS, strict=True))))
    return path


@pytest.mark.parametrize(
    "writer, name, system",
    [
        (lambda p: _fcsv(p), "a.fcsv", "RAS"),
        (lambda p: _fcsv(p, "RAS"), "b.fcsv", "RAS"),
        (lambda p: _fcsv(p, "1"), "c.fcsv", "LPS"),
        (lambda p: _fcsv(p, label_style="afids"), "d.fcsv", "RAS"),
        (lambda p: _json(p), "e.json", "RAS"),
        (lambda p: _json(p, "LPS"), "f.json", "LPS"),
        (lambda p: _csv(p), "g.csv", "RAS"),
    ],
)
def test_readers_agree(tmp_path, writer, name, system):
    pts = read_points(writer(tmp_path / name))
    assert pts.names == ["AC", "PC"]
    np.testing.assert_array_equal(pts.labels, [1, 2])
    np.testing.assert_allclose(pts.positions, POS)
    assert pts.coordinate_system == system
    ras = pts.to_ras().positions
    expected = POS * ([-1, -1, 1] if system == "LPS" else [1, 1, 1])
    np.testing.assert_allclose(ras, expected)


def test_names_map_to_shared_class_ids(tmp_path):
    pts = read_points(_json(tmp_path / "a.json"), names=["X", "PC", "AC"])
    np.testing.assert_array_equal(pts.labels, [3, 2])
    with pytest.raises(ValueError, match=r"landmark name\(s\) \['AC'\] not in the expected names"):
        read_points(_json(tmp_path / "b.json"), names=["PC"])


def test_json_round_trip(tmp_path):
    pts = PointSet(["a", "b"], [4, 7], POS, "LPS", "mm", "mem")
    back = read_points(write_points_json(pts, tmp_path / "p.json"))
    np.testing.assert_allclose(back.positions, POS)
    assert back.coordinate_system == "LPS" and back.names == ["a", "b"] and back.labels.tolist() == [4, 7]


@pytest.mark.parametrize("affine", [np.diag([1.0, 1.0, 1.0, 1.0]), np.array([[0.5, 0, 0, -10], [0, 2.0, 0, 5],
                                                                             [0, 0, 1.5, 3], [0, 0, 0, 1.0]])])
def test_points_to_voxels_matches_naive_inverse(affine):
    shape = (64, 64, 64)
    vox = np.array([[3.0, 4.0, 5.0], [40.0, 10.5, 20.0]])
    world = np.array([affine[:3, :3] @ v + affine[:3, 3] for v in vox])  # naive forward map, one point at a time
    out = points_to_voxels(PointSet(["a", "b"], [1, 2], world), affine, shape)
    np.testing.assert_allclose(out, vox, atol=1e-9)
    lps = PointSet(["a", "b"], [1, 2], world * [-1, -1, 1], "LPS")
    np.testing.assert_allclose(points_to_voxels(lps, affine, shape), vox, atol=1e-9)
    np.testing.assert_allclose(points_to_voxels(PointSet(["a", "b"], [1, 2], vox, units="voxel"), affine, shape), vox)


def test_outside_points_name_the_likely_mistake():
    shape = (50, 50, 50)
    affine = np.array([[1.0, 0, 0, -100], [0, 1, 0, -100], [0, 0, 1, -100], [0, 0, 0, 1]])
    voxel_like = PointSet(["a"], [1], [[10.0, 20.0, 30.0]], source="f.json")
    with pytest.raises(ValueError, match=r"f.json: 1 of 1 point\(s\) lie outside .*are they voxel coordinates"):
        points_to_voxels(voxel_like, affine, shape)
    affine2 = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lps_as_ras = PointSet(["a"], [1], [[-10.0, -20.0, 30.0]])
    with pytest.raises(ValueError, match="is the coordinate system LPS"):
        points_to_voxels(lps_as_ras, affine2, shape)
    mm_as_voxel = PointSet(["a"], [1], [[-90.0, -80.0, -70.0]], units="voxel")
    with pytest.raises(ValueError, match=r"are they in mm \(units='mm'\)"):
        points_to_voxels(mm_as_voxel, affine, shape)
    with pytest.raises(ValueError, match="affine must be 4x4"):
        points_to_voxels(voxel_like, np.eye(3), shape)


@pytest.mark.parametrize(
    "name, content, error, match",
    [
        ("a.txt", "x", ValueError, "unsupported landmark file extension '.txt'"),
        ("b.csv", "a,b\n1,2\n", ValueError, r"lacks column\(s\) \['x', 'y', 'z'\]"),
        ("c.csv", "x,y,z\n1,two,3\n", ValueError, "row 1 has a non-numeric coordinate"),
        ("d.json", "{bad", ValueError, "not valid JSON"),
        ("e.json", '{"landmarks": [{"position": [1, 2]}]}', ValueError, r"landmarks\[0\] needs a 'position' of 3"),
        ("f.json", '{"landmarks": [{"position": [1, 2, 3]}], "units": "inch"}', ValueError, "units must be one of"),
        ("g.fcsv", "# CoordinateSystem = 7\n# columns = id,x,y,z,label\na,1,2,3,A\n", ValueError,
         "unsupported CoordinateSystem"),
        ("h.fcsv", "# columns = id,x,y,label\na,1,2,A\n", ValueError, "lack 'z'"),
        ("i.json", '{"landmarks": [{"position": [1, NaN, 3]}]}', ValueError, "must be finite"),
    ],
)
def test_bad_files(tmp_path, name, content, error, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(error, match=match):
        read_points(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="landmark file not found"):
        read_points(tmp_path / "nope.fcsv")


def test_write_points_fcsv_round_trip(tmp_path):
    from monai_ext.apps.aneurysm.landmarks import write_points_fcsv

    pts = PointSet(["AC", "PC, left"], [1, 2], np.array([[1.5, -2.0, 3.25], [4.0, 5.0, -6.5]]), "LPS")
    path = write_points_fcsv(pts, tmp_path / "p.fcsv", descriptions=["p=0.93", "p=0.12, LOW"])
    back = read_points(path)
    assert back.names == ["AC", "PC; left"] and back.coordinate_system == "LPS"
    np.testing.assert_allclose(back.positions, pts.positions, atol=1e-4)
    assert "p=0.12; LOW" in path.read_text()
    with pytest.raises(ValueError, match="world"):
        write_points_fcsv(PointSet(["a"], [1], np.zeros((1, 3)), units="voxel"), tmp_path / "v.fcsv")
    with pytest.raises(ValueError, match="integers"):
        write_points_fcsv(PointSet(["7"], [1], np.zeros((1, 3))), tmp_path / "i.fcsv")
    with pytest.raises(ValueError, match="descriptions"):
        write_points_fcsv(pts, tmp_path / "d.fcsv", descriptions=["x"])
