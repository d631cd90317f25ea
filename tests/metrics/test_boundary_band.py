"""boundary_band: pixels near a boundary between two classes (the boundary-band Jaccard of ips_histogram)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.metrics import boundary_band, jaccard_counts


def _two_halves(h: int = 10, w: int = 12) -> np.ndarray:
    lab = np.zeros((h, w), dtype=np.int64)
    lab[:, w // 2:] = 1
    return lab


@pytest.mark.parametrize("width", [1, 2, 3])
def test_band_is_width_columns_on_each_side_of_a_straight_boundary(width):
    band = boundary_band(_two_halves(), width, 2)
    cols = np.flatnonzero(band[0])
    assert cols.tolist() == list(range(6 - width, 6 + width))
    assert (band == band[:1]).all()  # the same in every row


def test_borders_with_ignored_regions_are_not_boundaries_and_ignored_pixels_are_never_in_the_band():
    lab = np.zeros((10, 12), dtype=np.int64)
    lab[:, 8:] = 255  # one class next to an unlabelled strip
    assert not boundary_band(lab, 2, 2, ignore_index=255).any()
    lab[:, 4:8] = 1
    band = boundary_band(lab, 2, 2, ignore_index=255)
    assert band[:, 2:6].all() and not band[:, 8:].any() and not band[:, :2].any()


def test_three_classes_and_torch_input():
    lab = np.zeros((9, 9), dtype=np.int64)
    lab[3:6, 3:6] = 2
    band = boundary_band(torch.from_numpy(lab), 1, 3)
    expected = np.zeros((9, 9), bool)
    expected[2:7, 2:7] = True
    expected[4, 4] = False  # the centre of the 3x3 square sees only class 2
    assert (band == expected).all()


def test_a_one_pixel_shift_costs_more_inside_the_band_than_over_the_image():
    lab = _two_halves(20, 40)
    pred = np.roll(lab, 1, axis=1)
    pred[:, 0] = 0

    def mean_jaccard(truth):
        c = jaccard_counts(torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None], 2, 255)[0]
        return float((c[:, 0] / c[:, 1]).mean())

    whole = mean_jaccard(lab)
    in_band = mean_jaccard(np.where(boundary_band(lab, 2, 2, 255), lab, 255))
    assert whole == pytest.approx((19 / 20 + 20 / 21) / 2)
    assert in_band == pytest.approx((1 / 2 + 2 / 3) / 2)  # 4 band columns: 2 of class 0, 2 of class 1
    assert in_band < whole


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="width"):
        boundary_band(_two_halves(), 0, 2)
