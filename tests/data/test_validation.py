"""Unit tests of the shared input validation helpers (``monai_ext.data.validation``)."""

from __future__ import annotations

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.transforms import LoadImage

from monai_ext.data import read_image, validate_distribution, validate_image, validate_label_map


# ------------------------------------------------------------------------------------------------ read_image
def test_read_image_reads_a_good_file(tmp_path):
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    iio.imwrite(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.0])
def test_read_image_names_a_truncated_png(tmp_path, keep):
    path = tmp_path / "frame.png"
    iio.imwrite(path, np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"frame '.*frame\.png' could not be read \(.*\); expected a complete, "
                                         r"readable \.png file: is it truncated or corrupt\?") as info:
        read_image(path, what="frame")
    assert info.value.__cause__ is not None  # the reader's own error stays in the chain


def test_read_image_names_a_truncated_nifti_with_a_monai_reader(tmp_path):
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4)), str(path))
    assert read_image(path, LoadImage(image_only=True)).shape == (8, 8, 8)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"image '.*vol\.nii\.gz' could not be read .*readable \.nii\.gz file"):
        read_image(path, LoadImage(image_only=True))


def test_read_image_missing_file_and_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"video file not found: '.*nothing\.mp4'"):
        read_image(tmp_path / "nothing.mp4", what="video")
    (tmp_path / "x.bin").write_bytes(b"x")

    def boom(path: str) -> None:
        raise KeyError("codec")

    with pytest.raises(ValueError, match=r"image '.*x\.bin' could not be read \(KeyError: 'codec'\)"):
        read_image(tmp_path / "x.bin", boom)

    def oom(path: str) -> None:
        raise MemoryError

    with pytest.raises(MemoryError):  # not a file fault: not rewrapped
        read_image(tmp_path / "x.bin", oom)


# ------------------------------------------------------------------------------------------------ validate_image
def _arrays(a: np.ndarray) -> list:
    return [a, torch.as_tensor(a), MetaTensor(torch.as_tensor(a))]


@pytest.mark.parametrize("image", _arrays(np.zeros((1, 4, 5, 6), np.float32)))
def test_validate_image_passes_a_good_image_through(image):
    assert validate_image(image, "v.nii.gz", ndim=4) is image
    assert validate_image(image, "v.nii.gz", ndim=(3, 4)) is image


@pytest.mark.parametrize("image", _arrays(np.zeros((4, 5), np.float32)))
def test_validate_image_wrong_dimensionality(image):
    with pytest.raises(ValueError, match=r"image 'a\.png' has shape \(4, 5\) \(2 dimensions\); expected 3 or 4 "
                                         r"dimensions\."):
        validate_image(image, "a.png", ndim=(3, 4))
    with pytest.raises(ValueError, match=r"training image 'a\.png' .*expected a 3D volume \(X, Y, Z\)\."):
        validate_image(image, "a.png", ndim=3, layout="a 3D volume (X, Y, Z)", what="training image")


@pytest.mark.parametrize("bad, counts", [((np.nan,), (1, 0)), ((np.inf,), (0, 1)), ((np.nan, -np.inf), (1, 1))])
@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_validate_image_non_finite(bad, counts, kind):
    a = np.zeros((3, 4, 5), np.float32)
    positions = [(1, 2, 3), (2, 0, 1)][: len(bad)]
    for pos, v in zip(positions, bad, strict=True):
        a[pos] = v
    image = dict(zip(["numpy", "torch", "meta"], _arrays(a), strict=True))[kind]
    first = min(positions)  # row-major order, as the helper reports
    with pytest.raises(ValueError, match=rf"image 'x\.tif' holds {counts[0]} NaN and {counts[1]} infinite value\(s\) "
                                         rf"\(the first at index \({first[0]}, {first[1]}, {first[2]}\)\); expected "
                                         r"finite intensities\."):
        validate_image(image, "x.tif")
    assert validate_image(image, "x.tif", finite=False) is image


def test_validate_image_integer_images_are_always_finite():
    a = np.full((3, 3), 255, np.uint8)
    assert validate_image(a, "a.png") is a


