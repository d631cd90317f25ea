"""Videos -> tracks -> fixed-size head-centred crops -> ``T``-frame clips with grade-distribution labels.

The study's input datalist lists videos with one annotation JSON each (the synthetic generator
:func:`monai_ext.data.synthetic.sperm.generate_sperm_dataset` writes this format; a lab can write it for its own
videos)::

    dataset.json   {"training": [{"video": "videos/v0.mp4", "annotation": "annotations/v0.json"}, ...],
                    "validation": [...], "test": [...]}
    v0.json        {"fps": 15, "sperm": [{"id": 0, "track": [[y, x] or null per frame], "distribution": [5 floats]},
                    ...]}

:func:`build_clip_datalist` tracks every video, gives each track the grade distribution of the annotated sperm it
follows (the one whose head stays within ``match_distance`` pixels in most of the track's frames; tracks of debris
or of unannotated sperm get no label and are left out), cuts the track into ``T``-frame clips, crops them, stores
one ``uint8`` array per track, and writes a clip datalist whose items address ``T``-frame windows of those arrays.

Two crop modes (``crop_mode``):

- ``"clip"`` (default): every frame of a clip is cropped at the same place, the mean head position over the clip, so
  the sperm *moves* inside the window as under the microscope (the seed study rates fixed 150x150 regions); the
  swimming speed and path shape (the WHO motility class, most of what the experts grade) are visible to the network.
  Choose ``crop_size`` larger than the distance a fast sperm covers in ``T`` frames (48 px for 8 frames of a
  55 um/s sperm at 1 um/pixel and 15 fps).
- ``"head"``: every frame is cropped around the tracked head. Head shape and tail beat stay visible but the head's
  translation is removed, so fast and slow progressive sperm look alike (kept for comparison).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from monai_ext.data import load_datalist, read_image, validate_distribution, validate_image

from .tracking import SpermDetector, SpermTracker, Track, evaluate_tracking, track_video

__all__ = [
    "CROP_MODES",
    "build_clip_datalist",
    "clip_crops",
    "crop_at",
    "match_track",
    "read_video",
    "track_positions",
]

CROP_MODES = ("clip", "head")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Grey ``uint8`` frames ``(T, H, W)`` of a video file (PyAV through imageio).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file cannot be decoded (truncated, corrupt, not a video) or is not a sequence of 2D
            frames (names the file).
    """
    frames = read_image(path, lambda p: iio.imread(p, plugin="pyav"), what="video")
    if frames.ndim == 4:
        frames = frames[..., :3].mean(-1).round().astype(np.uint8)
    return validate_image(frames, path, ndim=3, layout="grey or colour frames (T, H, W[, C])", what="video")


def crop_at(frame: np.ndarray, centre: Sequence[float], size: int) -> np.ndarray:
    """``size x size`` crop of a 2D ``frame`` centred on ``centre`` (y, x); outside pixels are zero."""
    h, w = frame.shape
    y0, x0 = int(round(centre[0])) - size // 2, int(round(centre[1])) - size // 2
    out = np.zeros((size, size), frame.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + size, h), min(x0 + size, w)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = frame[ys:ye, xs:xe]
    return out


