"""InfoNCELoss against explicit per-anchor loops (two views and group ids)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_ext.losses import InfoNCELoss


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_two_view(z1, z2, t, normalize, symmetric):
    if normalize:
        z1, z2 = _unit(z1), _unit(z2)
    n = len(z1)
    s = [[float(z1[i] @ z2[j]) / t for j in range(n)] for i in range(n)]
    out = [-(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n)))) for i in range(n)]
    if symmetric:
        out += [-(s[j][j] - math.log(sum(math.exp(s[i][j]) for i in range(n)))) for j in range(n)]
    return out


def ref_groups(z, groups, t, normalize):
    if normalize:
        z = _unit(z)
    n = len(z)
    out = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and groups[p] == groups[i]]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(n) if a != i)
        out.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in pos) / len(pos))
    return out


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_two_views_match_loop(normalize, symmetric, reduction):
    g = np.random.default_rng(0)
    z1, z2 = g.normal(size=(6, 4)), g.normal(size=(6, 4))
    t = 0.5
    ref = ref_two_view(z1, z2, t, normalize, symmetric)
    got = InfoNCELoss(t, normalize=normalize, symmetric=symmetric, reduction=reduction)(
        torch.tensor(z1), torch.tensor(z2)
    )
    expected = {"none": ref, "mean": np.mean(ref), "sum": np.sum(ref)}[reduction]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("groups", [[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 7], [3, 3, 3, 3, 3, 3]])
def test_groups_match_loop(normalize, groups):
    z = np.random.default_rng(1).normal(size=(6, 5))
    ref = ref_groups(z, groups, 0.3, normalize)
    got = InfoNCELoss(0.3, normalize=normalize, reduction="none")(torch.tensor(z), torch.tensor(groups))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_stable_for_large_logits():
    z = torch.randn(8, 3, dtype=torch.float32) * 1e3
    for target in (torch.randn(8, 3) * 1e3, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])):
        x = z.clone().requires_grad_(True)
        out = InfoNCELoss(temperature=1e-3, normalize=False)(x, target)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_gradcheck_float64():
    g = np.random.default_rng(2)
    z = torch.tensor(g.normal(size=(5, 3)), requires_grad=True)
    z2 = torch.tensor(g.normal(size=(5, 3)), requires_grad=True)
    loss = InfoNCELoss(0.7)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b), (z, z2))
    assert torch.autograd.gradcheck(lambda a: loss(a, torch.tensor([0, 0, 1, 1, 1])), (z,))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_property_scale_invariant_and_aligned_views_beat_permuted_ones(seed, scale):
    z = torch.tensor(np.random.default_rng(seed).normal(size=(6, 4)))
    loss = InfoNCELoss(0.1)
    assert float(loss(z * scale, z)) == pytest.approx(float(loss(z, z)), rel=1e-9)
    # with a permuted second view the softmax denominators are the same sets, but each numerator has a cosine <= 1
    perm = torch.tensor(np.random.default_rng(seed + 1).permutation(6))
    assert float(loss(z, z)) <= float(loss(z, z[perm])) + 1e-9


def test_no_positive_pair_warns_and_returns_attached_zero():
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="no two samples share a group"):
        out = InfoNCELoss()(x, torch.tensor([0, 1, 2, 3]))
    out.backward()
    assert float(out.detach()) == 0.0 and torch.isfinite(x.grad).all()


def test_bad_inputs_and_options():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
    with pytest.raises(ValueError, match="reduction"):
        InfoNCELoss(reduction="avg")
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match=r"input must be embeddings of shape \(B, D\)"):
        loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="integer group ids"):
        loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="integer group ids"):
        loss(torch.randn(4, 3), torch.tensor([0, 0, 1]))
