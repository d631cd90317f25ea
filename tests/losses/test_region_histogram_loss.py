"""RegionHistogramLoss against a loop over sub-regions, with targets from the RegionHistogram transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_ext.losses import RegionHistogramLoss
from monai_ext.transforms import RegionHistogram

GRIDS = (1, 2, 4)


def make_batch(seed, b=3, c=3, size=8, ignore=255, spatial_dims=2):
    g = np.random.default_rng(seed)
    shape = (size,) * spatial_dims
    labels = []
    for i in range(b):
        lab = g.integers(0, c, size=(1, *shape))
        if i == 0:  # one fully ignored quadrant (4 x 4 block) -> an all-zero target sub-region at r = 2 and r = 4
            lab[(0,) + (slice(0, size // 2),) * spatial_dims] = ignore
        labels.append(lab)
    tf = RegionHistogram(num_classes=c, grid_sizes=GRIDS, ignore_index=ignore)
    per_sample = [tf(lab) for lab in labels]
    targets = [torch.tensor(np.stack([ps[lvl] for ps in per_sample]), dtype=torch.float64) for lvl in range(3)]
    logits = [torch.tensor(g.normal(size=(b, c) + (r,) * spatial_dims), dtype=torch.float64) for r in GRIDS]
    return logits, targets


def ref_loss(logits, targets, weights, divergence, reduction):
    b = logits[0].shape[0]
    per_sample_levels = np.zeros((b, len(logits)))
    has_valid = np.zeros((b, len(logits)), dtype=bool)
    for lvl, (x, q) in enumerate(zip(logits, targets, strict=True)):
        x, q = x.numpy(), q.numpy()
        for i in range(b):
            vals = []
            for idx in np.ndindex(*x.shape[2:]):
                qq = q[(i, slice(None), *idx)]
                if qq.sum() == 0:
                    continue
                xx = x[(i, slice(None), *idx)]
                logp = xx - math.log(np.exp(xx).sum())
                ce = -sum(qc * lp for qc, lp in zip(qq, logp, strict=True))
                ent = -sum(qc * math.log(qc) for qc in qq if qc > 0)
                vals.append(ce - ent if divergence == "kl" else ce)
            if vals:
                per_sample_levels[i, lvl] = np.mean(vals)
                has_valid[i, lvl] = True
    w = np.asarray(weights)
    if reduction == "none":
        return (per_sample_levels * w).sum(1)
    if reduction == "sum":
        return (per_sample_levels.sum(0) * w).sum()
    return sum(w[lvl] * per_sample_levels[:, lvl].sum() / max(1, has_valid[:, lvl].sum()) for lvl in range(len(w)))


@pytest.mark.parametrize("divergence", ["kl", "ce"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", [None, (0.5, 1.0, 2.0)])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_matches_loop_reference(divergence, reduction, weights, spatial_dims):
    logits, targets = make_batch(0, spatial_dims=spatial_dims)
    loss = RegionHistogramLoss(GRIDS, level_weights=weights, divergence=divergence, reduction=reduction)
    got = loss(logits, targets)
    ref = ref_loss(logits, targets, weights or (1.0, 1.0, 1.0), divergence, reduction)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_ignored_subregions_are_skipped_and_get_no_gradient():
    logits, targets = make_batch(1)
    assert (targets[1][0, :, 0, 0] == 0).all()  # the ignored quadrant of sample 0
    logits = [x.clone().requires_grad_(True) for x in logits]
    loss = RegionHistogramLoss(GRIDS)
    loss(logits, targets).backward()
    assert (logits[1].grad[0, :, 0, 0] == 0).all() and (logits[2].grad[0, :, :2, :2] == 0).all()
    # changing the logits of an ignored sub-region changes nothing
    moved = [x.detach().clone() for x in logits]
    moved[1][0, :, 0, 0] += torch.tensor([5.0, -3.0, 1.0], dtype=torch.float64)
    assert float(loss(moved, targets)) == pytest.approx(float(loss([x.detach() for x in logits], targets)))


def test_perfect_prediction_gives_zero_kl_and_entropy_ce():
    _, targets = make_batch(2)
    logits = [torch.log(q.clamp_min(1e-30)) for q in targets]
    assert float(RegionHistogramLoss(GRIDS)(logits, targets)) == pytest.approx(0.0, abs=1e-8)
    probs = [q.clone() for q in targets]
    assert float(RegionHistogramLoss(GRIDS, softmax=False)(probs, targets)) == pytest.approx(0.0, abs=1e-8)


def test_dict_input_and_gradcheck():
    logits, targets = make_batch(3, b=2, size=4)
    loss = RegionHistogramLoss(GRIDS)
    by_level = dict(zip(GRIDS, logits, strict=True))
    assert float(loss(by_level, dict(zip(GRIDS, targets, strict=True)))) == pytest.approx(float(loss(logits, targets)))
    xs = tuple(x.clone().requires_grad_(True) for x in logits)
    assert torch.autograd.gradcheck(lambda *v: loss(list(v), targets), xs, fast_mode=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid_sizes": (0, 2)}, "grid_sizes"),
        ({"level_weights": (1.0, 2.0)}, "level_weights"),
        ({"level_weights": (1.0, -1.0, 1.0)}, "level_weights"),
        ({"divergence": "js"}, "divergence"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegionHistogramLoss(**kwargs)


def test_bad_inputs():
    logits, targets = make_batch(4)
    loss = RegionHistogramLoss(GRIDS)
    with pytest.raises(ValueError, match="3 levels"):
        loss(logits[:2], targets[:2])
    with pytest.raises(ValueError, match="lacks levels"):
        loss({1: logits[0]}, targets)
    with pytest.raises(ValueError, match="r=2 must have shape"):
        loss([logits[0], logits[2], logits[2]], targets)
    with pytest.raises(ValueError, match="target level r=1 must have the shape"):
        loss(logits, [targets[0][:, :2], targets[1], targets[2]])
    bad = [t.clone() for t in targets]
    bad[0][0, 0] += 0.3
    with pytest.raises(ValueError, match="pmf over C"):
        loss(logits, bad)
