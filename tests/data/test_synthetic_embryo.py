"""The seeded synthetic blastocyst time-lapse generator: reproducibility, outcome model, prior, datalist."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import integrate

from monai_ext.data import load_datalist
from monai_ext.data.synthetic.embryo import generate_embryo_dataset, synthesize_embryo_sequence, viable_probability


@pytest.mark.parametrize("quality, frames, size", [(0.2, 4, 32), (0.9, 6, 48)])
def test_sequence_shape_range_and_seed(quality, frames, size):
    a = synthesize_embryo_sequence(quality, np.random.default_rng(5), frames, size)
    b = synthesize_embryo_sequence(quality, np.random.default_rng(5), frames, size)
    c = synthesize_embryo_sequence(quality, np.random.default_rng(6), frames, size)
    assert a.shape == (frames, size, size) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_good_embryos_expand_more():
    # the dark blastocoel (pixels well below the background level inside the zona) grows over time, and more for
    # good embryos: compare the last-frame dark area averaged over draws
    def dark_area(q):
        areas = []
        for s in range(6):
            seq = synthesize_embryo_sequence(q, np.random.default_rng(s), 6, 64)
            areas.append((seq[-1] < 0.2).sum() - (seq[0] < 0.2).sum())
        return np.mean(areas)

    assert dark_area(0.95) > dark_area(0.05)


@pytest.mark.parametrize("kwargs, match", [
    ({"quality": 1.5}, "quality"), ({"quality": 0.5, "num_frames": 1}, "num_frames"),
    ({"quality": 0.5, "image_size": 16}, "image_size"), ({"quality": 0.5, "abnormal_cue": 1.5}, "abnormal_cue"),
])
def test_sequence_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize_embryo_sequence(rng=np.random.default_rng(0), **kwargs)


def test_abnormal_cue_adds_visible_fragments_and_zero_changes_nothing():
    # no cue: the very same frames as without the option (no extra random draw)
    np.testing.assert_array_equal(synthesize_embryo_sequence(0.5, np.random.default_rng(1), 3, 32),
                                  synthesize_embryo_sequence(0.5, np.random.default_rng(1), 3, 32, abnormal_cue=0.0))

    # a full cue: more bright debris inside the zona at the same quality, over paired draws
    def bright(cue):
        return np.array([(synthesize_embryo_sequence(0.8, np.random.default_rng(s), 2, 64, cue)[0] > 0.6).mean()
                         for s in range(12)])

    assert (bright(1.0) - bright(0.0)).mean() > 0.005


def test_visible_abnormality_dataset(tmp_path):
    hidden = json.loads(generate_embryo_dataset(tmp_path / "h", seed=2, num_cases=8, num_frames=2,
                                                image_size=32).read_text())
    seen = json.loads(generate_embryo_dataset(tmp_path / "v", seed=2, num_cases=8, num_frames=2, image_size=32,
                                              abnormal_visibility=1.0).read_text())
    assert hidden["abnormal_visibility"] == 0.0 and seen["abnormal_visibility"] == 1.0
    # the outcome variables are drawn before the images: the same labels, other images for abnormal embryos
    assert [it["label"] for it in hidden["training"]] == [it["label"] for it in seen["training"]]
    first = next(i for i, it in enumerate(seen["training"]) if it["abnormal"])
    name = f"sequences/seq_{first:03d}/frame_00.png"
    assert not np.array_equal(iio.imread(tmp_path / "h" / name), iio.imread(tmp_path / "v" / name))


def test_dataset_files_labels_and_prior(tmp_path):
    path = generate_embryo_dataset(tmp_path, seed=1, num_cases=24, num_frames=3, image_size=32)
    content = json.loads(path.read_text())
    items = load_datalist(path, "training", ("image", "label"), path_keys=("image",))
    assert len(items) == 24
    for it in items:
        frames = sorted(p.name for p in (tmp_path / "sequences" / it["sequence"]).iterdir())
        assert frames == ["frame_00.png", "frame_01.png", "frame_02.png"]
        assert iio.imread(tmp_path / "sequences" / it["sequence"] / "frame_00.png").shape == (32, 32)
        # live birth = viable and not abnormal (the abnormality is hidden)
        assert it["label"] == int(it["viable"] and not it["abnormal"])
    labels = np.array([it["label"] for it in items])
    viable = np.array([it["viable"] for it in items])
    # the true PU prior: viable fraction among the failures, recounted naively
    fails = [v for v, lab in zip(viable, labels, strict=True) if lab == 0]
    assert content["prior_true"] == pytest.approx(sum(fails) / len(fails))
    assert content["live_birth_rate"] == pytest.approx(labels.mean())


def test_population_prior_matches_quadrature(tmp_path):
    path = generate_embryo_dataset(tmp_path, seed=0, num_cases=4, num_frames=2, image_size=32, abnormal_rate=0.45)
    content = json.loads(path.read_text())
    ev, _ = integrate.quad(lambda q: viable_probability(q) * 6 * q * (1 - q), 0, 1)
    assert content["prior_population"] == pytest.approx(ev * 0.45 / (1 - 0.55 * ev), rel=1e-4)
    # the defaults give about 22 % live births, as in the seed study (140 / 643)
    assert 0.20 < ev * 0.55 < 0.25


def test_same_seed_same_dataset(tmp_path):
    a = generate_embryo_dataset(tmp_path / "a", seed=3, num_cases=6, num_frames=2, image_size=32)
    b = generate_embryo_dataset(tmp_path / "b", seed=3, num_cases=6, num_frames=2, image_size=32)
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    np.testing.assert_array_equal(iio.imread(tmp_path / "a/sequences/seq_005/frame_01.png"),
                                  iio.imread(tmp_path / "b/sequences/seq_005/frame_01.png"))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_cases": 3}, "num_cases"), ({"abnormal_rate": 1.0}, "abnormal_rate"), ({"quality_slope": 0.0}, "slope"),
    ({"abnormal_visibility": -0.1}, "abnormal_visibility"),
])
def test_dataset_bad_args(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_embryo_dataset(tmp_path, **kwargs)
