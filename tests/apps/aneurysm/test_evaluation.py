from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.ensemble import AdaBoostClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from monai_ext.apps.aneurysm.evaluation import adaboost_auc_curve, confusion_matrix, localise_landmarks


@pytest.mark.parametrize("as_torch", [False, True])
def test_confusion_matrix_matches_loop(as_torch):
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    expected = np.zeros((4, 4), dtype=int)
    for a, b in zip(t, p, strict=True):
        expected[a, b] += 1
    cm = confusion_matrix(torch.as_tensor(t) if as_torch else t, torch.as_tensor(p) if as_torch else p, 4)
    np.testing.assert_array_equal(cm, expected)


@pytest.mark.parametrize(
    "t, p, match", [([0, 1], [0], "same length"), ([0, 5], [0, 1], "y_true holds classes outside 0..3"),
                    ([0, 1], [-1, 1], "y_pred holds classes outside")],
)
def test_confusion_matrix_errors(t, p, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(t, p, 4)


def _toy(n_cases=10, per_case=12, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_cases), per_case)
    y = rng.integers(0, 2, len(groups))
    y[::per_case] = 1
    y[1::per_case] = 0
    x = rng.normal(size=(len(y), 5))
    x[:, 0] += signal * y
    original = np.tile(np.arange(per_case) % 2 == 0, n_cases)
    return x, y, groups, original


def test_adaboost_curve_matches_independent_fits():
    x, y, groups, original = _toy()
    curves = adaboost_auc_curve(x, y, groups, original, n_estimators=12, n_splits=3, seed=1)
    assert curves.shape == (3, 12)
    folds = list(StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=1).split(x, y, groups))
    for f, (tr, te) in enumerate(folds):
        te = te[original[te]]
        assert set(groups[tr]).isdisjoint(groups[te])
        for k in (1, 5, 12):  # a separate fit with k learners gives the k-th staged score
            clf = AdaBoostClassifier(n_estimators=k, random_state=1).fit(x[tr], y[tr])
            ref = roc_auc_score(y[te], clf.decision_function(x[te]))
            assert curves[f, k - 1] == pytest.approx(ref, abs=1e-12)


def test_adaboost_curve_separable_and_random():
    x, y, groups, original = _toy(signal=20.0)
    assert adaboost_auc_curve(x, y, groups, original, 5, 3).min() == pytest.approx(1.0)
    x, y, groups, original = _toy(signal=0.0, n_cases=20, seed=3)
    assert abs(adaboost_auc_curve(x, y, groups, original, 20, 4).mean() - 0.5) < 0.2


@pytest.mark.parametrize(
    "mutate, match",
    [(lambda y, g: (np.zeros_like(y), g), "both classes"), (lambda y, g: (y, np.zeros_like(g)), "at least n_splits")],
)
def test_adaboost_curve_errors(mutate, match):
    x, y, groups, original = _toy()
    y, groups = mutate(y, groups)
    with pytest.raises(ValueError, match=match):
        adaboost_auc_curve(x, y, groups, original, 5, 3)


class _CentreNet(nn.Module):
    """Class k (k >= 1) wins where the centre of plane 0 has intensity k (the k-th blob's peak); background -10."""

    def __init__(self, num_classes, width=None):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.w = nn.Parameter(torch.ones(1))
        self.evaluated = 0

    def forward(self, x):
        self.evaluated += x.shape[0]
        c = x[:, 0, 16, 16]  # centre of plane 0 (patch 32)
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, 0] = -10.0
        for k in range(1, self.num_classes):
            # blob k has intensity k; `width` gives a response a few voxels wide with slowly decaying tails, like a
            # jitter-trained classifier
            logits[:, k] = -40 * (c - k) ** 2 if self.width is None else -(c - k).abs() / (self.width * k)
        return logits * self.w


@pytest.mark.parametrize("offset", [(0, 0, 0), (4, -3, 2), (-6, 5, -5)])
def test_localise_landmarks_finds_blobs(offset, method="exhaustive"):
    vol = torch.zeros(1, 48, 48, 48)
    true = np.array([[16.0, 20.0, 24.0], [30.0, 28.0, 18.0]])
    zz = np.stack(np.meshgrid(*[np.arange(48)] * 3, indexing="ij"), -1)
    for k, p in enumerate(true, start=1):
        d2 = ((zz - p) ** 2).sum(-1)
        vol[0] += torch.as_tensor(k * np.exp(-d2 / 2.0), dtype=torch.float32)
    priors = true + np.array(offset)
    pos, peak = localise_landmarks(_CentreNet(3), vol, priors, [1, 2], torch.device("cpu"), search_radius=8,
                                   step=2, refine_radius=2, method=method)
    np.testing.assert_allclose(pos, true, atol=0.51)
    assert np.all(peak > 0.9)


def test_localise_landmarks_errors():
    vol = torch.zeros(1, 16, 16, 16)
    with pytest.raises(ValueError, match="same length"):
        localise_landmarks(_CentreNet(3), vol, np.zeros((2, 3)), [1], torch.device("cpu"))
    with pytest.raises(ValueError, match="step > 0"):
        localise_landmarks(_CentreNet(3), vol, np.zeros((1, 3)), [1], torch.device("cpu"), step=0)
    with pytest.raises(ValueError, match="lies outside the volume"):
        localise_landmarks(_CentreNet(3), vol, np.full((1, 3), 100.0), [1], torch.device("cpu"), search_radius=2)