def clip_crops(frames: Sequence[np.ndarray], positions: np.ndarray, size: int, mode: str = "clip") -> np.ndarray:
    """``(T, size, size)`` crops of the ``T`` frames of one clip with the head at ``positions`` ``(T, 2)`` (y, x).

    Args:
        frames: the clip's ``T`` grey frames.
        positions: the tracked head position in each of those frames.
        size: crop side in pixels.
        mode: ``"clip"`` crops every frame at the mean head position (the sperm moves inside the window);
            ``"head"`` crops each frame around its own head position.

    Raises:
        ValueError: for an unknown ``mode`` or a number of positions that differs from the number of frames.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {mode!r}.")
    positions = np.asarray(positions, np.float64).reshape(-1, 2)
    if len(positions) != len(frames):
        raise ValueError(f"clip_crops: {len(frames)} frames but {len(positions)} head positions.")
    if mode == "clip":
        anchor = positions.mean(0)
        return np.stack([crop_at(f, anchor, size) for f in frames])
    return np.stack([crop_at(f, p, size) for f, p in zip(frames, positions, strict=True)])


def track_positions(track: Track) -> tuple[int, np.ndarray]:
    """First frame and ``(L, 2)`` positions of a track (detected, or Kalman-predicted in missed frames)."""
    first = track.history[0][0]
    return first, np.asarray([(y, x) for _, y, x, _ in track.history], np.float64)


def match_track(track: Track, gt_tracks: Mapping[int, np.ndarray], max_distance: float = 5.0,
                min_fraction: float = 0.5) -> int | None:
    """Id of the ground-truth sperm that ``track`` follows, or ``None``.

    A ground-truth sperm is followed when its head is within ``max_distance`` pixels of the track's detected
    positions in at least ``min_fraction`` of those frames (the best such sperm wins).
    """
    det = [(f, y, x) for f, y, x, d in track.history if d]
    if not det:
        return None
    best, best_frac = None, 0.0
    for gid, gt in gt_tracks.items():
        hits = 0
        for f, y, x in det:
            if f < len(gt) and np.isfinite(gt[f]).all() and np.hypot(gt[f][0] - y, gt[f][1] - x) <= max_distance:
                hits += 1
        frac = hits / len(det)
        if frac >= min_fraction and frac > best_frac:
            best, best_frac = gid, frac
    return best


def _read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} '{path}' is not valid JSON: {e}") from e


def _gt_tracks(annotation: Mapping[str, Any], path: str, num_grades: int | None = None) -> dict[int, np.ndarray]:
    if not isinstance(annotation, Mapping) or "sperm" not in annotation:
        raise ValueError(f"annotation '{path}' lacks the key 'sperm' (list of annotated sperm).")
    out = {}
    for i, s in enumerate(annotation["sperm"]):
        missing = [k for k in ("id", "track", "distribution") if k not in s]
        if missing:
            raise ValueError(f"annotation '{path}' sperm {i} lacks key(s) {missing}.")
        validate_distribution(s["distribution"], f"annotation '{path}' sperm {i} 'distribution'", num_grades)
        out[int(s["id"])] = np.asarray([p if p is not None else (np.nan, np.nan) for p in s["track"]], np.float64)
    return out


def build_clip_datalist(datalist: str | os.PathLike, out_dir: str | os.PathLike, crop_size: int = 48,
                        clip_length: int = 8, clip_stride: int = 4, match_distance: float = 5.0,
                        detector_kwargs: Mapping[str, Any] | None = None,
                        tracker_kwargs: Mapping[str, Any] | None = None,
                        sections: Sequence[str] = ("training", "validation", "test"), crop_mode: str = "clip",
                        num_grades: int | None = 5) -> tuple[Path, list[dict[str, Any]]]:
    """Track every video of a video datalist and write the clip datalist ``<out_dir>/clips.json``.

    Args:
        datalist: video datalist JSON (see the module docstring).
        out_dir: output folder for ``tracks/*.npy`` and ``clips.json``.
        crop_size: side of the crop in pixels.
        clip_length: frames per clip ``T``.
        clip_stride: frames between the starts of consecutive clips of a track.
        match_distance: pixels within which a track follows an annotated sperm (labels and tracking metrics).
        detector_kwargs: arguments of :class:`SpermDetector`.
        tracker_kwargs: arguments of :class:`SpermTracker`.
        sections: datalist sections to process (missing ones are skipped, except ``"training"`` when requested).
        crop_mode: ``"clip"`` (one window per clip at the mean head position) or ``"head"`` (head-centred crop in
            every frame); see the module docstring.
        num_grades: length every annotated grade distribution must have (``None``: not checked).

    Returns:
        ``(clips_json, tracking_rows)``: the clip datalist path and one row of tracking metrics per video
        (MOTA, IDF1, identity switches, ... and the numbers of tracks, labelled tracks and clips).

    Raises:
        FileNotFoundError: a missing datalist, video or annotation file (names it).
        ValueError: for ``crop_size``, ``clip_length`` or ``clip_stride`` below 1, an unknown ``crop_mode``, a
            datalist or annotation that is not JSON or lacks a key or the ``training`` section, a grade distribution
            that is not a pmf of ``num_grades`` entries (negative, not summing to 1), an unreadable (truncated,
            corrupt) video, a video with fewer than ``clip_length`` frames, or annotated tracks longer than their
            video (each names the file).
    """
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}.")
    if crop_size < 1 or clip_length < 1 or clip_stride < 1:
        raise ValueError(f"crop_size, clip_length and clip_stride must be >= 1, got {crop_size}, {clip_length}, "
                         f"{clip_stride}.")
    out = Path(out_dir)
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    if not Path(datalist).is_file():
        raise FileNotFoundError(f"datalist JSON not found: '{datalist}'.")
    content = _read_json(datalist, "datalist")
    if not isinstance(content, dict) or ("training" in sections and "training" not in content):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"datalist '{datalist}' has no section 'training' (found: {found}).")
    present = [s for s in sections if s in content]
    clips: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for section in present:
        clips[section] = []
        for item in load_datalist(datalist, section, required_keys=("video", "annotation")):
            ann = _read_json(item["annotation"], "annotation")
            gt = _gt_tracks(ann, item["annotation"], num_grades)
            dists = {int(s["id"]): [float(v) for v in s["distribution"]] for s in ann["sperm"]}
            frames = read_video(item["video"])
            if len(frames) < clip_length:
                raise ValueError(f"video '{item['video']}' has {len(frames)} frame(s), fewer than clip_length="
                                 f"{clip_length}; expected a video, not a still image or a truncated file.")
            longest = max((len(v) for v in gt.values()), default=0)
            if longest > len(frames):
                raise ValueError(f"annotation '{item['annotation']}' has tracks of {longest} frames but video "
                                 f"'{item['video']}' decodes to {len(frames)} frames: is the video truncated?")
            tracks = track_video(frames, SpermDetector(**dict(detector_kwargs or {})),
                                 SpermTracker(**dict(tracker_kwargs or {})))
            name = Path(item["video"]).stem
            n_labelled = n_clips = 0
            for tr in tracks:
                gid = match_track(tr, gt, match_distance)
                first, pos = track_positions(tr)
                if gid is None or len(pos) < clip_length:
                    continue
                n_labelled += 1
                starts = range(0, len(pos) - clip_length + 1, clip_stride)
                # one stack of clips per track: clip c occupies rows c*T .. (c+1)*T (a "head" crop of a frame does
                # not depend on the clip, but storing per clip keeps one layout for both modes)
                crops = np.concatenate([clip_crops(frames[first + s:first + s + clip_length], pos[s:s + clip_length],
                                                   crop_size, crop_mode) for s in starts])
                rel = f"tracks/{name}_t{tr.track_id:03d}.npy"
                np.save(out / rel, crops)
                for c, start in enumerate(starts):
                    clips[section].append({"image": rel, "start": c * clip_length, "length": clip_length,
                                           "label": dists[gid], "video": name, "track_id": tr.track_id,
                                           "sperm_id": gid, "first_frame": first + start})
                    n_clips += 1
            gt_full = {k: v for k, v in gt.items() if len(v) == len(frames)}
            metrics = evaluate_tracking(gt_full, tracks, match_distance) if gt_full else {}
            rows.append({"section": section, "video": name, "num_sperm": len(gt), "num_tracks": len(tracks),
                         "labelled_tracks": n_labelled, "clips": n_clips, **metrics})
    path = out / "clips.json"
    with open(path, "w") as f:
        json.dump({"crop_size": crop_size, "crop_mode": crop_mode, "clip_length": clip_length,
                   "clip_stride": clip_stride, "source": str(datalist), **clips}, f, indent=1)
    return path, rows
