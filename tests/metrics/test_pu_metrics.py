"""PU-corrected AUC and threshold selection against brute-force pair and threshold loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from monai_ext.metrics import (
    PUCorrectedAUCMetric,
    binary_metrics_at_threshold,
    compute_auc,
    pu_corrected_auc,
    select_threshold,
)


def brute_auc(s, y):
    pos = [a for a, t in zip(s, y, strict=True) if t == 1]
    neg = [a for a, t in zip(s, y, strict=True) if t == 0]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def brute_metrics(s, y, t):
    tp = sum(1 for a, b in zip(s, y, strict=True) if a >= t and b == 1)
    fp = sum(1 for a, b in zip(s, y, strict=True) if a >= t and b == 0)
    fn = sum(1 for a, b in zip(s, y, strict=True) if a < t and b == 1)
    tn = sum(1 for a, b in zip(s, y, strict=True) if a < t and b == 0)
    rec = tp / (tp + fn) if tp + fn else 0.0
    prec = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    spec = tn / (tn + fp) if tn + fp else 0.0
    return rec, prec, f1, spec, (tp + tn) / len(s)


def _data(seed, n=40, ties=False):
    g = np.random.default_rng(seed)
    y = (g.random(n) < 0.4).astype(int)
    y[:2] = [0, 1]
    s = g.normal(size=n) + y
    if ties:
        s = np.round(s, 1)
    return s, y


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("kind", ["numpy", "torch", "list", "column"])
def test_auc_matches_pairs_and_sklearn(ties, kind):
    s, y = _data(0, ties=ties)
    ref = brute_auc(s.tolist(), y.tolist())
    assert ref == pytest.approx(roc_auc_score(y, s))
    args = {
        "numpy": (s, y),
        "torch": (torch.tensor(s), torch.tensor(y)),
        "list": (s.tolist(), y.tolist()),
        "column": (torch.tensor(s)[:, None], torch.tensor(y)[:, None]),
    }[kind]
    assert compute_auc(*args) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("prior", [0.1, 0.5, 0.8])
def test_pu_corrected_auc_formula_and_recovers_pn_auc(prior):
    s, y = _data(1)
    assert pu_corrected_auc(s, y, prior) == pytest.approx((brute_auc(s.tolist(), y.tolist()) - prior / 2) / (1 - prior))
    # in expectation it recovers the PN AUC: U built as a pi-mixture of P and N from the same score model
    g = np.random.default_rng(2)
    n_u = 60_000
    sp, sn = g.normal(1.0, 1.0, 4000), g.normal(0.0, 1.0, 4000)
    su = np.where(g.random(n_u) < prior, g.normal(1.0, 1.0, n_u), g.normal(0.0, 1.0, n_u))
    pn = compute_auc(np.r_[sp, sn], np.r_[np.ones(4000), np.zeros(4000)])
    pu = pu_corrected_auc(np.r_[sp, su], np.r_[np.ones(4000), np.zeros(n_u)], prior)
    assert pu == pytest.approx(pn, abs=0.02)


def test_metric_accumulates_like_one_shot():
    s, y = _data(3)
    m = PUCorrectedAUCMetric(prior=0.3)
    for i in range(0, 40, 7):
        m(torch.tensor(s[i : i + 7]), torch.tensor(y[i : i + 7]))
    assert m.aggregate() == pytest.approx(pu_corrected_auc(s, y, 0.3))
    m.reset()
    m(torch.tensor(s[:10]), torch.tensor(y[:10]))
    assert m.aggregate() == pytest.approx(pu_corrected_auc(s[:10], y[:10], 0.3))


def brute_select(s, y, method, target_recall=None):
    cands = sorted(set(s.tolist()), reverse=True)  # ties go to the larger threshold: first maximum in this order
    best, best_t = None, None
    for t in cands:
        rec, prec, f1, spec, _ = brute_metrics(s.tolist(), y.tolist(), t)
        if method == "recall":
            if rec >= target_recall:
                return t
            continue
        crit = rec + spec - 1 if method == "youden" else f1
        if best is None or crit > best:
            best, best_t = crit, t
    return best_t


@pytest.mark.parametrize("method", ["youden", "max_f1", "recall"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_select_threshold_matches_brute_force(method, seed, ties):
    s, y = _data(seed, ties=ties)
    res = select_threshold(s, y, method, target_recall=0.7)
    t = brute_select(s, y, method, 0.7)
    assert res.threshold == pytest.approx(t)
    rec, prec, f1, spec, acc = brute_metrics(s.tolist(), y.tolist(), t)
    assert (res.recall, res.precision, res.f1, res.specificity, res.accuracy) == pytest.approx(
        (rec, prec, f1, spec, acc)
    )
    if method == "recall":
        assert res.recall >= 0.7


@pytest.mark.parametrize("prior", [0.05, 0.3, 0.5])
def test_prior_quantile_predicts_top_fraction(prior):
    s, y = _data(4, n=50)
    res = select_threshold(torch.tensor(s), torch.tensor(y), "prior_quantile", prior=prior)
    assert int((s >= res.threshold).sum()) == int(np.ceil(prior * 50))
    assert res.as_dict()["method"] == "prior_quantile"


def test_binary_metrics_at_threshold_matches_loop():
    s, y = _data(5)
    res = binary_metrics_at_threshold(s, y, 0.5)
    assert (res.recall, res.precision, res.f1, res.specificity, res.accuracy) == pytest.approx(
        brute_metrics(s.tolist(), y.tolist(), 0.5)
    )
    nothing = binary_metrics_at_threshold(s, y, 1e9)
    assert nothing.precision == 0.0 and nothing.recall == 0.0 and nothing.f1 == 0.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5, allow_nan=False), st.integers(0, 1)), min_size=2, max_size=30))
def test_property_auc_is_brute_pairs(pairs):
    s = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    if y.min() == y.max():
        with pytest.raises(ValueError, match="both classes"):
            compute_auc(s, y)
        return
    assert compute_auc(s, y) == pytest.approx(brute_auc(s.tolist(), y.tolist()), abs=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pu_corrected_auc([0.1, 0.2], [0, 1], 1.0), "prior"),
        (lambda: PUCorrectedAUCMetric(0.0), "prior"),
        (lambda: compute_auc([0.1, 0.2], [1, 1]), "both classes"),
        (lambda: compute_auc([0.1, 0.2], [0, 2]), "labels must be 0 or 1"),
        (lambda: compute_auc([0.1, 0.2], [0, 1, 1]), "labels must have the shape"),
        (lambda: compute_auc([[0.1, 0.2]], [0, 1]), "scores must be"),
        (lambda: compute_auc([0.1, float("nan")], [0, 1]), "finite"),
        (lambda: select_threshold([0.1, 0.2], [0, 1], "otsu"), "method must be one of"),
        (lambda: select_threshold([0.1, 0.2], [0, 1], "prior_quantile"), "prior must be in"),
        (lambda: select_threshold([0.1, 0.2], [0, 1], "recall", target_recall=0.0), "target_recall"),
        (lambda: select_threshold([0.1, 0.2], [0, 0], "youden"), "at least one positive"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