def _wide_blobs(sigma=3.0):
    vol = torch.zeros(1, 56, 56, 56)
    true = np.array([[16.0, 20.0, 24.0], [36.0, 34.0, 22.0]])
    zz = np.stack(np.meshgrid(*[np.arange(56)] * 3, indexing="ij"), -1)
    for k, p in enumerate(true, start=1):
        vol[0] += torch.as_tensor(k * np.exp(-((zz - p) ** 2).sum(-1) / (2 * sigma**2)), dtype=torch.float32)
    return vol, true


@pytest.mark.parametrize("offset, step", [((0, 0, 0), 4), ((5, -4, 3), 4), ((-6, 3, -5), 3), ((2, 7, -1), 4)])
def test_localise_coarse_to_fine_finds_wide_peaks_with_fewer_patches(offset, step):
    vol, true = _wide_blobs()
    priors = true + np.array(offset)
    fast_net, slow_net = _CentreNet(3, width=0.02), _CentreNet(3, width=0.02)
    fast, p_fast = localise_landmarks(fast_net, vol, priors, [1, 2], torch.device("cpu"), search_radius=10,
                                      step=step, method="coarse_to_fine")
    np.testing.assert_allclose(fast, true, atol=0.51)
    assert np.all(p_fast > 0.9)
    # the ball of radius 10 at spacing `step`, then per landmark <= 2 refinement levels x top_k=2 x 26 new points,
    # then <= 26 unit neighbours
    ball = sum(1 for i in range(-3, 4) for j in range(-3, 4) for k in range(-3, 4)
               if np.sqrt(i * i + j * j + k * k) * step <= 10 + 1e-6)
    assert fast_net.evaluated <= 2 * (ball + 2 * 2 * 26 + 26)
    localise_landmarks(slow_net, vol, priors, [1, 2], torch.device("cpu"), search_radius=10, step=step,
                       refine_radius=2, method="exhaustive")
    assert fast_net.evaluated < slow_net.evaluated


class _SaturatedNet(nn.Module):
    """Class 1's logit grows with the centre intensity, so its softmax rounds to exactly 1 over a wide plateau."""

    def forward(self, x):
        c = x[:, 0, 16, 16]
        return torch.stack([torch.zeros_like(c), 200.0 * c], 1)


@pytest.mark.parametrize("method", ["coarse_to_fine", "exhaustive"])
def test_log_odds_score_finds_the_peak_where_the_probability_saturates(method):
    true = np.array([[20.0, 22.0, 24.0]])
    zz = np.stack(np.meshgrid(*[np.arange(48)] * 3, indexing="ij"), -1)
    vol = torch.as_tensor(np.exp(-((zz - true[0]) ** 2).sum(-1) / 18.0), dtype=torch.float32)[None]
    prior = true + np.array([3.0, -3.0, 2.0])
    kw = {"search_radius": 8, "step": 2, "refine_radius": 2, "method": method}
    plain, p_plain = localise_landmarks(_SaturatedNet(), vol, prior, [1], torch.device("cpu"), **kw)
    odds, p_odds = localise_landmarks(_SaturatedNet(), vol, prior, [1], torch.device("cpu"), score="log_odds", **kw)
    assert p_plain[0] == 1.0 and p_odds[0] == 1.0  # the reported probability is the classifier's, saturated
    np.testing.assert_allclose(odds[0], true[0], atol=0.51)
    assert np.linalg.norm(plain[0] - true[0]) > 1.5  # the first of many tied points, not the peak
    with pytest.raises(ValueError, match="score must be one of"):
        localise_landmarks(_SaturatedNet(), vol, prior, [1], torch.device("cpu"), score="logit", **kw)


def test_localise_restores_memory_format_and_validates_method():
    vol, true = _wide_blobs()
    net = nn.Sequential(nn.Conv2d(3, 3, 3), _Probe(_CentreNet(3, width=0.02)))
    localise_landmarks(_CentreNet(3, width=0.02), vol, true, [1, 2], torch.device("cpu"), search_radius=2, step=2)
    localise_landmarks(net, vol, true, [1, 2], torch.device("cpu"), search_radius=2, step=2)
    assert net[0].weight.is_contiguous()
    with pytest.raises(ValueError, match="method must be one of"):
        localise_landmarks(net, vol, true, [1, 2], torch.device("cpu"), method="grid")
    with pytest.raises(ValueError, match="top_k"):
        localise_landmarks(net, vol, true, [1, 2], torch.device("cpu"), top_k=0)


