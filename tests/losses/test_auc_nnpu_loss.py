"""AUCNNPULoss and the memory-light pairwise means against explicit loops over all pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_ext.losses import AUCNNPULoss, NNPULoss, pairwise_surrogate_mean

REF = {
    "sigmoid": lambda z: 1.0 / (1.0 + math.exp(z)),
    "logistic": lambda z: math.log1p(math.exp(-z)),
    "squared": lambda z: 0.25 * (z - 1.0) ** 2,
    "squared_hinge": lambda z: 0.25 * max(0.0, 1.0 - z) ** 2,
    "double_hinge": lambda z: max(-z, max(0.0, 0.5 * (1.0 - z))),
}


def ref_auc_risk(scores, target, prior, surrogate):
    loss = REF[surrogate]
    p = [s for s, t in zip(scores, target, strict=True) if t == 1]
    u = [s for s, t in zip(scores, target, strict=True) if t == 0]
    r_pu = sum(loss(a - b) for a in p for b in u) / (len(p) * len(u))
    pairs = [(i, j) for i in range(len(p)) for j in range(len(p)) if i != j]
    r_pp = sum(loss(p[i] - p[j]) for i, j in pairs) / len(pairs)
    return (r_pu - prior * r_pp) / (1 - prior), r_pu, r_pp


def _batch(seed, n=13, n_pos=5):
    g = np.random.default_rng(seed)
    return g.normal(size=n).tolist(), [1] * n_pos + [0] * (n - n_pos)


@pytest.mark.parametrize("surrogate", sorted(REF))
@pytest.mark.parametrize("block", [1, 7, 2**22])
def test_pairwise_mean_matches_loops(surrogate, block):
    g = np.random.default_rng(1)
    a, b = g.normal(size=6) * 2, g.normal(size=9) * 2
    got = pairwise_surrogate_mean(torch.tensor(a), torch.tensor(b), surrogate, block=block)
    ref = sum(REF[surrogate](x - y) for x in a for y in b) / (a.size * b.size)
    assert float(got) == pytest.approx(ref, rel=1e-10)
    got_pp = pairwise_surrogate_mean(torch.tensor(a), torch.tensor(a), surrogate, block=block, exclude_diagonal=True)
    ref_pp = sum(REF[surrogate](a[i] - a[j]) for i in range(6) for j in range(6) if i != j) / 30
    assert float(got_pp) == pytest.approx(ref_pp, rel=1e-10)


@pytest.mark.parametrize("surrogate", sorted(REF))
def test_pairwise_mean_gradcheck_float64(surrogate):
    g = np.random.default_rng(2)
    a = torch.tensor(g.normal(size=5) * 1.5, requires_grad=True)
    b = torch.tensor(g.normal(size=7) * 1.5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: pairwise_surrogate_mean(x, y, surrogate, block=4), (a, b))


@pytest.mark.parametrize("surrogate", sorted(REF))
@pytest.mark.parametrize("prior", [0.2, 0.6])
def test_unclipped_risk_matches_loops(surrogate, prior):
    scores, target = _batch(0)
    loss = AUCNNPULoss(prior, nonnegative=False, surrogate=surrogate, block=5)
    x, t = torch.tensor(scores, dtype=torch.float64), torch.tensor(target)
    ref, _, _ = ref_auc_risk(scores, target, prior, surrogate)
    assert float(loss(x, t)) == pytest.approx(ref, rel=1e-10)
    assert float(loss.auc_risk(x[:, None], t[:, None])) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("surrogate", sorted(REF))
def test_gradcheck_float64(surrogate):
    scores, target = _batch(4, n=9, n_pos=3)
    x = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(target)
    loss = AUCNNPULoss(0.3, nonnegative=False, surrogate=surrogate, block=3, classification_weight=0.5)
    assert torch.autograd.gradcheck(lambda v: loss(v, t), (x,))


def test_symmetric_surrogate_trap_rpp_is_one_half():
    # for the sigmoid, l(m) + l(-m) = 1 makes R_PP = 1/2 for *any* scores: the clip sits at R_PU = pi / 2
    for seed in range(5):
        scores, target = _batch(seed, n=10, n_pos=6)
        _, r_pu, r_pp = ref_auc_risk(scores, target, 0.3, "sigmoid")
        assert r_pp == pytest.approx(0.5, abs=1e-12)
        xp = torch.tensor(scores[:6], dtype=torch.float64)
        assert float(pairwise_surrogate_mean(xp, xp, "sigmoid", exclude_diagonal=True)) == pytest.approx(0.5)
    # R_PU below pi / 2 (positives ranked far above unlabeled) -> the corrected branch is taken
    prior = 0.4
    scores = [5.0, 6.0, 5.5, -1.0, 0.0, -2.0, 0.5]
    target = [1, 1, 1, 0, 0, 0, 0]
    risk, r_pu, _ = ref_auc_risk(scores, target, prior, "sigmoid")
    assert r_pu < prior / 2 and risk < 0 and r_pu > 0  # clipping R_PU at 0 would do nothing here
    value = AUCNNPULoss(prior)(torch.tensor(scores), torch.tensor(target))
    assert float(value) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("surrogate", ["sigmoid", "logistic", "squared"])
@pytest.mark.parametrize("gamma", [1.0, 0.25])
def test_correction_branch_gradient_is_ascent_on_the_risk(surrogate, gamma):
    prior = 0.4
    scores = [5.0, 6.0, 5.5, -1.0, 0.0, -2.0, 0.5]
    target = [1, 1, 1, 0, 0, 0, 0]
    if surrogate == "squared":  # penalises large margins: negative when positives are spread, U in between
        prior, scores, target = 0.8, [0.0, 2.0, 4.0, 1.0, 2.0, 3.0], [1, 1, 1, 0, 0, 0]
    risk, _, _ = ref_auc_risk(scores, target, prior, surrogate)
    assert risk < 0
    x = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(target)
    out = AUCNNPULoss(prior, gamma=gamma, surrogate=surrogate)(x, t)
    (g,) = torch.autograd.grad(out, x)
    assert float(out.detach()) == pytest.approx(0.0, abs=1e-12)  # value: max(-beta, R_AUC) with beta = 0
    # gradient: that of -gamma R_AUC, with R_AUC's gradient taken by finite differences of the loop reference
    eps = 1e-6
    fd = []
    for i in range(len(scores)):
        up = list(scores)
        dn = list(scores)
        up[i] += eps
        dn[i] -= eps
        fd.append(
            (ref_auc_risk(up, target, prior, surrogate)[0] - ref_auc_risk(dn, target, prior, surrogate)[0]) / 2 / eps
        )
    np.testing.assert_allclose(g.numpy(), -gamma * np.array(fd), rtol=1e-5, atol=1e-9)
    # a descent step on it raises R_AUC back toward 0
    stepped = (x.detach() - 0.05 * g).tolist()
    assert ref_auc_risk(stepped, target, prior, surrogate)[0] > risk


def test_beta_moves_the_clip():
    prior = 0.4
    scores = [5.0, 6.0, 5.5, -1.0, 0.0, -2.0, 0.5]
    target = torch.tensor([1, 1, 1, 0, 0, 0, 0])
    risk, _, _ = ref_auc_risk(scores, target.tolist(), prior, "sigmoid")
    x = torch.tensor(scores, dtype=torch.float64)
    assert float(AUCNNPULoss(prior, beta=0.05)(x, target)) == pytest.approx(-0.05)
    assert float(AUCNNPULoss(prior, beta=1.0)(x, target)) == pytest.approx(risk)


def test_classification_term_is_added():
    scores, target = _batch(7)
    x, t = torch.tensor(scores, dtype=torch.float64), torch.tensor(target)
    base = AUCNNPULoss(0.3, nonnegative=False)(x, t)
    both = AUCNNPULoss(0.3, nonnegative=False, classification_weight=0.7)(x, t)
    cls = NNPULoss(0.3, nonnegative=False)(x, t)
    assert float(both) == pytest.approx(float(base) + 0.7 * float(cls))


def test_gather_distributed_is_a_no_op_in_one_process():
    scores, target = _batch(8)
    x, t = torch.tensor(scores), torch.tensor(target)
    a = AUCNNPULoss(0.3, gather_distributed=True)(x, t)
    b = AUCNNPULoss(0.3)(x, t)
    assert float(a) == float(b)


@settings(max_examples=30, deadline=None)
@given(
    p=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8),
    u=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8),
    surrogate=st.sampled_from(["squared", "squared_hinge"]),
)
def test_property_closed_forms_equal_dense(p, u, surrogate):
    a, b = torch.tensor(p, dtype=torch.float64), torch.tensor(u, dtype=torch.float64)
    dense = sum(REF[surrogate](x - y) for x in p for y in u) / (len(p) * len(u))
    assert float(pairwise_surrogate_mean(a, b, surrogate)) == pytest.approx(dense, rel=1e-9, abs=1e-12)


def test_large_batches_match_independent_references():
    # 1e4 positives x 1e5 unlabeled = 1e9 pairs (8 GB as a float64 matrix) through the exact O(n) form,
    # checked against the expanded moments E[a^2] + E[b^2] + 1 - 2 E[a] E[b] - 2 E[a] + 2 E[b] in numpy
    g = np.random.default_rng(0)
    a, b = g.normal(size=10_000), g.normal(0.5, 2.0, size=100_000)
    got = pairwise_surrogate_mean(torch.tensor(a), torch.tensor(b), "squared")
    ref = 0.25 * ((a**2).mean() + (b**2).mean() + 1 - 2 * a.mean() * b.mean() - 2 * a.mean() + 2 * b.mean())
    assert float(got) == pytest.approx(ref, rel=1e-10)
    # squared hinge (sort + suffix sums) and the blocked sigmoid against a dense numpy matrix, 1e3 x 5e3 pairs
    a, b = a[:1000], b[:5000]
    m = a[:, None] - b[None, :]
    for surrogate, dense in (
        ("squared_hinge", 0.25 * np.clip(1 - m, 0, None) ** 2),
        ("sigmoid", 1 / (1 + np.exp(m))),
    ):
        got = pairwise_surrogate_mean(torch.tensor(a), torch.tensor(b), surrogate, block=100_000)
        assert float(got) == pytest.approx(dense.mean(), rel=1e-10)


@pytest.mark.parametrize("target", [[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
def test_degenerate_batch_zero_with_warning(target):
    x = torch.randn(5, requires_grad=True)
    with pytest.warns(UserWarning, match="no labeled positive|no unlabeled"):
        out = AUCNNPULoss(0.3, classification_weight=1.0)(x, torch.tensor(target))
    out.backward()
    assert float(out.detach()) == 0.0 and torch.isfinite(x.grad).all()


def test_single_positive_uses_l0_for_rpp():
    x = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    t = torch.tensor([1, 0, 0])
    r_pu = (REF["sigmoid"](1.0) + REF["sigmoid"](2.0)) / 2
    got = AUCNNPULoss(0.2, nonnegative=False).auc_risk(x, t)
    assert float(got) == pytest.approx((r_pu - 0.2 * 0.5) / 0.8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prior": 1.2}, "prior"),
        ({"prior": 0.3, "beta": -0.1}, "beta"),
        ({"prior": 0.3, "gamma": -1}, "gamma"),
        ({"prior": 0.3, "surrogate": "x"}, "surrogate"),
        ({"prior": 0.3, "classification_surrogate": "x"}, "surrogate"),
        ({"prior": 0.3, "classification_weight": -1}, "classification_weight"),
        ({"prior": 0.3, "block": 0}, "block"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AUCNNPULoss(**kwargs)


def test_bad_inputs_and_auc_risk_needs_both_groups():
    loss = AUCNNPULoss(0.3)
    with pytest.raises(ValueError, match="target must be 1"):
        loss(torch.zeros(3), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="both labeled positives"):
        loss.auc_risk(torch.zeros(3), torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="non-empty 1D"):
        pairwise_surrogate_mean(torch.zeros(0), torch.zeros(3))
    with pytest.raises(ValueError, match="same size"):
        pairwise_surrogate_mean(torch.zeros(2), torch.zeros(3), exclude_diagonal=True)