# ------------------------------------------------------------------------------------------------ validate_label_map
@pytest.mark.parametrize("label", _arrays(np.array([[0, 1], [2, 255]], np.uint8)) + [np.array([[0.0, 2.0]])])
def test_validate_label_map_good(label):
    assert validate_label_map(label, "l.png", num_classes=3, ignore_label=255) is label


@pytest.mark.parametrize(
    "label, kwargs, match",
    [
        (np.full((4, 4), 255), {"ignore_label": 255},
         r"label map 'l\.png' is empty: every pixel is the ignore label 255; expected at least one pixel of a class "
         r"0\.\.2\."),
        (np.array([[0, 255], [0, 0]]), {"ignore_label": 255},
         r"is empty: no pixel of a foreground class \(only background 0 or ignore 255\); expected at least one pixel "
         r"of a class 1\.\.2\."),
        (np.zeros((2, 2)), {}, r"no pixel of a foreground class \(only background 0\)"),
        (np.array([[0, 255]]), {}, r"holds value\(s\) \[255\] that are not class ids; expected 0\.\.2 \("),
        (np.array([[0, 1, 3, 7]]), {"ignore_label": 255},
         r"holds value\(s\) \[3, 7\] that are not class ids; expected 0\.\.2 or the ignore label 255"),
        (np.array([[0.0, 0.5, 1.0]]), {}, r"holds value\(s\) \[0\.5\] that are not class ids"),
        (np.array([[1]]), {"num_classes": 0}, r"num_classes must be >= 1, got 0"),
    ],
)
def test_validate_label_map_bad(label, kwargs, match):
    kwargs = {"num_classes": 3, **kwargs}
    for lab in (label, torch.as_tensor(label)):
        with pytest.raises(ValueError, match=match):
            validate_label_map(lab, "l.png", **kwargs)


def test_validate_label_map_background_only_allowed_on_request():
    lab = np.zeros((3, 3), np.int64)
    assert validate_label_map(lab, "l.png", num_classes=3, require_foreground=False) is lab


# ------------------------------------------------------------------------------------------------ validate_distribution
@pytest.mark.parametrize("values", [[0.2, 0.3, 0.5], (1.0, 0.0, 0.0), np.array([0.1, 0.1, 0.8]), [0.3334] * 3])
def test_validate_distribution_good(values):
    out = validate_distribution(values, "pmf", num_classes=3)
    assert out.dtype == np.float64 and out.shape == (3,)
    np.testing.assert_array_equal(out, np.asarray(values, np.float64))  # returned as given, not renormalised


@pytest.mark.parametrize(
    "values, num_classes, match",
    [
        ([0.5, 0.6], None, r"sperm 3 must sum to 1 \(a distribution over grades\), got sum 1\.1 for \[0\.5, 0\.6\]"),
        ([0.2, 0.2], None, r"must sum to 1 .*got sum 0\.4"),
        ([1.5, -0.5], None, r"must be non-negative \(a distribution over grades\), got \[1\.5, -0\.5\]"),
        ([0.5, 0.5], 5, r"has 2 entries, expected 5 \(one per grade\)"),
        ([float("nan"), 1.0], None, r"must hold finite numbers, got \[nan, 1\.0\]"),
        ([float("inf"), 0.0], None, r"must hold finite numbers"),
        ([[0.5, 0.5]], None, r"must be a flat, non-empty list of numbers"),
        ([], None, r"must be a flat, non-empty list of numbers"),
        (["a", 0.5], None, r"sperm 3 must be a list of numbers, got \['a', 0\.5\]"),
        (None, None, r"must be a flat, non-empty list of numbers, got None"),
    ],
)
def test_validate_distribution_bad(values, num_classes, match):
    with pytest.raises(ValueError, match=match):
        validate_distribution(values, "sperm 3", num_classes=num_classes)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=2, max_size=8).filter(lambda v: sum(v) > 1e-3),
       st.floats(0.01, 0.5))
def test_validate_distribution_property(weights, excess):
    pmf = np.asarray(weights) / np.sum(weights)
    validate_distribution(pmf.tolist(), "p", num_classes=len(pmf))  # any normalised pmf passes
    with pytest.raises(ValueError, match="must sum to 1"):
        validate_distribution((pmf * (1.0 + excess)).tolist(), "p")  # a scaled one fails
