"""register_affine / AlignToTemplated: a known random affine is recovered (within 1 mm over the brain and 1 degree),
points map back to the input, and normalisation after alignment does not see the skull."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_ext.data.synthetic.brain import SynthesizeBraind, load_mni152_tissues
from monai_ext.transforms import (
    AlignToTemplated,
    MaskedPercentileNormalized,
    apply_matrix,
    clip_spikes,
    register_affine,
    resample_to_grid,
    rotation_angle_deg,
)

FAST = {"shrink_factors": (2, 1), "smoothing_mm": (4.0, 0.0), "iterations": (100, 60)}


@pytest.fixture(scope="module")
def tpl():
    return load_mni152_tissues(4)


def _fixed(tpl):
    return MetaTensor(torch.as_tensor(tpl.tissues[:1]), affine=torch.as_tensor(tpl.affine))


def _moving(tpl, seed, skull, contrast="t1"):
    gen = SynthesizeBraind(template=tpl, landmark_sets={"groundtruth": np.array([[0.0, -18.0, 5.0]])},
                           spatial_size=tpl.shape, output_affine=tpl.affine, artefacts=None,
                           contrast={"contrasts": (contrast,), "exclude": (), "skull_prob": float(skull)},
                           warp={"elastic_mm": 0.0, "center": np.zeros(3)})
    return gen.synthesize(seed)


@pytest.mark.slow  # ITK's first import takes 10-20 s
@pytest.mark.parametrize("seed, skull, contrast", [(0, False, "t1"), (1, True, "t1"), (2, True, "t2")])
def test_known_affine_recovered(tpl, seed, skull, contrast):
    """Rotation +-15 deg, scale +-10 %, translation +-15 mm; T1 or T2-like input, with or without skull."""
    sample = _moving(tpl, seed, skull, contrast)
    truth = np.linalg.inv(sample["warp"])  # template world -> input world
    assert rotation_angle_deg(truth) > 5.0 or np.abs(truth[:3, 3]).max() > 5.0  # a real displacement
    found = register_affine(_fixed(tpl), sample["image"], fixed_mask=tpl.mask, **FAST)
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    err = np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1)
    assert err.mean() < 1.0
    assert rotation_angle_deg(found @ sample["warp"]) < 1.0


@pytest.mark.slow
def test_initial_matrix_is_the_start(tpl):
    """``initial``: with no optimiser step the result is its closest similarity (rotation from the polar
    decomposition, isotropic scale det^(1/3), the fixed centre of mass mapped where ``initial`` maps it); started
    from a point 4 mm and 4 degrees off the truth, the registration still recovers the truth."""
    from scipy.spatial.transform import Rotation

    from monai_ext.transforms.alignment import _centre_of_mass

    fixed = _fixed(tpl)
    start = np.eye(4)
    start[:3, :3] = Rotation.from_euler("xyz", [12.0, -7.0, 20.0], degrees=True).as_matrix() @ np.diag([1.1, 1.0, 0.9])
    start[:3, 3] = [6.0, -3.0, 2.0]
    still = register_affine(fixed, fixed, fixed_mask=tpl.mask, transform="similarity", initial=start,
                            shrink_factors=(1,), smoothing_mm=(0.0,), iterations=(0,))
    u, _, vt = np.linalg.svd(start[:3, :3])
    np.testing.assert_allclose(still[:3, :3], np.cbrt(np.linalg.det(start[:3, :3])) * u @ vt, atol=1e-6)
    centre = _centre_of_mass(np.asarray(fixed[0]), np.asarray(tpl.affine), tpl.mask)
    np.testing.assert_allclose(apply_matrix(still, centre), apply_matrix(start, centre), atol=1e-4)

    sample = _moving(tpl, 0, False)
    truth = np.linalg.inv(sample["warp"])
    nudge = np.eye(4)
    nudge[:3, :3] = Rotation.from_euler("z", 4.0, degrees=True).as_matrix()
    nudge[:3, 3] = [4.0, 0.0, 0.0]
    found = register_affine(fixed, sample["image"], fixed_mask=tpl.mask, initial=truth @ nudge, **FAST)
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    assert np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean() < 1.0


@pytest.mark.slow
def test_bias_corrected_registration(tpl):
    """A strong smooth bias field (x4 across the head) is divided out before the registration: the corrected copy is
    flatter inside the brain, and the known affine is still recovered through it. N4 is fitted on an 8 mm grid
    (2x2x2 blocks of this 4 mm head: 5 s on one AMD EPYC core, 34 s on the head's own grid), through the same block
    mean and upsampling as a 1 mm brain on the default 4 mm grid."""
    from monai_ext.transforms.alignment import _n4_corrected

    sample = _moving(tpl, 3, True)
    image = np.asarray(sample["image"][0], dtype=np.float32)
    zz = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in image.shape], indexing="ij"), -1)
    biased = image * np.exp(np.log(2.0) * (zz[..., 0] + 0.5 * zz[..., 2]))
    affine = np.asarray(sample["image"].affine, dtype=np.float64)
    corrected = _n4_corrected(biased, affine, 8.0)
    brain = np.asarray(sample["brain_mask"][0]) > 0.5
    wm = brain & (image > np.percentile(image[brain], 75))  # bright tissue: one class, ideally one level

    def spread(v):
        return float(np.std(np.log(v[wm])))

    assert spread(corrected) < 0.6 * spread(biased)
    truth = np.linalg.inv(sample["warp"])
    points = apply_matrix(tpl.affine, np.argwhere(tpl.mask))

    def error(bias_correction):
        found = register_affine(_fixed(tpl), biased[None], moving_affine=affine, fixed_mask=tpl.mask,
                                bias_correction=bias_correction, bias_voxel_mm=8.0, **FAST)
        return np.linalg.norm(apply_matrix(found, points) - apply_matrix(truth, points), axis=1).mean()

    corrected_error, raw_error = error(True), error(False)
    assert corrected_error < min(raw_error, 4.0)  # better than without, and within one 4 mm voxel (0.86 vs 2.87)


@pytest.mark.slow
def test_align_to_template_maps_points_back_and_normalises_without_the_skull(tpl):
    fixed = _fixed(tpl)
    mask = MetaTensor(torch.as_tensor(tpl.mask[None].astype(np.float32)), affine=torch.as_tensor(tpl.affine))
    align = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, brain_mask=mask, **FAST)
    norm = MaskedPercentileNormalized("image", mask_key="brain_mask", erode_mm=8.0)
    inner = ndimage.distance_transform_edt(tpl.mask, sampling=tpl.spacing) > 10.0
    values = []
    for skull in (False, True):
        sample = _moving(tpl, 3, skull)
        d = norm(align({"image": sample["image"]}))
        assert d["image"].shape[1:] == tpl.shape and d["brain_mask"].dtype == torch.uint8
        np.testing.assert_allclose(d["image"].meta["original_affine"], sample["image"].affine)
        # the landmark, known in the input, is found at its template position and maps back
        template_point = apply_matrix(sample["warp"], sample["landmarks"])
        back = apply_matrix(d["template_to_image"], template_point)
        assert np.linalg.norm(back - sample["landmarks"]) < 1.0
        values.append(np.asarray(d["image"][0])[inner])
    assert np.abs(values[0] - values[1]).mean() < 0.02  # same brain with and without skull: same intensities


def test_clip_spikes_clips_only_isolated_outliers():
    rng = np.random.default_rng(0)
    vol = rng.normal(100.0, 10.0, (30, 30, 30)).astype(np.float32)
    vol[:10] = 0.0  # background
    same, count = clip_spikes(vol)
    assert same is vol and count == 0  # tissue only: untouched, not even copied
    lo, hi = np.percentile(vol, [0.1, 99.9])
    spiky = vol.copy()
    spiky[15, 15, 15], spiky[20, 5, 7] = 1e5, 3e4  # two spikes far above the tissue
    out, count = clip_spikes(spiky)
    hi_spiky = np.percentile(spiky, 99.9)
    assert count == int((spiky > hi_spiky).sum()) and out.max() == pytest.approx(hi_spiky)
    assert out.min() == spiky.min() and out.dtype == spiky.dtype  # the low side had no outlier: untouched
    np.testing.assert_array_equal(out[spiky <= hi_spiky], spiky[spiky <= hi_spiky])
    assert clip_spikes(out)[1] == 0  # idempotent
    assert hi_spiky == pytest.approx(hi, rel=0.05)
    low = vol.copy()
    low[3, 3, 3] = -1e5
    out, count = clip_spikes(low)
    assert out.min() == pytest.approx(np.percentile(low, 0.1)) and out.max() == low.max() and count >= 1
    # a ratio sets how far out a value must be: 2 spans beyond the range is tissue for 10, a spike for 1
    bright = vol.copy()
    bright[15, 15, 15] = hi + 2 * (hi - lo)
    assert clip_spikes(bright)[1] == 0 and clip_spikes(bright, spike_ratio=1.0)[1] > 0
    assert clip_spikes(spiky, spike_ratio=None)[0] is spiky
    for kwargs in ({"spike_ratio": 0.0}, {"percentiles": (99.0, 1.0)}):
        with pytest.raises(ValueError, match="spike_ratio must be positive"):
            clip_spikes(vol, **kwargs)


@pytest.mark.slow
def test_spikes_do_not_derail_the_registration(tpl, caplog):
    """Five voxels at 1000x the maximum flatten Mattes' histogram: without the clipping the alignment is far off;
    with it, as on the clean scan. The resampled output is clipped too, unless ``clip_output=False``."""
    sample = _moving(tpl, 1, True)
    truth = np.linalg.inv(sample["warp"])
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    img = sample["image"]
    spiky = img.clone()
    candidates = torch.nonzero(img[0] > img[0].median())
    spots = candidates[np.random.default_rng(0).choice(len(candidates), 5, replace=False)]
    spiky[0][tuple(spots.T)] = float(img.max()) * 1000

    def error(moving, **kwargs):
        found, info = register_affine(_fixed(tpl), moving, fixed_mask=tpl.mask, return_info=True, **FAST, **kwargs)
        return np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean(), info["metric"]

    clean, clean_metric = error(img)
    clipped, _ = error(spiky)
    kept, kept_metric = error(spiky, spike_ratio=None)
    assert clean < 1.0 and abs(clipped - clean) < 0.1
    assert kept > 5.0 and abs(kept_metric) < 0.01 < abs(clean_metric)  # the metric went flat
    align = AlignToTemplated("image", template=_fixed(tpl), template_mask=tpl.mask, **FAST)
    spiky.meta["filename_or_obj"] = "/data/scan_with_spikes.nii.gz"
    with caplog.at_level(logging.WARNING, logger="monai_ext.transforms.alignment"):
        d = align({"image": spiky})
    assert align.last_info["spikes_clipped"] > 0 and d["template_alignment"]["spikes_clipped"] > 0
    assert re.search(r"the image '/data/scan_with_spikes.nii.gz' has intensities far outside the range of its other "
                     r"voxels \(spikes: values from 0 to "
                     r"[0-9.e+]+\).*\(\d+ voxels in all\), clipped to \[0, ", caplog.text)
    assert np.linalg.norm(apply_matrix(d["template_to_image"], brain) - apply_matrix(truth, brain), axis=1).mean() < 1
    # the output is resampled from the clipped values; the spikes stay with clip_output=False
    hi = float(np.percentile(np.asarray(spiky), 99.9))
    assert float(d["image"].max()) <= hi + 1e-3 and float(d["image"].max()) > 0.5 * float(img.max())
    kept = AlignToTemplated("image", template=_fixed(tpl), template_mask=tpl.mask, clip_output=False, **FAST)
    d_kept = kept({"image": spiky})
    assert float(d_kept["image"].max()) > 100 * float(img.max())
    np.testing.assert_allclose(d_kept["template_to_image"], d["template_to_image"])  # the same registration
    clean = align({"image": img})
    assert clean["template_alignment"]["spikes_clipped"] == 0
    assert float(clean["image"].max()) > hi  # no spike: nothing clipped, the brightest tissue kept


@pytest.mark.slow
def test_align_to_template_keeps_no_per_call_state(tpl, monkeypatch):
    """One transform serving two images at once (``CacheDataset(num_workers=2)`` runs it in a thread pool): each
    output and record is its own image's. Made deterministic by running a clean image's whole call inside the
    spiky image's registration (what a second thread may do); the spike range and the record used to be kept on
    the instance between the registration and the resampling, so the spiky output came out unclipped."""
    import monai_ext.transforms.alignment as alignment

    img = _moving(tpl, 1, True)["image"]
    spiky = img.clone()
    spiky[0, 10, 12, 9] = float(img.max()) * 1000
    align = AlignToTemplated("image", template=_fixed(tpl), template_mask=tpl.mask, start_tolerance_mm=None,
                             head_height_mm=None, inverse_start_overlap=None, **FAST)
    alone = {"spiky": align({"image": spiky}), "clean": align({"image": img})}
    register, inner = alignment.register_affine, {}

    def interleaved(*args, **kwargs):
        if not inner:  # the first registration (the spiky image's): the clean image's call runs meanwhile
            inner["clean"] = None
            inner["clean"] = align({"image": img})
        return register(*args, **kwargs)

    monkeypatch.setattr(alignment, "register_affine", interleaved)
    outer = align({"image": spiky})
    for name, d in (("spiky", outer), ("clean", inner["clean"])):
        np.testing.assert_allclose(d["template_to_image"], alone[name]["template_to_image"])
        torch.testing.assert_close(d["image"], alone[name]["image"])
        assert d["template_alignment"]["spikes_clipped"] == alone[name]["template_alignment"]["spikes_clipped"]
    assert outer["template_alignment"]["spikes_clipped"] > 0 == inner["clean"]["template_alignment"]["spikes_clipped"]
    assert float(outer["image"].max()) < 2 * float(img.max())  # the spiky image's own clip range
    # register(return_info=True) hands the record back instead of leaving it on the instance only
    matrix, info = align.register(spiky, np.asarray(spiky.affine), return_info=True)
    np.testing.assert_allclose(matrix, alone["spiky"]["template_to_image"])
    assert info["spikes_clipped"] > 0 and info == align.last_info and info is not align.last_info


@pytest.mark.parametrize(
    "kwargs, match",
    [({"transform": "rigid"}, "transform must be"), ({"sampling": 0.0}, "sampling must be"),
     ({"shrink_factors": (2, 1), "smoothing_mm": (1.0,), "iterations": (10, 10)}, "one value per level"),
     ({"fixed_mask": np.ones((3, 3, 3))}, "fixed_mask has shape"), ({"initial": np.eye(3)}, "initial must be"),
     ({"initial": np.diag([1.0, 1.0, -1.0, 1.0])}, "initial must be"),
     ({"initial": np.full((4, 4), np.nan)}, "initial must be")],
)
def test_register_errors(tpl, kwargs, match):
    with pytest.raises(ValueError, match=match):
        register_affine(_fixed(tpl), _fixed(tpl), **kwargs)
    with pytest.raises(ValueError, match="single-channel 3D"):
        register_affine(_fixed(tpl), np.zeros((2, 4, 4, 4)))


def test_register_errors_name_the_mask():
    """An empty ``fixed_mask`` fails before ITK runs; one of a single voxel (no metric samples on the coarse level)
    fails with ITK's message, the level and the mask's size instead of ITK's message alone."""
    x = np.zeros((24, 24, 24), np.float32)
    x[6:18, 7:17, 8:16] = 1.0
    mask = np.zeros(x.shape, bool)
    with pytest.raises(ValueError, match="fixed_mask selects no voxel"):
        register_affine(x, x, fixed_mask=mask)
    mask[12, 12, 12] = True
    with pytest.raises(RuntimeError, match=r"shrink factors \[2, 1\] with a fixed_mask of 1 voxels.*ITK ERROR"):
        register_affine(x, np.roll(x, 2, 0), fixed_mask=mask, transform="similarity", shrink_factors=(2, 1),
                        smoothing_mm=(1.0, 0.0), iterations=(5, 5))


@pytest.mark.slow
def test_cut_field_of_view_leaves_the_normalisation_unchanged(tpl):
    """A head cut to part of the brain: the written mask holds only voxels inside the input's field of view, so the
    zero padding outside it never enters the percentiles, and the brain that is seen keeps its normalised values
    (with the padding counted, the median difference was 0.38 here)."""
    fixed = _fixed(tpl)
    mask = MetaTensor(torch.as_tensor(tpl.mask[None].astype(np.float32)), affine=torch.as_tensor(tpl.affine))
    align = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, brain_mask=mask, **FAST)
    norm = MaskedPercentileNormalized("image", mask_key="brain_mask", erode_mm=4.0)
    image = _moving(tpl, 4, False, "t2")["image"]  # T2-like: CSF bright, so zero padding would move the low end
    lo = int(np.argwhere(np.asarray(image[0]) > 0)[:, 2].min())
    top = lo + (image.shape[3] - lo) * 3 // 5  # keep the lower 60 % of the head's extent along z
    cut = MetaTensor(image[:, :, :, :top].clone(), affine=image.affine)
    whole, part = norm(align({"image": image})), norm(align({"image": cut}))
    fov = align.field_of_view(cut, np.asarray(cut.affine, np.float64), part["template_to_image"])[0].numpy()
    brain = resample_to_grid(mask, tpl.affine, np.eye(4), tpl.shape, tpl.affine)[0].numpy() > 0.5
    assert 0.1 < (brain & ~fov).sum() / brain.sum() < 0.7  # a real cut through the brain
    written = np.asarray(part["brain_mask"][0]) > 0
    assert not (written & ~fov).any() and (written == (brain & fov)).mean() > 0.99
    inner = ndimage.distance_transform_edt(written, sampling=tpl.spacing) > 8.0
    diff = np.abs(np.asarray(part["image"][0])[inner] - np.asarray(whole["image"][0])[inner])
    assert np.median(diff) < 0.05


