"""Tests of crops/clips, the clip dataset, the study metrics and the real-time stream (sperm_emd)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from monai_ext.apps.sperm_emd import (
    LoadClipd,
    SpermGrid,
    build_clip_datalist,
    build_network,
    clip_crops,
    crop_at,
    distribution_scores,
    match_track,
)
from monai_ext.apps.sperm_emd.data import read_video
from monai_ext.apps.sperm_emd.stream import SpermStream, optimise_network
from monai_ext.apps.sperm_emd.study import per_sperm_scores, warmup_cosine
from monai_ext.apps.sperm_emd.tracking import SpermDetector, SpermTracker, Track, track_video
from monai_ext.data.synthetic.sperm import generate_sperm_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sperm")
    return generate_sperm_dataset(out, num_videos=3, num_frames=12, num_sperm=3, size=96, num_debris=1)


@pytest.mark.parametrize("centre", [(10, 10), (0, 0), (31.6, 2.2), (63, 63), (100, 100)])
@pytest.mark.parametrize("size", [8, 9])
def test_crop_at_matches_naive(centre, size):
    frame = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) + 1
    out = crop_at(frame, centre, size)
    y0, x0 = int(round(centre[0])) - size // 2, int(round(centre[1])) - size // 2
    for i in range(size):
        for j in range(size):
            y, x = y0 + i, x0 + j
            assert out[i, j] == (frame[y, x] if 0 <= y < 64 and 0 <= x < 64 else 0)


@pytest.mark.parametrize("mode", ["clip", "head"])
def test_clip_crops_matches_naive(mode):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 40, 50), dtype=np.uint8)
    pos = np.array([[10.0, 12.0], [11.5, 15.0], [13.0, 18.2], [14.0, 21.0], [16.4, 24.0]])
    out = clip_crops(frames, pos, 12, mode)
    assert out.shape == (5, 12, 12) and out.dtype == np.uint8
    anchor = (pos[:, 0].sum() / 5, pos[:, 1].sum() / 5)
    for t in range(5):
        cy, cx = (anchor if mode == "clip" else pos[t])
        y0, x0 = int(round(cy)) - 6, int(round(cx)) - 6
        for i in range(12):
            for j in range(12):
                y, x = y0 + i, x0 + j
                assert out[t, i, j] == (frames[t, y, x] if 0 <= y < 40 and 0 <= x < 50 else 0)
    if mode == "clip":  # a moving head moves inside the fixed window
        assert not np.array_equal(out[0], out[-1])


def test_clip_crops_errors():
    frames = np.zeros((3, 20, 20), np.uint8)
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        clip_crops(frames, np.zeros((3, 2)), 8, "centre")
    with pytest.raises(ValueError, match="3 frames but 2 head positions"):
        clip_crops(frames, np.zeros((2, 2)), 8)


def test_match_track():
    gt = {0: np.array([[10.0, 10.0]] * 4), 1: np.array([[30.0, 30.0], [30, 31], [30, 32], [np.nan, np.nan]])}
    follow1 = Track(0, np.zeros(4), np.eye(4), history=[(f, 30.0, 30.0 + f, True) for f in range(3)])
    assert match_track(follow1, gt) == 1
    debris = Track(1, np.zeros(4), np.eye(4), history=[(f, 50.0, 50.0, True) for f in range(4)])
    assert match_track(debris, gt) is None
    half = Track(2, np.zeros(4), np.eye(4), history=[(0, 10.0, 10.0, True), (1, 50.0, 50.0, True),
                                                      (2, 50.0, 50.0, True)])
    assert match_track(half, gt, min_fraction=0.5) is None
    assert match_track(half, gt, min_fraction=0.3) == 0


def test_build_clip_datalist_and_dataset(tiny_data, tmp_path):
    path, rows = build_clip_datalist(tiny_data, tmp_path, crop_size=16, clip_length=4, clip_stride=2)
    content = json.loads(path.read_text())
    assert len(rows) == 3 and {r["section"] for r in rows} == {"training", "validation", "test"}
    assert all(0.0 <= r["recall"] <= 1.0 and r["mota"] <= 1.0 for r in rows)
    items = content["training"]
    assert items, "no training clip"
    for it in items:
        arr = np.load(tmp_path / it["image"])
        assert arr.shape[1:] == (16, 16) and it["start"] + 4 <= len(arr)
        assert sum(it["label"]) == pytest.approx(1.0)
    abs_items = [{**it, "image": str(tmp_path / it["image"])} for it in items]
    load = LoadClipd()
    sample = load(abs_items[0])
    assert sample["image"].shape == (1, 4, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["label"].dtype == torch.float32 and float(sample["label"].sum()) == pytest.approx(1.0)
    expected = np.load(abs_items[0]["image"])[abs_items[0]["start"]:abs_items[0]["start"] + 4] / 255.0
    np.testing.assert_allclose(sample["image"][0].numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="run past"):
        load({**abs_items[0], "start": 10_000})
    with pytest.raises(ValueError, match="keys must be"):
        LoadClipd(keys="image")


@pytest.mark.parametrize("mode", ["clip", "head"])
def test_clip_datalist_crops_follow_the_tracks(tiny_data, tmp_path, mode):
    """Every stored clip equals the crops of its video frames at its track's positions (re-tracked independently)."""
    path, _ = build_clip_datalist(tiny_data, tmp_path, crop_size=16, clip_length=4, clip_stride=2, crop_mode=mode,
                                  sections=("training",))
    content = json.loads(path.read_text())
    assert content["crop_mode"] == mode
    video_item = json.loads(tiny_data.read_text())["training"][0]
    frames = read_video(tiny_data.parent / video_item["video"])
    tracks = {t.track_id: t for t in track_video(frames, SpermDetector(), SpermTracker())}
    checked = 0
    for it in content["training"]:
        hist = tracks[it["track_id"]].history
        first = it["first_frame"]
        pos = np.array([(y, x) for f, y, x, _ in hist if first <= f < first + 4])
        expected = clip_crops(frames[first:first + 4], pos, 16, mode)
        arr = np.load(tmp_path / it["image"])
        np.testing.assert_array_equal(arr[it["start"]:it["start"] + 4], expected)
        checked += 1
    assert checked == len(content["training"]) > 0


