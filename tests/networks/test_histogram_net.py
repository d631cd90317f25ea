from __future__ import annotations

import numpy as np
import pytest
import torch
from _network_checks import (
    assert_all_parameters_get_gradients,
    assert_eval_deterministic,
    assert_torchscript_round_trip,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_ext.networks.nets import FlatHistogramNet, HistogramNet

SMALL = {"channels": (4, 8, 8)}


@pytest.mark.parametrize(
    "kwargs,in_shape",
    [
        ({"patch_size": 32, **SMALL}, (2, 1, 32, 32)),
        ({"patch_size": 64, "grid_sizes": (1, 2, 4, 8), **SMALL}, (1, 1, 64, 64)),
        ({"patch_size": 96, "grid_sizes": (1, 3), "in_channels": 3, "num_classes": 4, **SMALL}, (2, 3, 96, 96)),
        ({"spatial_dims": 3, "patch_size": 16, "grid_sizes": (1, 2), "channels": (2, 4)}, (1, 1, 16, 16, 16)),
    ],
)
def test_forward_shapes(kwargs, in_shape):
    net = HistogramNet(**kwargs).eval()
    out = net(torch.randn(in_shape))
    k = kwargs.get("num_classes", 3)
    d = len(in_shape) - 2
    assert isinstance(out, list) and len(out) == len(kwargs.get("grid_sizes", (1, 2, 4)))
    for o, r in zip(out, kwargs.get("grid_sizes", (1, 2, 4)), strict=True):
        assert o.shape == (in_shape[0], k) + (r,) * d


def _naive_region_logits(net: HistogramNet, patch: torch.Tensor) -> list[torch.Tensor]:
    """Documented semantics, written with loops: per level, the 1x1-head logit map is linearly interpolated (edge
    replicated) to every patch pixel and averaged over each sub-region's pixels."""
    feat = net.body(patch)
    p, jump = net.patch_size, net.feature_stride
    f = feat.shape[-1]
    # centre of feature i (pixel units): every valid 3x3 conv shifts it by one input step, every 2x pooling by half
    offset = 0.0
    step = 1
    for layer in net.body:
        if isinstance(layer, torch.nn.MaxPool2d):
            offset, step = offset + 0.5 * step, step * 2
        else:
            offset += step
    assert step == jump
    outs = []
    for level, r in zip(net.levels, net.grid_sizes, strict=True):
        logits = level.head(feat)[0].numpy()  # (K, f, f)
        up = np.zeros((logits.shape[0], p, p))
        for y in range(p):
            for x in range(p):
                ty = min(max((y - offset) / jump, 0), f - 1)
                tx = min(max((x - offset) / jump, 0), f - 1)
                y0, x0 = int(np.floor(ty)), int(np.floor(tx))
                y1, x1 = min(y0 + 1, f - 1), min(x0 + 1, f - 1)
                fy, fx = ty - y0, tx - x0
                up[:, y, x] = (
                    (1 - fy) * (1 - fx) * logits[:, y0, x0]
                    + (1 - fy) * fx * logits[:, y0, x1]
                    + fy * (1 - fx) * logits[:, y1, x0]
                    + fy * fx * logits[:, y1, x1]
                )
        s = p // r
        cell = up.reshape(up.shape[0], r, s, r, s).mean(axis=(2, 4))
        outs.append(torch.as_tensor(cell, dtype=torch.float32))
    return outs


@pytest.mark.parametrize("patch_size,grid_sizes", [(32, (1, 2, 4)), (48, (1, 3))])
def test_region_logits_match_naive_interpolation(patch_size, grid_sizes):
    torch.manual_seed(0)
    net = HistogramNet(patch_size=patch_size, grid_sizes=grid_sizes, **SMALL).eval()
    x = torch.randn(1, 1, patch_size, patch_size)
    with torch.no_grad():
        out = net(x)
        ref = _naive_region_logits(net, x)
    for o, e in zip(out, ref, strict=True):
        torch.testing.assert_close(o[0], e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "patch_size,channels,stride_mult,image_hw",
    [(32, (4, 8, 8), 1, (52, 61)), (32, (4, 8), 2, (70, 45)), (64, (4, 8, 8), 2, (90, 100))],
)
def test_dense_forward_equals_cropped_patches(patch_size, channels, stride_mult, image_hw):
    """Brute force: crop every patch on the stride grid and run ``forward``; must equal ``dense_forward``."""
    torch.manual_seed(0)
    net = HistogramNet(patch_size=patch_size, channels=channels).eval()
    stride = net.feature_stride * stride_mult
    image = torch.randn(2, 1, *image_hw)
    with torch.no_grad():
        dense = net.dense_forward(image, stride)
        ny, nx = (image_hw[0] - patch_size) // stride + 1, (image_hw[1] - patch_size) // stride + 1
        for lvl, r in enumerate(net.grid_sizes):
            assert dense[lvl].shape == (2, ny, nx, 3, r, r)
        for i in range(ny):
            for j in range(nx):
                crop = image[:, :, i * stride : i * stride + patch_size, j * stride : j * stride + patch_size]
                for lvl, o in enumerate(net(crop)):
                    torch.testing.assert_close(dense[lvl][:, i, j], o, rtol=1e-5, atol=1e-5)


def test_dense_forward_3d():
    torch.manual_seed(0)
    net = HistogramNet(spatial_dims=3, patch_size=16, grid_sizes=(1, 2), channels=(2, 4)).eval()
    image = torch.randn(1, 1, 20, 18, 24)
    s = net.feature_stride
    with torch.no_grad():
        dense = net.dense_forward(image, s)
        assert dense[1].shape == (1, 3, 2, 5, 3, 2, 2, 2)
        crop = image[:, :, s : s + 16, 0:16, 2 * s : 2 * s + 16]
        torch.testing.assert_close(dense[1][:, 1, 0, 2], net(crop)[1], rtol=1e-5, atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 10_000))