@pytest.mark.slow
def test_second_start_for_a_head_cut_off_centre(tpl):
    """A head cut off-centre (its centre of mass far from the field-of-view centre) is registered from the centres of
    mass and from the field-of-view centre; the kept result is the best metric among the starts that keep enough of
    the template inside the scan, and it recovers the known affine. A head near its grid's centre gets one start."""
    fixed = _fixed(tpl)
    sample = _moving(tpl, 5, True)
    truth = np.linalg.inv(sample["warp"])
    image = sample["image"]
    padded = MetaTensor(torch.nn.functional.pad(image, (0, 0, 0, 0, 0, 24)), affine=image.affine)  # +96 mm along x
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))

    align = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, **FAST)
    out = align({"image": padded})
    found, record = out["template_to_image"], out["template_alignment"]
    assert record == align.last_info and json.loads(json.dumps(record)) == record  # written, JSON-ready
    starts = record["starts"]
    # (this posed head is 176 mm tall on its grid: the head-top start is tried as well; the whole brain is inside the
    # scan, so no start from the swapped registration)
    assert [s["start"] for s in starts] == ["centre_of_mass", "field_of_view_centre", "head_top"]
    assert min(s["overlap"] for s in starts) >= align.inverse_start_overlap
    eligible = [s for s in starts if s["overlap"] >= align.min_overlap]
    assert eligible and align.last_info["metric"] == min(s["metric"] for s in eligible)
    assert np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean() < 1.5

    from monai_ext.transforms.alignment import _centre_of_mass
    from monai_ext.transforms.intensity import foreground_mask

    vol = np.asarray(image[0])
    off = np.linalg.norm(_centre_of_mass(vol, np.asarray(image.affine), foreground_mask(vol))
                         - apply_matrix(np.asarray(image.affine), (np.array(vol.shape) - 1) / 2))
    align({"image": image})  # the unpadded head: a second start only if it is displaced by more than the tolerance
    assert len(align.last_info["starts"]) == 1 + int(off > align.start_tolerance_mm) + 1  # + the head-top start
    single = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, start_tolerance_mm=None,
                              head_height_mm=None, inverse_start_overlap=None, bias_correction=True, **FAST)
    got = single({"image": padded})["template_to_image"]
    assert len(single.last_info["starts"]) == 1 and single.last_info["preparation_seconds"] > 0
    # the input prepared once (block mean, N4) for all starts: the same matrix as register_affine's own preparation
    direct = register_affine(fixed, padded, fixed_mask=tpl.mask, bias_correction=True, **FAST)
    np.testing.assert_array_equal(got, direct)


