"""Convolutional video classifiers used as baselines in the sperm study (all trained from scratch).

Every network maps a clip ``(B, C, T, H, W)`` (channel-first, like every MONAI network) to ``(B, num_classes)``
logits:

- :class:`ResNetTemporalPool`: a 2D ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016)
  applied to every frame, then temporal mean or max pooling (the "single-frame" baseline of Karpathy et al.,
  "Large-scale Video Classification with Convolutional Neural Networks", CVPR 2014, with late pooling).
- :class:`R2Plus1D`: the R(2+1)D network of Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
  Recognition", CVPR 2018 (each 3D convolution factorised into a spatial and a temporal one, Section 3.5).
- :class:`Tiny3DCNN`: a small plain 3D CNN (C3D-style, Tran et al., ICCV 2015) for quick CPU runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets import ResNet

__all__ = [
    "ResNetTemporalPool",
    "resnet18_temporal_pool",
    "R2Plus1D",
    "r2plus1d_18",
    "Tiny3DCNN",
]

_TEMPORAL_POOLINGS = ("mean", "max")


def _check_common(in_channels: int, num_classes: int, dropout: float) -> None:
    if in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")


def _check_widths(name: str, values: Sequence[int], length: int | None = None) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(values) == 0 or min(values) < 1 or (length is not None and len(values) != length):
        expected = f"{length} positive integers" if length is not None else "a non-empty sequence of positive integers"
        raise ValueError(f"{name} must be {expected}, got {values}.")
    return values


class ResNetTemporalPool(nn.Module):
    """2D ResNet frame encoder + temporal pooling + linear classifier: ``(B, C, T, H, W)`` -> ``(B, num_classes)``.

    The frame encoder is MONAI's :class:`monai.networks.nets.ResNet` (basic blocks, ``spatial_dims=2``, the standard
    stride-2 7x7 stem, no classification layer); frame features are pooled over time (mean or max) and classified
    by a linear layer.

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; temporal late pooling as in
    Karpathy et al., CVPR 2014.

    Args:
        in_channels: channels of a frame.
        num_classes: number of logits.
        layers: residual blocks in each of the four stages (``(2, 2, 2, 2)`` is ResNet-18).
        channels: widths of the four stages.
        temporal_pool: ``"mean"`` or ``"max"`` over frames.
        act: activation type and arguments, a name or ``(name, kwargs)``.
        norm: normalisation type and arguments, a name or ``(name, kwargs)``.
        dropout: dropout probability before the classifier.

    Raises:
        ValueError: if ``temporal_pool`` is unknown, ``layers``/``channels`` do not have four positive entries, or
            another argument is out of range.

    Example::

        >>> net = ResNetTemporalPool(in_channels=3, num_classes=4, channels=(16, 32, 64, 128))
        >>> net(torch.zeros(2, 3, 8, 112, 112)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 400,
        layers: Sequence[int] = (2, 2, 2, 2),
        channels: Sequence[int] = (64, 128, 256, 512),
        temporal_pool: str = "mean",
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, dropout)
        layers = _check_widths("layers", layers, 4)
        channels = _check_widths("channels", channels, 4)
        if temporal_pool not in _TEMPORAL_POOLINGS:
            raise ValueError(f"temporal_pool must be one of {_TEMPORAL_POOLINGS}, got {temporal_pool!r}.")
        self.use_max = temporal_pool == "max"
        self.encoder = ResNet(
            block="basic",
            layers=list(layers),
            block_inplanes=list(channels),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_stride=2,  # the standard ResNet stem (7x7 conv at stride 2, then 3x3 max-pool at stride 2)
            feed_forward=False,
            act=act,
            norm=norm,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, T, H, W) input, got {x.shape}.")
        b, c, t = x.shape[0], x.shape[1], x.shape[2]
        h = self.encoder(x.transpose(1, 2).reshape((b * t, c) + x.shape[3:])).reshape(b, t, -1)
        pooled = h.amax(1) if self.use_max else h.mean(1)
        return self.fc(self.dropout(pooled))


def resnet18_temporal_pool(in_channels: int = 3, num_classes: int = 400, **kwargs) -> ResNetTemporalPool:
    """ResNet-18 frame encoder with temporal pooling (``kwargs`` go to :class:`ResNetTemporalPool`).

    Example::

        >>> resnet18_temporal_pool(num_classes=4)(torch.zeros(1, 3, 8, 112, 112)).shape
        torch.Size([1, 4])
    """
    return ResNetTemporalPool(in_channels, num_classes, layers=(2, 2, 2, 2), **kwargs)


class _Conv2Plus1D(nn.Sequential):
    """(2+1)D convolution: spatial ``1 x 3 x 3`` conv -> norm -> act -> temporal ``3 x 1 x 1`` conv."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int, stride: int, act: str | tuple, norm: str | tuple):
        conv = Conv[Conv.CONV, 3]
        super().__init__(
            conv(in_ch, mid_ch, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            get_norm_layer(norm, spatial_dims=3, channels=mid_ch),
            get_act_layer(act),
            conv(mid_ch, out_ch, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


def _mid_channels(in_ch: int, out_ch: int, t: int = 3, d: int = 3) -> int:
    """Tran et al. 2018, Section 3.5: ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`` keeps the parameter
    count of the ``t x d x d`` 3D convolution it replaces."""
    return (t * d * d * in_ch * out_ch) // (d * d * in_ch + t * out_ch)


class _Block2Plus1D(nn.Module):
    """Basic residual block of two (2+1)D convolutions."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str | tuple, norm: str | tuple) -> None:
        super().__init__()
        self.conv1 = _Conv2Plus1D(in_ch, out_ch, _mid_channels(in_ch, out_ch), stride, act, norm)
        self.norm1 = get_norm_layer(norm, spatial_dims=3, channels=out_ch)
        self.act1 = get_act_layer(act)
        self.conv2 = _Conv2Plus1D(out_ch, out_ch, _mid_channels(out_ch, out_ch), 1, act, norm)
        self.norm2 = get_norm_layer(norm, spatial_dims=3, channels=out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                Conv[Conv.CONV, 3](in_ch, out_ch, 1, stride=stride, bias=False),
                get_norm_layer(norm, spatial_dims=3, channels=out_ch),
            )
        self.act2 = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(y + self.shortcut(x))


