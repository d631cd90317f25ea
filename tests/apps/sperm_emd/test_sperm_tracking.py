"""Tests of CASA kinematics, head detection, Kalman/Hungarian tracking and tracking metrics (sperm_emd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_ext.apps.sperm_emd import SpermDetector, SpermTracker, evaluate_tracking, track_video
from monai_ext.apps.sperm_emd.tracking import Track
from monai_ext.metrics import casa_kinematics, motility_class


def blob_frame(size, centres, level=220, radius=2.0):
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), 20.0)
    for y, x in centres:
        img += (level - 20) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * radius**2))
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- kinematics
@pytest.mark.parametrize(
    "track,fps,um,expected",
    [
        ([[0, 0], [0, 1], [0, 2]], 15, 1.0, (15.0, 15.0, 1.0)),
        ([[0, 0], [3, 4], [0, 0]], 10, 1.0, (50.0, 0.0, 0.0)),
        ([[0, 0], [0, 2], [2, 2]], 2, 0.5, (2.0, np.sqrt(8) * 0.5, np.sqrt(8) / 4)),
        ([[5, 5], [5, 5]], 15, 1.0, (0.0, 0.0, 0.0)),
    ],
)
def test_casa_kinematics_worked_examples(track, fps, um, expected):
    kin = casa_kinematics(np.asarray(track, float), fps, um)
    np.testing.assert_allclose([kin["vcl"], kin["vsl"], kin["lin"]], expected, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=2, max_size=20))
def test_casa_kinematics_properties(points):
    kin = casa_kinematics(points, fps=15.0)
    assert kin["vsl"] <= kin["vcl"] + 1e-9
    assert 0.0 <= kin["lin"] <= 1.0 + 1e-9


@pytest.mark.parametrize(
    "track,fps,match",
    [([[0, 0]], 15, r"shape \(N, 2\)"), ([[0, 0, 0], [1, 1, 1]], 15, r"shape \(N, 2\)"),
     ([[0, 0], [np.nan, 1]], 15, "non-finite"), ([[0, 0], [1, 1]], 0, "fps and um_per_pixel")],
)
def test_casa_kinematics_errors(track, fps, match):
    with pytest.raises(ValueError, match=match):
        casa_kinematics(track, fps)


@pytest.mark.parametrize(
    "vcl,vsl,lin,expected",
    [(2.0, 1.0, 0.5, "immotile"), (60.0, 40.0, 0.66, "rapid_progressive"), (20.0, 10.0, 0.5, "slow_progressive"),
     (40.0, 3.0, 0.07, "non_progressive"), (40.0, 30.0, 0.2, "non_progressive")],
)
def test_motility_class(vcl, vsl, lin, expected):
    assert motility_class(vcl, vsl, lin) == expected


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize("centres", [[(20.0, 30.0)], [(10.3, 12.6), (40.0, 50.5), (55.2, 8.9)]])
@pytest.mark.parametrize("as_float", [False, True])
def test_detector_finds_blobs(centres, as_float):
    frame = blob_frame(64, centres)
    if as_float:
        frame = frame.astype(np.float32) / 255.0
    found = SpermDetector()(frame)
    assert len(found) == len(centres)
    for c in centres:
        assert np.min(np.linalg.norm(found - np.asarray(c), axis=1)) < 0.5


def test_detector_rgb_and_empty():
    frame = blob_frame(48, [(24, 24)])
    np.testing.assert_allclose(SpermDetector()(np.repeat(frame[..., None], 3, -1)), SpermDetector()(frame))
    assert SpermDetector()(np.zeros((32, 32), np.uint8)).shape == (0, 2)


@pytest.mark.parametrize(
    "kwargs,match", [({"threshold": 1.5}, "threshold"), ({"min_area": 10, "max_area": 5}, "min_area <= max_area")]
)
def test_detector_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpermDetector(**kwargs)
    with pytest.raises(ValueError, match="frame must be"):
        SpermDetector()(np.zeros((2, 3, 4, 5)))


# ---------------------------------------------------------------- tracking
def test_tracker_keeps_identities_of_moving_points():
    tracker = SpermTracker()
    starts = np.array([[10.0, 10.0], [40.0, 10.0], [25.0, 60.0]])
    vel = np.array([[0.0, 3.0], [0.5, 2.5], [-1.0, -2.0]])
    for t in range(20):
        pts = starts + t * vel
        order = np.random.default_rng(t).permutation(3)  # detection order must not matter
        tracker.update(pts[order], frame_index=t)
    tracks = tracker.all_tracks()
    assert len(tracks) == 3
    for tr in tracks:
        pos = tr.positions()
        assert len(pos) == 20
        k = int(np.argmin(np.linalg.norm(starts - pos[0], axis=1)))
        np.testing.assert_allclose(pos, starts[k] + np.arange(20)[:, None] * vel[k])


def test_tracker_bridges_a_missed_detection_and_ends_lost_tracks():
    tracker = SpermTracker(max_missed=2)
    for t in range(6):
        dets = np.array([[20.0, 10.0 + 2 * t]]) if t != 3 else np.zeros((0, 2))
        alive = tracker.update(dets, frame_index=t)
    assert [tr.track_id for tr in alive] == [0]
    assert [h[3] for h in alive[0].history] == [True, True, True, False, True, True]
    for t in range(6, 9):
        alive = tracker.update(np.zeros((0, 2)), frame_index=t)
    assert alive == [] and [tr.track_id for tr in tracker.finished] == [0]


def test_tracker_gate_starts_new_track():
    tracker = SpermTracker(max_distance=5.0)
    tracker.update(np.array([[10.0, 10.0]]))
    alive = tracker.update(np.array([[10.0, 30.0]]))
    assert sorted(tr.track_id for tr in alive) == [0, 1]


@pytest.mark.parametrize(
    "kwargs,match", [({"max_distance": 0}, "max_distance"), ({"max_missed": -1}, "max_missed")]
)
def test_tracker_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpermTracker(**kwargs)
    with pytest.raises(ValueError, match=r"detections must have shape \(N, 2\)"):
        SpermTracker().update(np.zeros((3, 3)))


def test_track_video_on_rendered_blobs():
    frames = np.stack([blob_frame(64, [(20, 10 + 2 * t), (45, 50 - 2 * t)]) for t in range(10)])
    tracks = track_video(torch.as_tensor(frames).numpy())
    assert len(tracks) == 2 and all(len(tr.positions()) == 10 for tr in tracks)


# ---------------------------------------------------------------- MOT metrics
def make_track(tid, entries):
    return Track(tid, np.zeros(4), np.eye(4), history=[(f, y, x, True) for f, y, x in entries])


def naive_clear_mot(gt, hyp_frames, radius):
    """Textbook CLEAR-MOT for tiny unambiguous cases: keep valid last matches, then nearest (Bernardin 2008)."""
    last, fp, fn, sw, n = {}, 0, 0, 0, 0
    for t in range(len(next(iter(gt.values())))):
        hyps = dict(hyp_frames.get(t, {}))
        matched = {}
        now = {g: track[t] for g, track in gt.items()}
        for g, pos in now.items():  # keep the previous correspondence when still valid
            h = last.get(g)
            if h in hyps and np.hypot(*(np.subtract(hyps[h], pos))) <= radius:
                matched[g] = h
        for g, pos in now.items():
            if g in matched:
                continue
            cands = [(np.hypot(*(np.subtract(hp, pos))), h) for h, hp in hyps.items() if h not in matched.values()]
            cands = [c for c in cands if c[0] <= radius]
            if cands:
                matched[g] = min(cands)[1]
                if g in last and last[g] != matched[g]:
                    sw += 1
        n += len(gt)
        fn += len(gt) - len(matched)
        fp += len(hyps) - len(matched)
        last.update(matched)
    return 1 - (fn + fp + sw) / n, sw, fp, fn


@pytest.mark.parametrize(
    "hyp_tracks",
    [
        # perfect
        [[(0, 10, 10), (1, 10, 12), (2, 10, 14), (3, 10, 16)], [(0, 40, 40), (1, 40, 40), (2, 40, 40), (3, 40, 40)]],
        # identity switch on object 0 at frame 2, one false positive, one miss of object 1 at frame 3
        [[(0, 10, 10), (1, 10, 12)], [(2, 10, 14), (3, 10, 16)], [(0, 40, 40), (1, 40, 40), (2, 40, 40)],
         [(1, 70, 70)]],
    ],
)
def test_evaluate_tracking_matches_naive_clear_mot(hyp_tracks):
    gt = {0: np.array([[10, 10], [10, 12], [10, 14], [10, 16]], float), 1: np.full((4, 2), 40.0)}
    tracks = [make_track(i, e) for i, e in enumerate(hyp_tracks)]
    hyp_frames = {}
    for tr in tracks:
        for f, y, x, _ in tr.history:
            hyp_frames.setdefault(f, {})[tr.track_id] = (y, x)
    mota, sw, fp, fn = naive_clear_mot(gt, hyp_frames, 5.0)
    m = evaluate_tracking(gt, tracks, 5.0)
    assert m["mota"] == pytest.approx(mota)
    assert (m["num_switches"], m["num_false_positives"], m["num_misses"]) == (sw, fp, fn)


def test_evaluate_tracking_errors():
    with pytest.raises(ValueError, match="same shape"):
        evaluate_tracking({0: np.zeros((3, 2)), 1: np.zeros((4, 2))}, [])