class _Probe(nn.Module):
    """Passes the input of a conv layer on (after padding back to 32x32) to a wrapped centre network."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(nn.functional.pad(x, (1, 1, 1, 1)))


@pytest.mark.parametrize("method", ["coarse_to_fine", "exhaustive"])
def test_position_prior_prefers_the_nearer_of_two_look_alikes(method):
    """Two class-1 blobs: a slightly stronger one 9 voxels from the prior and a weaker one 3 voxels away."""
    vol = torch.zeros(1, 56, 56, 56)
    zz = np.stack(np.meshgrid(*[np.arange(56)] * 3, indexing="ij"), -1)
    prior = np.array([28.0, 28.0, 28.0])
    far, near = prior + [9.0, 0.0, 0.0], prior + [0.0, -3.0, 0.0]
    for p, height in ((far, 1.0), (near, 0.97)):
        vol[0] += torch.as_tensor(height * np.exp(-((zz - p) ** 2).sum(-1) / 18.0), dtype=torch.float32)
    kw = {"search_radius": 12, "step": 3, "refine_radius": 2, "method": method}
    plain, _ = localise_landmarks(_CentreNet(3, width=0.02), vol, prior[None], [1], torch.device("cpu"), **kw)
    with_prior, peak = localise_landmarks(_CentreNet(3, width=0.02), vol, prior[None], [1], torch.device("cpu"),
                                          prior_sigma_mm=4.0, **kw)
    np.testing.assert_allclose(plain[0], far, atol=0.51)
    np.testing.assert_allclose(with_prior[0], near, atol=1.0)  # the posterior mode leans towards the prior
    assert peak[0] > 0.9  # the classifier's own probability, not the prior-weighted score
    with pytest.raises(ValueError, match="prior_sigma_mm"):
        localise_landmarks(_CentreNet(3), vol, prior[None], [1], torch.device("cpu"), prior_sigma_mm=0.0)


def test_recentred_priors_fit_an_affine_and_leave_out_misses():
    from monai_ext.apps.aneurysm import recentred_priors

    rng = np.random.default_rng(0)
    priors = rng.uniform(10, 90, (12, 3))
    angle = np.deg2rad(8.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    mapped = priors @ (1.05 * rot).T + [3.0, -4.0, 2.0]
    found = mapped.copy()
    found[0] += [25.0, -20.0, 15.0]  # the first search missed this landmark
    centres = recentred_priors(priors, found)
    np.testing.assert_allclose(centres, mapped, atol=1e-6)  # the miss is left out of the fit, and re-centred too
    # a centre mapped outside the volume keeps its prior; too few landmarks for an affine: the priors, a copy
    shape = (100, 100, 100)
    shifted = recentred_priors(priors, priors + [0.0, 0.0, 200.0], shape)
    np.testing.assert_allclose(shifted, priors)
    few = recentred_priors(priors[:7], mapped[:7])
    np.testing.assert_allclose(few, priors[:7])
    assert few is not priors
    with pytest.raises(ValueError, match=r"must both be \(L, 3\)"):
        recentred_priors(priors, found[:5])
    with pytest.raises(ValueError, match="trim must be"):
        recentred_priors(priors, found, trim=1.0)


@pytest.mark.parametrize("method", ["coarse_to_fine", "exhaustive"])
def test_recentred_search_undoes_a_shared_offset_of_the_priors(method):
    """Eight landmarks whose priors share an offset (an alignment left a few voxels): the position prior pulls
    every first-search answer towards its offset prior; the second search, centred by the affine fit of the first
    one's answers, is pulled much less."""
    vol = torch.zeros(1, 72, 72, 72)
    zz = np.stack(np.meshgrid(*[np.arange(72)] * 3, indexing="ij"), -1)
    true = np.array([[i, j, k] for i in (20, 46) for j in (22, 48) for k in (21, 47)], dtype=np.float64)
    for k, p in enumerate(true, start=1):
        vol[0] += torch.as_tensor(k * np.exp(-((zz - p) ** 2).sum(-1) / 18.0), dtype=torch.float32)
    priors = true + [4.0, -3.0, 3.0]
    kw = {"search_radius": 10, "step": 3, "refine_radius": 2, "prior_sigma_mm": 3.0, "method": method}
    errors, evaluated = {}, {}
    for recentre in (False, True):
        net = _CentreNet(9, width=0.02)
        pos, peak = localise_landmarks(net, vol, priors, list(range(1, 9)), torch.device("cpu"), recentre=recentre,
                                       **kw)
        errors[recentre], evaluated[recentre] = np.linalg.norm(pos - true, axis=1).mean(), net.evaluated
        assert np.all(peak > 0.5)
    assert errors[False] > 0.5 and errors[True] < 0.6 * errors[False]
    if method == "exhaustive":
        assert evaluated[True] > 1.5 * evaluated[False]  # a whole second search
    else:  # a second search, which scores only the points the first one did not
        assert evaluated[False] < evaluated[True] < 1.4 * evaluated[False]
    # the bundle's inferer passes it on (a command line's "true" is a string)
    from monai_ext.apps.aneurysm import TriPlanarPointInferer

    inferer = TriPlanarPointInferer(search_radius=10, search_step=3, refine_radius=2, prior_sigma_mm=3.0,
                                    method=method, recentre="true")
    out = inferer(vol, _CentreNet(9, width=0.02), priors=priors, labels=list(range(1, 9))).numpy()
    assert inferer.recentre is True
    assert np.linalg.norm(out[:, :3] - true, axis=1).mean() == pytest.approx(errors[True])
    # "auto": twice for a scan that leaves part of the template outside (overlap below the threshold), else once
    auto = TriPlanarPointInferer(search_radius=10, search_step=3, refine_radius=2, prior_sigma_mm=3.0,
                                 method=method, recentre="auto")
    for overlap, expected in ((0.7, errors[True]), (1.0, errors[False]), (None, errors[False])):
        out = auto(vol, _CentreNet(9, width=0.02), priors=priors, labels=list(range(1, 9)), overlap=overlap).numpy()
        assert np.linalg.norm(out[:, :3] - true, axis=1).mean() == pytest.approx(expected)