@pytest.mark.slow
def test_third_start_for_a_head_with_a_neck(tpl):
    """A head whose field of view reaches 100 mm below it (a synthetic neck) is also registered from the centre of
    mass of its top 170 mm; the kept result recovers the known affine. A limit taller than head and neck together
    tries no third start."""
    from monai_ext.apps.aneurysm import add_synthetic_neck

    fixed = _fixed(tpl)
    sample = _moving(tpl, 0, True)  # a pose that leaves the head on the grid's lowest slices: the neck joins it
    truth = np.linalg.inv(sample["warp"])
    vol, affine = add_synthetic_neck(np.asarray(sample["image"][0]), np.asarray(sample["image"].affine),
                                     length_mm=100.0, seed=0)
    necked = MetaTensor(torch.as_tensor(vol)[None], affine=torch.as_tensor(affine))
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    align = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, **FAST)
    found = align({"image": necked})["template_to_image"]
    starts = align.last_info["starts"]
    assert starts[-1]["start"] == "head_top"
    eligible = [s for s in starts if s["overlap"] >= align.min_overlap]
    assert align.last_info["metric"] == min(s["metric"] for s in eligible)
    assert np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean() < 1.5
    tall = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, head_height_mm=400.0, **FAST)
    tall({"image": necked})
    assert "head_top" not in [s["start"] for s in tall.last_info["starts"]]


