"""TimeSformer: a video transformer with divided space-time attention (sperm study backbone).

Reference: Bertasius, Wang and Torresani, "Is Space-Time Attention All You Need for Video Understanding?", ICML 2021
(divided space-time attention, Section 3 and Eq. 7-8; Figure 1 "Divided Space-Time (T+S)").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

__all__ = ["TimeSformer", "timesformer_tiny", "timesformer_small", "timesformer_base"]


class _Attention(nn.Module):
    """Multi-head self-attention over the second axis of ``(N, L, D)`` with ``scaled_dot_product_attention``."""

    def __init__(self, hidden_size: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, d)))


class _DividedBlock(nn.Module):
    """Pre-norm block: temporal attention -> spatial attention (with the CLS token) -> MLP, each residual."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool,
        dropout_rate: float,
        attn_drop_rate: float,
        drop_path: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.temporal_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.temporal_attn = _Attention(hidden_size, num_heads, qkv_bias, attn_drop_rate, dropout_rate)
        self.spatial_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.spatial_attn = _Attention(hidden_size, num_heads, qkv_bias, attn_drop_rate, dropout_rate)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout_rate),
            nn.Linear(mlp_dim, hidden_size),
            nn.Dropout(dropout_rate),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, t: int, n: int) -> torch.Tensor:
        # x: (B, 1 + T*N, D) = [CLS, tokens in frame-major order (t, n)]
        b, d = x.shape[0], x.shape[2]
        cls, tok = x[:, :1], x[:, 1:]
        # temporal attention: each spatial position attends over the T frames (CLS excluded, as in the paper)
        xt = tok.reshape(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        res = self.temporal_attn(self.temporal_norm(xt))
        tok = tok + self.drop_path(res.reshape(b, n, t, d).transpose(1, 2).reshape(b, t * n, d))
        # spatial attention: within each frame, with a copy of the CLS token per frame, averaged back afterwards
        xs = torch.cat([cls.unsqueeze(1).expand(b, t, 1, d), tok.reshape(b, t, n, d)], dim=2).reshape(b * t, n + 1, d)
        res = self.drop_path(self.spatial_attn(self.spatial_norm(xs))).reshape(b, t, n + 1, d)
        cls = cls + res[:, :, 0].mean(1, keepdim=True)
        tok = tok + res[:, :, 1:].reshape(b, t * n, d)
        x = torch.cat([cls, tok], dim=1)
        return x + self.drop_path(self.mlp(self.mlp_norm(x)))


class TimeSformer(nn.Module):
    """Video transformer with divided space-time attention, ``(B, C, T, H, W)`` -> ``(B, num_classes)`` logits.

    Each frame is cut into non-overlapping ``patch_size`` patches, linearly embedded (a strided convolution) and
    given a learned spatial position embedding (shared by all frames; index 0 is the CLS token's); a learned temporal
    position embedding is added per frame. Every block applies, with pre-layer-norm and residual connections,
    temporal attention (each patch position over the ``T`` frames), then spatial attention (the patches of one frame
    plus a per-frame copy of the CLS token, whose outputs are averaged over frames), then an MLP (Bertasius et al.
    2021, Eq. 7-8). The temporal attention's output projection is zero-initialised, so at initialisation each block
    is an image transformer block (the paper's ``temporal_fc`` that follows that projection is folded into it: two
    consecutive linear maps are one linear map). Attention uses ``torch.nn.functional.scaled_dot_product_attention``.
    The logits come from a linear head on the final layer-normed CLS token.

    Reference: Bertasius, Wang and Torresani, "Is Space-Time Attention All You Need for Video Understanding?",
    ICML 2021.

    Args:
        in_channels: channels of a frame.
        num_classes: number of logits; ``0`` returns the ``(B, hidden_size)`` CLS features instead.
        img_size: frame size ``H`` or ``(H, W)``; must be divisible by ``patch_size``.
        num_frames: number of frames ``T`` expected in the input.
        patch_size: patch edge length (square patches).
        hidden_size: token width ``D``.
        mlp_dim: MLP hidden width (``4 * hidden_size`` when ``None``).
        num_layers: number of blocks.
        num_heads: attention heads; must divide ``hidden_size``.
        qkv_bias: use a bias in the query/key/value projection.
        dropout_rate: dropout after attention projections, in the MLP and before the head.
        attn_drop_rate: dropout on the attention weights (training only).
        drop_path_rate: maximum stochastic-depth rate, linearly increasing over blocks.
        layer_norm_eps: epsilon of every layer norm.

    Raises:
        ValueError: if ``img_size`` is not divisible by ``patch_size``, ``hidden_size`` not by ``num_heads``, a size
            is not positive, or a rate is not in ``[0, 1)``; at call time, if the input does not have ``num_frames``
            frames of size ``img_size``.

    Example::

        >>> net = TimeSformer(in_channels=3, num_classes=5, img_size=112, num_frames=8, patch_size=16,
        ...                   hidden_size=192, num_layers=2, num_heads=3)
        >>> net(torch.zeros(2, 3, 8, 112, 112)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 400,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 8,
        patch_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int | None = None,
        num_layers: int = 12,
        num_heads: int = 12,
        qkv_bias: bool = True,
        dropout_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 2:
            raise ValueError(f"img_size must be an int or a pair (H, W), got {img_size}.")
        for name, value in (
            ("in_channels", in_channels),
            ("num_frames", num_frames),
            ("patch_size", patch_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 returns features), got {num_classes}.")
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"img_size {size} must be divisible by patch_size={patch_size}.")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}.")
        for name, rate in (
            ("dropout_rate", dropout_rate),
            ("attn_drop_rate", attn_drop_rate),
            ("drop_path_rate", drop_path_rate),
        ):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}.")
        self.img_size = size
        self.num_frames = int(num_frames)
        self.patch_size = int(patch_size)
        self.grid = (size[0] // patch_size, size[1] // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.hidden_size = hidden_size
        self.num_classes = num_classes

        self.patch_embed = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, hidden_size))
        self.time_embed = nn.Parameter(torch.zeros(1, self.num_frames, 1, hidden_size))
        self.pos_drop = nn.Dropout(dropout_rate)
        rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
        mlp_dim = int(mlp_dim) if mlp_dim is not None else 4 * hidden_size
        self.blocks = nn.ModuleList(
            [
                _DividedBlock(
                    hidden_size, num_heads, mlp_dim, qkv_bias, dropout_rate, attn_drop_rate, rates[i], layer_norm_eps
                )
                for i in range(num_layers)
            ]
        )
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.head_drop = nn.Dropout(dropout_rate)
        self.head: nn.Module = nn.Linear(hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed, self.time_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            # zero temporal output projection: each block starts as a purely spatial (image) transformer block
            nn.init.zeros_(blk.temporal_attn.proj.weight)
            nn.init.zeros_(blk.temporal_attn.proj.bias)

    @torch.jit.export
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> final layer-normed CLS token ``(B, hidden_size)``."""
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, T, H, W) input, got {x.shape}.")
        b, c, t, h, w = x.shape
        if t != self.num_frames:
            raise ValueError(f"expected num_frames={self.num_frames} frames (dim 2), got {t}.")
        if h != self.img_size[0] or w != self.img_size[1]:
            raise ValueError(f"expected frames of size img_size={self.img_size}, got ({h}, {w}).")
        tok = self.patch_embed(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, D, h', w')
        tok = tok.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]  # (B*T, N, D)
        tok = tok.reshape(b, t, self.num_patches, self.hidden_size) + self.time_embed
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, self.hidden_size)
        z = self.pos_drop(torch.cat([cls, tok.reshape(b, t * self.num_patches, self.hidden_size)], dim=1))
        for blk in self.blocks:
            z = blk(z, t, self.num_patches)
        return self.norm(z[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, num_classes)`` logits (``(B, hidden_size)`` features if ``num_classes=0``)."""
        return self.head(self.head_drop(self.forward_features(x)))


def _timesformer(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    img_size: int | tuple[int, int],
    num_frames: int,
    patch_size: int,
    in_channels: int,
    num_classes: int,
    kwargs: dict[str, Any],
) -> TimeSformer:
    args: dict[str, Any] = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    args.update(kwargs)  # explicit overrides, e.g. a shallow network for quick CPU tests
    return TimeSformer(
        in_channels=in_channels,
        num_classes=num_classes,
        img_size=img_size,
        num_frames=num_frames,
        patch_size=patch_size,
        **args,
    )


def timesformer_tiny(
    img_size: int | tuple[int, int] = 224,
    num_frames: int = 8,
    patch_size: int = 16,
    in_channels: int = 3,
    num_classes: int = 400,
    **kwargs: Any,
) -> TimeSformer:
    """TimeSformer-Tiny: width 192, 12 layers, 3 heads (DeiT-Ti sizes); ``kwargs`` override any
    :class:`TimeSformer` argument (e.g. ``num_layers=2``).

    Example::

        >>> timesformer_tiny(img_size=112, num_frames=8, num_classes=5)(torch.zeros(1, 3, 8, 112, 112)).shape
        torch.Size([1, 5])
    """
    return _timesformer(192, 12, 3, img_size, num_frames, patch_size, in_channels, num_classes, kwargs)


def timesformer_small(
    img_size: int | tuple[int, int] = 224,
    num_frames: int = 8,
    patch_size: int = 16,
    in_channels: int = 3,
    num_classes: int = 400,
    **kwargs: Any,
) -> TimeSformer:
    """TimeSformer-Small: width 384, 12 layers, 6 heads (DeiT-S sizes), the sperm study's backbone; ``kwargs``
    override any :class:`TimeSformer` argument.

    Example::

        >>> timesformer_small(img_size=112, num_frames=8, num_classes=5)(torch.zeros(1, 3, 8, 112, 112)).shape
        torch.Size([1, 5])
    """
    return _timesformer(384, 12, 6, img_size, num_frames, patch_size, in_channels, num_classes, kwargs)


def timesformer_base(
    img_size: int | tuple[int, int] = 224,
    num_frames: int = 8,
    patch_size: int = 16,
    in_channels: int = 3,
    num_classes: int = 400,
    **kwargs: Any,
) -> TimeSformer:
    """TimeSformer-Base: width 768, 12 layers, 12 heads (ViT-B sizes, the paper's model); ``kwargs`` override any
    :class:`TimeSformer` argument.

    Example::

        >>> net = timesformer_base(img_size=64, num_frames=2, num_classes=400)  # the paper's clips: 8 x 224 x 224
        >>> net(torch.zeros(1, 3, 2, 64, 64)).shape
        torch.Size([1, 400])
    """
    return _timesformer(768, 12, 12, img_size, num_frames, patch_size, in_channels, num_classes, kwargs)
