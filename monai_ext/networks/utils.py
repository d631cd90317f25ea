"""Inference helpers for the monai_ext networks.

:func:`fuse_batchnorm` folds every batch normalisation that directly follows a convolution into that convolution's
weights and bias (Ioffe and Szegedy, ICML 2015: at inference a batch normalisation is a fixed per-channel affine
map, ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, so ``bn(conv(x))`` is one convolution with rescaled
weights). The network then computes the same function with one pass over its feature maps fewer per block; it is
one of the changes that made the aneurysm study's landmark search faster on a CPU (``docs/results.md``, landmark
localisation speed, ``benchmarks/bench_localisation.py``).
"""

from __future__ import annotations

import copy

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_batchnorm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """A convolution followed by a batch normalisation that uses running statistics over its output channels."""
    return (
        type(conv) in _CONVS
        and type(norm) in _NORMS
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _pairs(net: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """``(container, conv name, norm name)`` of every foldable pair: consecutive children of an ``nn.Sequential``,
    or a convolution followed by a container whose first child is the normalisation (MONAI's ``Convolution`` block:
    ``conv`` then ``adn`` with the norm first in its ``ordering``)."""
    pairs = []
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (cname, conv), (nname, nxt) in zip(children, children[1:], strict=False):
            if _foldable(conv, nxt):
                pairs.append((module, cname, nname))
            elif isinstance(nxt, nn.Sequential) and len(nxt) > 0:
                first_name, first = next(iter(nxt.named_children()))
                if _foldable(conv, first):
                    pairs.append((module, cname, f"{nname}.{first_name}"))
    return pairs


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """An inference copy of ``net`` with every batch normalisation that directly follows a convolution folded into
    the convolution (module docstring); ``net`` itself is left unchanged.

    Folded: ``ConvNd`` then ``BatchNormNd`` as consecutive children of an ``nn.Sequential``, and MONAI's
    ``Convolution`` blocks whose ``adn`` applies the norm first (the default ``"NDA"`` ordering); the normalisation
    becomes ``nn.Identity``. Other normalisations (instance, group, batch norm without running statistics) and
    transposed convolutions are left as they are. The copy is in eval mode: it is only valid for inference, since a
    folded network no longer updates running statistics. Outputs equal those of ``net.eval()`` up to float rounding.

    Returns:
        The fused copy in eval mode, or ``net`` itself when there is nothing to fold (no copy is made then).

    Example::

        >>> import torch
        >>> from monai_ext.networks.nets import MiniVGG
        >>> net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=4).eval()
        >>> fused = fuse_batchnorm(net)
        >>> x = torch.randn(2, 3, 32, 32)
        >>> torch.allclose(net(x), fused(x), atol=1e-5)
        True
    """
    if not _pairs(net):
        return net
    out = copy.deepcopy(net).eval()
    for container, cname, nname in _pairs(out):
        conv = getattr(container, cname)
        parent, name = container, nname
        if "." in nname:
            first, name = nname.split(".")
            parent = getattr(container, first)
        setattr(container, cname, fuse_conv_bn_eval(conv, getattr(parent, name)))
        setattr(parent, name, nn.Identity())
    return out