def test_build_clip_datalist_errors(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="clip_length"):
        build_clip_datalist(tiny_data, tmp_path, clip_length=0)
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        build_clip_datalist(tiny_data, tmp_path, crop_mode="centre")


@pytest.mark.parametrize("seed", [0, 1])
def test_distribution_scores_match_naive(seed):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(5), 6), rng.dirichlet(np.ones(5), 6)
    out = distribution_scores(torch.as_tensor(p), torch.as_tensor(q))
    for i in range(6):
        assert out["mse"][i] == pytest.approx(np.mean((p[i] - q[i]) ** 2))
        assert out["jsd"][i] == pytest.approx(jensenshannon(p[i], q[i]) ** 2, rel=1e-6)
        assert out["intersection"][i] == pytest.approx(np.minimum(p[i], q[i]).sum())
        assert out["chebyshev"][i] == pytest.approx(np.abs(p[i] - q[i]).max())
        d = np.cumsum(p[i]) - np.cumsum(q[i])
        assert out["emd"][i] == pytest.approx(np.sqrt(np.mean(d**2)))
        assert out["mode_accuracy"][i] == float(np.argmax(p[i]) == np.argmax(q[i]))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"backbones": ["vgg"]}, r"got unknown \['vgg'\]"), ({"losses": ["l1"]}, r"got unknown \['l1'\]"),
     ({"seeds": []}, "must be non-empty")],
)
def test_grid_errors(tmp_path, kwargs, match):
    bundle = Path(__file__).resolve().parents[3] / "bundles" / "sperm_emd"
    with pytest.raises(ValueError, match=match):
        SpermGrid(bundle, tmp_path, **kwargs)


def test_per_sperm_scores_average_clips_first():
    rng = np.random.default_rng(3)
    probs, targets = torch.as_tensor(rng.dirichlet(np.ones(5), 7)), torch.zeros(7, 5, dtype=torch.float64)
    items = [{"video": v, "sperm_id": i} for v, i, n in (("v0", 0, 3), ("v0", 1, 2), ("v1", 0, 2)) for _ in range(n)]
    labels = {("v0", 0): [1, 0, 0, 0, 0], ("v0", 1): [0, 0, 0.5, 0.5, 0], ("v1", 0): [0, 0, 0, 0.2, 0.8]}
    for i, it in enumerate(items):
        targets[i] = torch.tensor(labels[(it["video"], it["sperm_id"])])
    out = per_sperm_scores(probs, targets, items)
    assert out["test_sperm"] == 3
    emd, acc = [], []
    for key, idx in ((("v0", 0), [0, 1, 2]), (("v0", 1), [3, 4]), (("v1", 0), [5, 6])):
        p, q = probs[idx].numpy().mean(0), np.array(labels[key])
        emd.append(np.sqrt(np.mean((np.cumsum(p) - np.cumsum(q)) ** 2)))
        acc.append(float(np.argmax(p) == np.argmax(q)))
    assert out["sperm_emd"] == pytest.approx(np.mean(emd)) and out["sperm_mode_accuracy"] == pytest.approx(np.mean(acc))
    # without sperm ids the clips are grouped by track (image)
    assert per_sperm_scores(probs, targets, [{"image": f"t{i % 2}"} for i in range(7)])["test_sperm"] == 2


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (2.5, 7), (10, 10)])
def test_warmup_cosine_matches_formula(warmup, total):
    f = warmup_cosine(warmup, total)
    for i in range(total + 2):
        if i < warmup:
            expected = (i + 1) / (warmup + 1)
        else:
            t = min((i - warmup) / max(total - warmup, 1), 1.0)
            expected = 0.5 * (1 + np.cos(np.pi * t))
        assert f(i) == pytest.approx(expected)
    # rises during warm-up, never exceeds 1, reaches 0 at the end
    assert all(f(i) <= f(i + 1) for i in range(int(warmup) - 1)) and max(f(i) for i in range(total)) <= 1.0
    assert f(total) == pytest.approx(0.0, abs=1e-12) or warmup == total


