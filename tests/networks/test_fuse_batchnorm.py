from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from monai_ext.networks import fuse_batchnorm
from monai_ext.networks.nets import HistogramNet, MiniVGG


def _trained_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters (a fresh norm is the identity on
    standardised data, which would hide a wrong fold)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.2)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
    return net.eval()


def _norms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: MiniVGG(spatial_dims=2, in_channels=3, num_classes=7, channels=(8, 16)), (5, 3, 32, 32)),
        (lambda: MiniVGG(spatial_dims=3, in_channels=1, num_classes=3, channels=(4, 8), convs_per_block=1),
         (2, 1, 8, 8, 8)),
        (lambda: nn.Sequential(nn.Conv1d(2, 6, 3), nn.BatchNorm1d(6), nn.ReLU(), nn.Conv1d(6, 4, 3, bias=False),
                               nn.BatchNorm1d(4)), (3, 2, 20)),
    ],
)
def test_fused_network_computes_the_same_function(make, shape):
    torch.manual_seed(0)
    net = _trained_statistics(make())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = fuse_batchnorm(net)
    assert fused is not net and not fused.training
    assert _norms(fused) == 0 and _norms(net) > 0
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = net(x), fused(x)
    assert want.std() > 1e-3  # not a constant output
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the original is untouched: same modules, same values
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fused_histogram_net_heads_match():
    """A network with several outputs (the ips_histogram patch CNN's per-level pmf heads)."""
    torch.manual_seed(0)
    net = _trained_statistics(HistogramNet(in_channels=1, num_classes=3, patch_size=32, grid_sizes=(1, 2),
                                           channels=(8, 16)))
    fused = fuse_batchnorm(net)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = net(x), fused(x)
    want, got = (want, got) if isinstance(want, (list, tuple)) else ([want], [got])
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "net",
    [
        nn.Sequential(nn.Linear(3, 3), nn.ReLU()),  # no convolution
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True)),  # not a batch norm
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)),  # no running statistics
        nn.Sequential(nn.ConvTranspose2d(3, 4, 3), nn.BatchNorm2d(4)),  # transposed convolution
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)),  # the norm does not follow the conv
        Convolution(2, 3, 4, adn_ordering="AN", norm="batch", act="relu"),  # MONAI block, activation first
    ],
)
def test_nothing_to_fold_returns_the_network_itself(net):
    assert fuse_batchnorm(net) is net


def test_monai_convolution_block_with_norm_first_is_folded():
    block = _trained_statistics(Convolution(2, 3, 4, adn_ordering="NDA", norm="batch", act="prelu", dropout=0.2))
    fused = fuse_batchnorm(block)
    assert isinstance(fused.adn.N, nn.Identity) and isinstance(block.adn.N, nn.BatchNorm2d)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), atol=1e-5, rtol=1e-5)