def _sliding(template, input_fixed):
    """A stand-in for ``register_affine`` whose template-fixed runs slide off the scan (500 mm away, no overlap);
    the input-fixed run is answered by ``input_fixed(fixed, moving, *args, **kwargs)``."""

    def fake(fixed, moving, *args, **kwargs):
        if fixed is template:
            away = np.eye(4)
            away[:3, 3] = 500.0 + len(calls)
            calls.append("template_fixed")
            return away, {"metric": -0.9 + 0.1 * len(calls), "iterations": 3, "seconds": 0.0}
        calls.append("input_fixed")
        return input_fixed(fixed, moving, *args, **kwargs)

    calls: list[str] = []
    return fake, calls


def _box(tpl):
    """A posed head without skull cut to a 112 x 144 x 96 mm box around its brain's centre (part of the head, most
    of the brain), and its template-to-image matrix."""
    sample = _moving(tpl, 3, False)
    truth = np.linalg.inv(sample["warp"])
    image = sample["image"]
    centre = np.round(apply_matrix(np.linalg.inv(np.asarray(image.affine)), apply_matrix(truth, np.zeros((1, 3))))[0])
    lo = np.maximum(centre.astype(int) - [14, 18, 12], 0)
    box_affine = np.asarray(image.affine, np.float64).copy()
    box_affine[:3, 3] = apply_matrix(box_affine, lo[None].astype(float))[0]
    box = MetaTensor(torch.as_tensor(np.asarray(image)[:, lo[0]:lo[0] + 28, lo[1]:lo[1] + 36, lo[2]:lo[2] + 24]),
                     affine=torch.as_tensor(box_affine))
    return box, truth


