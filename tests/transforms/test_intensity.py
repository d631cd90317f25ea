"""RandTissueContrast (tissue means really change, held-out contrasts never drawn, shells) and
MaskedPercentileNormalize (numpy reference, field-of-view and skull invariance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRangePercentiles
from scipy import ndimage

from monai_ext.data.synthetic.brain import load_mni152_tissues
from monai_ext.transforms import (
    CONTRAST_PRESETS,
    MaskedPercentileNormalize,
    MaskedPercentileNormalized,
    RandTissueContrast,
    RandTissueContrastd,
    foreground_mask,
)


@pytest.fixture(scope="module")
def tpl():
    return load_mni152_tissues(4)


def _pure(tpl, channel):
    """Voxels where one tissue has probability > 0.95 (so partial volume is negligible)."""
    return tpl.tissues[channel] > 0.95


@pytest.mark.parametrize("preset", ["t1", "t2", "pd"])
def test_preset_tissue_means(tpl, preset):
    t = RandTissueContrast(contrasts=(preset,), exclude=(), jitter=0.0, skull_prob=0.0, template_mix=(0.0, 0.0),
                           texture=0.0)
    img = np.asarray(t(tpl.tissues))[0]
    for channel, tissue in ((1, "gm"), (2, "wm"), (3, "csf")):
        m = _pure(tpl, channel)
        # the image is sum_k p_k * mean_k; on pure voxels it is within 5 % of the tissue's mean
        expected = (tpl.tissues[1:4, m] * np.array([[CONTRAST_PRESETS[preset][k]] for k in ("gm", "wm", "csf")]))
        np.testing.assert_allclose(img[m], expected.sum(0), atol=1e-5)
        assert abs(img[m].mean() - CONTRAST_PRESETS[preset][tissue]) < 0.05 * CONTRAST_PRESETS[preset][tissue] + 1e-3
    assert (img[tpl.tissues[1:4].sum(0) == 0] == 0).all()  # no skull: nothing outside the brain


def test_random_contrasts_change_and_reorder_tissue_means(tpl):
    t = RandTissueContrast(contrasts=("random",), skull_prob=0.0, template_mix=(0.0, 0.0), texture=0.0)
    t.set_random_state(0)
    wm, gm = _pure(tpl, 2), _pure(tpl, 1)
    pairs = []
    for _ in range(12):
        img = np.asarray(t(tpl.tissues))[0]
        pairs.append((img[wm].mean(), img[gm].mean()))
    pairs = np.array(pairs)
    assert pairs[:, 0].std() > 0.1 and pairs[:, 1].std() > 0.1
    assert (pairs[:, 0] > pairs[:, 1]).any() and (pairs[:, 0] < pairs[:, 1]).any()  # both orderings occur


def test_held_out_contrasts_are_never_drawn():
    t = RandTissueContrast(contrasts=("t1", "random"), exclude=("t2", "pd"), exclusion_margin=0.2)
    t.set_random_state(3)
    stack = np.zeros((5, 4, 4, 4), np.float32)
    seen = set()
    for _ in range(400):
        t(stack)
        seen.add(t.contrast)
        if t.contrast == "random":
            v = np.array([t.means["csf"], t.means["gm"], t.means["wm"]])
            v = v / v.max()
            for held in ("t2", "pd"):
                h = np.array([CONTRAST_PRESETS[held][k] for k in ("csf", "gm", "wm")])
                assert np.abs(v - h / h.max()).max() >= 0.2
    assert seen == {"t1", "random"}


def test_skull_shells(tpl):
    kw = {"contrasts": ("t1",), "exclude": (), "jitter": 0.0, "template_mix": (0.0, 0.0), "texture": 0.0}
    with_skull = RandTissueContrast(skull_prob=1.0, rim_mm=(2.0, 2.0), skull_mm=(6.0, 6.0), scalp_mm=(6.0, 6.0),
                                    thickness_variation=0.0, **kw)
    img = np.asarray(with_skull(tpl.tissues))[0]
    dist = np.where(tpl.tissues[1:4].sum(0) > 0, 0.0, tpl.tissues[4])  # voxels with no brain partial volume
    m = CONTRAST_PRESETS["t1"]
    # away from the one-voxel ramps each shell has its tissue's mean: bone 2-8 mm, scalp 8-14 mm, nothing beyond
    np.testing.assert_allclose(img[(dist > 4.1) & (dist < 5.9)], m["skull"], atol=1e-5)
    np.testing.assert_allclose(img[(dist > 10.1) & (dist < 11.9)], m["scalp"], atol=1e-5)
    assert (img[dist > 16.1] == 0).all()
    assert with_skull.skull


@pytest.mark.parametrize(
    "kwargs, match",
    [({"contrasts": ("flair",)}, "contrasts must be"), ({"exclude": ("flair",)}, "not presets"),
     ({"contrasts": ("t2",), "exclude": ("t2",)}, "both drawn"), ({"probs": (1.0,)}, "probs must be"),
     ({"rim_mm": (3.0, 1.0)}, "rim_mm"), ({"template_levels": (0.9, 0.5, 0.2)}, "increasing")],
)
def test_tissue_contrast_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandTissueContrast(**kwargs)
    with pytest.raises(ValueError, match="tissue stack"):
        RandTissueContrast()(np.zeros((3, 4, 4, 4)))


def test_tissue_contrast_dict_and_types(tpl):
    d = RandTissueContrastd("tissues", image_key="image", contrasts=("t2",), exclude=(), skull_prob=1.0)
    d.set_random_state(1)
    out = d({"tissues": MetaTensor(torch.as_tensor(tpl.tissues), affine=torch.as_tensor(tpl.affine))})
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == (1, *tpl.shape)
    np.testing.assert_allclose(out["image"].affine, tpl.affine)
    assert out["image_contrast"] == "t2" and out["image_skull"] is True
    assert isinstance(RandTissueContrast()(tpl.tissues), np.ndarray)


def _reference(img, mask, lower, upper, erode_mm, spacing):
    inner = ndimage.distance_transform_edt(mask, sampling=spacing) > erode_mm if erode_mm else mask
    lo, hi = np.percentile(img[0][inner], [lower, upper])
    return (img - lo) / (hi - lo)


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("lower, upper, erode_mm", [(2.0, 98.0, 5.0), (0.0, 100.0, 0.0), (10.0, 60.0, 8.0)])
def test_masked_normalize_matches_numpy(tpl, as_torch, lower, upper, erode_mm):
    rng = np.random.default_rng(0)
    img = (tpl.tissues[:1] * 300 + rng.normal(0, 5, tpl.tissues[:1].shape)).astype(np.float32)
    x = MetaTensor(torch.as_tensor(img), affine=torch.as_tensor(tpl.affine)) if as_torch else img
    out = MaskedPercentileNormalize(lower, upper, erode_mm=erode_mm, min_voxels=10)(x, tpl.mask)
    spacing = tpl.spacing if as_torch else np.ones(3)
    np.testing.assert_allclose(np.asarray(out), _reference(img, tpl.mask, lower, upper, erode_mm, spacing),
                               rtol=1e-4, atol=1e-4)
    assert isinstance(out, MetaTensor if as_torch else np.ndarray)


def test_normalisation_ignores_skull_and_field_of_view(tpl):
    """Adding a skull or padding the field of view leaves the brain's normalised intensities unchanged, while
    whole-image percentiles move them (the failure of issue 16)."""
    kw = {"contrasts": ("t1",), "exclude": (), "jitter": 0.0, "template_mix": (0.5, 0.5), "texture": 0.0}
    stripped = np.asarray(RandTissueContrast(skull_prob=0.0, **kw)(tpl.tissues))
    skull = np.asarray(RandTissueContrast(skull_prob=1.0, **kw)(tpl.tissues))
    padded = np.pad(stripped, ((0, 0), (10, 10), (20, 0), (0, 15)))
    padded_mask = np.pad(tpl.mask, ((10, 10), (20, 0), (0, 15)))
    brain = ndimage.distance_transform_edt(tpl.mask, sampling=tpl.spacing) > 8.0
    norm = MaskedPercentileNormalize(2, 98, erode_mm=5.0)
    affine = torch.as_tensor(tpl.affine)
    a = np.asarray(norm(MetaTensor(torch.as_tensor(stripped), affine=affine), tpl.mask))[0][brain]
    b = np.asarray(norm(MetaTensor(torch.as_tensor(skull), affine=affine), tpl.mask))[0][brain]
    c = np.asarray(norm(MetaTensor(torch.as_tensor(padded), affine=affine), padded_mask))[0, 10:-10, 20:, :-15][brain]
    assert np.abs(a - b).max() < 1e-5 and np.abs(a - c).max() < 1e-5
    whole = ScaleIntensityRangePercentiles(1, 99.9, 0.0, 1.0)
    moved = np.abs(np.asarray(whole(stripped))[0][brain] - np.asarray(whole(skull))[0][brain]).mean()
    assert moved > 0.05


def test_foreground_mask_mode_is_padding_invariant(tpl):
    img = (tpl.tissues[:1] * 100 + 1.0).astype(np.float32) * (tpl.tissues[4] < 12)[None]
    padded = np.pad(img, ((0, 0), (7, 3), (0, 9), (5, 5)))
    norm = MaskedPercentileNormalize(2, 98, erode_mm=0.0)
    a = norm(img)
    b = norm(padded)[:, 7:-3, :-9, 5:-5]
    np.testing.assert_allclose(a, b, atol=1e-6)
    fg = foreground_mask(img)
    assert fg[tpl.mask].mean() > 0.95 and not fg[0, 0, 0]


def _otsu_mask(x):
    """The previous rule, for contrast: Otsu's threshold over the whole range (256 bins), largest component."""
    hist, edges = np.histogram(x, bins=256, range=(float(x.min()), float(x.max())))
    c = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * c) / np.maximum(w0, 1)
    m1 = (np.sum(hist * c) - np.cumsum(hist * c)) / np.maximum(w1, 1)
    fg = x > c[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))]
    labels, _ = ndimage.label(fg)
    return labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)


