"""monai_ext.networks.nets: networks for the four studies (MONAI signature conventions, TorchScript exportable)."""

from __future__ import annotations

from .histogram_net import FlatHistogramNet, HistogramNet
from .mini_vgg import MiniVGG
from .timelapse_net import TimeLapseNet, TimeLapseOutput
from .video_baselines import R2Plus1D, ResNetTemporalPool, Tiny3DCNN, r2plus1d_18, resnet18_temporal_pool
from .video_transformer import TimeSformer, timesformer_base, timesformer_small, timesformer_tiny

__all__: list[str] = [
    "FlatHistogramNet",
    "HistogramNet",
    "MiniVGG",
    "R2Plus1D",
    "ResNetTemporalPool",
    "TimeLapseNet",
    "TimeLapseOutput",
    "TimeSformer",
    "Tiny3DCNN",
    "r2plus1d_18",
    "resnet18_temporal_pool",
    "timesformer_base",
    "timesformer_small",
    "timesformer_tiny",
]
