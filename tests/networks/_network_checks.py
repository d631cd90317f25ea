"""Shared checks for the network tests: gradient coverage, eval determinism, TorchScript round trips."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def flatten_output(out) -> torch.Tensor:
    """Concatenate a tensor, or a list/tuple of tensors, into one flat tensor."""
    if isinstance(out, torch.Tensor):
        return out.reshape(-1)
    return torch.cat([o.reshape(-1) for o in out])


def assert_all_parameters_get_gradients(net: nn.Module, x: torch.Tensor, fn: Callable | None = None) -> None:
    """Backpropagate a random projection of the output and check every parameter gets a finite, non-zero gradient."""
    net.train()
    net.zero_grad()
    out = flatten_output(fn(x) if fn is not None else net(x))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no/non-finite gradient for {missing}"
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero}"


def assert_eval_deterministic(net: nn.Module, x: torch.Tensor) -> None:
    net.eval()
    with torch.no_grad():
        a, b = flatten_output(net(x)), flatten_output(net(x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def assert_torchscript_round_trip(net: nn.Module, x: torch.Tensor, tmp_path, use_trace: bool = False) -> nn.Module:
    """Script (or trace), save, reload and compare with the eager output; returns the reloaded module."""
    net.eval()
    with torch.no_grad():
        expected = flatten_output(net(x))
        ts = torch.jit.trace(net, x) if use_trace else torch.jit.script(net)
        path = tmp_path / "net.ts"
        torch.jit.save(ts, str(path))
        loaded = torch.jit.load(str(path))
        torch.testing.assert_close(flatten_output(loaded(x)), expected, rtol=1e-5, atol=1e-6)
    return loaded
