"""RegionHistogramInferer / CenterPixelInferer against naive per-window and per-pixel loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_ext.inferers import CenterPixelInferer, RegionHistogramInferer
from monai_ext.networks.nets import FlatHistogramNet, HistogramNet


class ContentNet(torch.nn.Module):
    """Deterministic content-dependent 'network': per-level logits from average-pooled image statistics."""

    def __init__(self, grids=(1, 2, 4), k=3):
        super().__init__()
        self.grids, self.k = grids, k

    def forward(self, x):
        out = []
        for r in self.grids:
            m = torch.nn.functional.adaptive_avg_pool2d(x[:, :1], r)  # (N, 1, r, r)
            out.append(torch.cat([m * (c + 1) - c for c in range(self.k)], 1) * 3.0)
        return out


def naive_dense(image: np.ndarray, net, p: int, s: int, combine: str) -> np.ndarray:
    """Loop over windows of the reflect-padded image; spread each sub-region pmf pixel by pixel."""
    h, w = image.shape
    pad = p - s
    eh, ew = (-(h + pad - p)) % s, (-(w + pad - p)) % s
    x = np.pad(image, ((pad, pad + eh), (pad, pad + ew)), mode="reflect")
    acc = np.zeros((3,) + x.shape)
    cnt = np.zeros(x.shape)
    for y0 in range(0, x.shape[0] - p + 1, s):
        for x0 in range(0, x.shape[1] - p + 1, s):
            win = torch.tensor(x[y0 : y0 + p, x0 : x0 + p], dtype=torch.float32)[None, None]
            levels = [torch.softmax(t, 1)[0].numpy() for t in net(win)]
            use = levels[-1:] if combine == "finest" else levels
            for yy in range(p):
                for xx in range(p):
                    v = np.mean([lv[:, yy * lv.shape[1] // p, xx * lv.shape[2] // p] for lv in use], 0)
                    acc[:, y0 + yy, x0 + xx] += v
                    cnt[y0 + yy, x0 + xx] += 1
    with np.errstate(invalid="ignore", divide="ignore"):  # padding pixels no window reaches
        return (acc / cnt)[:, pad : pad + h, pad : pad + w]


@pytest.mark.parametrize(
    "h, w, p, s, combine",
    [(20, 23, 8, 4, "finest"), (20, 23, 8, 2, "mean"), (17, 16, 8, 3, "finest"), (16, 16, 8, 8, "mean")],
)
def test_region_histogram_matches_naive(h, w, p, s, combine):
    rng = np.random.default_rng(h * w + s)
    image = rng.normal(size=(h, w)).astype(np.float32)
    net = ContentNet()
    got = RegionHistogramInferer(p, s, combine=combine, sw_batch_size=7)(torch.from_numpy(image)[None, None], net)
    ref = naive_dense(image, net, p, s, combine)
    np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("combine", ["finest", "mean"])
def test_dense_forward_path_equals_cropped_windows(combine):
    torch.manual_seed(0)
    net = HistogramNet(2, 1, 3, 32, (1, 2, 4), channels=(8, 16)).eval()
    x = torch.randn(2, 1, 50, 41)
    calls = []
    orig = net.dense_forward

    def spy(image, stride):
        calls.append(stride)
        return orig(image, stride)

    net.dense_forward = spy
    with torch.no_grad():
        shared = RegionHistogramInferer(32, 8, combine=combine)(x, net)
        cropped = RegionHistogramInferer(32, 8, combine=combine, use_dense_forward=False)(x, net)
    assert calls == [8]
    torch.testing.assert_close(shared, cropped, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("combine", ["finest", "mean"])
def test_flat_single_tensor_network_is_split_into_levels(combine):
    torch.manual_seed(2)
    flat = FlatHistogramNet(2, 1, 3, 16, (1, 2, 4), channels=(4, 8)).eval()
    ref = HistogramNet(2, 1, 3, 16, (1, 2, 4), channels=(4, 8)).eval()
    ref.load_state_dict(flat.state_dict())
    x = torch.randn(1, 1, 23, 20)
    with torch.no_grad():
        got = RegionHistogramInferer(16, 4, combine=combine, use_dense_forward=False)(x, flat)
        want = RegionHistogramInferer(16, 4, combine=combine, use_dense_forward=False)(x, ref)
    torch.testing.assert_close(got, want)


def test_dense_path_skipped_when_stride_not_multiple_of_feature_stride():
    net = HistogramNet(2, 1, 3, 16, (1, 4), channels=(4, 4)).eval()
    assert net.feature_stride == 2
    net.dense_forward = lambda *a: pytest.fail("dense_forward must not be used for an odd stride")
    with torch.no_grad():
        out = RegionHistogramInferer(16, 3)(torch.randn(1, 1, 20, 20), net)
    assert out.shape == (1, 3, 20, 20)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(3, 40), w=st.integers(3, 40), s=st.sampled_from([1, 2, 4, 8]))
def test_region_histogram_is_a_pmf_of_input_size(h, w, s):
    out = RegionHistogramInferer(8, s)(torch.randn(1, 1, h, w), ContentNet())
    assert out.shape == (1, 3, h, w)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(1), torch.ones(1, h, w))


def test_metatensor_meta_is_kept():
    x = MetaTensor(torch.randn(1, 1, 16, 16), meta={"filename_or_obj": "a.png"})
    for inferer in (RegionHistogramInferer(8, 4), CenterPixelInferer(5, 2)):
        out = inferer(x, ContentNet() if isinstance(inferer, RegionHistogramInferer) else ContentNet((1,)))
        assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"


def naive_center_pixel(image: np.ndarray, net, p: int) -> np.ndarray:
    h, w = image.shape
    x = np.pad(image, ((p // 2, p - 1 - p // 2), (p // 2, p - 1 - p // 2)), mode="reflect")
    out = np.zeros((3, h, w))
    for y in range(h):
        for xx in range(w):
            win = torch.tensor(x[y : y + p, xx : xx + p], dtype=torch.float32)[None, None]
            out[:, y, xx] = torch.softmax(net(win)[0][:, :, 0, 0], 1)[0].numpy()
    return out


@pytest.mark.parametrize("h, w, p", [(9, 12, 5), (10, 7, 6)])
def test_center_pixel_stride_one_matches_per_pixel_loop(h, w, p):
    image = np.random.default_rng(p).normal(size=(h, w)).astype(np.float32)
    net = ContentNet((1,))
    got = CenterPixelInferer(p, 1, sw_batch_size=5)(torch.from_numpy(image)[None, None], net)
    np.testing.assert_allclose(got[0].numpy(), naive_center_pixel(image, net, p), atol=1e-6)


@pytest.mark.parametrize("s", [2, 3, 5])
def test_center_pixel_strided_is_exact_on_grid_and_interpolated_between(s):
    image = np.random.default_rng(s).normal(size=(13, 11)).astype(np.float32)
    net = ContentNet((1,))
    got = CenterPixelInferer(5, s)(torch.from_numpy(image)[None, None], net)[0].numpy()
    ref = naive_center_pixel(image, net, 5)
    np.testing.assert_allclose(got[:, ::s, ::s], ref[:, ::s, ::s], atol=1e-6)
    assert got.shape == (3, 13, 11) and np.allclose(got.sum(0), 1, atol=1e-5)


def test_center_pixel_dense_forward_path_equals_cropped():
    torch.manual_seed(1)
    net = HistogramNet(2, 1, 3, 16, (1,), channels=(4, 8)).eval()
    x = torch.randn(1, 1, 30, 27)
    with torch.no_grad():
        a = CenterPixelInferer(16, 4)(x, net)
        b = CenterPixelInferer(16, 4, use_dense_forward=False)(x, net)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"roi_size": 0}, "roi_size"),
        ({"roi_size": 8, "stride": 9}, "must not exceed"),
        ({"roi_size": 8, "stride": 0}, "stride"),
        ({"roi_size": 8, "combine": "max"}, "combine"),
        ({"roi_size": 8, "sw_batch_size": 0}, "sw_batch_size"),
        ({"roi_size": 8, "padding_mode": "wrap"}, "padding_mode"),
    ],
)
def test_region_histogram_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegionHistogramInferer(**kwargs)


def test_bad_inputs_and_outputs():
    inf = RegionHistogramInferer(8, 4)
    with pytest.raises(ValueError, match=r"inputs must be a 2D batch"):
        inf(torch.zeros(1, 8, 8), ContentNet())
    with pytest.raises(ValueError, match=r"per-level logits"):
        inf(torch.zeros(1, 1, 8, 8), lambda x: [torch.zeros(x.shape[0], 3)])
    with pytest.raises(ValueError, match=r"divisible by the network's grid"):
        inf(torch.zeros(1, 1, 8, 8), lambda x: [torch.zeros(x.shape[0], 3, 3, 3)])
    with pytest.raises(ValueError, match=r"nested grids"):
        RegionHistogramInferer(12, 4, combine="mean")(
            torch.zeros(1, 1, 12, 12), lambda x: [torch.zeros(x.shape[0], 3, 2, 2), torch.zeros(x.shape[0], 3, 3, 3)]
        )
    with pytest.raises(ValueError, match=r"class logits"):
        CenterPixelInferer(5)(torch.zeros(1, 1, 6, 6), lambda x: torch.zeros(x.shape[0], 3, 2, 2))
    with pytest.raises(ValueError, match=r"patch_size"):
        RegionHistogramInferer(16, 4)(torch.zeros(1, 1, 20, 20), HistogramNet(2, 1, 3, 32, (1, 2), channels=(4,)))


# --- the overlap-average against the implementation it replaced ------------------------------------------------


def fold_overlap_average(pmf, grid, sub, stride, crop):
    """The earlier implementation (kept as the reference): repeat every sub-region pmf to block resolution and sum
    the windows with ``F.fold``; ``count`` windows per block; nearest upsampling by the block size, then crop."""
    import math

    import torch.nn.functional as F

    b, nh, nw = grid
    k, r0, r1 = pmf.shape[1:]
    (c0, c1), (s0, s1) = sub, stride
    p0, p1 = c0 * r0, c1 * r1
    g0, g1 = math.gcd(s0, c0), math.gcd(s1, c1)
    pmf = pmf.repeat_interleave(c0 // g0, 2).repeat_interleave(c1 // g1, 3)
    kh, kw = p0 // g0, p1 // g1
    cols = pmf.reshape(b, nh * nw, k * kh * kw).transpose(1, 2)
    out_size = (((nh - 1) * s0 + p0) // g0, ((nw - 1) * s1 + p1) // g1)
    summed = F.fold(cols, out_size, (kh, kw), stride=(s0 // g0, s1 // g1))
    count = F.fold(torch.ones_like(cols[:1, : kh * kw]), out_size, (kh, kw), stride=(s0 // g0, s1 // g1))
    dense = (summed / count).repeat_interleave(g0, 2).repeat_interleave(g1, 3)
    top, height, left, width = crop
    return dense[:, :, top : top + height, left : left + width]


@pytest.mark.parametrize(
    "b, nh, nw, k, r, sub, stride",
    [
        (1, 5, 7, 3, (4, 4), (16, 16), (4, 4)),  # the bundle's setting: P 64, r 4, stride 4 (blocks of 4 pixels)
        (2, 3, 4, 3, (4, 2), (4, 8), (2, 8)),  # non-square grid, stride = window side on one axis
        (1, 6, 5, 2, (2, 4), (6, 3), (4, 3)),  # gcd(4, 6) = 2: blocks smaller than both
        (1, 1, 1, 4, (1, 1), (5, 7), (5, 7)),  # one window, one sub-region
        (3, 4, 3, 5, (3, 3), (5, 5), (3, 5)),  # stride not dividing the sub-region side
    ],
)
def test_separable_overlap_average_equals_fold(b, nh, nw, k, r, sub, stride):
    from monai_ext.inferers.region_histogram import _overlap_average

    rng = np.random.default_rng(b * nh * nw)
    pmf = torch.softmax(torch.as_tensor(rng.normal(size=(b * nh * nw, k, *r)), dtype=torch.float32), 1)
    padded = ((nh - 1) * stride[0] + sub[0] * r[0], (nw - 1) * stride[1] + sub[1] * r[1])
    for crop in ((0, padded[0], 0, padded[1]), (1, padded[0] - 3, 2, padded[1] - 2)):
        got = _overlap_average(pmf, (b, nh, nw), sub, stride, crop)
        ref = fold_overlap_average(pmf, (b, nh, nw), sub, stride, crop)
        assert got.shape == ref.shape == (b, k, crop[1], crop[3])
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("combine", ["finest", "mean"])
def test_bundle_network_on_a_large_image_equals_fold_version(combine, monkeypatch):
    """The ips_histogram network (FlatHistogramNet, dense path) on 200 x 170 pixels: same map as the fold version."""
    import monai_ext.inferers.region_histogram as rh

    torch.manual_seed(0)
    net = FlatHistogramNet(2, 1, 3, 64, (1, 2, 4), (8, 16, 32)).eval()
    image = torch.randn(1, 1, 200, 170)
    inferer = RegionHistogramInferer(64, 4, combine=combine)
    with torch.no_grad():
        got = inferer(image, net)
        monkeypatch.setattr(rh, "_overlap_average", fold_overlap_average)
        ref = inferer(image, net)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(1, 200, 170), rtol=0, atol=1e-5)
