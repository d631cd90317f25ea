"""EMDLoss against scipy's Wasserstein distance and explicit CDF loops; the distribution baselines against loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import wasserstein_distance

from monai_ext.losses import (
    EMDLoss,
    HistogramIntersectionLoss,
    JSDLoss,
    PMFMSELoss,
    SoftCrossEntropyLoss,
    get_distribution_loss,
)


def _pmfs(seed, b=4, k=6):
    g = np.random.default_rng(seed)
    p = g.dirichlet(np.ones(k), size=b)
    q = g.dirichlet(np.ones(k), size=b)
    return p, q


def ref_cdf_diff(p, q):
    out, cp, cq = [], 0.0, 0.0
    for a, b in zip(p, q, strict=True):
        cp += a
        cq += b
        out.append(cp - cq)
    return out


@pytest.mark.parametrize("k", [2, 5, 10])
def test_r1_equals_scipy_wasserstein(k):
    p, q = _pmfs(k, k=k)
    got = EMDLoss(r=1, softmax=False, reduction="none")(torch.tensor(p), torch.tensor(q))
    ref = [wasserstein_distance(range(k), range(k), p[i], q[i]) for i in range(len(p))]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("r", [2, 3])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nima_normalised_root_per_sample(r, reduction):
    p, q = _pmfs(1)
    k = p.shape[1]
    per = [(sum(abs(d) ** r for d in ref_cdf_diff(p[i], q[i])) / k) ** (1 / r) for i in range(len(p))]
    ref = {"none": per, "mean": np.mean(per), "sum": np.sum(per)}[reduction]
    got = EMDLoss(r=r, softmax=False, reduction=reduction)(torch.tensor(p), torch.tensor(q))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_squared_is_hou_et_al_and_softmax_applies():
    logits = np.random.default_rng(2).normal(size=(3, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    _, q = _pmfs(2, b=3, k=5)
    ref = [sum(d * d for d in ref_cdf_diff(p[i], q[i])) for i in range(3)]
    got = EMDLoss(r=2, squared=True, reduction="none")(torch.tensor(logits), torch.tensor(q))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("kwargs", [{"r": 2}, {"r": 1}, {"r": 2, "squared": True}, {"r": 3}])
def test_gradient_finite_when_prediction_equals_target(kwargs):
    _, q = _pmfs(3)
    logits = torch.tensor(np.log(q), requires_grad=True)
    loss = EMDLoss(**kwargs)(logits, torch.tensor(q))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-7)
    assert torch.isfinite(logits.grad).all()
    probs = torch.tensor(q, requires_grad=True)
    EMDLoss(softmax=False, **kwargs)(probs, torch.tensor(q)).backward()
    assert torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("kwargs", [{"r": 2}, {"r": 1}, {"r": 2, "squared": True}])
def test_gradcheck_float64(kwargs):
    logits = torch.tensor(np.random.default_rng(4).normal(size=(3, 4)), requires_grad=True)
    _, q = _pmfs(4, b=3, k=4)
    assert torch.autograd.gradcheck(lambda x: EMDLoss(**kwargs)(x, torch.tensor(q)), (logits,))


pmf = arrays(np.float64, 5, elements=st.floats(0.01, 1.0)).map(lambda a: a / a.sum())


@settings(max_examples=40, deadline=None)
@given(p=pmf, q=pmf, s=pmf)
def test_property_r1_is_a_metric(p, q, s):
    def d(a, b):
        return float(EMDLoss(r=1, softmax=False)(torch.tensor(a[None]), torch.tensor(b[None])))

    assert d(p, q) == pytest.approx(d(q, p), abs=1e-12)
    assert d(p, p) == pytest.approx(0.0, abs=1e-12)
    assert d(p, s) <= d(p, q) + d(q, s) + 1e-12


@pytest.mark.parametrize(
    "x, t, match",
    [
        (torch.zeros(2, 3), torch.full((2, 3), 0.5), "target rows"),
        (torch.zeros(2, 3), torch.tensor([[1.5, -0.5, 0.0], [1.0, 0.0, 0.0]]), "target rows"),
        (torch.zeros(2, 3), torch.full((2, 4), 0.25), r"\(B, K\)"),
        (torch.zeros(6), torch.full((6,), 1 / 6), r"\(B, K\)"),
    ],
)
def test_bad_inputs(x, t, match):
    with pytest.raises(ValueError, match=match):
        EMDLoss()(x, t)


def test_bad_options_and_probability_input_checked():
    with pytest.raises(ValueError, match="r must be"):
        EMDLoss(r=0.5)
    with pytest.raises(ValueError, match="reduction"):
        EMDLoss(reduction="max")
    with pytest.raises(ValueError, match="input rows"):
        EMDLoss(softmax=False)(torch.full((1, 3), 0.5), torch.full((1, 3), 1 / 3))


# ----------------------------------------------------------------------------------------------- baselines


def ref_baseline(name, p, q):
    if name == "mse":
        return sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) / len(p)
    if name == "ce":
        return -sum(b * math.log(a) for a, b in zip(p, q, strict=True))
    if name == "hi":
        return 1 - sum(min(a, b) for a, b in zip(p, q, strict=True))
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x, y):
        return sum(a * math.log(a / c) for a, c in zip(x, y, strict=True) if a > 0)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@pytest.mark.parametrize("name", ["mse", "jsd", "ce", "hi"])
@pytest.mark.parametrize("softmax", [True, False])
def test_baselines_match_loops(name, softmax):
    p, q = _pmfs(5)
    x = np.log(p) + 0.3 if softmax else p  # softmax of log p + c is p
    got = get_distribution_loss(name, softmax=softmax, reduction="none")(torch.tensor(x), torch.tensor(q))
    np.testing.assert_allclose(got.numpy(), [ref_baseline(name, p[i], q[i]) for i in range(len(p))], rtol=1e-9)


def test_baseline_edge_values_and_registry():
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    flipped = one_hot.flip(1)
    assert float(JSDLoss(softmax=False)(one_hot, flipped)) == pytest.approx(math.log(2))
    assert float(HistogramIntersectionLoss(softmax=False)(one_hot, flipped)) == pytest.approx(1.0)
    assert float(PMFMSELoss(softmax=False)(one_hot, one_hot)) == 0.0
    assert float(SoftCrossEntropyLoss()(torch.zeros(1, 4), torch.full((1, 4), 0.25))) == pytest.approx(math.log(4))
    assert isinstance(get_distribution_loss("EMD", r=1), EMDLoss)
    with pytest.raises(ValueError, match="name must be one of"):
        get_distribution_loss("wasserstein")
