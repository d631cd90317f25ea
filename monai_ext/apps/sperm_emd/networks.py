"""Backbones of the sperm grade study by name, all ``(B, C, T, H, W)`` clips -> ``(B, num_classes)`` logits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["BACKBONES", "build_network"]

#: backbone name -> name of its constructor or class in :mod:`monai_ext.networks.nets`
BACKBONES: dict[str, str] = {
    "timesformer_tiny": "timesformer_tiny",
    "timesformer_small": "timesformer_small",
    "timesformer_base": "timesformer_base",
    "resnet2d": "resnet18_temporal_pool",
    "r2plus1d": "r2plus1d_18",
    "tiny3d": "Tiny3DCNN",
}


def build_network(name: str, num_classes: int = 5, img_size: int = 32, num_frames: int = 8, in_channels: int = 1,
                  patch_size: int = 8, network_kwargs: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> torch.nn.Module:
    """Build a video backbone by name (see :data:`BACKBONES`), trained from scratch.

    Args:
        name: backbone name.
        num_classes: number of grade logits.
        img_size: crop side ``H = W``.
        num_frames: clip length ``T``.
        in_channels: channels ``C`` of a frame.
        patch_size: TimeSformer patch side (ignored by the convolutional backbones).
        network_kwargs: further constructor arguments as one mapping (the bundle config's ``network_kwargs``).
        kwargs: further constructor arguments (e.g. ``num_layers=4`` for a shallow TimeSformer).

    Raises:
        ValueError: for an unknown ``name``.
        ImportError: when ``monai_ext.networks.nets`` does not provide the backbone.

    Example::

        >>> net = build_network("timesformer_tiny", num_layers=2)
        >>> net(torch.zeros(2, 1, 8, 32, 32)).shape
        torch.Size([2, 5])
    """
    kwargs = {**dict(network_kwargs or {}), **kwargs}
    if name not in BACKBONES:
        raise ValueError(f"name must be one of {sorted(BACKBONES)}, got {name!r}.")
    from monai_ext.networks import nets

    ctor = getattr(nets, BACKBONES[name], None)
    if ctor is None:
        raise ImportError(f"monai_ext.networks.nets has no '{BACKBONES[name]}' (needed for backbone '{name}').")
    if name.startswith("timesformer"):
        return ctor(img_size=img_size, num_frames=num_frames, patch_size=patch_size, in_channels=in_channels,
                    num_classes=num_classes, **kwargs)
    return ctor(in_channels=in_channels, num_classes=num_classes, **kwargs)