def test_dense_matches_forward_property(i, j, seed):
    """Any patch position on the feature-stride grid of a random image gives the same logits both ways."""
    gen = torch.Generator().manual_seed(seed)
    net = _PROPERTY_NET
    s = net.feature_stride
    image = torch.randn(1, 1, 32 + 3 * s, 32 + 3 * s, generator=gen)
    with torch.no_grad():
        dense = net.dense_forward(image, s)
        out = net(image[:, :, i * s : i * s + 32, j * s : j * s + 32])
    for lvl in range(3):
        torch.testing.assert_close(dense[lvl][:, i, j], out[lvl], rtol=1e-5, atol=1e-5)


torch.manual_seed(3)
_PROPERTY_NET = HistogramNet(patch_size=32, channels=(4, 8, 8)).eval()


def test_gradients_eval_script_trace(tmp_path):
    torch.manual_seed(0)
    net = HistogramNet(patch_size=32, dropout=0.2, **SMALL)
    x = torch.randn(2, 1, 32, 32)
    assert_all_parameters_get_gradients(net, x)
    assert_eval_deterministic(net, x)
    loaded = assert_torchscript_round_trip(net, x, tmp_path)
    image = torch.randn(1, 1, 48, 48)
    for a, b in zip(loaded.dense_forward(image, 8), net.dense_forward(image, 8), strict=True):
        torch.testing.assert_close(a, b)
    assert_torchscript_round_trip(net, x, tmp_path, use_trace=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"patch_size": 30, "grid_sizes": (1, 4)}, "divisible by every grid size"),
        ({"grid_sizes": ()}, "grid_sizes"),
        ({"grid_sizes": (0, 2)}, "grid_sizes"),
        ({"channels": ()}, "channels"),
        ({"patch_size": 16, "channels": (4, 8, 8, 8)}, "too small"),
        ({"convs_per_stage": 0}, "convs_per_stage"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HistogramNet(**kwargs)


def test_bad_inputs():
    net = HistogramNet(patch_size=32, **SMALL).eval()
    with pytest.raises(ValueError, match="expected patches of size 32"):
        net(torch.zeros(1, 1, 32, 36))
    with pytest.raises(ValueError, match="multiple of feature_stride=4"):
        net.dense_forward(torch.zeros(1, 1, 64, 64), 6)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        net.dense_forward(torch.zeros(1, 1, 64, 20), 4)


def test_flat_histogram_net_matches_levels(tmp_path):
    """Same parameters as ``HistogramNet``; the concatenated output splits back into the per-level tensors."""
    torch.manual_seed(0)
    flat = FlatHistogramNet(patch_size=32, grid_sizes=(1, 2, 4), **SMALL).eval()
    levels = HistogramNet(patch_size=32, grid_sizes=(1, 2, 4), **SMALL).eval()
    levels.load_state_dict(flat.state_dict())
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        y = flat(x)
        assert y.shape == (3, 3, 1 + 4 + 16)
        ref = levels(x)
        for a, b in zip(flat.split_levels(y), ref, strict=True):
            torch.testing.assert_close(a, b)
        # row-major cell order inside a level, levels in grid order
        torch.testing.assert_close(y[:, :, 5:], ref[2].reshape(3, 3, 16))
    loaded = assert_torchscript_round_trip(flat, x, tmp_path)
    for a, b in zip(loaded.split_levels(y), ref, strict=True):
        torch.testing.assert_close(a, b)