@pytest.mark.slow
def test_inverse_fallback_when_every_start_slid_off(tpl, monkeypatch):
    """When no start keeps ``min_overlap`` of the template inside the scan (the template-fixed runs are made to slide
    off here), the registration is run the other way round (the input fixed, the template moving) and its inverse
    is kept: on a posed head cut to a box around the brain's centre it recovers the known affine. With
    ``inverse_fallback=False``, or when the swapped run does not keep ``min_overlap`` either, the best metric among
    the starts is kept as before."""
    import monai_ext.transforms.alignment as alignment

    fixed = _fixed(tpl)
    box, truth = _box(tpl)
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    real = alignment.register_affine

    fake, calls = _sliding(fixed, real)
    monkeypatch.setattr(alignment, "register_affine", fake)
    align = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, start_tolerance_mm=0.0, **FAST)
    found = align({"image": box})["template_to_image"]
    starts = align.last_info["starts"]
    # the swapped run started one more template-fixed run (which slid off as well) and is kept as the fallback:
    # it ran once, for both
    assert [s["start"] for s in starts][-2:] == ["from_inverse", "inverse"] and calls.count("input_fixed") == 1
    assert all(s["overlap"] == 0.0 for s in starts[:-1]) and starts[-1]["overlap"] >= align.min_overlap
    assert align.last_info["start"] == "inverse"
    assert np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean() < 1.5

    calls.clear()
    off = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, inverse_fallback=False, **FAST)
    off({"image": box})
    assert calls.count("input_fixed") == 1 and "inverse" not in [s["start"] for s in off.last_info["starts"]]
    assert off.last_info["start"] == "centre_of_mass"  # the lowest metric among starts that all slid off
    calls.clear()
    neither = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, inverse_fallback=False,
                               inverse_start_overlap=None, **FAST)
    neither({"image": box})
    assert "input_fixed" not in calls and "from_inverse" not in [s["start"] for s in neither.last_info["starts"]]

    away = np.eye(4)
    away[:3, 3] = -700.0
    fake, calls = _sliding(fixed, lambda *a, **k: (away, {"metric": -5.0, "iterations": 1, "seconds": 0.0}))
    monkeypatch.setattr(alignment, "register_affine", fake)
    align({"image": box})
    assert align.last_info["starts"][-1]["start"] == "inverse" and align.last_info["start"] == "centre_of_mass"


