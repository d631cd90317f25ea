"""Label-distribution metrics against scipy / loops; Jaccard with an ignore label against a numpy loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import distance

from monai_ext.metrics import JaccardMetric, LabelDistributionMetric, compute_distribution_metrics, jaccard_counts


def _pmfs(seed, b=5, k=6, zeros=False):
    g = np.random.default_rng(seed)
    p, q = g.dirichlet(np.ones(k), size=b), g.dirichlet(np.ones(k), size=b)
    if zeros:  # a grade nobody voted for and the model gives no mass either: 0 / 0 terms
        p[:, -1] = 0
        q[:, -1] = 0
        p /= p.sum(1, keepdims=True)
        q /= q.sum(1, keepdims=True)
    return p, q


def ref_metric(name, p, q):
    if name == "chebyshev":
        return distance.chebyshev(p, q)
    if name == "canberra":
        return distance.canberra(p, q)  # scipy also counts 0 / 0 as 0
    if name == "cosine":
        return 1.0 - distance.cosine(p, q)
    if name == "clark":
        return math.sqrt(sum((a - b) ** 2 / (a + b) ** 2 for a, b in zip(p, q, strict=True) if a + b > 0))
    if name == "kl":
        return sum(b * math.log(b / a) for a, b in zip(p, q, strict=True) if b > 0)
    if name == "intersection":
        return sum(min(a, b) for a, b in zip(p, q, strict=True))
    return float(np.argmax(p) == np.argmax(q))


NAMES = ["chebyshev", "clark", "canberra", "kl", "cosine", "intersection", "mode_accuracy"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_distribution_metrics_match_references(name, zeros, kind):
    p, q = _pmfs(0, zeros=zeros)
    args = (p, q) if kind == "numpy" else (torch.tensor(p, dtype=torch.float32), torch.tensor(q))
    got = compute_distribution_metrics(*args, metrics=[name])[name]
    np.testing.assert_allclose(got.numpy(), [ref_metric(name, p[i], q[i]) for i in range(len(p))], rtol=1e-6, atol=1e-7)


def test_identical_distributions_and_accumulating_metric():
    p, q = _pmfs(1)
    same = compute_distribution_metrics(p, p)
    for name in ("chebyshev", "clark", "canberra", "kl"):
        np.testing.assert_allclose(same[name].numpy(), 0.0, atol=1e-12)
    for name in ("cosine", "intersection", "mode_accuracy"):
        np.testing.assert_allclose(same[name].numpy(), 1.0, atol=1e-12)
    metric = LabelDistributionMetric()
    metric(torch.tensor(p[:2]), torch.tensor(q[:2]))
    metric(torch.tensor(p[2:]), torch.tensor(q[2:]))
    agg = metric.aggregate()
    for name in NAMES:
        assert agg[name] == pytest.approx(np.mean([ref_metric(name, p[i], q[i]) for i in range(5)]), rel=1e-9)
    logits = np.log(p) + 2.0
    soft = LabelDistributionMetric(metrics=["kl"], softmax=True)
    soft(torch.tensor(logits), torch.tensor(q))
    assert soft.aggregate()["kl"] == pytest.approx(agg["kl"], rel=1e-9)


def test_distribution_metric_errors():
    with pytest.raises(ValueError, match="metrics must be among"):
        compute_distribution_metrics(np.ones((1, 2)) / 2, np.ones((1, 2)) / 2, metrics=["emd"])
    with pytest.raises(ValueError, match="metrics must be among"):
        LabelDistributionMetric(metrics=["emd"])
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        compute_distribution_metrics(np.ones((1, 2)) / 2, np.ones((1, 3)) / 3)
    with pytest.raises(ValueError, match="no accumulated sample"):
        LabelDistributionMetric().aggregate()


# --------------------------------------------------------------------------------------------------- Jaccard


def ref_jaccard_counts(pred, lab, c, ignore):
    inter = np.zeros(c)
    union = np.zeros(c)
    for pv, lv in zip(pred.ravel(), lab.ravel(), strict=True):
        if ignore is not None and lv == ignore:
            continue
        for k in range(c):
            inter[k] += pv == k and lv == k
            union[k] += pv == k or lv == k
    return inter, union


def _seg(seed, b=3, c=3, shape=(6, 7), ignore=255):
    g = np.random.default_rng(seed)
    lab = g.integers(0, c, size=(b, 1, *shape))
    lab[:, :, :2, :3] = ignore
    logits = g.normal(size=(b, c, *shape))
    return logits, lab


@pytest.mark.parametrize("pred_form", ["logits", "labels"])
@pytest.mark.parametrize("ignore", [255, None])
def test_jaccard_matches_loop_over_iterations(pred_form, ignore):
    logits, lab = _seg(0)
    if ignore is None:
        lab = np.where(lab == 255, 1, lab)
    pred = logits.argmax(1)
    y_pred = torch.tensor(logits) if pred_form == "logits" else torch.tensor(pred[:, None])
    metric = JaccardMetric(num_classes=3, ignore_index=ignore, reduction="none")
    metric(y_pred[:2], torch.tensor(lab[:2]))
    metric(y_pred[2:], torch.tensor(lab[2:]))
    inter, union = ref_jaccard_counts(pred, lab[:, 0], 3, ignore)
    np.testing.assert_allclose(metric.aggregate().numpy(), inter / union)
    assert float(metric.aggregate("mean")) == pytest.approx(np.mean(inter / union))
    no_bg = JaccardMetric(num_classes=3, ignore_index=ignore, include_background=False)
    no_bg(y_pred, torch.tensor(lab))
    assert float(no_bg.aggregate()) == pytest.approx(np.mean((inter / union)[1:]))


def test_jaccard_counts_and_absent_class():
    pred = torch.zeros(1, 1, 2, 2)
    lab = torch.tensor([[[[0, 0], [255, 0]]]])
    counts = jaccard_counts(pred, lab, num_classes=2, ignore_index=255)
    assert counts[0, 0].tolist() == [3.0, 3.0] and counts[0, 1].tolist() == [0.0, 0.0]
    metric = JaccardMetric(2, ignore_index=255, reduction="none")
    metric(pred, lab)
    per_class = metric.aggregate()
    assert per_class[0] == 1.0 and torch.isnan(per_class[1])  # a class never seen is NaN, not 0 or 1
    assert float(metric.aggregate("mean")) == 1.0  # and is left out of the mean


def test_jaccard_errors():
    with pytest.raises(ValueError, match="num_classes"):
        JaccardMetric(0)
    with pytest.raises(ValueError, match="reduction"):
        JaccardMetric(2, reduction="sum")
    with pytest.raises(ValueError, match="class ids must lie"):
        jaccard_counts(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 5), 3)
    with pytest.raises(ValueError, match="matching y_pred"):
        jaccard_counts(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 3, 2), 3)
    with pytest.raises(ValueError, match="no accumulated sample"):
        JaccardMetric(2).aggregate()
