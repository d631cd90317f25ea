"""A small VGG-style classifier for 2.5D tri-planar patches (aneurysm study).

The block design (stacks of 3x3 convolutions followed by 2x2 max pooling) follows Simonyan and Zisserman, "Very Deep
Convolutional Networks for Large-Scale Image Recognition", ICLR 2015; batch normalisation (Ioffe and Szegedy, ICML
2015) is added after every convolution so that the network trains quickly from scratch on small data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Dropout, Pool
from monai.networks.layers.utils import get_act_layer

__all__ = ["MiniVGG"]


class MiniVGG(nn.Module):
    """VGG-style classifier: ``len(channels)`` blocks of ``convs_per_block`` x (conv 3x3 - norm - act) then max-pool 2.

    After the last block, global average pooling and a hidden fully connected layer give the penultimate features
    (``features(x)``, shape ``(B, hidden_features)``), and a final linear layer gives ``num_classes`` logits. Global
    pooling makes the network accept any input size divisible by ``2 ** len(channels)``; the default is the
    aneurysm study's tri-planar patch, ``(B, 3, 32, 32)`` (three orthogonal 32x32 planes as channels).

    Reference: Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015 (configuration A/B style blocks, Table 1).

    Args:
        spatial_dims: number of spatial dimensions (2 for tri-planar patches, 3 for small volumes).
        in_channels: number of input channels (3 for tri-planar patches).
        num_classes: number of output logits.
        channels: output channels of each VGG block; one 2x max pooling per block.
        convs_per_block: number of 3x3 convolutions in each block.
        hidden_features: width ``F`` of the penultimate fully connected layer returned by :py:meth:`features`.
        act: activation type and arguments, a name or ``(name, kwargs)``.
        norm: normalisation type and arguments, a name or ``(name, kwargs)``; ``None`` for none.
        dropout: dropout probability before the hidden and the output linear layers.

    Raises:
        ValueError: if ``spatial_dims`` is not 1, 2 or 3, ``channels`` is empty or not positive, ``num_classes``,
            ``convs_per_block`` or ``hidden_features`` is not positive, or ``dropout`` is not in ``[0, 1)``.

    Example::

        >>> net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=61)
        >>> net(torch.zeros(4, 3, 32, 32)).shape
        torch.Size([4, 61])
        >>> net.features(torch.zeros(4, 3, 32, 32)).shape  # penultimate features for AdaBoost
        torch.Size([4, 256])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        channels: Sequence[int] = (32, 64, 128),
        convs_per_block: int = 2,
        hidden_features: int = 256,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        channels = tuple(int(c) for c in channels)
        if len(channels) == 0 or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels}.")
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("convs_per_block", convs_per_block),
            ("hidden_features", hidden_features),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.hidden_features = hidden_features
        #: input sizes must be divisible by this factor (one 2x pooling per block)
        self.downsample_factor = 2 ** len(channels)

        blocks: list[nn.Module] = []
        prev = in_channels
        for c in channels:
            for _ in range(convs_per_block):
                blocks.append(Convolution(spatial_dims, prev, c, kernel_size=3, act=act, norm=norm, bias=norm is None))
                prev = c
            blocks.append(Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2))
        self.blocks = nn.Sequential(*blocks)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.hidden = nn.Sequential(
            nn.Flatten(1),
            Dropout[Dropout.DROPOUT, 1](dropout),
            nn.Linear(prev, hidden_features),
            get_act_layer(act) if act is not None else Act[Act.RELU](),
        )
        self.head = nn.Sequential(Dropout[Dropout.DROPOUT, 1](dropout), nn.Linear(hidden_features, num_classes))

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the hidden layer's activations, shape ``(B, hidden_features)``.

        Use these to turn a trained (e.g. landmark-pretrained) network into a fixed feature extractor, for example
        for AdaBoost on aneurysm-vs-vessel patches (call under ``net.eval()`` and ``torch.no_grad()``).
        """
        return self.hidden(self.pool(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *spatial)`` to ``(B, num_classes)`` logits."""
        return self.head(self.features(x))