@pytest.mark.slow
def test_start_from_the_swapped_registration(tpl, monkeypatch):
    """When the kept start leaves part of the template mask outside the scan, the swapped registration (the input
    fixed) starts one more template-fixed run, compared with the other starts on the same rule: when the other starts
    slide off a box-cut head and the run from the swapped result does not, that run is kept, and it recovers the known
    affine. The swapped run is run once; its seconds count in that start's. A threshold no start falls below runs
    neither."""
    import monai_ext.transforms.alignment as alignment

    fixed = _fixed(tpl)
    box, truth = _box(tpl)
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    real = alignment.register_affine
    swapped, initials = [], []

    def fake(fixed_img, moving, *args, **kwargs):
        if fixed_img is not fixed:  # the swapped run: the real one, slowed down on the record
            found, info = real(fixed_img, moving, *args, **kwargs)
            swapped.append(found)
            return found, {**info, "seconds": 100.0}
        initials.append(kwargs.get("initial"))
        if kwargs.get("initial") is None or not swapped:  # the centres-of-mass start slides off the scan
            away = np.eye(4)
            away[:3, 3] = 500.0
            return away, {"metric": -5.0, "iterations": 3, "seconds": 0.0}  # better than any real value
        return real(fixed_img, moving, *args, **kwargs)

    monkeypatch.setattr(alignment, "register_affine", fake)
    align = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, start_tolerance_mm=None,
                             head_height_mm=None, **FAST)
    found = align({"image": box})["template_to_image"]
    starts = align.last_info["starts"]
    assert [s["start"] for s in starts] == ["centre_of_mass", "from_inverse"] and len(swapped) == 1
    np.testing.assert_array_equal(initials[-1], np.linalg.inv(swapped[0]))  # started from the swapped result
    assert align.last_info["start"] == "from_inverse" and starts[-1]["overlap"] >= align.min_overlap
    assert starts[-1]["metric"] > -5.0 and starts[0]["overlap"] == 0.0  # kept on overlap, not on a better metric
    assert starts[-1]["seconds"] >= 100.0
    assert np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean() < 1.5
    swapped.clear()
    never = AlignToTemplated("image", template=fixed, template_mask=tpl.mask, start_tolerance_mm=None,
                             head_height_mm=None, inverse_fallback=False, inverse_start_overlap=0.0, **FAST)
    never({"image": box})
    assert not swapped and [s["start"] for s in never.last_info["starts"]] == ["centre_of_mass"]


