"""Real-time sperm grading on a video stream: detect -> track -> re-score every track every ``k`` frames in one batch.

:class:`SpermStream` consumes frames one at a time (a video file or a camera through imageio/PyAV). For every
frame it detects heads, updates the tracker and appends the head position to each track's ring buffer of its last
``T`` positions (the last ``T`` frames are kept once, for all tracks); every ``rescore_every`` frames all tracks
seen in each of the last ``T`` frames are cropped exactly as the training clips were (``crop_mode``, see
:mod:`monai_ext.apps.sperm_emd.data`) and scored together in one batch by the grade network. Each output frame
is annotated with the track ids, a bar chart of the latest predicted grade distribution (A..E) and the CASA
kinematics (VCL, VSL in um/s, LIN) of the track so far; a per-track CSV is written at the end. Nothing leaves the
machine.

Command line (reads a video file, or ``<video0>`` for the first camera)::

    python -m monai_ext.apps.sperm_emd.stream --video in.mp4 --checkpoint models/timesformer_tiny_emd/model.pt \\
        --output_video out.mp4 --output_csv tracks.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import CROP_MODES, clip_crops
from .kinematics import casa_kinematics, motility_class
from .networks import build_network
from .tracking import SpermDetector, SpermTracker

__all__ = ["SpermStream", "default_stream_video", "iter_frames", "load_stream_network", "optimise_network"]

GRADE_NAMES = ("A", "B", "C", "D", "E")
_COLOURS = ((255, 80, 80), (80, 220, 80), (90, 160, 255), (255, 210, 60), (220, 100, 255), (60, 230, 230))


def optimise_network(network: torch.nn.Module, quantize: bool = False, compile: bool = False) -> torch.nn.Module:
    """CPU inference speed-ups: int8 dynamic quantisation of the linear layers and/or ``torch.compile``.

    Dynamic quantisation (weights int8, activations quantised on the fly) applies to ``nn.Linear`` only, which holds
    almost all of a TimeSformer's weights and FLOPs; convolutional backbones gain little from it.
    """
    network = network.eval()
    if quantize:
        from torch.ao.quantization import quantize_dynamic

        network = quantize_dynamic(network, {torch.nn.Linear}, dtype=torch.qint8)
    if compile:
        network = torch.compile(network)
    return network


def iter_frames(source: str | os.PathLike | Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """Frames of a video file, of a camera (``"<video0>"``), or of an iterable of arrays, as grey ``uint8``."""
    if isinstance(source, (str, os.PathLike)):
        import imageio.v3 as iio

        if not str(source).startswith("<video") and not Path(source).is_file():
            raise FileNotFoundError(f"video source not found: '{source}' (a file path or '<video0>' for a camera).")
        frames: Iterable[np.ndarray] = iio.imiter(source, plugin="pyav")
    else:
        frames = source
    for frame in frames:
        frame = np.asarray(frame)
        if frame.ndim == 3:
            frame = frame[..., :3].mean(-1).astype(np.uint8)
        yield frame


class _TrackState:
    __slots__ = ("window", "positions", "first", "last", "probs", "num_scores")

    def __init__(self, clip_length: int, first: int) -> None:
        # (frame index, y, x) of the last T frames of the track, detected or Kalman-predicted
        self.window: deque[tuple[int, float, float]] = deque(maxlen=clip_length)
        self.positions: list[tuple[float, float]] = []
        self.first, self.last = first, first
        self.probs: np.ndarray | None = None
        self.num_scores = 0


class SpermStream:
    """Online detection, tracking and per-track grade distributions on a frame stream.

    Args:
        network: grade network ``(N, 1, T, crop, crop)`` -> ``(N, K)`` logits (put in ``eval`` mode here).
        crop_size: crop side (the network's input size).
        clip_length: frames per clip ``T``.
        rescore_every: re-score all tracks every ``k`` frames, in one batch.
        fps: frame rate of the stream (for the kinematics).
        um_per_pixel: pixel size (for the kinematics).
        device: inference device.
        bf16: run the network under CPU/CUDA ``bfloat16`` autocast.
        detector: head detector (default :class:`SpermDetector()`).
        tracker: tracker (default :class:`SpermTracker()`).
        preprocessing: callable applied to the ``uint8`` crop batch ``(N, 1, T, H, W)`` tensor (default: ``/ 255``).
        inferer: MONAI-style ``inferer(inputs, network)`` (default: ``network(inputs)``).
        postprocessing: callable applied to the logits (default: softmax over grades).
        annotate: draw the annotated frames (``False`` for a headless benchmark of the analysis alone).
        crop_mode: ``"clip"`` (one window at the mean head position of the last ``T`` frames) or ``"head"``
            (head-centred crop per frame); must match the mode the network was trained with.

    Raises:
        ValueError: for ``rescore_every``, ``clip_length`` or ``crop_size`` below 1, or an unknown ``crop_mode``.

    Example::

        >>> from monai_ext.apps.sperm_emd import build_network
        >>> stream = SpermStream(build_network("timesformer_tiny", img_size=48, num_layers=1), crop_size=48)
        >>> out = stream.process_frame(np.zeros((64, 64), np.uint8))
        >>> out.shape
        (64, 64, 3)
    """

    def __init__(self, network: torch.nn.Module, crop_size: int = 48, clip_length: int = 8, rescore_every: int = 8,
                 fps: float = 15.0, um_per_pixel: float = 1.0, device: str | torch.device = "cpu", bf16: bool = False,
                 detector: SpermDetector | None = None, tracker: SpermTracker | None = None,
                 preprocessing: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 inferer: Callable[..., torch.Tensor] | None = None,
                 postprocessing: Callable[[torch.Tensor], torch.Tensor] | None = None, annotate: bool = True,
                 crop_mode: str = "clip") -> None:
        if min(rescore_every, clip_length, crop_size) < 1:
            raise ValueError(f"rescore_every, clip_length and crop_size must be >= 1, got {rescore_every}, "
                             f"{clip_length}, {crop_size}.")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}.")
        self.crop_mode = crop_mode
        self.network = network.eval()
        self.crop_size, self.clip_length, self.rescore_every = int(crop_size), int(clip_length), int(rescore_every)
        self.fps, self.um_per_pixel = float(fps), float(um_per_pixel)
        self.device = torch.device(device)
        self.bf16, self.annotate = bool(bf16), bool(annotate)
        self.detector = detector or SpermDetector()
        self.tracker = tracker or SpermTracker()
        self.preprocessing = preprocessing or (lambda x: x.float() / 255.0)
        self.inferer = inferer
        self.postprocessing = postprocessing or (lambda x: torch.softmax(x.float(), -1))
        self.reset()

    def reset(self) -> None:
        """Forget all tracks and timers."""
        self.tracker.reset()
        self.states: dict[int, _TrackState] = {}
        self.frames: deque[np.ndarray] = deque(maxlen=self.clip_length)
        self.frame_index = -1
        self.timings = {"detect_track": 0.0, "score": 0.0, "draw": 0.0}
        self.batches: list[int] = []

    @torch.no_grad()
    def score(self, clips: np.ndarray) -> np.ndarray:
        """Grade pmfs ``(N, K)`` of ``uint8`` clips ``(N, T, H, W)`` in one batch."""
        x = self.preprocessing(torch.from_numpy(clips)[:, None].to(self.device))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.network(x) if self.inferer is None else self.inferer(x, self.network)
        return self.postprocessing(logits).float().cpu().numpy()

    def process_frame(self, frame: np.ndarray) -> np.ndarray | None:
        """Analyse one grey frame; returns the annotated RGB frame (``None`` when ``annotate`` is off)."""
        self.frame_index += 1
        t0 = time.perf_counter()
        self.frames.append(frame)
        alive = self.tracker.update(self.detector(frame), frame_index=self.frame_index)
        current = []
        for tr in alive:
            st = self.states.get(tr.track_id)
            if st is None:
                st = self.states[tr.track_id] = _TrackState(self.clip_length, self.frame_index)
            _, y, x, detected = tr.history[-1]
            st.window.append((self.frame_index, y, x))
            if detected:
                st.positions.append((y, x))
                st.last = self.frame_index
            current.append((tr.track_id, y, x))
        t1 = time.perf_counter()
        if self.frame_index % self.rescore_every == 0:
            first = self.frame_index - self.clip_length + 1
            ready = [tid for tid, _, _ in current if len(self.states[tid].window) == self.clip_length
                     and self.states[tid].window[0][0] == first]
            if ready:
                frames = list(self.frames)
                probs = self.score(np.stack([
                    clip_crops(frames, np.asarray([w[1:] for w in self.states[tid].window]), self.crop_size,
                               self.crop_mode) for tid in ready]))
                for tid, p in zip(ready, probs, strict=True):
                    self.states[tid].probs, self.states[tid].num_scores = p, self.states[tid].num_scores + 1
                self.batches.append(len(ready))
        t2 = time.perf_counter()
        out = self.draw(frame, current) if self.annotate else None
        self.timings["detect_track"] += t1 - t0
        self.timings["score"] += t2 - t1
        self.timings["draw"] += time.perf_counter() - t2
        return out

    def kinematics(self, track_id: int) -> dict[str, float] | None:
        """CASA kinematics of a track's detected positions so far (``None`` before two positions)."""
        pos = self.states[track_id].positions
        if len(pos) < 2:
            return None
        return casa_kinematics(np.asarray(pos), self.fps, self.um_per_pixel)

    def draw(self, frame: np.ndarray, current: list[tuple[int, float, float]]) -> np.ndarray:
        """RGB frame with track ids, grade-distribution bars and VCL/VSL/LIN next to each head."""
        from PIL import Image, ImageDraw

        img = Image.fromarray(np.repeat(frame[..., None], 3, -1))
        pen = ImageDraw.Draw(img)
        for tid, y, x in current:
            colour = _COLOURS[tid % len(_COLOURS)]
            pen.ellipse((x - 5, y - 5, x + 5, y + 5), outline=colour)
            st = self.states[tid]
            kin = self.kinematics(tid)
            text = f"#{tid}"
            if kin is not None:
                text += f" VCL{kin['vcl']:.0f} VSL{kin['vsl']:.0f} LIN{kin['lin']:.2f}"
            pen.text((x + 7, y - 12), text, fill=colour)
            if st.probs is not None:
                bx, by = x + 7, y + 12
                for k, p in enumerate(st.probs):
                    h = float(p) * 12
                    pen.rectangle((bx + 4 * k, by - h, bx + 4 * k + 2, by), fill=colour)
        return np.asarray(img)

    def track_rows(self) -> list[dict[str, Any]]:
        """One row per track: frames, kinematics, motility class and the last predicted distribution."""
        rows = []
        for tid, st in sorted(self.states.items()):
            kin = self.kinematics(tid)
            row: dict[str, Any] = {"track_id": tid, "first_frame": st.first, "last_frame": st.last,
                                   "detections": len(st.positions), "num_scores": st.num_scores}
            if kin is not None:
                row.update({k: round(v, 3) for k, v in kin.items()})
                row["motility"] = motility_class(**kin)
            if st.probs is not None:
                row.update({f"p_{g}": round(float(p), 4) for g, p in zip(GRADE_NAMES, st.probs, strict=True)})
                row["grade"] = GRADE_NAMES[int(np.argmax(st.probs))]
            rows.append(row)
        return rows

    def run(self, source: str | os.PathLike | Iterable[np.ndarray], output_video: str | os.PathLike | None = None,
            output_csv: str | os.PathLike | None = None, max_frames: int | None = None,
            verbose: bool = True) -> dict[str, float]:
        """Process a whole stream; write the annotated video and the per-track CSV when paths are given.

        Returns:
            ``{"frames", "seconds", "fps", "tracks", "mean_batch", ...}`` with per-stage seconds; ``fps`` counts
            everything from reading a frame to writing the annotated one.
        """
        self.reset()
        writer = None
        if output_video is not None:
            import imageio.v3 as iio

            Path(output_video).parent.mkdir(parents=True, exist_ok=True)
            writer = iio.imopen(output_video, "w", plugin="pyav")
            writer.init_video_stream("libx264", fps=int(round(self.fps)))
        start = time.perf_counter()
        n = 0
        try:
            for frame in iter_frames(source):
                if max_frames is not None and n >= max_frames:
                    break
                out = self.process_frame(frame)
                if writer is not None and out is not None:
                    writer.write_frame(out)
                n += 1
        finally:
            if writer is not None:
                writer.close()
        seconds = time.perf_counter() - start
        if output_csv is not None:
            rows = self.track_rows()
            Path(output_csv).parent.mkdir(parents=True, exist_ok=True)
            columns = ["track_id", "first_frame", "last_frame", "detections", "num_scores", "vcl", "vsl", "lin",
                       "motility", *[f"p_{g}" for g in GRADE_NAMES], "grade"]
            with open(output_csv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(rows)
        stats = {"frames": n, "seconds": seconds, "fps": n / seconds if seconds > 0 else 0.0,
                 "tracks": len(self.states), "mean_batch": float(np.mean(self.batches)) if self.batches else 0.0,
                 **{f"{k}_s": v for k, v in self.timings.items()}}
        if verbose:
            print(f"sperm stream: {n} frames in {seconds:.2f} s = {stats['fps']:.1f} fps, {len(self.states)} tracks, "
                  f"mean batch {stats['mean_batch']:.1f}")
        return stats


def load_stream_network(backbone: str, checkpoint: str | os.PathLike | None, crop_size: int = 48,
                        clip_length: int = 8, patch_size: int = 8, network_kwargs: Mapping[str, Any] | None = None,
                        device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build ``backbone`` and load ``checkpoint`` (a ``{"model": state_dict}`` file from the training workflow)."""
    from monai_ext.utils import load_checkpoint

    net = build_network(backbone, img_size=crop_size, num_frames=clip_length, patch_size=patch_size,
                        **dict(network_kwargs or {}))
    if checkpoint is not None:
        net.load_state_dict(load_checkpoint(checkpoint, map_location=device)["model"])
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


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Command-line entry point (see the module docstring)."""
    import json

    p = argparse.ArgumentParser(description="Real-time sperm tracking and grade distributions on a video stream.")
    p.add_argument("--video", required=True, help="video file, or '<video0>' for the first camera")
    p.add_argument("--checkpoint", default=None, help="model.pt written by the bundle's train.json")
    p.add_argument("--backbone", default="timesformer_tiny")
    p.add_argument("--network_kwargs", default="{}", help="JSON dict of extra network arguments")
    p.add_argument("--crop_size", type=int, default=48)
    p.add_argument("--crop_mode", choices=CROP_MODES, default="clip", help="as used in training")
    p.add_argument("--clip_length", type=int, default=8)
    p.add_argument("--patch_size", type=int, default=8)
    p.add_argument("--rescore_every", type=int, default=8)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--quantize", action="store_true", help="int8 dynamic quantisation of the linear layers")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--output_video", default="sperm_stream.mp4")
    p.add_argument("--output_csv", default="sperm_tracks.csv")
    p.add_argument("--max_frames", type=int, default=None)
    a = p.parse_args(argv)
    net = load_stream_network(a.backbone, a.checkpoint, a.crop_size, a.clip_length, a.patch_size,
                              json.loads(a.network_kwargs))
    stream = SpermStream(optimise_network(net, a.quantize, a.compile), crop_size=a.crop_size,
                         clip_length=a.clip_length, rescore_every=a.rescore_every, crop_mode=a.crop_mode, fps=a.fps,
                         bf16=a.bf16)
    return stream.run(a.video, a.output_video, a.output_csv, a.max_frames)


if __name__ == "__main__":
    main()
