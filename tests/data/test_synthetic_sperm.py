"""Tests of the synthetic sperm video generator (monai_ext.data.synthetic.sperm)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from monai_ext.data.synthetic.sperm import GRADES, generate_sperm_dataset, rate_sperm, synthesize_sperm_video


def naive_kinematics(track, fps):
    pts = [tuple(p) for p in track]
    length = 0.0
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        length += ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5
    dur = (len(pts) - 1) / fps
    vsl = ((pts[-1][0] - pts[0][0]) ** 2 + (pts[-1][1] - pts[0][1]) ** 2) ** 0.5 / dur
    return length / dur, vsl


@pytest.mark.parametrize("size,num_frames,num_sperm", [(64, 5, 2), (96, 12, 5)])
def test_video_shapes_and_ground_truth(size, num_frames, num_sperm):
    frames, sperm, debris = synthesize_sperm_video(size=size, num_frames=num_frames, num_sperm=num_sperm,
                                                   num_debris=3, seed=1)
    assert frames.shape == (num_frames, size, size) and frames.dtype == np.uint8
    assert len(sperm) == num_sperm and len(debris) == 3
    for s in sperm:
        track = np.asarray(s["track"])
        assert track.shape == (num_frames, 2)
        assert (track >= 0).all() and (track < size).all()
        vcl, vsl = naive_kinematics(track, 15.0)
        assert s["vcl"] == pytest.approx(vcl, rel=1e-3, abs=1e-2)
        assert s["vsl"] == pytest.approx(vsl, rel=1e-3, abs=1e-2)
        # the WHO class follows from the measured kinematics
        if vcl < 4.0:
            assert s["motility"] == "immotile"
        elif vsl >= 25 and s["lin"] >= 0.4:
            assert s["motility"] == "rapid_progressive"


def test_heads_are_bright_at_track_positions():
    frames, sperm, _ = synthesize_sperm_video(size=96, num_frames=4, num_sperm=3, num_debris=0, seed=3)
    background = np.median(frames)
    for s in sperm:
        for t, (y, x) in enumerate(s["track"]):
            assert frames[t, int(round(y)), int(round(x))] > background + 100


def test_same_seed_same_output():
    a = synthesize_sperm_video(size=64, num_frames=4, num_sperm=2, seed=7)
    b = synthesize_sperm_video(size=64, num_frames=4, num_sperm=2, seed=7)
    c = synthesize_sperm_video(size=64, num_frames=4, num_sperm=2, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("quality,raters", [(0.0, [0, 1, 2]), (2.4, [3, 1]), (4.5, [0, 1, 2, 3])])
def test_rate_sperm_matches_naive(quality, raters):
    bias, noise = np.array([0.3, -0.2, 0.0, 0.6]), np.array([0.5, 0.2, 0.9, 0.4])
    ratings, dist = rate_sperm(quality, bias, noise, np.asarray(raters), np.random.default_rng(0))
    z = np.random.default_rng(0).normal(0.0, 1.0, len(raters))
    expected = [min(max(int(np.rint(quality + bias[r] + z[i] * noise[r])), 0), 4) for i, r in enumerate(raters)]
    assert ratings == expected
    naive = [sum(1 for g in expected if g == k) / len(expected) for k in range(5)]
    np.testing.assert_allclose(dist, naive)


def test_dataset_files(tmp_path):
    path = generate_sperm_dataset(tmp_path, num_videos=3, num_frames=6, num_sperm=2, size=64, num_raters=5,
                                  raters_per_sperm=3)
    content = json.loads(path.read_text())
    assert [len(content[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    assert content["grades"] == list(GRADES)
    item = content["test"][0]
    ann = json.loads((tmp_path / item["annotation"]).read_text())
    frames = iio.imread(tmp_path / item["video"], plugin="pyav")
    assert frames.shape[:3] == (6, 64, 64)
    for s in ann["sperm"]:
        assert len(s["ratings"]) == 3 and len(set(s["raters"])) == 3
        assert sum(s["distribution"]) == pytest.approx(1.0)
        assert len(s["track"]) == 6
    again = generate_sperm_dataset(tmp_path / "again", num_videos=3, num_frames=6, num_sperm=2, size=64, num_raters=5,
                                   raters_per_sperm=3)
    assert json.loads((tmp_path / "again" / item["annotation"]).read_text()) == ann
    assert again.name == "dataset.json"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"size": 32}, "size must be >= 64"),
        ({"num_frames": 1}, "num_frames >= 2"),
        ({"num_sperm": 0}, "num_sperm >= 1"),
        ({"abnormal_fraction": 1.5}, "abnormal_fraction"),
        ({"fps": 0}, "fps > 0"),
    ],
)
def test_video_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize_sperm_video(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_videos": 2}, "num_videos must be >= 3"),
        ({"raters_per_sperm": 50}, "raters_per_sperm"),
        ({"split": (1.0, 0.0)}, "split must be three"),
    ],
)
def test_dataset_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_sperm_dataset(tmp_path, **kwargs)