@pytest.mark.parametrize("mirror_coarse", [None, True, False])
def test_recentred_search_reuses_scores_without_changing_the_answer(monkeypatch, mirror_coarse):
    """The coarse-to-fine second search reads the points the first one scored from its cache: the same positions and
    probabilities as a second search that scores every point itself (its lattice on the first one's), under its own
    position prior, with fewer network evaluations; with mirror averaging from the refinement on, plain and
    mirror-averaged scores of a point are kept apart."""
    from monai_ext.apps.aneurysm import evaluation as ev

    vol = torch.as_tensor(np.random.default_rng(3).normal(size=(1, 40, 40, 40)), dtype=torch.float32)
    priors = np.array([[14.3, 20.0, 19.6], [25.0, 17.2, 22.0], [20.0, 25.0, 15.0], [18.0, 14.0, 26.0]])
    labels = [1, 2, 1, 3]
    kw = {"search_radius": 6, "step": 3, "prior_sigma_mm": 2.0, "score": "log_odds", "fuse_batchnorm": False,
          "batch_size": 64}
    if mirror_coarse is not None:
        kw.update(mirror_labels=[0, 2, 1, 3], mirror_coarse=mirror_coarse)
    # the affine fit moves every centre by a few voxels, not a multiple of the lattice step
    monkeypatch.setattr(ev, "recentred_priors", lambda p, found, shape: p + [1.6, -2.2, 0.7])
    runs = {}
    for cached in (True, False):
        if not cached:
            monkeypatch.setattr(ev, "_localise_coarse_to_fine",
                                lambda *a, _f=ev._localise_coarse_to_fine, **k: _f(*a, **{**k, "cache": None}))
        net, count = _random_net(), [0]
        net.register_forward_hook(lambda m, args, out, _n=count: _n.__setitem__(0, _n[0] + len(args[0])))
        first = ev.localise_landmarks(net, vol, priors, labels, torch.device("cpu"), **kw)
        evaluated_first = count[0]
        second = ev.localise_landmarks(net, vol, priors, labels, torch.device("cpu"), recentre=True, **kw)
        runs[cached] = (first, second, evaluated_first, count[0] - evaluated_first)
    (first, second, n_first, n_cached), (_, fresh, _, n_fresh) = runs[True], runs[False]
    np.testing.assert_allclose(second[0], fresh[0], atol=1e-9)
    np.testing.assert_allclose(second[1], fresh[1], atol=1e-6)
    assert not np.allclose(second[0], first[0])  # the second search answered for itself
    assert n_fresh > 1.6 * n_first and n_cached < n_fresh - 0.2 * n_first


def test_anchored_lattice_ball():
    """A second search's coarse points lie on the first one's lattice, inside the ball around its own centre; with
    the anchor at the centre they are the first search's ball."""
    from monai_ext.apps.aneurysm.evaluation import _ball_offsets, _lattice_ball

    centre, anchor, step, radius = np.array([23, 17, 30]), np.array([20.2, 19.8, 20.4]), 4, 9.0
    pts = _lattice_ball(centre, anchor, radius, step)
    assert np.all((pts - 20) % step == 0)
    want = {tuple(p) for p in 20 + _ball_offsets(40, step) if np.linalg.norm(p - centre) <= radius + 1e-6}
    assert {tuple(int(v) for v in p) for p in pts} == want and len(pts) == len(want)
    same = _lattice_ball(centre, centre, radius, step)
    assert {tuple(p) for p in same} == {tuple(p) for p in centre + _ball_offsets(radius, step)}


def _counting(net):
    count = [0]
    net.register_forward_hook(lambda m, args, out, _n=count: _n.__setitem__(0, _n[0] + len(args[0])))
    return net, count


@pytest.mark.parametrize("mirror_coarse", [None, False, True])
def test_landmarks_share_the_network_evaluations_of_their_common_points(mirror_coarse):
    """One forward pass scores a patch for every class, so a point that several landmarks' searches reach is put
    through the network once (per view): searching landmarks together gives each one exactly what it gets alone,
    with fewer evaluations than the searches one by one; two landmarks with the same prior cost the coarse lattice
    once."""
    vol = torch.as_tensor(np.random.default_rng(5).normal(size=(1, 40, 40, 40)), dtype=torch.float32)
    vol = torch.nn.functional.avg_pool3d(vol[None], 3, 1, 1)[0]
    priors = np.array([[18.0, 20.0, 19.0], [18.0, 20.0, 19.0], [21.4, 18.2, 22.6]])  # 1 and 2 share a prior
    labels = [1, 2, 3]
    kw = {"search_radius": 6, "step": 2, "score": "log_odds", "prior_sigma_mm": 3.0, "batch_size": 64}
    if mirror_coarse is not None:
        kw.update(mirror_labels=[0, 2, 1, 3], mirror_coarse=mirror_coarse)
    net, count = _counting(_random_net())
    together = localise_landmarks(net, vol, priors, labels, torch.device("cpu"), **kw)
    n_together = count[0]
    alone, n_alone = [], []
    for i in range(3):
        count[0] = 0
        alone.append(localise_landmarks(net, vol, priors[i : i + 1], labels[i : i + 1], torch.device("cpu"), **kw))
        n_alone.append(count[0])
    np.testing.assert_allclose(together[0], np.concatenate([a[0] for a in alone]), atol=1e-9)
    np.testing.assert_allclose(together[1], np.concatenate([a[1] for a in alone]), atol=1e-6)
    from monai_ext.apps.aneurysm.evaluation import _ball_offsets

    ball = len(_ball_offsets(6, 2))
    views = 2 if mirror_coarse else 1
    assert n_together <= sum(n_alone) - views * ball  # the shared prior's coarse lattice once, not twice


