from __future__ import annotations

import pytest
import torch
from _network_checks import (
    assert_all_parameters_get_gradients,
    assert_eval_deterministic,
    assert_torchscript_round_trip,
)

from monai_ext.networks.nets import R2Plus1D, ResNetTemporalPool, Tiny3DCNN, r2plus1d_18, resnet18_temporal_pool
from monai_ext.networks.nets.video_baselines import _Conv2Plus1D, _mid_channels

NARROW = {"channels": (4, 8, 8, 16)}


@pytest.mark.parametrize(
    "factory,kwargs,in_shape",
    [
        (resnet18_temporal_pool, {"num_classes": 4, **NARROW}, (2, 3, 4, 32, 32)),
        (ResNetTemporalPool, {"in_channels": 1, "num_classes": 2, "layers": (1, 1, 1, 1), "temporal_pool": "max",
                              **NARROW}, (1, 1, 3, 40, 24)),
        (r2plus1d_18, {"num_classes": 4, **NARROW}, (2, 3, 8, 32, 32)),
        (R2Plus1D, {"in_channels": 1, "num_classes": 3, "layers": (1, 1, 1, 1), **NARROW}, (1, 1, 4, 24, 24)),
        (Tiny3DCNN, {"num_classes": 4, "channels": (4, 8)}, (2, 3, 4, 32, 32)),
        (Tiny3DCNN, {"in_channels": 1, "num_classes": 5}, (1, 1, 8, 16, 20)),
    ],
)  # fmt: skip
def test_shapes(factory, kwargs, in_shape):
    net = factory(**kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(in_shape)).shape == (in_shape[0], kwargs["num_classes"])


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_temporal_pooling_matches_per_frame_loop(pool):
    """Naive reference: encode every frame separately, pool over time, apply the classifier."""
    torch.manual_seed(0)
    net = ResNetTemporalPool(num_classes=3, temporal_pool=pool, **NARROW).eval()
    x = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        feats = torch.stack([net.encoder(x[:, :, t]) for t in range(3)], dim=1)
        pooled = feats.max(1).values if pool == "max" else feats.mean(1)
        torch.testing.assert_close(net(x), net.fc(pooled), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_in,n_out", [(3, 64), (64, 64), (64, 128), (256, 512)])
def test_2plus1d_keeps_3d_parameter_budget(n_in, n_out):
    """Tran et al. 2018, Sec. 3.5: the factorised conv has (up to flooring) the 3x3x3 conv's parameter count."""
    mid = _mid_channels(n_in, n_out)
    conv = _Conv2Plus1D(n_in, n_out, mid, 1, "relu", "batch")
    n_conv = conv[0].weight.numel() + conv[3].weight.numel()
    full = 27 * n_in * n_out
    assert full - (9 * n_in + 3 * n_out) < n_conv <= full


def test_r2plus1d_downsampling():
    """Stem halves H and W; each of stages 2-4 halves T, H and W."""
    net = R2Plus1D(num_classes=2, **NARROW).eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        y = net.stem(x)
        assert y.shape == (1, 4, 8, 32, 32)
        for stage, expected in zip(net.stages, [(8, 32, 32), (4, 16, 16), (2, 8, 8), (1, 4, 4)], strict=True):
            y = stage(y)
            assert tuple(y.shape[2:]) == expected


@pytest.mark.parametrize(
    "factory,kwargs",
    [
        (ResNetTemporalPool, {"num_classes": 3, "layers": (1, 1, 1, 1), **NARROW}),
        (R2Plus1D, {"num_classes": 3, "layers": (1, 1, 1, 1), **NARROW}),
        (Tiny3DCNN, {"num_classes": 3, "channels": (4, 8), "dropout": 0.2}),
    ],
)
def test_gradients_eval_and_export(factory, kwargs, tmp_path):
    torch.manual_seed(0)
    net = factory(**kwargs)
    x = torch.randn(2, 3, 4, 16, 16)
    assert_all_parameters_get_gradients(net, x)
    assert_eval_deterministic(net, x)
    assert_torchscript_round_trip(net, x, tmp_path)


@pytest.mark.parametrize(
    "factory,kwargs,match",
    [
        (ResNetTemporalPool, {"temporal_pool": "attention"}, "temporal_pool"),
        (ResNetTemporalPool, {"layers": (2, 2, 2)}, "layers must be 4 positive integers"),
        (R2Plus1D, {"channels": (8, 16, 32, 0)}, "channels must be 4 positive integers"),
        (R2Plus1D, {"num_classes": 0}, "num_classes"),
        (Tiny3DCNN, {"channels": ()}, "channels"),
        (Tiny3DCNN, {"in_channels": 0}, "in_channels"),
        (Tiny3DCNN, {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


@pytest.mark.parametrize("net", [Tiny3DCNN(num_classes=2), ResNetTemporalPool(num_classes=2, **NARROW)])
def test_bad_input_rank(net):
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        net(torch.zeros(1, 3, 32, 32))