@pytest.mark.parametrize("kwargs, match", [({"start_tolerance_mm": -1.0}, "start_tolerance_mm"),
                                           ({"min_overlap": 1.5}, "min_overlap"),
                                           ({"inverse_start_overlap": -0.1}, "inverse_start_overlap"),
                                           ({"head_height_mm": 0.0}, "head_height_mm"),
                                           ({"initial": np.eye(4)}, "chooses its own starts"),
                                           ({"bias_voxel": 8.0, "bins": 16}, r"unknown register_affine arguments "
                                                                             r"\['bias_voxel'\]")])
def test_align_to_template_errors(tpl, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlignToTemplated("image", template=_fixed(tpl), **kwargs)


def test_registration_options_are_register_affine_settings():
    """The settings AlignToTemplated passes on are register_affine's, less what the transform gives itself."""
    import inspect

    from monai_ext.transforms.alignment import REGISTRATION_OPTIONS

    params = set(inspect.signature(register_affine).parameters)
    own = {"fixed", "moving", "fixed_affine", "moving_affine", "fixed_mask", "initial", "return_info"}
    assert set(REGISTRATION_OPTIONS) == params - own


@pytest.mark.slow
def test_alignment_does_not_depend_on_the_voxel_layout(tpl):
    """The same head stored with permuted and flipped axes (another orientation code, the same world image), or
    resampled onto an oblique anisotropic grid, aligns to the same template-to-world matrix (the known affine within
    1 mm over the brain). ITK sees directions that are not the identity here."""
    from scipy.spatial.transform import Rotation

    sample = _moving(tpl, 6, True)
    truth = np.linalg.inv(sample["warp"])
    data = np.asarray(sample["image"][0], dtype=np.float32)
    affine = np.asarray(sample["image"].affine, dtype=np.float64)
    ny = data.shape[1]
    perm = np.array([[0, 0, 1, 0], [-1, 0, 0, ny - 1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    permuted = (np.transpose(data, (1, 2, 0))[::-1].copy(), affine @ perm)  # new (a, b, c) = old (c, ny-1-a, b)
    oblique = np.eye(4)
    oblique[:3, :3] = Rotation.from_euler("xyz", [20.0, -10.0, 5.0], degrees=True).as_matrix() @ np.diag(
        [1.2, 1.0, 1.5]) * tpl.spacing[0]
    shape = np.ceil(np.array(data.shape) / [1.2, 1.0, 1.5] * 1.2).astype(int)
    oblique[:3, 3] = apply_matrix(affine, (np.array(data.shape) - 1) / 2) - oblique[:3, :3] @ ((shape - 1) / 2)
    to_old = np.linalg.inv(affine) @ oblique
    resampled = (ndimage.affine_transform(data, to_old[:3, :3], to_old[:3, 3], output_shape=tuple(shape), order=1),
                 oblique)
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    found = {}
    for name, (vol, aff) in {"original": (data, affine), "permuted": permuted, "oblique": resampled}.items():
        found[name] = register_affine(_fixed(tpl), vol[None], moving_affine=aff, fixed_mask=tpl.mask, **FAST)
        assert np.linalg.norm(apply_matrix(found[name], brain) - apply_matrix(truth, brain), axis=1).mean() < 1.0
    same = np.linalg.norm(apply_matrix(found["permuted"], brain) - apply_matrix(found["original"], brain), axis=1)
    assert same.mean() < 0.05, same.mean()  # 5e-5 mm when written


def test_prepared_moving_reaches_the_fixed_voxel_size_on_any_grid():
    """The registration's moving image: integer ratios are block means exactly as before; voxel sizes that do not
    divide the fixed grid's (1.2, 1.5 mm against 2 mm) are smoothed and resampled to it, keeping the world position
    and the intensity of the content; a prepared volume passes through unchanged."""
    from monai_ext.transforms.alignment import _block_mean, _prepared_moving

    fixed_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    iso = np.random.default_rng(0).random((40, 42, 44)).astype(np.float32)
    got, aff = _prepared_moving(iso, np.diag([1.0, 1.0, 1.0, 1.0]), fixed_affine, False, 4.0)
    want, want_aff = _block_mean(iso, np.eye(4), np.array([2, 2, 2]))
    assert np.array_equal(got, want) and np.array_equal(aff, want_aff)

    spacing = np.array([1.0, 1.2, 1.5])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = [-30.0, 12.0, 5.0]
    world = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip((90, 80, 64), spacing, strict=True)],
                                 indexing="ij"), -1) + affine[:3, 3]
    centre = np.array([14.0, 55.0, 48.0])
    blob = (5.0 + 10.0 * np.exp(-((world - centre) ** 2).sum(-1) / (2 * 6.0**2))).astype(np.float32)
    out, out_aff = _prepared_moving(blob, affine, fixed_affine, False, 4.0)
    np.testing.assert_allclose(np.linalg.norm(out_aff[:3, :3], axis=0), 2.0, rtol=0.05)
    assert out.size < blob.size / 3
    com = apply_matrix(out_aff, np.array(ndimage.center_of_mass(out - 5.0))[None])[0]
    np.testing.assert_allclose(com, centre, atol=0.3)
    assert abs(float(out.min()) - 5.0) < 1e-3 and 14.5 < float(out.max()) <= 15.0  # smoothing only, no gain
    again, again_aff = _prepared_moving(out, out_aff, fixed_affine, False, 4.0)
    assert np.array_equal(again, out) and np.array_equal(again_aff, out_aff)


@pytest.mark.slow
def test_alignment_of_a_grid_finer_than_the_template_by_a_non_integer_ratio(tpl):
    """A head stored on an oblique grid of 2.7 x 3.1 x 2.4 mm voxels against the 4 mm template (ratios 1.3-1.7,
    none an integer): it is resampled to the template's voxel size before ITK sees it and aligns within 1 mm."""
    from scipy.spatial.transform import Rotation

    sample = _moving(tpl, 7, True)
    truth = np.linalg.inv(sample["warp"])
    data = np.asarray(sample["image"][0], dtype=np.float32)
    affine = np.asarray(sample["image"].affine, dtype=np.float64)
    spacing = np.array([2.7, 3.1, 2.4])
    oblique = np.eye(4)
    oblique[:3, :3] = Rotation.from_euler("xyz", [-15.0, 10.0, 20.0], degrees=True).as_matrix() @ np.diag(spacing)
    shape = np.ceil(np.array(data.shape) * tpl.spacing[0] / spacing * 1.15).astype(int)
    oblique[:3, 3] = apply_matrix(affine, (np.array(data.shape) - 1) / 2) - oblique[:3, :3] @ ((shape - 1) / 2)
    to_old = np.linalg.inv(affine) @ oblique
    vol = ndimage.affine_transform(data, to_old[:3, :3], to_old[:3, 3], output_shape=tuple(shape), order=1)
    found = register_affine(_fixed(tpl), vol[None], moving_affine=oblique, fixed_mask=tpl.mask, **FAST)
    brain = apply_matrix(tpl.affine, np.argwhere(tpl.mask))
    assert np.linalg.norm(apply_matrix(found, brain) - apply_matrix(truth, brain), axis=1).mean() < 1.0