def test_shared_coarse_lattice():
    """``coarse_lattice="shared"``: every landmark's coarse points come from the one lattice through voxel
    (0, 0, 0), so overlapping searches whose priors differ by other than a multiple of the step share them (fewer
    evaluations than with each lattice through its own prior); sharing never changes a landmark's answer; an
    unknown value is refused, naming the argument, by the search and by the bundle's inferer, which passes it on."""
    import monai_ext.apps.aneurysm.evaluation as ev
    from monai_ext.apps.aneurysm import TriPlanarPointInferer

    vol = torch.as_tensor(np.random.default_rng(6).normal(size=(1, 44, 44, 44)), dtype=torch.float32)
    vol = torch.nn.functional.avg_pool3d(vol[None], 3, 1, 1)[0]
    priors = np.array([[19.0, 21.0, 22.0], [21.0, 22.0, 19.0], [23.3, 19.6, 21.2]])
    labels = [1, 2, 3]
    kw = {"search_radius": 8, "step": 4, "score": "log_odds", "prior_sigma_mm": 4.0, "batch_size": 64,
          "mirror_labels": [0, 2, 1, 3], "mirror_coarse": False}
    net, count = _counting(_random_net())
    asked = []
    fill = ev._LogitCache.fill

    def spy_fill(self, points, mirrored):
        asked.append(np.asarray(points))
        return fill(self, points, mirrored)

    runs = {}
    for lattice in ("prior", "shared"):
        count[0] = 0
        asked.clear()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(ev._LogitCache, "fill", spy_fill)
            runs[lattice] = (localise_landmarks(net, vol, priors, labels, torch.device("cpu"), coarse_lattice=lattice,
                                                **kw), count[0], asked[0])
    (_, n_prior, coarse_prior), (shared, n_shared, coarse_shared) = runs["prior"], runs["shared"]
    assert np.all(coarse_shared % 4 == 0) and not np.all(coarse_prior % 4 == 0)
    assert n_shared < n_prior
    for i in range(3):
        alone = localise_landmarks(net, vol, priors[i : i + 1], labels[i : i + 1], torch.device("cpu"),
                                   coarse_lattice="shared", **kw)
        np.testing.assert_allclose(shared[0][i : i + 1], alone[0], atol=1e-9)
    with pytest.raises(ValueError, match="coarse_lattice must be one of"):
        localise_landmarks(net, vol, priors, labels, torch.device("cpu"), coarse_lattice="global")
    with pytest.raises(ValueError, match="coarse_lattice must be"):
        TriPlanarPointInferer(coarse_lattice="global")
    inferer = TriPlanarPointInferer(search_radius=8, search_step=4, prior_sigma_mm=4.0, score="log_odds",
                                    mirror_labels=[0, 2, 1, 3], mirror_coarse=False, coarse_lattice="shared")
    out = inferer(vol, net, priors=priors, labels=labels).numpy()
    np.testing.assert_allclose(out[:, :3], shared[0], atol=1e-9)


# -- mirror averaging (left-right test-time augmentation) --------------------------------------------------------

