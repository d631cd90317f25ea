"""The stream's cheaper per-frame parts against naive references: FFT detector, tracker over skipped frames,
running kinematics, grey conversion, the checkpoint loader, the overlay and the outputs of a run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_ext.apps.sperm_emd import SpermDetector, SpermTracker, build_network
from monai_ext.apps.sperm_emd.stream import SpermStream, _to_grey, load_stream_network, load_stream_weights
from monai_ext.data.synthetic.sperm import synthesize_sperm_video, write_video
from monai_ext.metrics import RunningKinematics, casa_kinematics


def naive_detect(det: SpermDetector, frame: np.ndarray) -> np.ndarray:
    """The detector as first written: two spatial Gaussian filters, ``sum_labels`` and ``center_of_mass``."""
    img = frame.astype(np.float32) / 255.0
    fg = ndimage.gaussian_filter(img, det.smooth_sigma) - ndimage.gaussian_filter(img, det.background_sigma)
    mask = fg > det.threshold
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros((0, 2))
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(mask, labels, idx)
    keep = idx[(area >= det.min_area) & (area <= det.max_area)]
    if keep.size == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(np.clip(fg, 0, None), labels, keep), np.float64).reshape(-1, 2)


@pytest.mark.parametrize("size,seed", [(256, 0), (96, 1), (131, 2)])
def test_fft_detector_equals_spatial_filters(size, seed):
    frames, _, _ = synthesize_sperm_video(size=size, num_frames=6, num_sperm=10, num_debris=8, seed=seed)
    det = SpermDetector()
    found = 0
    for frame in frames:
        expected, got = naive_detect(det, frame), det(frame)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
        found += len(got)
    assert found >= 6 * 5


@pytest.mark.parametrize("kwargs", [{"smooth_sigma": 0.0}, {"background_sigma": 30.0, "threshold": 0.1},
                                    {"min_area": 1, "threshold": 0.2}])
def test_fft_detector_small_frames_and_other_sigmas(kwargs):
    rng = np.random.default_rng(3)
    frame = (rng.random((20, 33)) * 120).astype(np.uint8)
    frame[5:9, 5:9] = 255
    frame[12:15, 25:28] = 230
    det = SpermDetector(**kwargs)
    expected = naive_detect(det, frame)
    assert len(expected) >= 1
    np.testing.assert_allclose(det(frame), expected, atol=1e-4)


def test_detector_sigma_errors():
    with pytest.raises(ValueError, match="smooth_sigma and background_sigma must be >= 0"):
        SpermDetector(smooth_sigma=-1)


def test_tracker_predicts_over_skipped_frames():
    """A point at constant velocity, seen on frames 0-4 then 8-10 (5-7 lost): one track, and the prediction over
    the 4-frame step lands on it (a one-frame step would leave it 9 px behind, outside the 5 px gate)."""
    tracker = SpermTracker(max_distance=5.0, max_missed=3)
    for t in [0, 1, 2, 3, 4, 8, 9, 10]:
        alive = tracker.update(np.array([[50.0, 10.0 + 3 * t]]), frame_index=t)
        assert [tr.track_id for tr in alive] == [0]
    assert [f for f, *_ in alive[0].history] == [0, 1, 2, 3, 4, 8, 9, 10]
    assert all(det for *_, det in alive[0].history)
    # a gap longer than max_missed ends the track: the skipped frames count as missed
    alive = tracker.update(np.zeros((0, 2)), frame_index=15)
    assert alive == [] and [tr.track_id for tr in tracker.finished] == [0]
    with pytest.raises(ValueError, match="frame_index must increase"):
        tracker.update(np.zeros((0, 2)), frame_index=15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_running_kinematics_equal_casa_kinematics(seed):
    rng = np.random.default_rng(seed)
    frames = np.cumsum(rng.integers(1, 4, 25))  # gaps where the head was not detected
    pos = np.cumsum(rng.normal(0, 2, (25, 2)), axis=0) + 100
    run = RunningKinematics(fps=15, um_per_pixel=0.5)
    assert run.values() is None
    for f, (y, x) in zip(frames, pos, strict=True):
        run.add(y, x, int(f))
    expected = casa_kinematics(pos, 15, 0.5, frames=frames)
    for k, v in run.values().items():
        assert v == pytest.approx(expected[k], rel=1e-12)
    # naive: path length over the time of the frame indices
    duration = (frames[-1] - frames[0]) / 15
    assert expected["vcl"] == pytest.approx(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum() * 0.5 / duration)
    # without gaps, equal to the one-position-per-frame definition
    assert casa_kinematics(pos, 15, 0.5, frames=np.arange(25)) == casa_kinematics(pos, 15, 0.5)


def test_kinematics_frame_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        casa_kinematics([[0, 0], [1, 1]], 15, frames=[3, 3])
    with pytest.raises(ValueError, match="strictly increasing"):
        casa_kinematics([[0, 0], [1, 1]], 15, frames=[0, 1, 2])
    run = RunningKinematics(15)
    run.add(0, 0, 4)
    with pytest.raises(ValueError, match="frame must increase"):
        run.add(1, 1, 4)
    with pytest.raises(ValueError, match="finite"):
        run.add(np.nan, 1, 5)
    with pytest.raises(ValueError, match="fps and um_per_pixel"):
        RunningKinematics(0)


def test_grey_conversion_rounds_like_read_video():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_to_grey(rgb), rgb.mean(-1).round().astype(np.uint8))
    np.testing.assert_array_equal(_to_grey(rgb.astype(np.float64)), rgb.mean(-1).round().astype(np.uint8))
    grey = rgb[..., 0]
    assert _to_grey(grey) is grey


@pytest.mark.parametrize("wrap", [False, True])
def test_load_stream_weights_bare_state_dict_or_training_checkpoint(tmp_path, wrap):
    net = build_network("tiny3d", img_size=16, num_frames=4)
    sd = net.state_dict()
    torch.save({"model": sd, "epoch": 3} if wrap else sd, tmp_path / "model.pt")
    loaded = load_stream_network("tiny3d", tmp_path / "model.pt", crop_size=16, clip_length=4)
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, sd[k])


def test_load_stream_weights_errors(tmp_path):
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "bad.pt")
    net = build_network("tiny3d", img_size=16, num_frames=4)
    with pytest.raises(ValueError, match=r"'.*bad.pt' is neither a state_dict"):
        load_stream_weights(net, tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_stream_weights(net, tmp_path / "missing.pt")


def test_run_outputs_ages_in_csv_json_and_overlay(tmp_path):
    frames, _, _ = synthesize_sperm_video(size=96, num_frames=20, num_sperm=3, num_debris=1, seed=4)
    video = write_video(tmp_path / "v.mp4", frames)
    net = build_network("tiny3d", img_size=16, num_frames=4)
    stream = SpermStream(net, crop_size=16, clip_length=4, rescore_every=3, precision="auto", calibration_batch=2)
    stats = stream.run(str(video), tmp_path / "out.mp4", tmp_path / "t.csv", verbose=False,
                       output_json=tmp_path / "s.json")
    # bf16 is a candidate only where the CPU computes it natively (AMX / AVX512-BF16)
    allowed = ("fp32", "bf16", "int8") if stream.hardware.native_bf16 else ("fp32", "int8")
    assert stats["precision"] in allowed and "fp32" in stats["calibration_ms_per_clip"]
    assert ("bf16" in stats["calibration_ms_per_clip"]) == stream.hardware.native_bf16
    assert stats["realtime"] is False and stats["frames"] == 20 and stats["dropped_frames"] == 0
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r["last_scored_frame"]]
    assert scored
    for r in scored:  # offline: scored on multiples of 3, so a grade is at most 2 frames old
        assert int(r["last_scored_frame"]) % 3 == 0 and 0 <= int(r["max_score_age"]) <= 2
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["stats"]["staleness_max_frames"] <= 2 and saved["stats"]["max_lag_ms"] is None
    assert len(saved["tracks"]) == len(rows)
    import imageio.v3 as iio

    video_out = iio.imread(tmp_path / "out.mp4", plugin="pyav")
    assert video_out.shape[:3] == (20, 96, 96)
    # the overlay draws the grade's age next to the bars: its label was rendered
    assert any(s.endswith("s") and s[:-1].replace(".", "").isdigit() for s in stream._overlay._cache)
