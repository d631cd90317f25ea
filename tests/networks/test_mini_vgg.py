from __future__ import annotations

import pytest
import torch
from _network_checks import (
    assert_all_parameters_get_gradients,
    assert_eval_deterministic,
    assert_torchscript_round_trip,
)

from monai_ext.networks.nets import MiniVGG

CASES = [
    # kwargs, input shape, expected logits shape, expected feature shape
    ({}, (2, 3, 32, 32), (2, 2), (2, 256)),
    ({"num_classes": 61, "channels": (8, 16), "hidden_features": 32}, (3, 3, 32, 32), (3, 61), (3, 32)),
    (
        {"in_channels": 1, "num_classes": 4, "channels": (4, 8, 8), "convs_per_block": 1},
        (1, 1, 24, 40),
        (1, 4),
        (1, 256),
    ),
    ({"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "channels": (4, 8)}, (2, 1, 8, 8, 8), (2, 3), (2, 256)),
    (
        {"num_classes": 5, "channels": (4, 8), "norm": None, "act": ("leakyrelu", {"negative_slope": 0.1})},
        (2, 3, 16, 16),
        (2, 5),
        (2, 256),
    ),
]


@pytest.mark.parametrize("kwargs,in_shape,out_shape,feat_shape", CASES)
def test_shapes(kwargs, in_shape, out_shape, feat_shape):
    net = MiniVGG(**kwargs).eval()
    x = torch.randn(in_shape)
    with torch.no_grad():
        assert net(x).shape == out_shape
        assert net.features(x).shape == feat_shape


def test_features_are_the_penultimate_layer():
    """Logits are the final linear layer applied to ``features`` (independent recomposition)."""
    torch.manual_seed(0)
    net = MiniVGG(num_classes=7, channels=(4, 8), hidden_features=16, dropout=0.3).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        f = net.features(x)
        linear = net.head[-1]
        torch.testing.assert_close(net(x), f @ linear.weight.T + linear.bias)
    assert (f >= 0).all()  # after the ReLU


@pytest.mark.parametrize("kwargs", [c[0] for c in CASES[1:3]])
def test_gradients_eval_and_script(kwargs, tmp_path):
    torch.manual_seed(0)
    net = MiniVGG(**kwargs)
    x = torch.randn(2, kwargs.get("in_channels", 3), 32, 32)
    assert_all_parameters_get_gradients(net, x)
    assert_eval_deterministic(net, x)
    loaded = assert_torchscript_round_trip(net, x, tmp_path)
    torch.testing.assert_close(loaded.features(x), net.features(x))
    assert_torchscript_round_trip(net, x, tmp_path, use_trace=True)


def test_dropout_active_only_in_training():
    torch.manual_seed(0)
    net = MiniVGG(num_classes=3, channels=(4,), dropout=0.5)
    x = torch.randn(8, 3, 16, 16)
    net.train()
    assert not torch.equal(net(x), net(x))
    assert_eval_deterministic(net, x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"channels": ()}, "channels"),
        ({"channels": (8, 0)}, "channels"),
        ({"num_classes": 0}, "num_classes"),
        ({"convs_per_block": 0}, "convs_per_block"),
        ({"hidden_features": 0}, "hidden_features"),
        ({"dropout": 1.0}, "dropout"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MiniVGG(**kwargs)