@pytest.mark.parametrize("patch_size, extent_mm", [(32, None), (9, None), (16, 20.0), (7, 12.0)])
def test_mirrored_patches_are_those_of_the_flipped_volume(patch_size, extent_mm):
    """The mirror patch read from the volume equals the patch of the volume flipped along axis 0, at the mirrored
    centre (even and odd patch sizes, voxel and mm sampling on an anisotropic grid, integer and fractional centres)."""
    from monai.data import MetaTensor

    from monai_ext.apps.aneurysm.evaluation import _mirrored_patches
    from monai_ext.transforms import TriPlanarPatch

    g = torch.Generator().manual_seed(0)
    affine = torch.diag(torch.tensor([1.2, 0.9, 1.5, 1.0], dtype=torch.float64))
    vol = MetaTensor(torch.rand(2, 40, 44, 36, generator=g), affine=affine)
    flipped = MetaTensor(vol.as_tensor().flip(1), affine=affine)
    centres = np.array([[20.0, 22.0, 18.0], [13.0, 30.0, 11.0], [24.3, 17.6, 20.2]])
    mirrored = centres.copy()
    mirrored[:, 0] = 40 - 1 - centres[:, 0]
    patcher = TriPlanarPatch(patch_size, extent_mm)
    got = _mirrored_patches(patcher, vol, centres)
    want = torch.as_tensor(patcher(flipped, mirrored))
    assert got.shape == want.shape == (3, 6, patch_size, patch_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and it is not the plain patch (the check can fail)
    assert (got - torch.as_tensor(patcher(vol, centres))).abs().max() > 0.1


def _random_net(num_classes=4):
    from monai_ext.networks.nets import MiniVGG

    torch.manual_seed(0)
    return MiniVGG(spatial_dims=2, in_channels=3, num_classes=num_classes, channels=(4, 8), hidden_features=16).eval()


@pytest.mark.parametrize("method", ["coarse_to_fine", "exhaustive"])
def test_mirror_averaging_is_left_right_equivariant(method):
    """With mirror averaging the search on the flipped volume finds, for the mirrored class, the mirror of what it
    finds on the volume with the same probability (the score is exactly symmetric); without it a generic network's
    probabilities differ."""
    net = _random_net()
    vol = torch.as_tensor(np.random.default_rng(1).normal(size=(1, 40, 40, 40)), dtype=torch.float32)
    vol = torch.nn.functional.avg_pool3d(vol[None], 5, 1, 2)[0]  # smooth: the scores vary slowly
    flipped = vol.flip(1)
    mirror = [0, 2, 1, 3]  # classes 1 and 2 are a left-right pair, 3 is on the midline
    priors, labels = np.array([[14.0, 20.0, 19.0], [25.0, 18.0, 22.0], [19.0, 21.0, 20.0]]), np.array([1, 2, 3])
    mirrored_priors = priors.copy()
    mirrored_priors[:, 0] = 39 - priors[:, 0]
    kw = {"search_radius": 5, "step": 2, "refine_radius": 2, "method": method, "score": "log_odds",
          "prior_sigma_mm": 4.0}
    results = {}
    for name, m in (("plain", None), ("mirror", mirror)):
        a, pa = localise_landmarks(net, vol, priors, labels, torch.device("cpu"), mirror_labels=m, **kw)
        b, pb = localise_landmarks(net, flipped, mirrored_priors, [mirror[k] for k in labels], torch.device("cpu"),
                                   mirror_labels=m, **kw)
        b[:, 0] = 39 - b[:, 0]
        results[name] = (np.abs(a - b).max(), np.abs(pa - pb).max())
    assert results["mirror"][0] < 1e-4 and results["mirror"][1] < 1e-5, results
    assert results["plain"][1] > 0.01, results  # the scores of a generic network are not symmetric


@pytest.mark.parametrize("method", ["coarse_to_fine", "exhaustive"])
def test_mirror_averaging_from_the_refinement_scores_the_coarse_lattice_once(method, monkeypatch):
    """``mirror_coarse=False``: the coarse lattice is scored without mirror averaging, everything after it with
    it (coarse-to-fine: first the 2 * top_k best coarse points of each landmark again); ``True`` mirror-averages
    every point."""
    import monai_ext.apps.aneurysm.evaluation as ev

    net = _random_net()
    vol = torch.as_tensor(np.random.default_rng(1).normal(size=(1, 40, 40, 40)), dtype=torch.float32)
    vol = torch.nn.functional.avg_pool3d(vol[None], 5, 1, 2)[0]
    mirror = [0, 2, 1, 3]
    priors, labels = np.array([[14.0, 20.0, 19.0], [25.0, 18.0, 22.0], [19.0, 21.0, 20.0]]), np.array([1, 2, 3])
    kw = {"search_radius": 5, "step": 2, "refine_radius": 2, "method": method, "score": "log_odds",
          "prior_sigma_mm": 4.0, "top_k": 2}
    calls = []
    scores = ev._scores

    def spy(net_, patcher, image, centres, label, device, batch_size, fmt, mirror_=None):
        calls.append((len(centres), mirror_ is not None))
        return scores(net_, patcher, image, centres, label, device, batch_size, fmt, mirror_)

    monkeypatch.setattr(ev, "_scores", spy)  # the exhaustive search
    fill = ev._LogitCache.fill  # the coarse-to-fine search: what it asks the shared logit cache for

    def spy_fill(self, points, mirrored):
        calls.append((len(points), bool(mirrored)))
        return fill(self, points, mirrored)

    monkeypatch.setattr(ev._LogitCache, "fill", spy_fill)
    for coarse in (True, False):
        calls.clear()
        localise_landmarks(net, vol, priors, labels, torch.device("cpu"), mirror_labels=mirror,
                           mirror_coarse=coarse, **kw)
        if coarse:
            assert all(m for _, m in calls), calls
            continue
        if method == "exhaustive":  # per landmark: the coarse cube without, the fine cube with
            assert [m for _, m in calls] == [False, True] * len(priors), calls
            assert [n for n, _ in calls[::2]] == [len(ev._cube(p, 5, 2, vol.shape[1:])) for p in priors]
        else:
            ball = len(ev._ball_offsets(5, 2))
            assert calls[0] == (ball * len(priors), False) and calls[1] == (2 * 2 * len(priors), True), calls
            assert all(m for _, m in calls[1:]), calls
    # without mirror_labels, mirror_coarse changes nothing
    plain = [localise_landmarks(net, vol, priors, labels, torch.device("cpu"), mirror_coarse=c, **kw)
             for c in (True, False)]
    np.testing.assert_array_equal(plain[0][0], plain[1][0])
    np.testing.assert_array_equal(plain[0][1], plain[1][1])
    # a command line's "--mirror_coarse false" is the string "false": read as False (as_bool), never as true;
    # another string is refused naming the argument
    from monai_ext.apps.aneurysm.inference import TriPlanarPointInferer

    calls.clear()
    localise_landmarks(net, vol, priors, labels, torch.device("cpu"), mirror_labels=mirror, mirror_coarse="false",
                       **kw)
    assert [m for _, m in calls][0] is False, calls  # the coarse stage without mirror averaging, as with False
    for bad in ("maybe", "refinement"):
        with pytest.raises(ValueError, match="mirror_coarse must be a boolean"):
            localise_landmarks(net, vol, priors, labels, torch.device("cpu"), mirror_labels=mirror,
                               mirror_coarse=bad, **kw)
        with pytest.raises(ValueError, match="mirror_coarse must be a boolean"):
            TriPlanarPointInferer(mirror_coarse=bad)
    assert TriPlanarPointInferer(mirror_coarse="false").mirror_coarse is False
    assert TriPlanarPointInferer(mirror_coarse=np.bool_(False)).mirror_coarse is False


def test_left_right_mirror_labels_of_the_afids():
    from monai_ext.apps.aneurysm.afids import afids_names
    from monai_ext.apps.aneurysm.evaluation import left_right_mirror_labels

    names = ["background", *afids_names()]
    m = np.asarray(left_right_mirror_labels(names))
    assert (m[m] == np.arange(len(names))).all()
    pairs = {(names[i], names[j]) for i, j in enumerate(m) if i < j}
    assert len(pairs) == 11 and ("RMB", "LMB") in pairs and ("ROSF", "LOSF") in pairs
    assert all(a[0] == "R" and b == "L" + a[1:] for a, b in pairs)
    for midline in ("background", "AC", "PC", "GENU", "PG"):
        assert m[names.index(midline)] == names.index(midline)


def test_mirror_labels_errors():
    vol = torch.zeros(1, 24, 24, 24)
    prior = np.full((1, 3), 12.0)
    with pytest.raises(ValueError, match="own inverse"):
        localise_landmarks(_random_net(), vol, prior, [1], torch.device("cpu"), mirror_labels=[0, 2, 3, 1])
    with pytest.raises(ValueError, match="own inverse"):
        localise_landmarks(_random_net(), vol, prior, [1], torch.device("cpu"), mirror_labels=[0, 1, 2, 7])
    with pytest.raises(ValueError, match="covers classes 0..1"):
        localise_landmarks(_random_net(), vol, prior, [3], torch.device("cpu"), mirror_labels=[0, 1])


# -- inference speed settings: folded batch norm, batch size ------------------------------------------------------

@pytest.mark.parametrize("method", ["coarse_to_fine", "exhaustive"])
def test_folded_batchnorm_and_batch_size_leave_the_search_unchanged(method):
    """The search with the batch-norm-folded copy (default) and any batch size returns what the network as given
    returns with one batch; the caller's network is not modified."""
    net = _random_net()
    g = torch.Generator().manual_seed(5)
    for m in net.modules():  # running statistics far from the identity, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    vol = torch.as_tensor(np.random.default_rng(2).normal(size=(1, 40, 40, 40)), dtype=torch.float32)
    vol = torch.nn.functional.avg_pool3d(vol[None], 5, 1, 2)[0]
    priors, labels = np.array([[14.0, 20.0, 19.0], [25.0, 18.0, 22.0]]), np.array([1, 2])
    kw = {"search_radius": 5, "step": 2, "refine_radius": 2, "method": method, "score": "log_odds",
          "mirror_labels": [0, 2, 1, 3]}
    ref, p_ref = localise_landmarks(net, vol, priors, labels, torch.device("cpu"), fuse_batchnorm=False,
                                    batch_size=100_000, **kw)
    for fuse, batch in ((True, None), (True, 7), (False, 7)):
        pos, p = localise_landmarks(net, vol, priors, labels, torch.device("cpu"), fuse_batchnorm=fuse,
                                    batch_size=batch, **kw)
        np.testing.assert_allclose(pos, ref, atol=1e-4)
        np.testing.assert_allclose(p, p_ref, atol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_search_batch_size():
    from monai_ext.apps.aneurysm.evaluation import search_batch_size

    assert search_batch_size("cpu") == 128 and search_batch_size(torch.device("cpu"), None) == 128
    assert search_batch_size(torch.device("cuda", 0)) == 512  # constructing the device needs no GPU
    assert search_batch_size("cpu", 33) == 33
    for bad in (0, -4, 2.5, True, "64", "abc"):
        with pytest.raises(ValueError, match="batch_size"):
            search_batch_size("cpu", bad)
    with pytest.raises(ValueError, match="batch_size"):
        localise_landmarks(_random_net(), torch.zeros(1, 24, 24, 24), np.full((1, 3), 12.0), [1],
                           torch.device("cpu"), batch_size=0)


def test_compare_evaluations_side_by_side(tmp_path):
    """Two evaluation tables row by row: each run's numbers, the mean and worst over runs, and the goals."""
    import csv

    from monai_ext.apps.aneurysm import compare_evaluations

    header = "row,model_mm,model_minus_baseline_ci_high,model_over_rater,top1\n"
    runs = {"seed0": ["box,2.3,-2.2,2.19,0.86", "whole,1.1,-2.1,1.01,1.0", "vessels,,,,"],
            "seed1": ["box,2.0,-2.0,1.90,0.92", "whole,1.2,0.3,1.10,0.99", "vessels,,,,"]}
    for label, lines in runs.items():
        (tmp_path / label).mkdir()
        (tmp_path / label / "localisation_by_row.csv").write_text(header + "\n".join(lines) + "\n")
    out = compare_evaluations({k: tmp_path / k for k in runs}, tmp_path / "cmp")
    assert [r["row"] for r in out] == ["box", "whole", "vessels"]
    box, whole, vessels = out
    assert box["model_over_rater_seed0"] == 2.19 and box["top1_seed1"] == 0.92
    assert box["model_over_rater_mean"] == pytest.approx(2.045) and box["model_over_rater_max"] == 2.19
    assert box["top1_min"] == 0.86 and box["meets_goals_every_run"] == 0.0
    assert whole["meets_goals_every_run"] == 1.0
    assert whole["beats_baseline_seed0"] == 1.0 and whole["beats_baseline_seed1"] == 0.0
    assert np.isnan(vessels["model_over_rater_mean"]) and np.isnan(vessels["meets_goals_every_run"])
    with open(tmp_path / "cmp" / "localisation_by_row_runs.csv") as f:
        assert [r["row"] for r in csv.DictReader(f)] == ["box", "whole", "vessels"]
    assert (tmp_path / "cmp" / "study.json").is_file()
    with pytest.raises(ValueError, match="at least two"):
        compare_evaluations({"seed0": tmp_path / "seed0"}, tmp_path / "cmp")
    with pytest.raises(ValueError, match="label 'seed 1'"):
        compare_evaluations({"seed0": tmp_path / "seed0", "seed 1": tmp_path / "seed1"}, tmp_path / "cmp")
    with pytest.raises(FileNotFoundError, match="evaluation 'x': no localisation_by_row.csv in"):
        compare_evaluations({"seed0": tmp_path / "seed0", "x": tmp_path / "missing"}, tmp_path / "cmp")
    # without per-image tables: no paired columns' numbers
    assert np.isnan(box["paired_mm_seed1"]) and box["paired_images_seed1"] == 0
    assert not (tmp_path / "cmp" / "localisation_by_landmark_runs.csv").exists()  # no per-fiducial tables
    # with per-fiducial tables: each fiducial's mean over the rows both runs scored (not the vessel row)
    lm_header = "row,landmark,model_mm,baseline_mm\n"
    for label, values in (("seed0", ("1.0", "3.0", "5.0", "2.0", "")), ("seed1", ("2.0", "4.0", "7.0", "4.0", ""))):
        (tmp_path / label / "localisation_by_landmark.csv").write_text(lm_header + "\n".join(
            f"{row},{lm},{v},9" for (row, lm), v in zip((("box", "AC"), ("box", "PC"), ("whole", "AC"),
                                                         ("whole", "PC"), ("vessels", "AC")), values, strict=True))
            + "\n")
    compare_evaluations({k: tmp_path / k for k in runs}, tmp_path / "cmp")
    with open(tmp_path / "cmp" / "localisation_by_landmark_runs.csv") as f:
        lms = list(csv.DictReader(f))
    assert [(r["landmark"], r["rows"]) for r in lms] == [("AC", "2"), ("PC", "2")]
    assert [float(r["model_mm_seed0"]) for r in lms] == [3.0, 2.5]
    assert [float(r["model_mm_seed1"]) for r in lms] == [4.5, 4.0]
    assert float(lms[0]["baseline_mm_seed1"]) == 9.0


def test_compare_evaluations_pairs_images(tmp_path):
    """With per-image tables: the later run minus the first, paired on the images both processed."""
    from monai_ext.apps.aneurysm import compare_evaluations

    row_header = "row,model_mm,model_minus_baseline_ci_high,model_over_rater,top1\n"
    img_header = "row,image,processed,model_mm\n"
    per_image = {"a": ["box,b1.nii.gz,1,2.0", "box,b2.nii.gz,1,3.0", "box,b3.nii.gz,1,2.5", "box,b4.nii.gz,0,",
                       "whole,w1.nii.gz,1,1.0"],
                 "b": ["box,b3.nii.gz,1,2.0", "box,b1.nii.gz,1,1.8", "box,b2.nii.gz,1,3.1", "box,b4.nii.gz,1,9.0",
                       "whole,w1.nii.gz,1,1.4"]}
    for label, lines in per_image.items():
        (tmp_path / label).mkdir()
        (tmp_path / label / "localisation_by_row.csv").write_text(row_header + "box,2,-1,2,0.9\nwhole,1,-1,1,1\n")
        (tmp_path / label / "localisation_by_image.csv").write_text(img_header + "\n".join(lines) + "\n")
    box, whole = compare_evaluations({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / "cmp")
    diff = np.array([-0.2, 0.1, -0.5])  # b1, b2, b3; b4 was not processed by the first run
    assert box["paired_images_b"] == 3 and box["images_closer_b"] == 2
    assert box["paired_mm_b"] == pytest.approx(diff.mean())
    half = 4.302652729749464 * diff.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert box["paired_ci_low_b"] == pytest.approx(diff.mean() - half)
    assert box["paired_ci_high_b"] == pytest.approx(diff.mean() + half)
    assert whole["paired_mm_b"] == pytest.approx(0.4) and np.isnan(whole["paired_ci_low_b"])
    assert "paired_mm_a" not in box  # the first run is the reference
    (tmp_path / "b" / "localisation_by_image.csv").write_text(img_header + "box,b1.nii.gz,1,1\nbox,b1.nii.gz,1,2\n")
    with pytest.raises(ValueError, match="evaluation 'b': image 'b1.nii.gz' listed twice in row 'box'"):
        compare_evaluations({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / "cmp")


def test_landmark_evaluation_protocol_truth_moves_truth_and_raters_together(tmp_path):
    """``truth="protocol"``: the true lateral-ventricle points are moved into the coronal planes of the true AC /
    PC, the raters by the same vectors (their spread is unchanged); ``"tissue"`` reads the files as they are."""
    from monai_ext.apps.aneurysm import LandmarkEvaluation, afids_names, load_afids
    from monai_ext.apps.aneurysm.afids import place_on_protocol_planes, protocol_plane_offsets
    from monai_ext.apps.aneurysm.landmarks import PointSet, write_points_json

    names, labels = afids_names(), np.arange(1, 33)
    rng = np.random.default_rng(3)
    truth = load_afids().positions + rng.normal(scale=3.0, size=(32, 3))
    raters = truth[None] + rng.normal(scale=1.0, size=(4, 32, 3))
    write_points_json(PointSet(names, labels, truth), tmp_path / "truth.json")
    files = []
    for i, r in enumerate(raters):
        write_points_json(PointSet(names, labels, r), tmp_path / f"rater{i}.json")
        files.append(str(tmp_path / f"rater{i}.json"))
    item = {"landmarks": str(tmp_path / "truth.json"), "raters": files}
    rows = [{"name": "r", "datalist": "d.json", "section": "test"}]
    t, r = LandmarkEvaluation(None, rows, tmp_path, truth="tissue")._truth(item, names, labels)
    np.testing.assert_allclose(t, truth)
    np.testing.assert_allclose(r, raters)
    t, r = LandmarkEvaluation(None, rows, tmp_path, truth="protocol")._truth(item, names, labels)
    gt = load_afids()
    expected, moved = place_on_protocol_planes(truth, names, protocol_plane_offsets(gt.positions, gt.names))
    np.testing.assert_allclose(t, expected)
    assert np.count_nonzero(moved) == 4
    np.testing.assert_allclose(r - t[None], raters - truth[None], atol=1e-9)  # the raters' spread is kept
    with pytest.raises(ValueError, match="truth must be one of"):
        LandmarkEvaluation(None, rows, tmp_path, truth="rater")
