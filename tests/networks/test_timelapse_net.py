from __future__ import annotations

import pytest
import torch
from _network_checks import (
    assert_all_parameters_get_gradients,
    assert_eval_deterministic,
    assert_torchscript_round_trip,
)
from monai.visualize import GradCAM

from monai_ext.networks.nets import TimeLapseNet, TimeLapseOutput

SMALL = {"channels": (4, 8), "attention_dim": 8, "proj_dim": 6}


@pytest.mark.parametrize(
    "kwargs,in_shape",
    [
        ({**SMALL}, (2, 1, 5, 32, 32)),
        ({**SMALL, "pooling": "mean"}, (3, 1, 4, 24, 40)),
        ({"in_channels": 3, "channels": (4, 8, 8), "proj_dim": 16}, (1, 3, 1, 32, 32)),
        ({**SMALL, "spatial_dims": 3}, (2, 1, 3, 8, 8, 8)),
    ],
)
def test_output_shapes(kwargs, in_shape):
    net = TimeLapseNet(**kwargs).eval()
    x = torch.randn(in_shape)
    b, t = in_shape[0], in_shape[2]
    with torch.no_grad():
        out = net.forward_all(x)
        assert isinstance(out, TimeLapseOutput)
        assert net(x).shape == (b, 1)
    assert out.logit.shape == (b,)
    assert out.frame_logits.shape == (b, t)
    assert out.attention.shape == (b, t)
    assert out.embedding.shape == (b, t, kwargs.get("proj_dim", 64))


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_sequence_score_decomposes_into_frame_scores(pooling):
    """Naive recomputation frame by frame: each frame through ``forward_frames`` alone, then weighted sum."""
    torch.manual_seed(0)
    net = TimeLapseNet(pooling=pooling, **SMALL).eval()
    x = torch.randn(2, 1, 6, 32, 32)
    with torch.no_grad():
        out = net.forward_all(x)
        frames = torch.stack([net.forward_frames(x[:, :, t]) for t in range(x.shape[2])], dim=1)
    torch.testing.assert_close(out.frame_logits, frames, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(2))
    assert (out.attention >= 0).all()
    if pooling == "mean":
        torch.testing.assert_close(out.attention, torch.full((2, 6), 1 / 6))
    torch.testing.assert_close(out.logit, (out.attention * frames).sum(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net(x)[:, 0], out.logit)


@pytest.mark.parametrize("perm", [[2, 0, 1, 3], [3, 2, 1, 0]])
def test_frame_permutation_equivariance(perm):
    """Pooling is order-free: permuting frames permutes the per-frame outputs and keeps the sequence logit."""
    torch.manual_seed(1)
    net = TimeLapseNet(**SMALL).eval()
    x = torch.randn(2, 1, 4, 32, 32)
    with torch.no_grad():
        a, b = net.forward_all(x), net.forward_all(x[:, :, perm])
    torch.testing.assert_close(b.logit, a.logit, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.frame_logits, a.frame_logits[:, perm])
    torch.testing.assert_close(b.attention, a.attention[:, perm])
    torch.testing.assert_close(b.embedding, a.embedding[:, perm])


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_gradients_and_export(pooling, tmp_path):
    torch.manual_seed(0)
    net = TimeLapseNet(pooling=pooling, dropout=0.1, **SMALL)
    x = torch.randn(2, 1, 3, 32, 32)

    def everything(inp):
        out = net.forward_all(inp)
        return [out.logit, out.embedding]

    assert_all_parameters_get_gradients(net, x, everything)
    assert_eval_deterministic(net, x)
    loaded = assert_torchscript_round_trip(net, x, tmp_path)
    with torch.no_grad():
        expected, got = net.forward_all(x), loaded.forward_all(x)
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loaded.forward_frames(x[:, :, 0]), net.forward_frames(x[:, :, 0]))
    assert_torchscript_round_trip(net, x, tmp_path, use_trace=True)


def test_gradcam_on_frame_encoder():
    torch.manual_seed(0)
    net = TimeLapseNet(channels=(4, 8, 8)).eval()
    scorer = net.frame_scorer()
    frames = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(scorer(frames)[:, 0], net.forward_frames(frames))
    cam = GradCAM(nn_module=scorer, target_layers="net.encoder.stage2")
    saliency = cam(frames)
    assert saliency.shape == (3, 1, 32, 32)
    assert torch.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() <= 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pooling": "max"}, "pooling"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"channels": ()}, "channels"),
        ({"attention_dim": 0}, "attention_dim"),
        ({"proj_dim": 0}, "proj_dim"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimeLapseNet(**kwargs)


def test_bad_inputs():
    net = TimeLapseNet(**SMALL).eval()
    with pytest.raises(ValueError, match=r"\(B, C, T, \*spatial\)"):
        net(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\) frames"):
        net.forward_frames(torch.zeros(2, 1, 3, 32, 32))
