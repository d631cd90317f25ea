"""NNPULoss against a per-sample loop reference of Kiryo et al. 2017 (Eq. (2)-(6), Algorithm 1)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_ext.losses import NNPULoss, get_surrogate

# plain-Python surrogates of the margin z, written independently of the package
REF = {
    "sigmoid": lambda z: 1.0 / (1.0 + math.exp(z)),
    "logistic": lambda z: math.log1p(math.exp(-z)),
    "squared": lambda z: 0.25 * (z - 1.0) ** 2,
    "squared_hinge": lambda z: 0.25 * max(0.0, 1.0 - z) ** 2,
    "double_hinge": lambda z: max(-z, max(0.0, 0.5 * (1.0 - z))),
}


def ref_terms(scores, target, surrogate):
    loss = REF[surrogate]
    p = [s for s, t in zip(scores, target, strict=True) if t == 1]
    u = [s for s, t in zip(scores, target, strict=True) if t == 0]
    rp_plus = sum(loss(s) for s in p) / len(p)
    rp_minus = sum(loss(-s) for s in p) / len(p)
    ru_minus = sum(loss(-s) for s in u) / len(u)
    return rp_plus, rp_minus, ru_minus


def ref_value(scores, target, prior, surrogate, nonnegative, beta=0.0):
    rp_plus, rp_minus, ru_minus = ref_terms(scores, target, surrogate)
    neg = ru_minus - prior * rp_minus
    if nonnegative and neg < -beta:
        return prior * rp_plus - beta
    return prior * rp_plus + neg


def _batch(seed, n=12, n_pos=4, scale=1.0):
    g = np.random.default_rng(seed)
    scores = (g.normal(size=n) * scale).tolist()
    target = [1] * n_pos + [0] * (n - n_pos)
    return scores, target


@pytest.mark.parametrize("surrogate", sorted(REF))
@pytest.mark.parametrize("nonnegative", [False, True])
@pytest.mark.parametrize("shape", ["flat", "column"])
def test_value_matches_loop_reference(surrogate, nonnegative, shape):
    scores, target = _batch(0)
    x = torch.tensor(scores, dtype=torch.float64)
    t = torch.tensor(target)
    if shape == "column":
        x, t = x[:, None], t[:, None]
    got = NNPULoss(prior=0.4, nonnegative=nonnegative, surrogate=surrogate)(x, t)
    assert float(got) == pytest.approx(ref_value(scores, target, 0.4, surrogate, nonnegative), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("surrogate", sorted(REF))
def test_surrogate_values(surrogate):
    z = np.linspace(-3, 3, 13)
    got = get_surrogate(surrogate)(torch.tensor(z)).numpy()
    np.testing.assert_allclose(got, [REF[surrogate](v) for v in z], rtol=1e-12, atol=1e-12)


def _negative_regime():
    # positives scored high (l(-f_p) large), unlabeled scored very low (l(-f_u) ~ 0): R_u- - pi R_p- < 0
    scores = [3.0, 2.5, 4.0, -6.0, -7.0, -5.5, -8.0, -6.5]
    target = [1, 1, 1, 0, 0, 0, 0, 0]
    return scores, target


@pytest.mark.parametrize("gamma", [1.0, 0.5])
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_correction_branch_value_and_gradient(gamma, beta):
    scores, target = _negative_regime()
    prior = 0.5
    rp_plus, rp_minus, ru_minus = ref_terms(scores, target, "sigmoid")
    assert ru_minus - prior * rp_minus < -beta  # the case under test

    x = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    value = NNPULoss(prior, beta=beta, gamma=gamma)(x, torch.tensor(target))
    value.backward()
    # value: the non-negative risk pi R_p+ + max(-beta, neg) (Eq. (6) with beta = 0)
    assert float(value.detach()) == pytest.approx(prior * rp_plus - beta, rel=1e-12)

    # gradient: that of -gamma (R_u- - pi R_p-), written out by hand for the sigmoid surrogate
    # d/df sigmoid(f) = s (1 - s); R_u- = mean_u sigmoid(f_u), R_p- = mean_p sigmoid(f_p)
    n_p, n_u = sum(target), len(target) - sum(target)
    expected = []
    for s, t in zip(scores, target, strict=True):
        ds = (1 / (1 + math.exp(-s))) * (1 - 1 / (1 + math.exp(-s)))
        expected.append(-gamma * (-prior * ds / n_p if t == 1 else ds / n_u))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10, atol=1e-15)

    # direction: a small descent step on this gradient *raises* the negative part (gradient ascent on it)
    with torch.no_grad():
        stepped = (x - 0.1 * x.grad).tolist()
    _, rp_minus2, ru_minus2 = ref_terms(stepped, target, "sigmoid")
    assert ru_minus2 - prior * rp_minus2 > ru_minus - prior * rp_minus


def test_correction_not_taken_when_disabled_or_above_beta():
    scores, target = _negative_regime()
    x = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    upu = NNPULoss(0.5, nonnegative=False)(x, torch.tensor(target))
    (g_upu,) = torch.autograd.grad(upu, x)
    # uPU descends on the full unbiased risk: its gradient drives the negative part further down
    with torch.no_grad():
        stepped = (x - 0.1 * g_upu).tolist()
    _, a, b = ref_terms(scores, target, "sigmoid")
    _, a2, b2 = ref_terms(stepped, target, "sigmoid")
    assert b2 - 0.5 * a2 < b - 0.5 * a
    # a beta larger than |neg| disables the correction: nnPU equals uPU in value and gradient
    nn = NNPULoss(0.5, beta=10.0)(x, torch.tensor(target))
    (g_nn,) = torch.autograd.grad(nn, x)
    assert float(nn) == pytest.approx(float(upu))
    torch.testing.assert_close(g_nn, g_upu)


@pytest.mark.parametrize("surrogate", ["sigmoid", "logistic", "squared", "double_hinge"])
@pytest.mark.parametrize("nonnegative", [False, True])
def test_gradcheck_float64(surrogate, nonnegative):
    scores, target = _batch(3, n=9, n_pos=3)
    x = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(target)
    loss = NNPULoss(0.3, nonnegative=nonnegative, surrogate=surrogate, beta=100.0 if nonnegative else 0.0)
    assert torch.autograd.gradcheck(lambda v: loss(v, t), (x,))


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(st.floats(-8, 8, allow_nan=False), min_size=4, max_size=20),
    n_pos=st.integers(1, 3),
    prior=st.floats(0.05, 0.95),
    beta=st.sampled_from([0.0, 0.1]),
)
def test_property_nnpu_is_max_of_upu_and_positive_part(scores, n_pos, prior, beta):
    target = [1] * n_pos + [0] * (len(scores) - n_pos)
    x = torch.tensor(scores, dtype=torch.float64)
    t = torch.tensor(target)
    upu = float(NNPULoss(prior, nonnegative=False)(x, t))
    nn = float(NNPULoss(prior, beta=beta)(x, t))
    rp_plus, _, _ = ref_terms(scores, target, "sigmoid")
    assert nn == pytest.approx(max(upu, prior * rp_plus - beta), rel=1e-9, abs=1e-12)
    assert nn >= upu - 1e-12


@pytest.mark.parametrize("target", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_batch_without_positives_or_unlabeled_gives_attached_zero(target):
    x = torch.randn(4, requires_grad=True)
    with pytest.warns(UserWarning, match="no labeled positive|no unlabeled"):
        out = NNPULoss(0.3)(x, torch.tensor(target))
    assert float(out) == 0.0 and out.requires_grad
    out.backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prior": 0.0}, "prior"),
        ({"prior": 1.0}, "prior"),
        ({"prior": -0.2}, "prior"),
        ({"prior": True}, "prior"),
        ({"prior": "0.3"}, "prior"),
        ({"prior": 0.3, "beta": -1.0}, "beta"),
        ({"prior": 0.3, "gamma": 0.0}, "gamma"),
        ({"prior": 0.3, "surrogate": "hinge3"}, "surrogate"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NNPULoss(**kwargs)


@pytest.mark.parametrize(
    "x, t, exc, match",
    [
        (torch.zeros(4), torch.tensor([1, 0, 2, 0]), ValueError, "target must be 1"),
        (torch.zeros(4), torch.tensor([1, 0, 0]), ValueError, "same number of samples"),
        (torch.zeros(4, 2), torch.tensor([1, 0, 0, 0]), ValueError, r"input must have shape \(B,\)"),
        (torch.zeros(4, dtype=torch.long), torch.tensor([1, 0, 0, 0]), TypeError, "floating-point"),
        (np.zeros(4), torch.tensor([1, 0, 0, 0]), TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(x, t, exc, match):
    with pytest.raises(exc, match=match):
        NNPULoss(0.3)(x, t)


def test_no_warning_on_a_normal_batch():
    scores, target = _batch(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NNPULoss(0.3)(torch.tensor(scores), torch.tensor(target))
