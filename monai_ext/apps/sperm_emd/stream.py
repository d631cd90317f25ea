"""Real-time sperm grading on a video stream: detect -> track -> re-score tracks within the frame budget.

:class:`SpermStream` consumes frames one at a time (a video file, a camera through imageio/PyAV, or any iterable of
arrays). For every frame it detects heads, updates the tracker and appends each head position to its track's ring
buffer of the last ``T`` positions (the last ``T`` frames are kept once, for all tracks). Tracks seen in each of the
last ``T`` frames are *ready*: they are cropped exactly as the training clips were (``crop_mode``, see
:mod:`monai_ext.apps.sperm_emd.data`) and scored in one batch by the grade network. Which ready tracks are scored on
a frame is the :class:`RescoreScheduler`'s decision:

- **offline** (a file read as fast as possible): every ``rescore_every`` frames, all ready tracks;
- **real time** (a camera, or a file replayed at its frame rate with ``realtime=True``): a track is due once its grade
  is ``rescore_every`` frames old; the due tracks are scored stalest first, only as many as the network time (a
  linear model of batch size fitted to the measured batches) fits before the next frame arrives. When scoring cannot
  keep up, grades are refreshed less often instead of frames being lost, and each track's *score age* (frames since
  the clip of its current grade ended) is reported per frame, per track and overall.

At start-up (``precision="auto"``) the stream probes the device (:func:`monai_ext.utils.hardware.probe_hardware`)
and times the network on dummy clips in fp32, bf16 autocast (only where bf16 is native) and int8 dynamic quantisation
(:func:`monai_ext.utils.hardware.calibrate_precision`), keeping the fastest variant whose grades stay within a
tolerance of fp32's; the choice and the measured cost per clip are logged and returned with the run's statistics.

The per-frame work outside the network is kept small for 2-core PCs: an FFT difference-of-Gaussians detector, O(1)
kinematics per frame (:class:`~monai_ext.metrics.kinematics.RunningKinematics`), annotations composed from
cached label bitmaps (a label is re-rendered only when its text changes; the kinematics text every
``label_every`` frames), and the annotated video encoded by a writer thread (PyAV/libx264) off the loop. Each output
frame shows the track ids, the grade-distribution bars (A..E) with the grade's age in seconds and the CASA kinematics
(VCL, VSL in um/s, LIN); a per-track CSV and a JSON of the run's statistics are written at the end. Nothing leaves
the machine.

Command line (reads a video file, or ``<video0>`` / ``0`` for the first camera)::

    python -m monai_ext.apps.sperm_emd.stream --video in.mp4 --checkpoint models/timesformer_tiny_emd/model.pt \\
        --output_video out.mp4 --output_csv tracks.csv --realtime
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import logging
import math
import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from monai_ext.metrics.kinematics import RunningKinematics, motility_class
from monai_ext.utils.hardware import (
    PRECISIONS,
    HardwareInfo,
    PrecisionChoice,
    calibrate_precision,
    make_precision_variant,
    probe_hardware,
)

from .data import CROP_MODES, clip_crops
from .networks import build_network
from .tracking import SpermDetector, SpermTracker

__all__ = [
    "CameraFrames",
    "LiveFrame",
    "PacedFrames",
    "RescoreScheduler",
    "SpermStream",
    "default_stream_video",
    "is_live_source",
    "iter_frames",
    "load_stream_network",
    "load_stream_weights",
    "optimise_network",
]

logger = logging.getLogger(__name__)

GRADE_NAMES = ("A", "B", "C", "D", "E")
_COLOURS = ((255, 80, 80), (80, 220, 80), (90, 160, 255), (255, 210, 60), (220, 100, 255), (60, 230, 230))
CSV_COLUMNS = ("track_id", "first_frame", "last_frame", "detections", "num_scores", "last_scored_frame", "score_age",
               "mean_score_age", "max_score_age", "vcl", "vsl", "lin", "motility", *[f"p_{g}" for g in GRADE_NAMES],
               "grade")


def optimise_network(network: torch.nn.Module, quantize: bool = False, compile: bool = False) -> torch.nn.Module:
    """CPU inference speed-ups: int8 dynamic quantisation of the linear layers and/or ``torch.compile``.

    Dynamic quantisation (weights int8, activations quantised on the fly) applies to ``nn.Linear`` only, which holds
    almost all of a TimeSformer's weights and FLOPs; convolutional backbones gain little from it. The stream's
    ``precision="auto"`` decides on quantisation by measurement instead (see :class:`SpermStream`).
    """
    network = network.eval()
    if quantize:
        network, _ = make_precision_variant(network, "int8")
    if compile:
        network = torch.compile(network)
    return network


# ----------------------------------------------------------------------------------------------------------- sources
class LiveFrame(NamedTuple):
    """One frame of a source: its index in the source, when it became available (clock seconds; ``None`` offline)
    and the grey ``uint8`` image."""

    index: int
    arrival: float | None
    image: np.ndarray


def is_live_source(source: object) -> bool:
    """Whether ``source`` names a camera: an ``int`` index or a ``"<video0>"``-style string."""
    return (isinstance(source, int) and not isinstance(source, bool)) or (
        isinstance(source, str) and source.startswith("<video"))


def _to_grey(frame: np.ndarray) -> np.ndarray:
    """Grey ``uint8`` of a frame, rounding the RGB mean exactly as :func:`~monai_ext.apps.sperm_emd.data.read_video`
    (so the stream crops what training cropped); integer arithmetic for ``uint8`` RGB (``round(s / 3)`` equals
    ``(s + 1) // 3`` for an integer sum ``s``)."""
    frame = np.asarray(frame)
    if frame.ndim != 3:
        return frame
    if frame.dtype == np.uint8:
        s = frame[..., 0].astype(np.uint16) + frame[..., 1] + frame[..., 2]
        return ((s + 1) // 3).astype(np.uint8)
    return frame[..., :3].mean(-1).round().astype(np.uint8)


def _decode_file(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB frames of a video file straight from PyAV (several times faster per frame than ``imageio.imiter``)."""
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot open video '{path}': {e}") from e
    with container:
        try:
            stream = container.streams.video[0]
        except IndexError as e:
            raise ValueError(f"'{path}' holds no video stream.") from e
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def iter_frames(source: str | int | os.PathLike | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Grey ``uint8`` frames of a video file, of a camera (``"<video0>"`` or index ``0``) or of an iterable of arrays.

    Raises:
        FileNotFoundError: for a path that is not a file (raised at the call, not at the first frame).
    """
    if is_live_source(source):
        import imageio.v3 as iio

        frames: Iterable[np.ndarray] = iio.imiter(f"<video{source}>" if isinstance(source, int) else source,
                                                  plugin="pyav")
    elif isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"video source not found: '{source}' (a file path, '<video0>' or a camera "
                                    "index for a camera).")
        frames = _decode_file(source)
    else:
        frames = source
    return (_to_grey(frame) for frame in frames)


class PacedFrames:
    """A finite frame sequence replayed like a camera: frame ``k`` becomes available ``k / fps`` seconds after the
    first is asked for, and a consumer more than ``buffer`` frames behind loses the oldest frames, as from a camera
    driver's ring buffer. Waiting for a frame sleeps (``sleep``); lost frames are counted in ``dropped``.

    Args:
        frames: the frames (e.g. :func:`iter_frames` of a video file).
        fps: the source frame rate.
        buffer: frames the "driver" holds before the oldest is lost.
        clock: seconds (``time.perf_counter``; tests pass a simulated clock).
        sleep: waits the given seconds (``time.sleep``; tests advance the simulated clock).

    Raises:
        ValueError: for ``fps <= 0`` or ``buffer < 1``.
    """

    def __init__(self, frames: Iterable[np.ndarray], fps: float, buffer: int = 2,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> None:
        if not fps > 0 or buffer < 1:
            raise ValueError(f"need fps > 0 and buffer >= 1, got fps={fps}, buffer={buffer}.")
        self.frames, self.fps, self.buffer = frames, float(fps), int(buffer)
        self.clock, self.sleep = clock, sleep
        self.start: float | None = None
        self.next_index = 0
        self.delivered = self.dropped = 0
        self.waited = 0.0

    def next_arrival(self) -> float:
        """Clock time at which the frame after the last delivered one becomes available."""
        return (self.start if self.start is not None else self.clock()) + self.next_index / self.fps

    def __iter__(self) -> Iterator[LiveFrame]:
        it = iter(self.frames)
        end = object()
        while True:
            now = self.clock()
            if self.start is None:
                self.start = now
            newest = math.floor((now - self.start) * self.fps + 1e-9)
            while self.next_index < newest - self.buffer + 1:  # overwritten in the driver's buffer: lost
                if next(it, end) is end:
                    return
                self.next_index += 1
                self.dropped += 1
            image = next(it, end)
            if image is end:
                return
            arrival = self.start + self.next_index / self.fps
            wait = arrival - self.clock()
            if wait > 0:
                self.sleep(wait)
                self.waited += wait
            index = self.next_index
            self.next_index += 1
            self.delivered += 1
            yield LiveFrame(index, arrival, image)

    def close(self) -> None:
        """Nothing to release (kept for symmetry with :class:`CameraFrames`)."""


class CameraFrames:
    """A live source read by a background thread that keeps only the newest ``buffer`` frames.

    A camera delivers at its own rate whether or not the consumer keeps up; frames the consumer did not take before
    ``buffer`` newer ones arrived are lost and counted in ``dropped``. Iterating starts the reader thread.

    Args:
        frames: the camera's frames (e.g. :func:`iter_frames` of ``"<video0>"``).
        fps: the camera's nominal frame rate (to predict the next frame's arrival).
        buffer: frames kept for the consumer.
        clock: seconds.

    Raises:
        ValueError: for ``fps <= 0`` or ``buffer < 1``.
    """

    def __init__(self, frames: Iterable[np.ndarray], fps: float, buffer: int = 2,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not fps > 0 or buffer < 1:
            raise ValueError(f"need fps > 0 and buffer >= 1, got fps={fps}, buffer={buffer}.")
        self.frames, self.fps, self.clock = frames, float(fps), clock
        self._queue: deque[LiveFrame] = deque(maxlen=int(buffer))
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self.read = self.delivered = self.dropped = 0
        self.waited = 0.0
        self._last_arrival: float | None = None

    def _reader(self) -> None:
        try:
            for image in self.frames:
                if self._stop.is_set():
                    break
                with self._cond:
                    if len(self._queue) == self._queue.maxlen:
                        self.dropped += 1
                    self._queue.append(LiveFrame(self.read, self.clock(), image))
                    self.read += 1
                    self._cond.notify()
        except BaseException as e:  # handed to the consumer thread
            self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    def next_arrival(self) -> float:
        """Predicted clock time of the next frame: the last one's arrival plus one frame period."""
        return (self._last_arrival if self._last_arrival is not None else self.clock()) + 1.0 / self.fps

    def __iter__(self) -> Iterator[LiveFrame]:
        threading.Thread(target=self._reader, name="sperm-camera", daemon=True).start()
        while True:
            t = self.clock()
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._done)
                item = self._queue.popleft() if self._queue else None
            self.waited += self.clock() - t
            if item is None:
                if self._error is not None:
                    raise self._error
                return
            self._last_arrival = item.arrival
            self.delivered += 1
            yield item

    def close(self) -> None:
        """Stop reading after the current frame."""
        self._stop.set()


class _OfflineFrames:
    """A file or iterable read as fast as possible (no arrival times, nothing lost)."""

    def __init__(self, frames: Iterable[np.ndarray]) -> None:
        self.frames = frames
        self.delivered = self.dropped = 0
        self.waited = 0.0

    def __iter__(self) -> Iterator[LiveFrame]:
        for i, image in enumerate(self.frames):
            self.delivered += 1
            yield LiveFrame(i, None, image)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------------- scheduler
class RescoreScheduler:
    """Chooses the tracks to re-score on each frame.

    Offline (``time_left=None``): every ``rescore_every`` frames, all ready tracks, in one batch.

    Real time: a track is *due* when it was never scored or its grade is at least ``rescore_every`` frames old. Due
    tracks are ordered never-scored first, then stalest first (round robin over the tracks when the budget is
    short), and the first ``n`` are scored, ``n`` the largest batch whose predicted time ``a + b n`` fits in the time
    left before the next frame minus ``headroom`` of a frame period. ``a`` (per-batch overhead) and ``b`` (per clip)
    are fitted to the last ``history`` measured batches (seeded at start-up, see :meth:`cost_model`).

    When not even one clip fits before the next frame (one clip costs nearly a frame period), the stream may borrow
    from the source's buffer: if it is on time (``time_left >= 0``) and one clip fits within ``time_left + spare``
    (``spare``: the time the source holds frames, ``(buffer - 1)`` periods), the stalest track is scored and the
    frame ends late but no frame is lost; the following frames, starting late, skip scoring until the stream is on
    time again, so the lag stays under ``spare``. If even that does not fit for ``patience`` frames while tracks are
    due, one clip is forced anyway, so grades keep coming at the cost of occasional lost frames.

    Args:
        rescore_every: frames between two scores of a track (the refresh it gets when the budget allows).
        fps: source frame rate (for ``headroom``).
        headroom: fraction of a frame period kept free for jitter.
        patience: frames without any score, while tracks are due, before one clip is forced (default
            ``2 * rescore_every``).
        history: batches remembered for the cost model.

    Raises:
        ValueError: for ``rescore_every < 1``, ``fps <= 0``, ``headroom`` outside ``[0, 1)``, ``patience < 1`` or
            ``history < 1``.

    Example::

        >>> s = RescoreScheduler(rescore_every=4, fps=15)
        >>> s.record(2, 0.020)  # two clips took 20 ms
        >>> s.select([(0, 9, True), (1, 5, True), (2, 0, False), (3, 1, True)], frame_index=10, time_left=0.031)
        [2, 0]
    """

    def __init__(self, rescore_every: int = 8, fps: float = 15.0, headroom: float = 0.1, patience: int | None = None,
                 history: int = 32) -> None:
        if rescore_every < 1 or not fps > 0 or not 0 <= headroom < 1 or history < 1 or (
                patience is not None and patience < 1):
            raise ValueError(f"need rescore_every >= 1, fps > 0, 0 <= headroom < 1, patience >= 1 and history >= 1; "
                             f"got {rescore_every}, {fps}, {headroom}, {patience}, {history}.")
        self.rescore_every, self.fps, self.headroom = int(rescore_every), float(fps), float(headroom)
        self.patience = int(patience) if patience is not None else 2 * self.rescore_every
        self.history = int(history)
        self.reset()

    def reset(self) -> None:
        """Forget the cost samples and the frame counter."""
        self.samples: deque[tuple[int, float]] = deque(maxlen=self.history)
        self.frames_without_score = 0
        self.borrowed = self.forced = 0

    def record(self, clips: int, seconds: float) -> None:
        """Add a measured batch (``clips`` clips scored in ``seconds``) to the cost model."""
        if clips > 0:
            self.samples.append((int(clips), float(seconds)))

    def cost_model(self) -> tuple[float, float] | None:
        """``(a, b)``: predicted seconds ``a + b n`` for a batch of ``n`` clips (``None`` before any sample).

        A least-squares line through the *median* time of each batch size seen, so that a batch slowed down by
        another process does not make the stream score less for the next ``history`` batches (the deadline absorbs
        such a late frame); with a single batch size, the median time per clip and no overhead.
        """
        if not self.samples:
            return None
        by_size: dict[int, list[float]] = {}
        for n, t in self.samples:
            by_size.setdefault(n, []).append(t)
        n = np.array(sorted(by_size), np.float64)
        t = np.array([np.median(by_size[int(k)]) for k in n], np.float64)
        if len(n) > 1:
            b, a = np.polyfit(n, t, 1)
            if b > 0 and a >= 0:
                return float(a), float(b)
        return 0.0, float(np.median(t / n))

    def affordable(self, time_left: float) -> int:
        """Largest batch predicted to finish within ``time_left`` seconds minus the headroom."""
        budget = time_left - self.headroom / self.fps
        model = self.cost_model()
        if model is None:  # nothing measured yet: one clip, to learn the cost
            return 1 if budget > 0 else 0
        a, b = model
        return max(int(math.floor((budget - a) / b)), 0) if budget > a else 0

    def select(self, candidates: Sequence[tuple[int, int, bool]], frame_index: int,
               time_left: float | None = None, spare: float = 0.0) -> list[int]:
        """Track ids to score now.

        Args:
            candidates: ``(track_id, score_age, scored)`` of every ready track; ``score_age`` in frames (since the
                track became ready when it was never scored).
            frame_index: the current frame.
            time_left: seconds until the next frame is due (``None``: offline policy).
            spare: seconds the source holds frames beyond the next one (borrowed only when no clip fits otherwise).
        """
        if time_left is None:
            return [c[0] for c in candidates] if frame_index % self.rescore_every == 0 else []
        due = sorted((c for c in candidates if not c[2] or c[1] >= self.rescore_every),
                     key=lambda c: (c[2], -c[1], c[0]))
        n = min(len(due), self.affordable(time_left))
        if n == 0 and due:
            if spare > 0 and time_left >= 0 and self.affordable(time_left + spare) >= 1:
                n = 1
                self.borrowed += 1
            else:
                self.frames_without_score += 1
                if self.frames_without_score >= self.patience:
                    n = 1
                    self.forced += 1
        if n:
            self.frames_without_score = 0
        return [c[0] for c in due[:n]]


# ------------------------------------------------------------------------------------------------- drawing, writing
class _Overlay:
    """Annotation drawing from cached label bitmaps (PIL renders a label only the first time its text appears)."""

    _RING = [(dy, dx) for dy in range(-6, 7) for dx in range(-6, 7) if abs(math.hypot(dy, dx) - 5) < 0.5]

    def __init__(self, max_cache: int = 4096) -> None:
        from PIL import ImageFont

        self.font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") \
            else ImageFont.load_default()
        self.height = 11
        self.max_cache = max_cache
        self._cache: dict[str, np.ndarray] = {}
        self._ring = np.array(self._RING).T

    def text(self, s: str) -> np.ndarray:
        """Boolean mask of ``s`` rendered in the default bitmap font."""
        mask = self._cache.get(s)
        if mask is None:
            from PIL import Image, ImageDraw

            img = Image.new("L", (max(int(math.ceil(self.font.getlength(s))), 1), self.height))
            ImageDraw.Draw(img).text((0, 0), s, fill=255, font=self.font)
            mask = np.asarray(img) > 127
            if len(self._cache) >= self.max_cache:
                self._cache.clear()
            self._cache[s] = mask
        return mask

    @staticmethod
    def paste(out: np.ndarray, mask: np.ndarray, y: int, x: int, colour: tuple[int, int, int]) -> None:
        h, w = out.shape[:2]
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + mask.shape[0], h), min(x + mask.shape[1], w)
        if y1 > y0 and x1 > x0:
            out[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = colour

    def ring(self, out: np.ndarray, y: float, x: float, colour: tuple[int, int, int]) -> None:
        ys, xs = self._ring[0] + int(round(y)), self._ring[1] + int(round(x))
        ok = (ys >= 0) & (ys < out.shape[0]) & (xs >= 0) & (xs < out.shape[1])
        out[ys[ok], xs[ok]] = colour

    @staticmethod
    def bars(out: np.ndarray, probs: np.ndarray, y: int, x: int, colour: tuple[int, int, int]) -> None:
        h, w = out.shape[:2]
        for k, p in enumerate(probs):
            top, left = int(round(y - float(p) * 12)), x + 4 * k
            y0, y1, x0, x1 = max(top, 0), min(y, h), max(left, 0), min(left + 3, w)
            if y1 > y0 and x1 > x0:
                out[y0:y1, x0:x1] = colour


class _VideoWriter:
    """H.264 mp4 encoding (PyAV, libx264) in a background thread; ``write`` only queues the frame.

    PyAV releases the GIL while encoding, so on two cores the encoder runs beside the analysis. A full queue blocks
    the caller (the stream then measures the wait as frame time and scores less).
    """

    def __init__(self, path: str | os.PathLike, fps: float, preset: str = "veryfast", max_queue: int = 32) -> None:
        import av

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._container = av.open(self.path, "w")
        self._stream = self._container.add_stream("libx264", rate=max(int(round(fps)), 1), options={"preset": preset})
        self._stream.pix_fmt = "yuv420p"
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self.frames = 0
        self._thread = threading.Thread(target=self._work, name="sperm-video-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        import av

        opened = False
        try:
            while (rgb := self._queue.get()) is not None:
                if self._error is not None:
                    continue  # drain so that the producer never blocks forever
                try:
                    h, w = rgb.shape[:2]
                    if h % 2 or w % 2:  # yuv420p needs even sides: repeat the last row / column
                        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                    if not opened:
                        self._stream.height, self._stream.width = rgb.shape[:2]
                        opened = True
                    for packet in self._stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                        self._container.mux(packet)
                    self.frames += 1
                except BaseException as e:
                    self._error = e
            if self._error is None and opened:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except BaseException as e:
            self._error = e
        finally:
            self._container.close()

    def write(self, rgb: np.ndarray) -> None:
        """Queue one RGB frame.

        Raises:
            RuntimeError: when encoding an earlier frame failed (names the file).
        """
        if self._error is not None:
            raise RuntimeError(f"writing '{self.path}' failed: {self._error}") from self._error
        self._queue.put(rgb)

    def close(self) -> None:
        """Encode the queued frames, finish the file.

        Raises:
            RuntimeError: when encoding failed (names the file).
        """
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"writing '{self.path}' failed: {self._error}") from self._error


# ------------------------------------------------------------------------------------------------------------ stream
class _TrackState:
    __slots__ = ("window", "kin", "first", "last", "seen", "probs", "num_scores", "scored_at", "ready_at", "age_sum",
                 "age_count", "age_max", "label", "label_frame")

    def __init__(self, clip_length: int, first: int, fps: float, um_per_pixel: float) -> None:
        # (frame index, y, x) of the last T frames of the track, detected or Kalman-predicted
        self.window: deque[tuple[int, float, float]] = deque(maxlen=clip_length)
        self.kin = RunningKinematics(fps, um_per_pixel)
        self.first = self.last = self.seen = first
        self.probs: np.ndarray | None = None
        self.num_scores = 0
        self.scored_at: int | None = None  # last frame of the clip behind the current grade
        self.ready_at: int | None = None  # first frame with a full clip
        self.age_sum = self.age_count = self.age_max = 0
        self.label = ""
        self.label_frame = -(10**9)

    def age(self, frame: int) -> int | None:
        ref = self.scored_at if self.scored_at is not None else self.ready_at
        return None if ref is None else frame - ref


class SpermStream:
    """Online detection, tracking and per-track grade distributions on a frame stream, within the source's rate.

    Args:
        network: grade network ``(N, 1, T, crop, crop)`` -> ``(N, K)`` logits (put in ``eval`` mode here).
        crop_size: crop side (the network's input size).
        clip_length: frames per clip ``T``.
        rescore_every: frames between two scores of a track (offline: all ready tracks every ``k`` frames; real
            time: the refresh each track gets when the budget allows, see :class:`RescoreScheduler`).
        fps: frame rate of the source (kinematics, the real-time budget, the camera's frame period).
        um_per_pixel: pixel size (for the kinematics).
        device: inference device.
        precision: ``"auto"`` (probe + calibration at start-up, see :meth:`prepare`), or a fixed ``"fp32"``,
            ``"bf16"`` (autocast; warns where bf16 is emulated) or ``"int8"`` (dynamic quantisation, CPU).
        detector: head detector (default :class:`SpermDetector()`).
        tracker: tracker (default :class:`SpermTracker()`).
        preprocessing: callable applied to the ``uint8`` crop batch ``(N, 1, T, H, W)`` tensor (default: ``/ 255``).
        inferer: MONAI-style ``inferer(inputs, network)`` (default: ``network(inputs)``).
        postprocessing: callable applied to the logits (default: softmax over grades).
        annotate: draw the annotated frames (``False`` for a headless benchmark of the analysis alone).
        crop_mode: ``"clip"`` (one window at the mean head position of the last ``T`` frames) or ``"head"``
            (head-centred crop per frame); must match the mode the network was trained with.
        scheduler: the re-scoring policy (default ``RescoreScheduler(rescore_every, fps)``).
        calibration_batch: clips per dummy batch of the calibration.
        clock: seconds (default ``time.perf_counter``; tests pass a simulated clock).
        sleep: waits for a paced source (default ``time.sleep``; tests advance the simulated clock).

    Raises:
        ValueError: for ``rescore_every``, ``clip_length``, ``crop_size`` or ``calibration_batch`` below 1, a
            non-positive ``fps``, an unknown ``crop_mode`` or ``precision``.

    Example::

        >>> from monai_ext.apps.sperm_emd import build_network
        >>> net = build_network("timesformer_tiny", img_size=48, num_layers=1)
        >>> stream = SpermStream(net, crop_size=48, precision="fp32")
        >>> out = stream.process_frame(np.zeros((64, 64), np.uint8))
        >>> out.shape
        (64, 64, 3)
    """

    label_every = 8  # frames between two refreshes of a track's kinematics text on the overlay

    def __init__(self, network: torch.nn.Module, crop_size: int = 48, clip_length: int = 8, rescore_every: int = 8,
                 fps: float = 15.0, um_per_pixel: float = 1.0, device: str | torch.device = "cpu",
                 precision: str = "auto", detector: SpermDetector | None = None, tracker: SpermTracker | None = None,
                 preprocessing: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 inferer: Callable[..., torch.Tensor] | None = None,
                 postprocessing: Callable[[torch.Tensor], torch.Tensor] | None = None, annotate: bool = True,
                 crop_mode: str = "clip", scheduler: RescoreScheduler | None = None, calibration_batch: int = 8,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> None:
        if min(rescore_every, clip_length, crop_size, calibration_batch) < 1:
            raise ValueError(f"rescore_every, clip_length, crop_size and calibration_batch must be >= 1, got "
                             f"{rescore_every}, {clip_length}, {crop_size}, {calibration_batch}.")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}.")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}.")
        if precision not in ("auto", *PRECISIONS):
            raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}.")
        self.crop_mode, self.precision = crop_mode, precision
        self.network = network.eval()
        self.crop_size, self.clip_length, self.rescore_every = int(crop_size), int(clip_length), int(rescore_every)
        self.fps, self.um_per_pixel = float(fps), float(um_per_pixel)
        self.device = torch.device(device)
        self.annotate = bool(annotate)
        self.detector = detector or SpermDetector()
        self.tracker = tracker or SpermTracker()
        self.preprocessing = preprocessing or (lambda x: x.float() / 255.0)
        self.inferer = inferer
        self.postprocessing = postprocessing or (lambda x: torch.softmax(x.float(), -1))
        self.scheduler = scheduler or RescoreScheduler(self.rescore_every, self.fps)
        self.calibration_batch = int(calibration_batch)
        self.clock, self.sleep = clock, sleep
        self.choice: PrecisionChoice | None = None
        self.hardware: HardwareInfo | None = None
        self._net: torch.nn.Module | None = None
        self._autocast: torch.dtype | None = None
        self.batch_costs: list[tuple[int, float]] = []  # (clips, seconds) measured by prepare()
        self._overlay: _Overlay | None = None
        self.reset()

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> PrecisionChoice | None:
        """Probe the device, set up the network in the stream's precision and measure its batch cost (done by
        :meth:`run`; call it before feeding :meth:`process_frame` yourself, else the first score does it).

        With ``precision="auto"`` the network is timed on ``calibration_batch`` dummy clips in every candidate
        precision (:func:`~monai_ext.utils.hardware.calibrate_precision`: bf16 only where native, the output pmfs
        within 0.05 of fp32's) and the fastest is kept. Then the chosen network scores dummy batches of 1, 2, 4 and
        ``calibration_batch`` clips, once to warm up (oneDNN builds its kernels per batch shape) and once timed with
        :attr:`clock`: these times seed the scheduler's cost model.

        Returns:
            The calibration result (``None`` for a fixed precision).

        Raises:
            ValueError: for ``precision="int8"`` on a CUDA device.
        """
        self.hardware = probe_hardware(self.device)
        self.choice = None
        shape = (self.calibration_batch, self.clip_length, self.crop_size, self.crop_size)
        clips = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
        if self.precision == "auto":
            example = self.preprocessing(torch.from_numpy(clips)[:, None].to(self.device))
            self.choice = calibrate_precision(self.network, example, self.hardware,
                                              output_transform=self.postprocessing)
            self._net, self._autocast = self.choice.network, self.choice.autocast_dtype
        else:
            if self.precision == "int8" and self.device.type != "cpu":
                raise ValueError(f"precision 'int8' (dynamic quantisation) runs on CPU only, device is {self.device}.")
            if self.precision == "bf16" and not self.hardware.native_bf16:
                warnings.warn(f"bf16 autocast without native bf16 ({self.hardware.bf16_reason}) is emulated and "
                              "usually several times slower than fp32; use precision='auto'.", stacklevel=2)
            self._net, self._autocast = make_precision_variant(self.network, self.precision)
        self.batch_costs = []
        for n in sorted({1, 2, 4, self.calibration_batch} & set(range(1, self.calibration_batch + 1))):
            self.score(clips[:n])
            t = self.clock()
            self.score(clips[:n])
            self.batch_costs.append((n, self.clock() - t))
        self.scheduler.reset()
        for n, seconds in self.batch_costs:
            self.scheduler.record(n, seconds)
        logger.info("sperm stream: precision %s, batch cost %s on %s", self.active_precision,
                    ", ".join(f"{n}: {1000 * t:.1f} ms" for n, t in self.batch_costs), self.hardware.summary())
        return self.choice

    @property
    def active_precision(self) -> str:
        """The precision in use (the calibrated choice for ``"auto"``)."""
        return self.choice.variant if self.choice is not None else self.precision

    def reset(self) -> None:
        """Forget all tracks, timers and statistics (the precision set-up is kept)."""
        self.tracker.reset()
        self.scheduler.reset()
        for n, seconds in self.batch_costs:  # the start-up measurements seed the cost model again
            self.scheduler.record(n, seconds)
        self.states: dict[int, _TrackState] = {}
        self.frames: deque[tuple[int, np.ndarray]] = deque(maxlen=self.clip_length)
        self.frame_index = -1
        self.timings = {"detect_track": 0.0, "crop": 0.0, "score": 0.0, "draw": 0.0}
        self.batches: list[int] = []
        self.age_histogram: collections.Counter[int] = collections.Counter()
        self.post_cost = 0.0  # EMA of the work after scoring (drawing, queueing the frame for the writer)
        self.spare = 0.0  # seconds a live source holds frames beyond the next one (set by run from its buffer)

    # ------------------------------------------------------------------ per frame
    @torch.no_grad()
    def score(self, clips: np.ndarray) -> np.ndarray:
        """Grade pmfs ``(N, K)`` of ``uint8`` clips ``(N, T, H, W)`` in one batch."""
        if self._net is None:
            self.prepare()
        x = self.preprocessing(torch.from_numpy(clips)[:, None].to(self.device))
        dtype = self._autocast
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = self._net(x) if self.inferer is None else self.inferer(x, self._net)
        return self.postprocessing(logits).float().cpu().numpy()

    def process_frame(self, frame: np.ndarray, frame_index: int | None = None, deadline: float | None = None,
                      draw: bool | None = None) -> np.ndarray | None:
        """Analyse one grey frame.

        Args:
            frame: grey ``(H, W)`` ``uint8`` frame.
            frame_index: its index in the source (default: the previous + 1; a jump means frames were lost).
            deadline: clock time by which the next frame is due (real-time policy); ``None``: offline policy.
            draw: draw the annotated frame (default ``annotate``).

        Returns:
            The annotated RGB frame, or ``None`` when not drawing.

        Raises:
            ValueError: for a ``frame_index`` not after the previous one.
        """
        idx = self.frame_index + 1 if frame_index is None else int(frame_index)
        if idx <= self.frame_index:
            raise ValueError(f"frame_index must increase: got {idx} after {self.frame_index}.")
        self.frame_index = idx
        clock = self.clock
        t0 = clock()
        self.frames.append((idx, frame))
        alive = self.tracker.update(self.detector(frame), frame_index=idx)
        first = idx - self.clip_length + 1
        current, candidates = [], []
        for tr in alive:
            st = self.states.get(tr.track_id)
            if st is None:
                st = self.states[tr.track_id] = _TrackState(self.clip_length, idx, self.fps, self.um_per_pixel)
            _, y, x, detected = tr.history[-1]
            st.window.append((idx, y, x))
            st.seen = idx
            if detected:
                st.kin.add(y, x, idx)
                st.last = idx
            current.append((tr.track_id, y, x))
            if len(st.window) == self.clip_length and st.window[0][0] == first:
                if st.ready_at is None:
                    st.ready_at = idx
                candidates.append((tr.track_id, st.age(idx), st.scored_at is not None))
        t1 = clock()
        time_left = None if deadline is None else deadline - t1 - self.post_cost
        chosen = self.scheduler.select(candidates, idx, time_left, self.spare) if candidates else []
        t2 = t3 = t1
        if chosen:
            frames = [f for _, f in self.frames]
            clips = np.stack([clip_crops(frames, np.asarray([w[1:] for w in self.states[tid].window]),
                                         self.crop_size, self.crop_mode) for tid in chosen])
            t2 = clock()
            probs = self.score(clips)
            t3 = clock()
            self.scheduler.record(len(chosen), t3 - t2)
            for tid, p in zip(chosen, probs, strict=True):
                st = self.states[tid]
                st.probs, st.num_scores, st.scored_at = p, st.num_scores + 1, idx
            self.batches.append(len(chosen))
        for tid, _, _ in current:  # staleness of every grade (or missing grade) shown on this frame
            st = self.states[tid]
            age = st.age(idx)
            if age is not None:
                st.age_sum, st.age_count, st.age_max = st.age_sum + age, st.age_count + 1, max(st.age_max, age)
                self.age_histogram[age] += 1
        t4 = clock()
        out = self.draw(frame, current) if (self.annotate if draw is None else draw) else None
        t5 = clock()
        self.timings["detect_track"] += (t1 - t0) + (t4 - t3)
        self.timings["crop"] += t2 - t1
        self.timings["score"] += t3 - t2
        self.timings["draw"] += t5 - t4
        self.post_cost = 0.8 * self.post_cost + 0.2 * (t5 - t4)
        return out

    def kinematics(self, track_id: int) -> dict[str, float] | None:
        """CASA kinematics of a track's detected positions so far (``None`` before two positions)."""
        return self.states[track_id].kin.values()

    def draw(self, frame: np.ndarray, current: list[tuple[int, float, float]]) -> np.ndarray:
        """RGB frame with track ids, VCL/VSL/LIN, grade-distribution bars and the grade's age next to each head.

        The kinematics text of a track is refreshed every :attr:`label_every` frames; labels are rendered once per
        distinct text and pasted as bitmaps.
        """
        if self._overlay is None:
            self._overlay = _Overlay()
        ov = self._overlay
        out = np.empty((*frame.shape[:2], 3), np.uint8)
        out[...] = frame[..., None]
        for tid, y, x in current:
            colour = _COLOURS[tid % len(_COLOURS)]
            st = self.states[tid]
            ov.ring(out, y, x, colour)
            if self.frame_index - st.label_frame >= self.label_every:
                kin = st.kin.values()
                st.label = f"#{tid}" + ("" if kin is None else
                                        f" VCL{kin['vcl']:.0f} VSL{kin['vsl']:.0f} LIN{kin['lin']:.2f}")
                st.label_frame = self.frame_index
            xi, yi = int(round(x)), int(round(y))
            ov.paste(out, ov.text(st.label), yi - 12, xi + 7, colour)
            if st.probs is not None:
                ov.bars(out, st.probs, yi + 12, xi + 7, colour)
                ov.paste(out, ov.text(f"{st.age(self.frame_index) / self.fps:.1f}s"), yi + 2, xi + 29, colour)
        return out

    # ------------------------------------------------------------------ results
    def track_rows(self) -> list[dict[str, Any]]:
        """One row per track: frames, kinematics, motility class, the last predicted distribution and its age.

        ``score_age`` is the age (frames) of the track's grade on its last frame (since the track became ready when
        it was never scored); ``mean_score_age`` / ``max_score_age`` over the frames it had a full clip.
        """
        rows = []
        for tid, st in sorted(self.states.items()):
            kin = st.kin.values()
            row: dict[str, Any] = {"track_id": tid, "first_frame": st.first, "last_frame": st.last,
                                   "detections": st.kin.count, "num_scores": st.num_scores,
                                   "last_scored_frame": st.scored_at}
            age = st.age(st.seen)
            if age is not None:
                row.update({"score_age": age, "mean_score_age": round(st.age_sum / max(st.age_count, 1), 3),
                            "max_score_age": st.age_max})
            if kin is not None:
                row.update({k: round(v, 3) for k, v in kin.items()})
                row["motility"] = motility_class(**kin)
            if st.probs is not None:
                row.update({f"p_{g}": round(float(p), 4) for g, p in zip(GRADE_NAMES, st.probs, strict=True)})
                row["grade"] = GRADE_NAMES[int(np.argmax(st.probs))]
            rows.append(row)
        return rows

    def staleness(self) -> dict[str, float]:
        """Mean, 95th percentile and maximum score age (frames and seconds) over every (frame, ready track)."""
        if not self.age_histogram:
            return {"staleness_mean_frames": float("nan"), "staleness_p95_frames": float("nan"),
                    "staleness_max_frames": float("nan"), "staleness_mean_s": float("nan"),
                    "staleness_p95_s": float("nan"), "staleness_max_s": float("nan")}
        ages = np.array(sorted(self.age_histogram), np.float64)
        counts = np.array([self.age_histogram[int(a)] for a in ages], np.float64)
        cum = np.cumsum(counts) / counts.sum()
        out = {"staleness_mean_frames": float((ages * counts).sum() / counts.sum()),
               "staleness_p95_frames": float(ages[np.searchsorted(cum, 0.95)]),
               "staleness_max_frames": float(ages[-1])}
        out.update({k.replace("_frames", "_s"): v / self.fps for k, v in list(out.items())})
        return out

    def run(self, source: str | int | os.PathLike | Iterable[np.ndarray],
            output_video: str | os.PathLike | None = None, output_csv: str | os.PathLike | None = None,
            max_frames: int | None = None, verbose: bool = True, realtime: bool | None = None,
            output_json: str | os.PathLike | None = None, buffer: int = 2,
            video_preset: str = "veryfast") -> dict[str, Any]:
        """Process a whole stream; write the annotated video, the per-track CSV and the statistics JSON when asked.

        Args:
            source: video file, camera (``"<video0>"`` or an index) or iterable of frames.
            output_video: annotated mp4 (encoded by a writer thread); ``None``: no drawing, no video.
            output_csv: per-track CSV (:meth:`track_rows`).
            max_frames: stop after this many processed frames.
            verbose: print the precision choice and a summary line.
            realtime: pace the stream by the source (default: ``True`` for a camera, ``False`` for a file or an
                iterable, which run as fast as possible). A file in real time is replayed at ``fps`` like a camera
                (:class:`PacedFrames`); frames the stream did not take in time are lost and counted.
            output_json: statistics and track rows as JSON.
            buffer: frames a live source holds before it loses the oldest; when not even one clip fits in a frame
                period, the scheduler may end a frame up to ``buffer - 1`` periods late (see
                :class:`RescoreScheduler`).
            video_preset: libx264 preset of the annotated video.

        Returns:
            ``frames`` (processed), ``dropped_frames``, ``seconds``, ``fps`` (processed frames per second of wall
            time: the effective rate, to compare with ``source_fps``), ``loop_fps`` (frames per second of busy time:
            what the machine could do), ``max_lag_ms`` / ``late_frames`` (real time: finish of a frame after its
            arrival; late = after the next frame's arrival), ``staleness_*`` (:meth:`staleness`),
            ``rescores_per_track_s`` (grade refreshes per ready track per second of source time),
            ``borrowed_scores`` / ``forced_scores`` (single clips scored beyond the frame budget, see
            :class:`RescoreScheduler`),
            ``ms_per_clip``, ``precision`` and the calibration, ``tracks``, ``mean_batch`` and per-stage seconds.
        """
        frames = iter_frames(source)
        if self._net is None:
            self.prepare()
        self.reset()
        realtime = is_live_source(source) if realtime is None else bool(realtime)
        if not realtime:
            src: PacedFrames | CameraFrames | _OfflineFrames = _OfflineFrames(frames)
        elif is_live_source(source):
            src = CameraFrames(frames, self.fps, buffer, self.clock)
        else:
            src = PacedFrames(frames, self.fps, buffer, self.clock, self.sleep)
        self.spare = (buffer - 1) / self.fps if realtime else 0.0
        writer = _VideoWriter(output_video, self.fps, video_preset) if output_video is not None else None
        draw = self.annotate and writer is not None
        clock, period = self.clock, 1.0 / self.fps
        lags: list[float] = []
        write_s = 0.0
        n = 0
        start = clock()
        try:
            for item in src:
                deadline = src.next_arrival() if realtime else None
                out = self.process_frame(item.image, item.index, deadline, draw)
                if writer is not None and out is not None:
                    t = clock()
                    writer.write(out)
                    dt = clock() - t
                    write_s += dt
                    self.post_cost += 0.2 * dt
                if item.arrival is not None:
                    lags.append(clock() - item.arrival)
                n += 1
                if max_frames is not None and n >= max_frames:
                    break
            seconds = clock() - start  # up to the last frame; the encoder's flush at the end is not frame time
        finally:
            src.close()
            if writer is not None:
                t = clock()
                writer.close()
                write_s += clock() - t
        busy = seconds - src.waited
        ready_frames = sum(st.age_count for st in self.states.values())
        stats: dict[str, Any] = {
            "frames": n, "dropped_frames": src.dropped, "realtime": realtime, "source_fps": self.fps,
            "seconds": seconds, "fps": n / seconds if seconds > 0 else 0.0,
            "loop_fps": n / busy if busy > 0 else 0.0, "tracks": len(self.states),
            "mean_batch": float(np.mean(self.batches)) if self.batches else 0.0,
            "clips_scored": int(sum(self.batches)),
            "ms_per_clip": 1000 * self.timings["score"] / sum(self.batches) if self.batches else float("nan"),
            "rescores_per_track_s": sum(self.batches) / ready_frames * self.fps if ready_frames else 0.0,
            "borrowed_scores": self.scheduler.borrowed, "forced_scores": self.scheduler.forced,
            "max_lag_ms": 1000 * max(lags) if lags else float("nan"),
            "mean_lag_ms": 1000 * float(np.mean(lags)) if lags else float("nan"),
            "late_frames": int(sum(lag > period for lag in lags)),
            **self.staleness(),
            "precision": self.active_precision,
            "calibration_ms_per_clip": dict(self.choice.ms_per_clip) if self.choice else {},
            "calibration_skipped": dict(self.choice.skipped) if self.choice else {},
            "hardware": self.hardware.summary() if self.hardware else "",
            **{f"{k}_s": v for k, v in self.timings.items()}, "write_s": write_s, "wait_s": src.waited,
        }
        rows = self.track_rows()
        if output_csv is not None:
            Path(output_csv).parent.mkdir(parents=True, exist_ok=True)
            with open(output_csv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
                w.writeheader()
                w.writerows(rows)
        if output_json is not None:
            Path(output_json).parent.mkdir(parents=True, exist_ok=True)
            with open(output_json, "w") as f:
                clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in stats.items()}
                json.dump({"stats": clean, "tracks": rows}, f, indent=1, default=float)
        if verbose:
            if self.choice is not None:
                print(f"sperm stream: {self.choice.summary()}")
            print("sperm stream: batch cost " + ", ".join(f"{n} clips {1000 * t:.1f} ms" for n, t in self.batch_costs))
            mode = (f"real time at {self.fps:g} fps source: {n} frames processed, {src.dropped} lost, "
                    f"max lag {stats['max_lag_ms']:.0f} ms" if realtime else "offline")
            print(f"sperm stream ({mode}): {n} frames in {seconds:.2f} s = {stats['fps']:.1f} fps (loop "
                  f"{stats['loop_fps']:.1f} fps), {len(self.states)} tracks, precision {stats['precision']}, "
                  f"mean batch {stats['mean_batch']:.1f}, grade age mean {stats['staleness_mean_s']:.2f} s / max "
                  f"{stats['staleness_max_s']:.2f} s")
        return stats


# ------------------------------------------------------------------------------------------------------- loading
def load_stream_weights(network: torch.nn.Module, checkpoint: str | os.PathLike,
                        map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load the trained weights into ``network``: a bare ``state_dict`` (the bundle's ``models/model.pt``) or a
    training checkpoint holding it under ``"model"``.

    Raises:
        FileNotFoundError: for a missing file (names it).
        ValueError: for a file that holds neither (names it and its keys).
    """
    from monai_ext.utils import load_checkpoint

    content = load_checkpoint(checkpoint, map_location=map_location)
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        content = content["model"]
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        keys = sorted(content)[:8] if isinstance(content, Mapping) else type(content).__name__
        raise ValueError(f"checkpoint '{checkpoint}' is neither a state_dict nor a {{'model': state_dict}} "
                         f"checkpoint (found {keys}).")
    network.load_state_dict(content)
    return network


def load_stream_network(backbone: str, checkpoint: str | os.PathLike | None, crop_size: int = 48,
                        clip_length: int = 8, patch_size: int = 8, network_kwargs: Mapping[str, Any] | None = None,
                        device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build ``backbone`` and load ``checkpoint`` (see :func:`load_stream_weights`; ``None``: untrained)."""
    net = build_network(backbone, img_size=crop_size, num_frames=clip_length, patch_size=patch_size,
                        **dict(network_kwargs or {}))
    if checkpoint is not None:
        load_stream_weights(net, checkpoint, map_location=device)
    return net.to(device).eval()


def default_stream_video(dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike, seed: int = 0,
                         generator_kwargs: Mapping[str, Any] | None = None, section: str = "test") -> str:
    """First video of ``section`` of the study's video datalist (the embedded synthetic one when ``dataset_dir`` is
    ``None``, generated once under ``output_dir`` exactly as by the training workflow).

    Raises:
        ValueError: when the datalist has no video in ``section``.
    """
    from monai_ext.data import load_datalist, resolve_datalist
    from monai_ext.data.synthetic.sperm import generate_sperm_dataset

    path = resolve_datalist(dataset_dir, output_dir, generate_sperm_dataset, {"seed": seed, **dict(generator_kwargs
                                                                                                  or {})})
    items = load_datalist(path, section, required_keys=("video",))
    if not items:
        raise ValueError(f"datalist '{path}' has no video in section '{section}'.")
    return str(items[0]["video"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description="Real-time sperm tracking and grade distributions on a video stream.")
    p.add_argument("--video", required=True, help="video file, or '<video0>' / a camera index for a camera")
    p.add_argument("--checkpoint", default=None, help="model.pt written by the bundle's train.json")
    p.add_argument("--backbone", default="timesformer_tiny")
    p.add_argument("--network_kwargs", default="{}", help="JSON dict of extra network arguments")
    p.add_argument("--crop_size", type=int, default=48)
    p.add_argument("--crop_mode", choices=CROP_MODES, default="clip", help="as used in training")
    p.add_argument("--clip_length", type=int, default=8)
    p.add_argument("--patch_size", type=int, default=8)
    p.add_argument("--rescore_every", type=int, default=8)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                   help="auto: probe the CPU/GPU and pick the fastest accurate variant by a short calibration")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="pace by the source (default: on for a camera, off for a file)")
    p.add_argument("--compile", action="store_true", help="torch.compile (with a fixed --precision)")
    p.add_argument("--output_video", default="sperm_stream.mp4", help="'' for none")
    p.add_argument("--output_csv", default="sperm_tracks.csv")
    p.add_argument("--output_json", default=None)
    p.add_argument("--max_frames", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    video: str | int = int(a.video) if a.video.isdigit() else a.video
    net = load_stream_network(a.backbone, a.checkpoint, a.crop_size, a.clip_length, a.patch_size,
                              json.loads(a.network_kwargs))
    stream = SpermStream(optimise_network(net, compile=a.compile), crop_size=a.crop_size, clip_length=a.clip_length,
                         rescore_every=a.rescore_every, crop_mode=a.crop_mode, fps=a.fps, precision=a.precision)
    return stream.run(video, a.output_video or None, a.output_csv, a.max_frames, realtime=a.realtime,
                      output_json=a.output_json)


if __name__ == "__main__":
    main()