def test_foreground_mask_keeps_a_head_under_a_strong_bias_field_with_no_background(tpl):
    """A T1-like head with skull, a bias field that varies more than 7-fold across it and a few extreme voxels, cut
    to the head's box (no background): the mask keeps the whole brain, where Otsu's threshold lost most of it (the
    failure seen on the box-cut brains of the aneurysm bundle's evaluation)."""
    kw = {"contrasts": ("t1",), "exclude": (), "jitter": 0.0, "template_mix": (0.5, 0.5), "texture": 0.0}
    head = np.asarray(RandTissueContrast(skull_prob=1.0, **kw)(tpl.tissues))[0] * 100.0 + 1.0
    rng = np.random.default_rng(3)
    ramp = np.linspace(-1.0, 1.0, head.shape[0])[:, None, None] + np.linspace(-0.3, 0.3, head.shape[2])[None, None]
    img = head * np.exp(ramp)
    img[tuple(rng.integers(0, s, 12) for s in img.shape)] = 40.0 * img.max()  # extreme voxels
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(tpl.mask))
    cut, brain = img[box], tpl.mask[box]
    fg = foreground_mask(cut)
    assert fg[brain].mean() > 0.97
    assert _otsu_mask(cut)[brain].mean() < 0.6  # what the previous rule kept: this test can tell them apart
    # the threshold is BET's: 10 % of the way from the minimum to the 98th percentile of the voxels above it
    lo = cut.min()
    t = lo + 0.1 * (np.percentile(cut[cut > lo], 98) - lo)
    labels, _ = ndimage.label(cut > t)
    largest = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    np.testing.assert_array_equal(fg, ndimage.binary_fill_holes(largest))
    # constant padding at the minimum changes nothing; a (1, X, Y, Z) channel-first input gives the same mask
    padded = np.pad(cut, ((3, 5), (0, 4), (6, 0)), constant_values=float(lo))
    np.testing.assert_array_equal(foreground_mask(padded[None])[3:-5, :-4, 6:], fg)
    with pytest.raises(ValueError, match="fraction"):
        foreground_mask(cut, fraction=1.0)
    with pytest.raises(ValueError, match="upper"):
        foreground_mask(cut, upper=0.0)
    with pytest.raises(ValueError, match="constant"):
        foreground_mask(np.ones((4, 4, 4)))


def test_masked_normalize_dict_and_errors(tpl):
    img = tpl.tissues[:1] * 10
    out = MaskedPercentileNormalized("image", mask_key="brain_mask", erode_mm=0.0)(
        {"image": img, "brain_mask": tpl.mask[None]})
    assert abs(np.percentile(out["image"][0][tpl.mask], 98) - 1.0) < 1e-5
    with pytest.raises(KeyError, match="mask_key 'brain_mask'"):
        MaskedPercentileNormalized("image")({"image": img})
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        MaskedPercentileNormalize(50, 10)
    with pytest.raises(ValueError, match="spatial shape"):
        MaskedPercentileNormalize()(img, tpl.mask[:-1])
    with pytest.raises(ValueError, match="min_voxels"):
        MaskedPercentileNormalize(erode_mm=200.0)(img, tpl.mask)
    with pytest.raises(ValueError, match="constant region"):
        MaskedPercentileNormalize(erode_mm=0.0, min_voxels=1)(np.ones_like(img), tpl.mask)
