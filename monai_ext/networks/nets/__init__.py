"""monai_ext.networks.nets: networks for the four studies (MONAI signature conventions, TorchScript exportable)."""

from __future__ import annotations

from .histogram_net import HistogramNet
from .mini_vgg import MiniVGG

__all__: list[str] = ["HistogramNet", "MiniVGG"]
