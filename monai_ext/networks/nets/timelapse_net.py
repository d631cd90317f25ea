"""Time-lapse sequence scorer for the embryo study: frame encoder, per-frame scores, temporal pooling, projection.

Temporal attention pooling follows Ilse, Tomczak and Welling, "Attention-based Deep Multiple Instance Learning",
ICML 2018 (Eq. 8-9); the projection head for the contrastive (mutual-information) loss follows Chen et al., "A Simple
Framework for Contrastive Learning of Visual Representations", ICML 2020 (Section 2.1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Dropout, Pool

__all__ = ["TimeLapseNet", "TimeLapseOutput"]

_POOLINGS = ("mean", "attention")


class TimeLapseOutput(NamedTuple):
    """Everything :py:meth:`TimeLapseNet.forward_all` returns for a batch of ``B`` sequences of ``T`` frames.

    Fields, in order:

    - ``logit``: ``(B,)`` sequence logit (e.g. live birth), equal to ``(attention * frame_logits).sum(1)``.
    - ``frame_logits``: ``(B, T)`` per-frame logits, for a score timeline.
    - ``attention``: ``(B, T)`` temporal pooling weights (non-negative, summing to one; uniform for mean pooling).
    - ``embedding``: ``(B, T, D)`` per-frame projections for the contrastive / mutual-information loss.
    """

    logit: torch.Tensor
    frame_logits: torch.Tensor
    attention: torch.Tensor
    embedding: torch.Tensor


class TimeLapseNet(nn.Module):
    """Score a time-lapse sequence and each of its frames.

    A small 2D CNN (``len(channels)`` stages of MONAI ``Convolution`` blocks, each conv-norm-act with stride 2 then a
    stride-1 conv) encodes every frame to a feature ``h_t`` (global average pooled, width ``F = channels[-1]``). A
    linear head gives the frame logit ``s_t = w^T h_t + b``. The temporal pooling weights are ``a_t = 1/T`` (``mean``)
    or ``a_t = softmax_t(u^T tanh(V h_t))`` (``attention``, Ilse et al. 2018, Eq. 9), and the sequence logit is
    ``sum_t a_t s_t``, which equals the head applied to the pooled feature ``sum_t a_t h_t`` (the head is linear), so
    the per-frame scores are an exact decomposition of the sequence score. A projection MLP maps each ``h_t`` to a
    ``proj_dim`` embedding for the InfoNCE / mutual-information loss (Chen et al. 2020).

    The network has four entry points:

    - ``forward(x)``: ``(B, C, T, H, W)`` -> ``(B, 1)`` sequence logits (MONAI's classifier layout; the TorchScript,
      ``ckpt_export`` and ``verify_net_in_out`` path).
    - ``forward_all(x)``: the same input -> :class:`TimeLapseOutput` (logit, frame_logits, attention, embedding).
    - ``forward_frames(x)``: single frames ``(B, C, H, W)`` -> ``(B,)`` frame logits.
    - ``frame_scorer()``: a module sharing these weights that maps ``(B, C, H, W)`` to ``(B, 1)`` frame logits, for
      MONAI's ``GradCAM``/``GradCAMpp`` with ``target_layers="net.encoder.stage{len(channels) - 1}"`` (the last
      encoder stage; ``"net.encoder.stage2"`` with the defaults).

    Args:
        spatial_dims: spatial dimensions of a frame (2).
        in_channels: channels of a frame (1 for grey-level time-lapse images).
        channels: output channels of each encoder stage.
        pooling: temporal pooling, ``"attention"`` or ``"mean"``.
        attention_dim: hidden width of the attention MLP (``V`` in Ilse et al. 2018).
        proj_dim: output width ``D`` of the projection head.
        act: activation type and arguments, a name or ``(name, kwargs)``.
        norm: normalisation type and arguments, a name or ``(name, kwargs)``; ``None`` for none.
        dropout: dropout probability on the frame features before the heads.

    Raises:
        ValueError: if ``pooling`` is unknown, ``channels`` is empty or not positive, or a width is not positive.

    Example::

        >>> net = TimeLapseNet(in_channels=1, channels=(16, 32, 64), pooling="attention")
        >>> x = torch.zeros(2, 1, 8, 64, 64)  # (B, C, T, H, W)
        >>> net(x).shape
        torch.Size([2, 1])
        >>> out = net.forward_all(x)
        >>> out.frame_logits.shape, out.attention.shape, out.embedding.shape
        (torch.Size([2, 8]), torch.Size([2, 8]), torch.Size([2, 8, 64]))
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        pooling: str = "attention",
        attention_dim: int = 64,
        proj_dim: int = 64,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}.")
        channels = tuple(int(c) for c in channels)
        if len(channels) == 0 or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels}.")
        for name, value in (("in_channels", in_channels), ("attention_dim", attention_dim), ("proj_dim", proj_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.spatial_dims = spatial_dims
        self.pooling = pooling
        self.use_attention = pooling == "attention"
        self.feature_dim = channels[-1]

        stages: OrderedDict[str, nn.Module] = OrderedDict()
        prev = in_channels
        for i, c in enumerate(channels):
            stages[f"stage{i}"] = nn.Sequential(
                Convolution(spatial_dims, prev, c, strides=2, kernel_size=3, act=act, norm=norm, bias=norm is None),
                Convolution(spatial_dims, c, c, kernel_size=3, act=act, norm=norm, bias=norm is None),
            )
            prev = c
        self.encoder = nn.Sequential(stages)
        self.pool = nn.Sequential(Pool[Pool.ADAPTIVEAVG, spatial_dims](1), nn.Flatten(1))
        self.dropout = Dropout[Dropout.DROPOUT, 1](dropout)
        self.frame_head = nn.Linear(prev, 1)
        # mean pooling has no attention parameters (an identity placeholder keeps the module scriptable)
        self.attention: nn.Module = (
            nn.Sequential(nn.Linear(prev, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))
            if self.use_attention
            else nn.Identity()
        )
        self.projection = nn.Sequential(nn.Linear(prev, prev), nn.ReLU(), nn.Linear(prev, proj_dim))

    def _frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial)`` -> ``(N, F)``."""
        return self.dropout(self.pool(self.encoder(x)))

    def _sequence_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, *spatial)`` -> ``(B, T, F)`` (frames folded into the batch)."""
        if x.ndim != self.spatial_dims + 3:
            raise ValueError(
                f"expected a (B, C, T, *spatial) input with {self.spatial_dims} spatial dims, got {x.shape}."
            )
        b, t = x.shape[0], x.shape[2]
        frames = x.transpose(1, 2).reshape((b * t, x.shape[1]) + x.shape[3:])
        return self._frame_features(frames).reshape(b, t, -1)

    def _pool_weights(self, h: torch.Tensor) -> torch.Tensor:
        if self.use_attention:
            return torch.softmax(self.attention(h).squeeze(-1), dim=1)
        return torch.full(h.shape[:2], 1.0 / h.shape[1], dtype=h.dtype, device=h.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, 1)`` sequence logits (``forward_all(x).logit`` with a channel axis)."""
        h = self._sequence_features(x)
        frame_logits = self.frame_head(h).squeeze(-1)
        return (self._pool_weights(h) * frame_logits).sum(1, keepdim=True)

    @torch.jit.export
    def forward_all(self, x: torch.Tensor) -> TimeLapseOutput:
        """``(B, C, T, H, W)`` -> :class:`TimeLapseOutput` ``(logit, frame_logits, attention, embedding)``."""
        h = self._sequence_features(x)
        frame_logits = self.frame_head(h).squeeze(-1)
        attention = self._pool_weights(h)
        logit = (attention * frame_logits).sum(1)
        return TimeLapseOutput(logit, frame_logits, attention, self.projection(h))

    @torch.jit.export
    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Single frames ``(B, C, H, W)`` -> ``(B,)`` frame logits (the same ``s_t`` as in a sequence)."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected (B, C, *spatial) frames with {self.spatial_dims} spatial dims, got {x.shape}.")
        return self.frame_head(self._frame_features(x)).squeeze(-1)

    def frame_scorer(self) -> nn.Module:
        """A module sharing this network's weights that maps frames ``(B, C, H, W)`` to ``(B, 1)`` logits.

        Pass it to ``monai.visualize.GradCAM(nn_module=net.frame_scorer(), target_layers="net.encoder.stage2")``
        (use the last stage index for other ``channels``) to get a saliency map for each frame.
        """
        return _FrameScorer(self)


class _FrameScorer(nn.Module):
    """Frame logits as a ``(B, 1)`` classifier output (the form MONAI's class activation maps expect)."""

    def __init__(self, net: TimeLapseNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_frames(x).unsqueeze(1)
