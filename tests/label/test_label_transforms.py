"""What the MONAI Label app adds around a 2D bundle's pipeline (``monai_ext.label.transforms``); no ``monailabel``.

Over HTTP (X x Y x 1 NIfTI in, label on its grid out; 422 for empty, unreadable and NaN images) in
``tests/integration/test_monailabel_server.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, NormalizeIntensityd

from monai_ext.label.landmarks import InvalidInferInput
from monai_ext.label.transforms import (
    Restore2Dd,
    SqueezeSingletonAxisd,
    check_not_empty,
    input_error,
    singleton_axis,
)
from monai_ext.transforms import ValidateImaged

AFFINE = np.array([[0.5, 0, 0, -10.0], [0, -0.25, 0, 7.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]])


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((660, 550, 1), 2),
        ((1, 660, 550), 0),
        ((660, 1, 550), 1),
        ((660, 550), None),  # already 2D
        ((4, 5, 6), None),  # a volume
        ((1, 1, 5), None),  # a line: which plane would it be?
        ((1, 1, 1), None),
        (np.array([7, 1, 9]), 1),  # MONAI's spatial_shape metadata is an array
    ],
)
def test_singleton_axis(shape, expected):
    assert singleton_axis(shape) == expected


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((1, 20, 30, 1), (1, 20, 30)),
        ((3, 20, 30, 1), (3, 20, 30)),  # colour channels are kept
        ((1, 1, 20, 30), (1, 20, 30)),
        ((1, 20, 1, 30), (1, 20, 30)),
        ((1, 20, 30), (1, 20, 30)),  # 2D: unchanged
        ((1, 4, 5, 6), (1, 4, 5, 6)),  # a volume: left for the bundle's check to refuse
        ((1, 1, 1, 6), (1, 1, 1, 6)),
    ],
)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_squeeze_singleton_axis_shapes(shape, expected, kind):
    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    img = arr if kind == "numpy" else torch.as_tensor(arr)
    out = SqueezeSingletonAxisd("image")({"image": img, "other": 1})
    assert tuple(out["image"].shape) == expected and out["other"] == 1
    np.testing.assert_array_equal(np.asarray(out["image"]), arr.reshape(expected))  # same values, same order
    assert isinstance(out["image"], type(img))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_squeeze_singleton_axis_drops_the_axis_from_the_affine(axis):
    shape = [6, 7, 8]
    shape[axis] = 1
    img = MetaTensor(torch.rand(1, *shape), affine=torch.as_tensor(AFFINE))
    out = SqueezeSingletonAxisd("image")({"image": img})["image"]
    keep = [i for i in range(4) if i != axis]
    np.testing.assert_allclose(out.affine.numpy(), AFFINE[np.ix_(keep, keep)])


def test_squeeze_singleton_axis_missing_key():
    with pytest.raises(KeyError):
        SqueezeSingletonAxisd("image")({"label": torch.zeros(1, 4, 4, 1)})
    assert SqueezeSingletonAxisd("image", allow_missing_keys=True)({"label": 1}) == {"label": 1}


def _ref(grid, affine=None) -> MetaTensor:
    meta = {"spatial_shape": np.asarray(grid)}
    if affine is not None:
        meta["original_affine"] = affine
    return MetaTensor(torch.zeros(1, 2, 2), meta=meta)


def test_restore2d_same_size_gives_uint8_plane():
    pred = torch.randint(0, 3, (1, 6, 4))
    out = Restore2Dd("pred", "image")({"pred": pred, "image": _ref((6, 4))})["pred"]
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pred[0].numpy())


def test_restore2d_resizes_to_the_stored_size_nearest():
    pred = torch.randint(0, 3, (1, 4, 6))
    out = Restore2Dd("pred", "image")({"pred": pred, "image": _ref((8, 12))})["pred"]
    np.testing.assert_array_equal(out, np.repeat(np.repeat(pred[0].numpy(), 2, 0), 2, 1))  # factor 2: each pixel 2x2


def test_restore2d_meta_dict_form_and_no_metadata():
    pred = np.random.default_rng(0).integers(0, 3, (5, 7))
    out = Restore2Dd("pred", "image")({"pred": pred, "image_meta_dict": {"spatial_shape": [5, 7]}})["pred"]
    np.testing.assert_array_equal(out, pred)
    out = Restore2Dd("pred", "image")({"pred": pred})["pred"]  # nothing to restore to: the label as it is
    np.testing.assert_array_equal(out, pred)


@pytest.mark.parametrize("grid", [(6, 4, 1), (1, 6, 4), (6, 1, 4)])
def test_restore2d_puts_the_label_back_on_a_3d_grid_with_the_file_affine(grid):
    pred = torch.randint(0, 3, (1, 6, 4))
    out = Restore2Dd("pred", "image")({"pred": pred, "image": _ref(grid, AFFINE)})["pred"]
    assert isinstance(out, MetaTensor) and tuple(out.shape) == grid and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy().reshape(6, 4), pred[0].numpy())
    np.testing.assert_allclose(out.affine.numpy(), AFFINE)


@pytest.mark.parametrize(
    "pred, grid, match",
    [
        (torch.zeros(3, 6, 4), (6, 4), r"2D label 'pred' must have one channel, got shape \(3, 6, 4\)"),
        (torch.zeros(1, 1, 6, 4), (6, 4), r"must be 2D after the channel, got shape \(1, 1, 6, 4\)"),
        (torch.zeros(1, 6, 4), (6, 4, 2), r"cannot be put back on the 3D input grid \(6, 4, 2\)"),
    ],
)
def test_restore2d_errors(pred, grid, match):
    with pytest.raises(ValueError, match=match):
        Restore2Dd("pred", "image")({"pred": pred, "image": _ref(grid)})


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # the exception the server sees
        return e
    raise AssertionError("no exception")


def test_input_error_nan_image_keeps_the_check_message(tmp_path):
    import nibabel as nib

    arr = np.ones((6, 5), np.float32)
    arr[2, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    data = EnsureChannelFirstd("image")(LoadImaged("image")({"image": str(path)}))
    step = ValidateImaged("image", ndim=3)
    err = input_error(step, _raised(step, data), str(path))
    assert isinstance(err, InvalidInferInput)
    assert str(err) == (f"image (key 'image') '{path}' holds 1 NaN and 0 infinite value(s) (the first at index "
                        "(0, 2, 3)); expected finite intensities.")


def test_input_error_finds_the_check_inside_a_wrapping_error():
    from monai_ext.transforms import ImageValidationError

    try:
        try:
            raise ImageValidationError("image 'a.png' has shape (1, 2, 3, 4)", "a.png", (1, 2, 3, 4))
        except ImageValidationError as inner:
            raise RuntimeError("applying transform ValidateImaged") from inner  # what MONAI's Compose does
    except RuntimeError as e:
        err = input_error(object(), e, "a.png")
    assert str(err) == "image 'a.png' has shape (1, 2, 3, 4)"


class _LoaderWrapper:  # like MONAI Label's LoadImageTensord: holds the bundle's LoadImaged
    def __init__(self):
        self.load_image_d = LoadImaged("image")

    def __call__(self, data):
        return self.load_image_d(data)


@pytest.mark.parametrize("loader", [LoadImaged("image"), _LoaderWrapper()], ids=["LoadImaged", "wrapper"])
@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.png", b"", r"^cannot read image 'empty.png': the file is empty \(0 bytes\).$"),
        ("junk.png", b"not a png", r"^cannot read image 'junk.png' as an image: \w+"),
        ("junk.nii.gz", b"not gzip", r"^cannot read image 'junk.nii.gz' as an image: .*not a gzip file"),
    ],
)
def test_input_error_unreadable_files(tmp_path, loader, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    err = input_error(loader, _raised(loader, {"image": str(path)}), str(path))
    assert isinstance(err, InvalidInferInput)
    assert re.search(match, str(err)), str(err)


def test_input_error_leaves_server_errors_alone(tmp_path):
    step = NormalizeIntensityd("image")
    assert input_error(step, _raised(step, {"other": 1}), str(tmp_path / "a.png")) is None  # a bug, not the client's
    assert input_error(step, ValueError("boom"), None) is None


def test_check_not_empty():
    check_not_empty({"image": np.zeros((1, 3, 4))}, "image", "a.png")
    check_not_empty({"label": 1}, "image", "a.png")  # nothing to check
    with pytest.raises(InvalidInferInput, match=r"image 'a.nii' is empty: it has no pixels \(shape \(0, 28\) as read"):
        check_not_empty({"image": np.zeros((0, 28))}, "image", "/tmp/a.nii")
