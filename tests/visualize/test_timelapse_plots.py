"""monai_ext.visualize: score timelines, saliency over frames and ROC plots."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from monai_ext.networks.nets import TimeLapseNet
from monai_ext.visualize import frame_saliency, plot_frame_saliency, plot_roc_curves, plot_score_timeline


def _is_png(path):
    img = iio.imread(path)
    return img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


@pytest.mark.parametrize("scores, weights", [
    ([0.1, 0.5, 0.9], None),
    (np.linspace(0, 1, 8), np.full(8, 1 / 8)),
    (torch.rand(5), torch.softmax(torch.rand(5), 0)),
])
def test_timeline_png(tmp_path, scores, weights):
    path = plot_score_timeline(scores, tmp_path / "t.png", sequence_score=0.4, weights=weights, title="x")
    assert _is_png(path)


@pytest.mark.parametrize("scores, weights, match", [
    ([], None, "non-empty 1D"), (np.zeros((2, 2)), None, "non-empty 1D"), ([0.1, 0.2], [1.0], "weights"),
])
def test_timeline_errors(tmp_path, scores, weights, match):
    with pytest.raises(ValueError, match=match):
        plot_score_timeline(scores, tmp_path / "t.png", weights=weights)


def test_saliency_png_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    frames, sal = rng.random((4, 16, 16)), rng.random((4, 16, 16))
    assert _is_png(plot_frame_saliency(frames, sal, tmp_path / "s.png", frame_scores=[0.1, 0.2, 0.3, 0.4]))
    assert _is_png(plot_frame_saliency(torch.as_tensor(frames), torch.as_tensor(sal), tmp_path / "s2.png"))
    with pytest.raises(ValueError, match="both be"):
        plot_frame_saliency(frames, sal[:3], tmp_path / "s.png")
    with pytest.raises(ValueError, match="frame_scores must have 4"):
        plot_frame_saliency(frames, sal, tmp_path / "s.png", frame_scores=[0.1])


def test_roc_png_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    curves = {"a": (y, rng.random(50) + y), "b": (torch.as_tensor(y), torch.rand(50))}
    assert _is_png(plot_roc_curves(curves, tmp_path / "roc.png", title="t"))
    with pytest.raises(ValueError, match="curves is empty"):
        plot_roc_curves({}, tmp_path / "roc.png")
    with pytest.raises(ValueError, match="both classes"):
        plot_roc_curves({"a": (np.ones(5), np.linspace(0, 1, 5))}, tmp_path / "roc.png")


class _Bright(torch.nn.Module):
    """Score = mean of the top-left quadrant: only that quadrant matters (a known saliency)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
        torch.nn.init.ones_(self.conv.weight)

    def forward(self, x):
        h = self.conv(x)
        return h[:, :, :8, :8].mean((2, 3))


def test_occlusion_saliency_finds_the_region():
    frames = torch.rand(2, 1, 16, 16) + 0.5
    sal = frame_saliency(_Bright(), frames, "occlusion", mask_size=4)
    assert sal.shape == (2, 16, 16) and sal.min() >= 0 and sal.max() <= 1
    # naive expectation: occluding pixels outside the top-left quadrant does not lower the score
    for s in sal:
        assert s[:8, :8].mean() > s[8:, 8:].mean()
        assert s[12:, 12:].max() == pytest.approx(0.0, abs=1e-6)


def test_gradcam_saliency_on_timelapse_net():
    net = TimeLapseNet(channels=(4, 8))
    frames = torch.randn(3, 1, 32, 32)
    sal = frame_saliency(net.frame_scorer(), frames, "gradcam", target_layers="net.encoder.stage1")
    assert sal.shape == (3, 32, 32) and np.isfinite(sal).all() and sal.min() >= 0 and sal.max() <= 1
    assert net.training  # the mode is restored


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "lime"}, "method must be one of"), ({"method": "gradcam"}, "target_layers is required"),
])
def test_saliency_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        frame_saliency(_Bright(), torch.rand(1, 1, 16, 16), **kwargs)
    with pytest.raises(ValueError, match="frames must be"):
        frame_saliency(_Bright(), torch.rand(1, 16, 16), "occlusion")
