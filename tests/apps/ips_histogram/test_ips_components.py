"""Pieces of the iPS colony workflow: evaluation, patch sampler, grey conversion, overlays, the export network."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from sklearn.metrics import jaccard_score

from monai_ext.apps.ips_histogram import (
    ConfusionAccumulator,
    PatchSampler,
    SaveOverlayd,
    ToGrayscaled,
    jaccard_from_confusion,
    load_case,
    overlay_labels,
    to_grayscale,
)


def naive_jaccard(preds, truths, k, ignore):
    out = []
    for c in range(k):
        inter = union = 0
        for p, t in zip(preds, truths, strict=True):
            for pv, tv in zip(np.ravel(p), np.ravel(t), strict=True):
                if tv == ignore:
                    continue
                inter += pv == c and tv == c
                union += pv == c or tv == c
        out.append(inter / union if union else np.nan)
    return np.array(out)


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jaccard_pools_pixels_and_ignores(seed, as_torch):
    rng = np.random.default_rng(seed)
    preds = [rng.integers(0, 3, (7, 9)) for _ in range(3)]
    truths = [np.where(rng.random((7, 9)) < 0.2, 255, rng.integers(0, 3, (7, 9))) for _ in range(3)]
    acc = ConfusionAccumulator(3, 255)
    for p, t in zip(preds, truths, strict=True):
        acc.update(torch.as_tensor(p) if as_torch else p, torch.as_tensor(t) if as_torch else t)
    ref = naive_jaccard(preds, truths, 3, 255)
    np.testing.assert_allclose(acc.jaccard(), ref)
    t_all, p_all = np.concatenate([t.ravel() for t in truths]), np.concatenate([p.ravel() for p in preds])
    keep = t_all != 255
    sk = jaccard_score(t_all[keep], p_all[keep], labels=[0, 1, 2], average=None)
    np.testing.assert_allclose(acc.jaccard(), sk)
    s = acc.summary(["bg", "good", "bad"])
    assert s["mean_jaccard"] == pytest.approx(100 * np.mean(ref))


def test_jaccard_absent_class_is_nan_and_skipped_in_mean():
    j = jaccard_from_confusion(np.array([[3, 0, 0], [1, 2, 0], [0, 0, 0]]))
    assert np.isnan(j[2]) and j[0] == pytest.approx(0.75)
    acc = ConfusionAccumulator(3)
    acc.update([0, 0, 1], [0, 0, 1])
    assert acc.summary(["a", "b", "c"])["mean_jaccard"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "pred, truth, match",
    [([0, 1], [0], "same shape"), ([0, 3], [0, 1], "pred labels"), ([0, 1], [0, 7], "truth labels")],
)
def test_jaccard_bad_inputs(pred, truth, match):
    with pytest.raises(ValueError, match=match):
        ConfusionAccumulator(3).update(pred, truth)


def test_jaccard_bad_options():
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionAccumulator(0)
    with pytest.raises(ValueError, match="class_names"):
        ConfusionAccumulator(3).summary(["a"])


def _coded_case(h=20, w=17, seed=0):
    """Image whose value encodes the pixel position, so each patch can be traced back to its crop."""
    rng = np.random.default_rng(seed)
    image = np.arange(h * w, dtype=np.float32).reshape(h, w)
    label = rng.integers(0, 3, (h, w))
    label[rng.random((h, w)) < 0.1] = 255
    return image, label


@pytest.mark.parametrize("p", [6, 7, 8])
def test_patch_sampler_patches_are_crops_centred_on_countable_pixels(p):
    image, label = _coded_case()
    sampler = PatchSampler([image], [label], p, augment=False, seed=3)
    imgs, labs = sampler.sample(40, epoch=0)
    assert imgs.shape == (40, 1, p, p) and labs.dtype == torch.int64
    lo, hi = p // 2, p - 1 - p // 2
    ref_img = np.pad(image, ((lo, hi), (lo, hi)), mode="reflect")
    ref_lab = np.pad(label, ((lo, hi), (lo, hi)), constant_values=255)
    for n in range(40):
        code = int(imgs[n, 0, p // 2, p // 2])
        y, x = divmod(code, image.shape[1])
        np.testing.assert_array_equal(imgs[n, 0].numpy(), ref_img[y : y + p, x : x + p])
        np.testing.assert_array_equal(labs[n, 0].numpy(), ref_lab[y : y + p, x : x + p])
        assert label[y, x] != 255


def test_patch_sampler_is_class_balanced_and_seeded():
    image, label = _coded_case(40, 40)
    label[:] = 0
    label[:3, :3] = 1  # a rare class
    label[-5:, -5:] = 2
    sampler = PatchSampler([image], [label], 8, augment=True, seed=0)
    imgs, labs = sampler.sample(900, epoch=1)
    counts = np.bincount(labs[:, 0, 4, 4].numpy().clip(0, 3), minlength=4)[:3]
    assert counts.min() > 200  # each class about a third, although class 1 has 9 of 1600 pixels
    a, b = sampler.sample(16, epoch=5), sampler.sample(16, epoch=5)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(sampler.sample(16, epoch=6)[0], a[0])


def test_patch_sampler_augmentation_keeps_image_and_label_aligned():
    image, label = _coded_case()
    sampler = PatchSampler([image], [label.clip(0, 2)], 6, augment=True, seed=1)
    imgs, labs = sampler.sample(64)
    lut = dict(zip(image.ravel().tolist(), label.clip(0, 2).ravel().tolist(), strict=True))
    for n in range(64):
        for v, lab in zip(imgs[n, 0].ravel().tolist(), labs[n, 0].ravel().tolist(), strict=True):
            if lab != 255 and v in lut:
                assert lut[v] == lab


@pytest.mark.parametrize(
    "args, match",
    [
        (([], [], 8), "non-empty"),
        (([np.zeros((4, 4))], [np.zeros((4, 5))], 2), "equal shape"),
        (([np.zeros((4, 4))], [np.zeros((4, 4))], 1), "patch_size"),
        (([np.zeros((4, 4))], [np.full((4, 4), 255)], 2), "no pixel"),
    ],
)
def test_patch_sampler_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        PatchSampler(*args)


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