def test_build_network_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        build_network("slowfast")


def test_stream_rescoring_and_outputs(tiny_data, tmp_path):
    video = tiny_data.parent / json.loads(tiny_data.read_text())["test"][0]["video"]
    net = build_network("timesformer_tiny", img_size=16, num_frames=4, patch_size=8, num_layers=1)
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    stream = SpermStream(net, crop_size=16, clip_length=4, rescore_every=3, precision="fp32")
    stream.prepare()  # times dummy batches to seed the real-time cost model; not part of the stream
    calls.clear()
    stats = stream.run(str(video), tmp_path / "out.mp4", tmp_path / "tracks.csv", verbose=False)
    assert stats["frames"] == 12 and stats["fps"] > 0
    # scoring happens only on frames 0, 3, 6, 9 and only for tracks with 4 buffered crops: at most 3 batches
    assert 1 <= len(calls) <= 3 and sum(calls) == sum(stream.batches)
    with open(tmp_path / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == stats["tracks"] >= 3
    scored = [r for r in rows if r["p_A"]]
    assert scored and all(abs(sum(float(r[f"p_{g}"]) for g in "ABCDE") - 1) < 1e-3 for r in scored)
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "out.mp4", plugin="pyav").shape[:3] == (12, 96, 96)


@pytest.mark.parametrize("mode", ["clip", "head"])
def test_stream_crops_match_training_crops(tiny_data, mode):
    """The stream scores each ready track on the same crops as the training clips (same positions and mode)."""
    video = tiny_data.parent / json.loads(tiny_data.read_text())["test"][0]["video"]
    frames = read_video(video)
    net = build_network("tiny3d", img_size=16, num_frames=4)
    seen = []

    def capture(x):
        seen.append((stream.frame_index, x.clone()))
        return x.float() / 255

    stream = SpermStream(net, crop_size=16, clip_length=4, rescore_every=2, crop_mode=mode, preprocessing=capture,
                         precision="fp32")
    stream.prepare()  # dummy batches, before the stream
    seen.clear()
    stream.run(list(frames), verbose=False)
    assert seen, "the stream never scored a clip"
    tracks = {t.track_id: t for t in track_video(frames, SpermDetector(), SpermTracker())}
    for frame_index, batch in seen:
        assert frame_index % 2 == 0 and frame_index >= 3
        first = frame_index - 3
        expected = [clip_crops(frames[first:frame_index + 1],
                               np.array([(y, x) for f, y, x, _ in t.history if first <= f <= frame_index]), 16, mode)
                    for t in tracks.values() if t.history[0][0] <= first and t.history[-1][0] >= frame_index]
        assert len(batch) == len(expected)
        for row in batch[:, 0].numpy():
            assert sum(np.array_equal(row, e) for e in expected) >= 1


def test_stream_errors_and_quantised_network(tmp_path):
    net = build_network("timesformer_tiny", img_size=16, num_frames=4, patch_size=8, num_layers=1)
    with pytest.raises(ValueError, match="rescore_every"):
        SpermStream(net, rescore_every=0)
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        SpermStream(net, crop_mode="centre")
    with pytest.raises(FileNotFoundError, match="video source not found"):
        SpermStream(net).run(str(tmp_path / "missing.mp4"))
    x = torch.rand(3, 1, 4, 16, 16)
    ref = torch.softmax(net.eval()(x), -1)
    # int8 dynamic quantisation of the same weights keeps the distributions close
    qnet = optimise_network(net, quantize=True)
    assert (torch.softmax(qnet(x), -1) - ref).abs().max() < 0.05


def test_prepare_clip_datalist_refuses_an_empty_section(tiny_data, tmp_path):
    """A video section without a labelled clip stops the run naming it (no silent fallback to another section)."""
    import shutil

    from monai_ext.apps.sperm_emd import prepare_clip_datalist

    data = shutil.copytree(tiny_data.parent, tmp_path / "data") / tiny_data.name
    content = json.loads(data.read_text())
    for it in content["validation"]:  # annotations without any sperm: no labelled track, no clip
        ann = data.parent / it["annotation"]
        ann.write_text(json.dumps({**json.loads(ann.read_text()), "sperm": []}))
    with pytest.raises(ValueError, match=r"no labelled clip was extracted for section\(s\) \['validation'\]"):
        prepare_clip_datalist(data, tmp_path / "out", clip_kwargs={"crop_size": 16, "clip_length": 4})
