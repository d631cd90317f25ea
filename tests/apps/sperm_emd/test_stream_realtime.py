"""The sperm stream never falls behind a live source: scheduler, paced/camera sources and the policy end to end.

The end-to-end tests run on a simulated clock: the fake network and the fake detector advance it by a cost the test
sets, the paced source sleeps by advancing it, so the expected rates and grade ages are computed from those costs and
do not depend on the machine's speed.
"""

from __future__ import annotations

import csv
import json
import math
import threading

import numpy as np
import pytest
import torch

from monai_ext.apps.sperm_emd.stream import CameraFrames, PacedFrames, RescoreScheduler, SpermStream

FPS = 15.0


class SimClock:
    """Seconds that pass only when told to."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 0.0)


class SlowScorer(torch.nn.Module):
    """Grade network whose batch of ``n`` clips costs ``overhead + per_clip * n`` simulated seconds."""

    def __init__(self, clock: SimClock, overhead: float, per_clip: float) -> None:
        super().__init__()
        self.clock, self.overhead, self.per_clip = clock, overhead, per_clip
        self.bias = torch.nn.Parameter(torch.zeros(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.sleep(self.overhead + self.per_clip * x.shape[0])
        return self.bias.expand(x.shape[0], 5) + x.mean(dim=(1, 2, 3, 4))[:, None]


class ScriptedDetector:
    """Detections of ``num`` sperm swimming right at 0.5 px/frame; the frame index is read from pixel (0, 0..1).
    Each call costs ``cost`` simulated seconds (the per-frame work outside the network)."""

    def __init__(self, clock: SimClock, num: int = 10, cost: float = 0.004) -> None:
        self.clock, self.num, self.cost = clock, num, cost

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.clock.sleep(self.cost)
        t = int(frame[0, 0]) * 256 + int(frame[0, 1])
        j = np.arange(self.num)
        return np.stack([15.0 + 22 * (j % 5), 20.0 + 40 * (j // 5) + 0.5 * t], 1)


def scripted_frames(n: int, size: int = 128) -> list[np.ndarray]:
    frames = []
    for t in range(n):
        f = np.full((size, size), 30, np.uint8)
        f[0, 0], f[0, 1] = divmod(t, 256)
        frames.append(f)
    return frames


def make_stream(clock, overhead, per_clip, rescore_every, num=10, detect_cost=0.004):
    return SpermStream(SlowScorer(clock, overhead, per_clip), crop_size=16, clip_length=4,
                       rescore_every=rescore_every, fps=FPS, precision="fp32",
                       detector=ScriptedDetector(clock, num, detect_cost), clock=clock, sleep=clock.sleep)


# ------------------------------------------------------------------------------------------------- end to end
def test_live_source_keeps_the_source_rate_with_a_slow_scorer(tmp_path):
    """15 fps live source, 10 sperm, 5 ms + 25 ms per clip: offline re-scoring of every track every 2 frames runs at
    ~7.6 fps; live, the stream takes every frame at 15 fps and refreshes 2 tracks per frame (round robin)."""
    overhead, per_clip, detect, num, k = 0.005, 0.025, 0.004, 10, 2
    clock = SimClock()
    stream = make_stream(clock, overhead, per_clip, k, num, detect)
    offline = stream.run(scripted_frames(60), verbose=False, realtime=False)
    # offline: a batch of all 10 tracks every 2 frames -> (2 * detect + overhead + 10 * per_clip) per 2 frames
    assert offline["fps"] < 10 and offline["dropped_frames"] == 0

    stats = stream.run(scripted_frames(60), verbose=False, realtime=True, output_csv=tmp_path / "t.csv",
                       output_json=tmp_path / "s.json")
    assert stats["frames"] == 60 and stats["dropped_frames"] == 0 and stats["late_frames"] == 0
    # every frame taken at its arrival: 60 frames span 59 frame periods plus the last frame's work
    assert 60 / (59 / FPS + 1 / FPS) <= stats["fps"] <= 60 / (59 / FPS)
    # clips that fit in a frame: period - headroom - detection - overhead, at per_clip each
    per_frame = math.floor((1 / FPS - 0.1 / FPS - detect - overhead) / per_clip)
    assert per_frame == 2 and stats["mean_batch"] == pytest.approx(per_frame)
    # round robin over 10 tracks at 2 per frame: each grade is at most ceil(10 / 2) - 1 frames old
    assert stats["staleness_max_frames"] == math.ceil(num / per_frame) - 1
    assert stats["staleness_max_s"] == pytest.approx(stats["staleness_max_frames"] / FPS)
    assert stats["rescores_per_track_s"] == pytest.approx(per_frame * FPS / num, rel=0.1)
    assert stats["max_lag_ms"] < 1000 / FPS
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == num
    for r in rows:  # the reported age of each track's grade on its last frame
        assert int(r["score_age"]) == int(r["last_frame"]) - int(r["last_scored_frame"])
        assert 0 <= int(r["max_score_age"]) <= math.ceil(num / per_frame) - 1
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["stats"]["staleness_max_frames"] == stats["staleness_max_frames"]
    assert [t["score_age"] for t in saved["tracks"]] == [int(r["score_age"]) for r in rows]


def test_enough_budget_scores_every_track_on_every_frame():
    clock = SimClock()
    stream = make_stream(clock, overhead=0.0001, per_clip=0.0005, rescore_every=1, num=6)
    stats = stream.run(scripted_frames(30), verbose=False, realtime=True)
    assert stats["frames"] == 30 and stats["dropped_frames"] == 0
    assert stats["staleness_max_frames"] == 0
    for st in stream.states.values():  # ready from frame 3 (clip of 4 frames) to frame 29: scored on each
        assert st.ready_at == 3 and st.num_scores == 30 - 3
    assert stream.batches == [6] * 27


def test_clip_longer_than_a_frame_borrows_the_source_buffer():
    """One clip (80 ms) does not fit in a 15 fps frame next to detection (4 ms) but fits with the buffer's spare
    frame: the stream scores one clip whenever it is on time and skips scoring while late. No frame is lost, the lag
    stays under two frame periods and the clips scored approach the sustainable rate (period - detection) / clip."""
    clock = SimClock()
    per_clip, detect = 0.08, 0.004
    stream = make_stream(clock, overhead=0.0, per_clip=per_clip, rescore_every=4, num=4, detect_cost=detect)
    stats = stream.run(scripted_frames(90), verbose=False, realtime=True, buffer=2)
    assert stats["frames"] == 90 and stats["dropped_frames"] == 0 and stats["forced_scores"] == 0
    assert stats["borrowed_scores"] == stats["clips_scored"] > 0 and stats["mean_batch"] == 1
    assert stats["max_lag_ms"] < 2000 / FPS and stats["late_frames"] > 0
    ready_frames = 90 - 3  # scoring can start once the first clip of 4 frames is complete
    sustainable = ready_frames * (1 / FPS - detect) / per_clip
    assert 0.6 * sustainable <= stats["clips_scored"] <= sustainable + 1
    # without a spare frame in the source buffer it cannot borrow: one clip forced every `patience` frames
    strict = make_stream(SimClock(), overhead=0.0, per_clip=per_clip, rescore_every=4, num=4, detect_cost=detect)
    strict_stats = strict.run(scripted_frames(90), verbose=False, realtime=True, buffer=1)
    assert strict_stats["borrowed_scores"] == 0 and strict_stats["forced_scores"] == strict_stats["clips_scored"]
    assert strict_stats["clips_scored"] <= ready_frames // strict.scheduler.patience + 1


def test_scorer_slower_than_the_buffer_still_grades_and_reports_lost_frames():
    """One clip costs more than the frame period plus the buffer's spare: one clip is forced every ``patience``
    frames; every frame is processed or counted as lost, and the forced frames are reported late."""
    clock = SimClock()
    stream = make_stream(clock, overhead=0.01, per_clip=0.2, rescore_every=4, num=4)
    stats = stream.run(scripted_frames(60), verbose=False, realtime=True)
    assert stats["frames"] + stats["dropped_frames"] == 60 and stats["dropped_frames"] > 0
    assert stats["forced_scores"] >= 2 and stats["clips_scored"] == stats["forced_scores"]
    assert stats["borrowed_scores"] == 0 and stats["late_frames"] >= stats["forced_scores"] - 1
    assert sum(st.num_scores > 0 for st in stream.states.values()) >= 2


# ------------------------------------------------------------------------------------------------- scheduler
def test_scheduler_cost_model_and_affordable_batch():
    s = RescoreScheduler(rescore_every=4, fps=10, headroom=0.1)
    assert s.cost_model() is None and s.affordable(0.05) == 1 and s.affordable(0.005) == 0
    for n in (1, 2, 4, 8):
        s.record(n, 0.004 + 0.01 * n)
    a, b = s.cost_model()
    assert a == pytest.approx(0.004) and b == pytest.approx(0.01)
    # budget 0.1 - 0.01 headroom = 0.09 s: (0.09 - 0.004) / 0.01 = 8.6 -> 8 clips
    assert s.affordable(0.1) == 8 and s.affordable(0.012) == 0
    one = RescoreScheduler(fps=10, headroom=0.0)
    one.record(5, 0.05)  # a single batch size: cost per clip only
    assert one.cost_model() == (0.0, pytest.approx(0.01)) and one.affordable(0.035) == 3
    # a batch slowed down by another process barely moves the model (median per batch size)
    spiky, calm = RescoreScheduler(fps=10), RescoreScheduler(fps=10)
    for n in (1, 2, 4, 8):
        spiky.record(n, 0.004 + 0.01 * n)
        calm.record(n, 0.004 + 0.01 * n)
    for seconds in (0.014, 0.2, 0.014):
        spiky.record(1, seconds)
        calm.record(1, 0.014)
    assert sum(spiky.cost_model()) == pytest.approx(sum(calm.cost_model()), abs=1e-9)


@pytest.mark.parametrize(
    "candidates,frame,time_left,expected",
    [
        # offline: all ready tracks on multiples of rescore_every, none otherwise
        ([(0, 9, True), (1, 0, False)], 8, None, [0, 1]),
        ([(0, 9, True), (1, 0, False)], 9, None, []),
        # live: never-scored first, then stalest; tracks younger than rescore_every are not due
        ([(0, 5, True), (1, 9, True), (2, 1, False), (3, 3, True)], 9, 1.0, [2, 1, 0]),
        ([(0, 5, True), (1, 9, True), (2, 1, False), (3, 3, True)], 9, 0.0367, [2, 1]),  # room for 2 clips
    ],
)
def test_scheduler_selection(candidates, frame, time_left, expected):
    s = RescoreScheduler(rescore_every=4, fps=10, headroom=0.1)
    s.record(1, 0.01)
    assert s.select(candidates, frame, time_left) == expected


def test_scheduler_forces_one_clip_after_patience():
    s = RescoreScheduler(rescore_every=2, fps=10, patience=3)
    s.record(1, 1.0)  # one clip: 1 s, never fits a 0.1 s frame
    picks = [s.select([(0, 5, True), (1, 7, True)], f, 0.09) for f in range(7)]
    assert picks == [[], [], [1], [], [], [1], []] and s.forced == 2


@pytest.mark.parametrize("kwargs", [{"rescore_every": 0}, {"fps": 0}, {"headroom": 1.0}, {"patience": 0},
                                    {"history": 0}])
def test_scheduler_errors(kwargs):
    with pytest.raises(ValueError, match="rescore_every >= 1"):
        RescoreScheduler(**kwargs)


# ------------------------------------------------------------------------------------------------- sources
def test_paced_frames_lose_what_a_slow_consumer_misses():
    """10 fps, buffer 1, 0.25 s per frame: frames 0, 2, 5, 7 are taken (worked by hand), the other 6 lost."""
    clock = SimClock()
    src = PacedFrames(list(range(10)), fps=10, buffer=1, clock=clock, sleep=clock.sleep)
    taken = []
    for item in src:
        taken.append((item.index, item.image, round(item.arrival - src.start, 6)))
        clock.sleep(0.25)
    assert taken == [(0, 0, 0.0), (2, 2, 0.2), (5, 5, 0.5), (7, 7, 0.7)]
    assert src.dropped == 6 and src.delivered == 4


def test_paced_frames_wait_for_the_source():
    clock = SimClock()
    src = PacedFrames(list(range(5)), fps=20, buffer=2, clock=clock, sleep=clock.sleep)
    t0 = clock()
    items = list(src)  # a consumer that takes no time waits for each frame
    assert [i.index for i in items] == [0, 1, 2, 3, 4] and src.dropped == 0
    assert clock() - t0 == pytest.approx(4 / 20) and src.waited == pytest.approx(4 / 20)
    assert src.next_arrival() == pytest.approx(t0 + 5 / 20)
    with pytest.raises(ValueError, match="fps > 0"):
        PacedFrames([], fps=0)


def test_camera_frames_keep_the_newest():
    all_yielded, release = threading.Event(), threading.Event()

    def camera():
        yield from range(5)
        all_yielded.set()  # the reader asks for a 6th frame: the 5th is queued
        release.wait(5)

    cam = CameraFrames(camera(), fps=15, buffer=2)
    it = iter(cam)
    first = next(it)
    assert all_yielded.wait(5)
    release.set()
    rest = [item.image for item in it]
    taken = [first.image, *rest]
    assert rest == [3, 4] or (first.image >= 3 and rest == [4]), taken
    assert cam.dropped == 5 - len(taken) and cam.delivered == len(taken)


def test_camera_frames_pass_on_reader_errors():
    def broken():
        yield 1
        raise OSError("camera unplugged")

    with pytest.raises(OSError, match="unplugged"):
        list(CameraFrames(broken(), fps=15))
