"""Tests for RegionHistogram / RegionHistogramd and the dense / centre-pixel helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.data import MetaTensor

from monai_ext.transforms import (
    RegionHistogram,
    RegionHistogramD,
    RegionHistogramd,
    RegionHistogramDict,
    center_pixel_label,
    region_pmf_to_dense,
)

RNG = np.random.default_rng(0)


def naive_histograms(label: np.ndarray, num_classes: int, r: int, ignore_index: int | None = None) -> np.ndarray:
    """Nested loops over sub-regions and pixels; ``label`` is ``(1, *spatial)``."""
    spatial = label.shape[1:]
    blocks = [s // r for s in spatial]
    out = np.zeros((num_classes,) + (r,) * len(spatial))
    for cell in itertools.product(range(r), repeat=len(spatial)):
        counts = np.zeros(num_classes)
        ranges = [range(c * b, (c + 1) * b) for c, b in zip(cell, blocks, strict=True)]
        for pix in itertools.product(*ranges):
            v = int(label[(0,) + pix])
            if v != ignore_index:
                counts[v] += 1
        if counts.sum() > 0:
            out[(slice(None),) + cell] = counts / counts.sum()
    return out


CASES_2D = [
    # num_classes, shape, grid_sizes, ignore_index
    (3, (1, 8, 8), (1, 2, 4), None),
    (4, (1, 12, 6), (1, 3), 255),
    (2, (1, 6, 6), 2, 1),  # ignore a valid class id
    (5, (1, 16, 16), (4, 2, 8), -1),
]


@pytest.mark.parametrize("num_classes, shape, grid_sizes, ignore_index", CASES_2D)
@pytest.mark.parametrize("as_torch", [False, True])
def test_2d_against_loops(num_classes, shape, grid_sizes, ignore_index, as_torch):
    label = RNG.integers(0, num_classes, size=shape)
    if ignore_index is not None:
        label[RNG.random(shape) < 0.3] = ignore_index
    label[0, : shape[1] // 2, : shape[2] // 2] = ignore_index if ignore_index is not None else 0  # an empty block
    inp = torch.from_numpy(label) if as_torch else label
    outs = RegionHistogram(num_classes, grid_sizes, ignore_index)(inp)
    sizes = (grid_sizes,) if isinstance(grid_sizes, int) else grid_sizes
    assert isinstance(outs, tuple) and len(outs) == len(sizes)
    for r, out in zip(sizes, outs, strict=True):
        assert isinstance(out, torch.Tensor if as_torch else np.ndarray)
        assert tuple(out.shape) == (num_classes, r, r)
        assert np.asarray(out).dtype == np.float32
        np.testing.assert_allclose(np.asarray(out), naive_histograms(label, num_classes, r, ignore_index), atol=1e-6)


@pytest.mark.parametrize("shape, grid_sizes", [((1, 4, 8, 4), (1, 2, 4)), ((1, 6, 3, 9), (1, 3))])
def test_3d_against_loops(shape, grid_sizes):
    label = RNG.integers(0, 3, size=shape)
    label[RNG.random(shape) < 0.2] = 7
    outs = RegionHistogram(3, grid_sizes, ignore_index=7)(label)
    for r, out in zip(grid_sizes, outs, strict=True):
        assert out.shape == (3, r, r, r)
        np.testing.assert_allclose(out, naive_histograms(label, 3, r, 7), atol=1e-6)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (5, 1, 8, 8)), (3, (3, 1, 4, 4, 8))])
def test_batched_equals_per_item(spatial_dims, shape):
    labels = torch.from_numpy(RNG.integers(0, 3, size=shape))
    batched = RegionHistogram(3, (1, 2, 4), spatial_dims=spatial_dims)(labels)
    single = RegionHistogram(3, (1, 2, 4), spatial_dims=spatial_dims)
    for level, out in enumerate(batched):
        assert out.shape[0] == shape[0]
        for b in range(shape[0]):
            torch.testing.assert_close(out[b], single(labels[b])[level])


def test_float_labels_with_integer_values_are_accepted():
    label = RNG.integers(0, 3, size=(1, 4, 4))
    got = RegionHistogram(3, (1, 2))(label.astype(np.float32))
    ref = RegionHistogram(3, (1, 2))(label)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)


def test_worked_example():
    label = np.array([[[0, 0, 1, 1], [0, 0, 1, 2], [2, 2, 9, 9], [2, 2, 9, 9]]])
    h1, h2 = RegionHistogram(3, (1, 2), ignore_index=9)(label)
    np.testing.assert_allclose(h1[:, 0, 0], [4 / 12, 3 / 12, 5 / 12])
    np.testing.assert_allclose(h2[:, 0, 1], [0.0, 0.75, 0.25])
    np.testing.assert_array_equal(h2[:, 1, 1], [0.0, 0.0, 0.0])  # all ignored: all zeros


@settings(max_examples=30, deadline=None)
@given(
    label=arrays(
        np.int64,
        st.tuples(st.just(1), st.sampled_from([4, 8]), st.sampled_from([4, 8, 12])),
        elements=st.integers(-1, 3),
    ),
    num_classes=st.just(4),
)
def test_pmfs_sum_to_one_or_zero(label, num_classes):
    outs = RegionHistogram(num_classes, (1, 2, 4), ignore_index=-1)(label)
    for r, out in zip((1, 2, 4), outs, strict=True):
        sums = out.sum(0)
        assert np.all(out >= 0)
        blocks = (label != -1).reshape(r, label.shape[1] // r, r, label.shape[2] // r).sum((1, 3))
        np.testing.assert_allclose(sums, (blocks > 0).astype(np.float32), atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(label=arrays(np.int64, (1, 8, 8), elements=st.integers(0, 2)))
def test_coarse_level_is_the_average_of_fine_levels_without_ignore(label):
    h1, h2 = RegionHistogram(3, (1, 2))(label)
    np.testing.assert_allclose(h1[:, 0, 0], h2.reshape(3, -1).mean(1), atol=1e-6)


def test_metatensor_meta_and_affine_of_the_grid():
    affine = torch.diag(torch.tensor([0.5, 2.0, 1.0, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([10.0, -4.0, 0.0], dtype=torch.float64)
    label = MetaTensor(torch.from_numpy(RNG.integers(0, 3, size=(1, 8, 4))), affine=affine, meta={"id": "p1"})
    out = RegionHistogram(3, (1, 2))(label)
    for r, o in zip((1, 2), out, strict=True):
        assert isinstance(o, MetaTensor) and o.meta["id"] == "p1"
        # the centre of block (0, 0) in world coordinates = mean of its pixel centres
        pix = np.array([[i, j, 0, 1] for i in range(8 // r) for j in range(4 // r)], dtype=float)
        centre = (affine.numpy() @ pix.T).T.mean(0)
        np.testing.assert_allclose((o.affine.numpy() @ np.array([0, 0, 0, 1.0]))[:3], centre[:3])
    assert label.meta["id"] == "p1" and label.shape == (1, 8, 4)


def test_dictionary_form_keys_and_label_untouched():
    assert RegionHistogramD is RegionHistogramDict is RegionHistogramd
    label = RNG.integers(0, 3, size=(1, 8, 8))
    data = {"label": label.copy(), "image": "img"}
    out = RegionHistogramd("label", 3, (1, 2, 4))(data)
    assert set(out) == {"label", "image", "label_hist_1", "label_hist_2", "label_hist_4"}
    np.testing.assert_array_equal(out["label"], label)
    for r in (1, 2, 4):
        np.testing.assert_allclose(out[f"label_hist_{r}"], naive_histograms(label, 3, r), atol=1e-6)
    custom = RegionHistogramd("label", 3, (2,), hist_key_format="{key}/pmf{r}")(data)
    assert "label/pmf2" in custom
    with pytest.raises(ValueError, match="must contain '{r}'"):
        RegionHistogramd("label", 3, (1, 2), hist_key_format="{key}_hist")
    assert set(RegionHistogramd("seg", 3, allow_missing_keys=True)(data)) == {"label", "image"}
    with pytest.raises(KeyError, match="seg"):
        RegionHistogramd("seg", 3)(data)


def test_dense_round_trip_and_centre_pixel():
    label = RNG.integers(0, 3, size=(1, 8, 8))
    (h4,) = RegionHistogram(3, 4)(label)
    dense = region_pmf_to_dense(h4, (8, 8))
    assert dense.shape == (3, 8, 8)
    for i, j in itertools.product(range(8), range(8)):
        np.testing.assert_array_equal(dense[:, i, j], h4[:, i // 2, j // 2])
    # at grid size = patch size the pmf is the one-hot label
    (h8,) = RegionHistogram(3, 8)(label)
    np.testing.assert_array_equal(np.argmax(region_pmf_to_dense(h8, (8, 8)), 0), label[0])
    assert int(center_pixel_label(label)) == label[0, 4, 4]
    batch = torch.from_numpy(RNG.integers(0, 3, size=(4, 1, 5, 6, 7)))
    torch.testing.assert_close(center_pixel_label(batch, spatial_dims=3), batch[:, 0, 2, 3, 3])
    with pytest.raises(ValueError, match=r"spatial_size \(6, 8\) must be divisible by the grid \(4, 4\)"):
        region_pmf_to_dense(h4, (6, 8))
    with pytest.raises(ValueError, match="pmf must have a class axis"):
        region_pmf_to_dense(np.zeros((4, 4)), (8, 8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 3, "grid_sizes": ()}, "grid_sizes must be one or more positive integers"),
        ({"num_classes": 3, "grid_sizes": (1, 0)}, "grid_sizes must be one or more positive integers"),
        ({"num_classes": 3, "spatial_dims": 1}, "spatial_dims must be 2, 3 or None"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegionHistogram(**kwargs)


@pytest.mark.parametrize(
    "label, kwargs, error, match",
    [
        (
            np.zeros((8, 8), dtype=int),
            {},
            ValueError,
            r"label must be \(1, H, W\) or \(1, H, W, D\).*got shape \(8, 8\)",
        ),
        (np.zeros((2, 1, 8, 8, 8), dtype=int), {}, ValueError, r"pass spatial_dims for batched"),
        (np.zeros((2, 8, 8), dtype=int), {}, ValueError, r"single channel, got shape \(2, 8, 8\)"),
        (np.zeros((1, 8, 8), dtype=int), {"spatial_dims": 3}, ValueError, r"must have 4 .* or 5 .*spatial_dims=3"),
        (np.full((1, 4, 4), 0.5), {}, ValueError, r"integer class ids, found non-integer values such as \[0.5"),
        (np.full((1, 4, 4), np.nan), {}, ValueError, "integer class ids"),
        (np.full((1, 4, 4), 3), {}, ValueError, r"label values must be in \[0, 2\] or ignore_index=None, found \[3\]"),
        (np.full((1, 4, 4), -1), {"ignore_index": 255}, ValueError, r"found \[-1\]"),
        (np.full((1, 4, 4), 7), {}, ValueError, r"found \[7\]"),
        (np.array([[[255, 3], [0, 1]]]), {"ignore_index": 255, "grid_sizes": 1}, ValueError, r"found \[3\]"),
        (np.array([[[255, 4], [0, 1]]]), {"ignore_index": 255, "grid_sizes": 2}, ValueError, r"found \[4\]"),
        (
            np.zeros((1, 6, 8), dtype=int),
            {},
            ValueError,
            r"patch sides \(6, 8\) must be divisible .*\(1, 2, 4\).*\[4\]",
        ),
        (np.zeros((1, 8, 8, 6), dtype=int), {}, ValueError, r"patch sides \(8, 8, 6\).*not divisible by \[4\]"),
        (np.zeros((1, 4, 4), dtype=np.complex64), {}, TypeError, "complex64"),
    ],
)
def test_bad_inputs(label, kwargs, error, match):
    with pytest.raises(error, match=match):
        RegionHistogram(3, **kwargs)(label)
