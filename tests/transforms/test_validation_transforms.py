"""ValidateImage / ValidateImaged: the input checks of the inference pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_ext.transforms import ImageValidationError, ValidateImage, ValidateImaged, ValidateImageDict


def test_valid_input_passes_through_unchanged():
    img = MetaTensor(torch.rand(1, 4, 5, 6), meta={"filename_or_obj": "/data/a.nii.gz"})
    out = ValidateImage(ndim=4, channels=1)(img)
    assert out is img
    arr = np.zeros((3, 8, 8), np.uint8)  # integer images cannot hold NaN
    assert ValidateImage(ndim=3, channels=(1, 3))(arr) is arr


def test_wrong_ndim_names_the_file_and_the_layout():
    img = MetaTensor(torch.zeros(1, 8, 9), meta={"filename_or_obj": "/data/slice.png"})
    with pytest.raises(ImageValidationError, match=r"image '/data/slice\.png' has shape \(1, 8, 9\) \(3 dimensions\); "
                       r"expected a 3D volume \(1, X, Y, Z\)\.") as info:
        ValidateImage(ndim=4, layout="a 3D volume (1, X, Y, Z)")(img)
    assert info.value.path == "/data/slice.png" and info.value.shape == (1, 8, 9)
    assert isinstance(info.value, ValueError)


def test_wrong_channel_count():
    with pytest.raises(ImageValidationError, match=r"image '<array>' has 2 channel\(s\) \(shape \(2, 4, 4, 4\)\); "
                       r"expected 1 channel\(s\): a volume\."):
        ValidateImage(ndim=4, channels=1, layout="a volume")(torch.zeros(2, 4, 4, 4))


@pytest.mark.parametrize("value, counts", [(float("nan"), "1 NaN and 0 infinite"),
                                           (float("inf"), "0 NaN and 1 infinite"),
                                           (float("-inf"), "0 NaN and 1 infinite")])
def test_non_finite_values_are_counted_and_located(value, counts):
    img = np.zeros((1, 3, 4), np.float32)
    img[0, 2, 1] = value
    with pytest.raises(ImageValidationError, match=rf"{counts} value\(s\) \(the first at index \(0, 2, 1\)\)"):
        ValidateImage()(img)
    assert ValidateImage(finite=False)(img) is img


def test_dict_form_names_the_key_and_the_file_and_honours_missing_keys():
    img = MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "b.png"})
    with pytest.raises(ValueError, match=r"image \(key 'image'\) 'b\.png' has shape \(1, 8, 8\)"):
        ValidateImaged("image", ndim=4)({"image": img})
    data = {"label": img}
    assert ValidateImageDict("image", ndim=4, allow_missing_keys=True)(data)["label"] is img
    with pytest.raises(KeyError):
        ValidateImaged("image", ndim=4)(data)


def test_error_is_reachable_under_monai_compose():
    # MONAI wraps a failing transform in RuntimeError; the validation error is the cause, with its path and shape
    img = MetaTensor(torch.full((1, 4, 4), float("nan")), meta={"filename_or_obj": "c.tif"})
    with pytest.raises(RuntimeError) as info:
        Compose([ValidateImaged("image", ndim=3)])({"image": img})
    cause = info.value.__cause__
    assert isinstance(cause, ImageValidationError) and cause.path == "c.tif" and "16 NaN" in str(cause)


def test_fill_reads_non_finite_values_as_background_and_says_so(caplog):
    """finite="fill": NaN / infinite voxels become the image's lowest finite value, the meta is kept, a warning
    names the file and the count; an image with nothing finite is still refused."""
    data = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4) - 5.0
    data[0, 0, 0, :2] = float("nan")
    data[0, 1, 2, 3] = float("inf")
    img = MetaTensor(data.clone(), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])),
                     meta={"filename_or_obj": "/data/wT1.nii"})
    with caplog.at_level("WARNING", logger="monai_ext.transforms.validation"):
        out = ValidateImaged("image", ndim=4, finite="fill")({"image": img})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "/data/wT1.nii"
    np.testing.assert_array_equal(out.affine.numpy(), img.affine.numpy())
    finite = torch.isfinite(data)
    low = float(data[finite].min())  # -3: the two NaN sat on the lowest values
    assert torch.isfinite(out).all() and torch.equal(out.as_tensor()[finite], data[finite])
    assert (out.as_tensor()[~finite] == low).all()
    assert "'/data/wT1.nii': 3 NaN or infinite value(s) of 24 read as background" in caplog.text
    arr = np.array([[1.5, np.nan], [np.inf, 0.5]], np.float32)  # numpy in, numpy out
    filled = ValidateImage(finite="fill")(arr)
    assert isinstance(filled, np.ndarray) and filled.dtype == np.float32
    np.testing.assert_array_equal(filled, [[1.5, 0.5], [0.5, 0.5]])
    clean = torch.rand(1, 3, 3, 3)
    assert ValidateImage(finite="fill")(clean) is clean  # nothing to fill: the same object, no warning
    with pytest.raises(ImageValidationError, match=r"image '<array>' holds no finite value \(shape \(1, 2, 2\)\)"):
        ValidateImage(finite="fill")(torch.full((1, 2, 2), float("nan")))


def test_non_finite_error_carries_the_hint_and_finite_is_checked():
    img = MetaTensor(torch.tensor([[[0.0, float("nan")]]]), meta={"filename_or_obj": "/data/wT1.nii"})
    with pytest.raises(ImageValidationError, match=r"expected finite intensities\. rerun with --fill_nonfinite true"):
        ValidateImaged("image", hint="rerun with --fill_nonfinite true")({"image": img})
    with pytest.raises(ImageValidationError) as info:
        ValidateImage(ndim=4, hint="rerun with --fill_nonfinite true")(torch.zeros(1, 2, 2))
    assert "(3 dimensions)" in str(info.value) and "fill_nonfinite" not in str(info.value)  # non-finite values only
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="finite must be True, False or 'fill'"):
            ValidateImaged("image", finite=bad)