class R2Plus1D(nn.Module):
    """R(2+1)D residual network: ``(B, C, T, H, W)`` -> ``(B, num_classes)``.

    Stem: spatial ``1 x 7 x 7`` conv (stride ``(1, 2, 2)``) and temporal ``3 x 1 x 1`` conv; then four stages of basic
    residual blocks of (2+1)D convolutions (the first stage at stride 1, the others halving ``T``, ``H`` and ``W``);
    the intermediate width of every (2+1)D convolution follows Tran et al. 2018, Section 3.5, so it has the same
    number of parameters as the 3D convolution it factorises. Global average pooling and a linear classifier.

    Reference: Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition", CVPR 2018.

    Args:
        in_channels: channels of a frame.
        num_classes: number of logits.
        layers: residual blocks per stage (``(2, 2, 2, 2)`` is R(2+1)D-18).
        channels: widths of the four stages.
        act: activation type and arguments, a name or ``(name, kwargs)``.
        norm: normalisation type and arguments, a name or ``(name, kwargs)``.
        dropout: dropout probability before the classifier.

    Raises:
        ValueError: if ``layers``/``channels`` do not have four positive entries, or another argument is out of range.

    Example::

        >>> net = r2plus1d_18(in_channels=3, num_classes=4)
        >>> net(torch.zeros(1, 3, 8, 112, 112)).shape
        torch.Size([1, 4])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 400,
        layers: Sequence[int] = (2, 2, 2, 2),
        channels: Sequence[int] = (64, 128, 256, 512),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, dropout)
        layers = _check_widths("layers", layers, 4)
        channels = _check_widths("channels", channels, 4)
        conv = Conv[Conv.CONV, 3]
        stem_mid = _mid_channels(in_channels, channels[0], t=3, d=7)
        self.stem = nn.Sequential(
            conv(in_channels, stem_mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            get_norm_layer(norm, spatial_dims=3, channels=stem_mid),
            get_act_layer(act),
            conv(stem_mid, channels[0], (3, 1, 1), padding=(1, 0, 0), bias=False),
            get_norm_layer(norm, spatial_dims=3, channels=channels[0]),
            get_act_layer(act),
        )
        stages: list[nn.Module] = []
        prev = channels[0]
        for i, (n, c) in enumerate(zip(layers, channels, strict=True)):
            blocks = [
                _Block2Plus1D(prev if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1, act, norm) for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.pool = Pool[Pool.ADAPTIVEAVG, 3](1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, T, H, W) input, got {x.shape}.")
        return self.fc(self.dropout(self.pool(self.stages(self.stem(x))).flatten(1)))


def r2plus1d_18(in_channels: int = 3, num_classes: int = 400, **kwargs) -> R2Plus1D:
    """R(2+1)D-18 (``kwargs`` go to :class:`R2Plus1D`, e.g. narrower ``channels`` for CPU tests).

    Example::

        >>> r2plus1d_18(num_classes=4, channels=(8, 16, 32, 64))(torch.zeros(1, 3, 8, 64, 64)).shape
        torch.Size([1, 4])
    """
    return R2Plus1D(in_channels, num_classes, layers=(2, 2, 2, 2), **kwargs)


class Tiny3DCNN(nn.Module):
    """A small plain 3D CNN: ``len(channels)`` x (3x3x3 conv - norm - act - max-pool) -> global pool -> linear.

    The first pooling halves only ``H`` and ``W`` (keeping early temporal resolution, as in C3D); later ones halve
    ``T``, ``H`` and ``W``, so clips need ``T >= 2 ** (len(channels) - 1)`` frames.

    Reference: Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015.

    Args:
        in_channels: channels of a frame.
        num_classes: number of logits.
        channels: widths of the stages.
        act: activation type and arguments, a name or ``(name, kwargs)``.
        norm: normalisation type and arguments, a name or ``(name, kwargs)``.
        dropout: dropout probability before the classifier.

    Raises:
        ValueError: if ``channels`` is empty or not positive, or another argument is out of range.

    Example::

        >>> Tiny3DCNN(in_channels=3, num_classes=4)(torch.zeros(2, 3, 8, 64, 64)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 400,
        channels: Sequence[int] = (16, 32, 64),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, dropout)
        channels = _check_widths("channels", channels)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(channels):
            layers.append(Convolution(3, prev, c, kernel_size=3, act=act, norm=norm, bias=False))
            layers.append(Pool[Pool.MAX, 3](kernel_size=(1, 2, 2) if i == 0 else 2))
            prev = c
        self.features = nn.Sequential(*layers)
        self.pool = Pool[Pool.ADAPTIVEAVG, 3](1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, T, H, W) input, got {x.shape}.")
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))
