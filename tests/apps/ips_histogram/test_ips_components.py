"""Pieces of the iPS colony bundle: case loading, grey conversion, overlays."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_ext.apps.ips_histogram import (
    LoadColonyCased,
    SaveOverlayd,
    ToGrayscaled,
    load_case,
    overlay_labels,
    to_grayscale,
)


@settings(max_examples=10, deadline=None)
@given(c=st.sampled_from([1, 2, 3, 4]), h=st.integers(1, 6), w=st.integers(1, 6))
def test_to_grayscale_numpy_and_torch(c, h, w):
    img = np.random.default_rng(c * h * w).random((c, h, w)).astype(np.float32)
    ref = img[0] if c < 3 else 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    out_np = to_grayscale(img)
    out_t = to_grayscale(torch.from_numpy(img))
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_np[0], ref, rtol=1e-6)
    np.testing.assert_allclose(out_t[0].numpy(), ref, rtol=1e-6)


def test_to_grayscale_bad_shape_and_dict_keeps_meta():
    with pytest.raises(ValueError, match="channel-first"):
        to_grayscale(np.zeros((5, 3, 3)))
    d = ToGrayscaled("image")({"image": MetaTensor(torch.rand(3, 4, 4), meta={"filename_or_obj": "x.png"})})
    assert d["image"].shape == (1, 4, 4) and d["image"].meta["filename_or_obj"] == "x.png"


def test_load_case_colour_and_shape_check(tmp_path):
    rgb = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", rgb)
    iio.imwrite(tmp_path / "l.png", np.zeros((10, 12), np.uint8))
    iio.imwrite(tmp_path / "bad.png", np.zeros((9, 12), np.uint8))
    image, label = load_case(tmp_path / "a.png", tmp_path / "l.png")
    assert image.shape == (10, 12) and abs(float(image.mean())) < 1e-5 and abs(float(image.std()) - 1) < 1e-4
    assert label.dtype == np.int64
    with pytest.raises(ValueError, match="expected the image's"):
        load_case(tmp_path / "a.png", tmp_path / "bad.png")


def test_overlay_and_save_overlayd(tmp_path):
    image = np.linspace(0, 1, 30).reshape(5, 6)
    label = np.zeros((5, 6), np.int64)
    label[0, 0], label[1, 1], label[2, 2] = 1, 2, 255
    rgb = overlay_labels(image, label, alpha=1.0)
    assert rgb.shape == (5, 6, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (40, 200, 60) and tuple(rgb[1, 1]) == (230, 50, 40)
    assert rgb[3, 3, 0] == rgb[3, 3, 1] == rgb[3, 3, 2]  # background stays grey
    data = {"image": MetaTensor(torch.as_tensor(image)[None], meta={"filename_or_obj": "/x/case_7.png"}),
            "pred": torch.as_tensor(label)[None]}
    SaveOverlayd("pred", output_dir=tmp_path)(data)
    assert iio.imread(tmp_path / "case_7_overlay.png").shape == (5, 6, 3)
    with pytest.raises(ValueError, match="does not match"):
        SaveOverlayd("pred", output_dir=tmp_path)({"image": data["image"], "pred": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match="same shape"):
        overlay_labels(image, label[:2])


def test_load_colony_cased_reads_checks_and_keeps_the_file_names(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    label = rng.integers(0, 3, (12, 10)).astype(np.uint8)
    label[0, 0] = 255
    iio.imwrite(tmp_path / "img.png", image)
    iio.imwrite(tmp_path / "lab.png", label)
    d = LoadColonyCased(num_classes=3, ignore_label=255)({"image": str(tmp_path / "img.png"),
                                                          "label": str(tmp_path / "lab.png"), "other": 1})
    ref_image, ref_label = load_case(tmp_path / "img.png", tmp_path / "lab.png", 3, 255)
    assert isinstance(d["image"], MetaTensor) and d["image"].shape == (1, 12, 10)
    np.testing.assert_array_equal(d["image"][0].numpy(), ref_image)
    np.testing.assert_array_equal(d["label"][0].numpy(), ref_label)
    assert d["image"].meta["filename_or_obj"] == str(tmp_path / "img.png") and d["other"] == 1
    assert list(d["label"].meta["spatial_shape"]) == [12, 10]
    # an unlabelled item only with allow_missing_keys; a bad label map is named
    assert "label" not in LoadColonyCased(allow_missing_keys=True)({"image": str(tmp_path / "img.png")})
    with pytest.raises(KeyError, match="item has no 'label'"):
        LoadColonyCased()({"image": str(tmp_path / "img.png")})
    iio.imwrite(tmp_path / "bad.png", np.full((12, 10), 128, np.uint8))
    with pytest.raises(ValueError, match=r"label map '.*bad\.png' holds value\(s\) \[128\]"):
        LoadColonyCased()({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "bad.png")})
    with pytest.raises(ValueError, match="keys must be"):
        LoadColonyCased(keys=("image",))
