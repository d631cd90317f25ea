"""Tests for the tri-planar demo app (the README's main job until the aneurysm bundle lands)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from monai_ext.apps.triplanar_demo import CELL_INCHES, DPI, main, make_volume
from monai_ext.transforms import TriPlanarPatch


@pytest.mark.parametrize("patch_size", [16, 9])
def test_demo_writes_the_grid(tmp_path, capsys, patch_size):
    path = main(["--output_dir", str(tmp_path / "demo"), "--seed", "3", "--patch_size", str(patch_size)])
    assert path == tmp_path / "demo" / "triplanar_patches.png" and path.is_file()
    assert str(path.resolve()) in capsys.readouterr().out
    image = iio.imread(path)
    _, points, _ = make_volume(64, 3)
    cell = int(round(CELL_INCHES * DPI))
    assert image.shape[:2] == (len(points) * cell, 3 * cell)  # one row per point, one column per plane


def test_volume_is_seeded_and_points_sit_on_structures():
    vol_a, pts_a, names = make_volume(32, seed=1)
    vol_b, pts_b, _ = make_volume(32, seed=1)
    vol_c, _, _ = make_volume(32, seed=2)
    np.testing.assert_array_equal(vol_a, vol_b)
    np.testing.assert_array_equal(pts_a, pts_b)
    assert not np.array_equal(vol_a, vol_c)
    assert vol_a.shape == (1, 32, 32, 32) and pts_a.shape == (6, 3) and len(names) == 6
    values = vol_a[0][tuple(pts_a.T)]
    assert np.all(values[:5] > 0.5) and values[5] < 0.5  # tubes/blobs are bright, the background point is not
    patches = TriPlanarPatch(patch_size=8)(vol_a, pts_a)
    assert patches.shape == (6, 3, 8, 8)


def test_bad_arguments_exit_with_usage(tmp_path):
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path), "--patch_size", "0"])
