"""Seeded synthetic microscope videos of swimming sperm with multi-rater grade distributions (``sperm_emd`` study).

Each video (15 fps by default, grey-level, bright cells on a dark field as in phase contrast) shows several sperm
and some debris. A sperm is drawn as an elliptical head, a short midpiece and a tail carrying a travelling wave
whose amplitude grows towards the tip. Its head follows one of four motion programmes — fast and straight, slow and
wavy, circling on the spot, still — and its WHO motility class is then *measured* from the simulated head track
(straight-line velocity ``VSL`` and linearity ``LIN``, see :mod:`monai_ext.metrics.kinematics`), so the label
agrees with what a CASA system would compute. About a fifth of the sperm get an abnormal head (large, round or
tapered).

Grades follow the multi-expert setting of the seed study: a latent quality (motility class, head shape, a little
individual variation) is rated by a panel of simulated embryologists over 5 ordered grades A (best) to E; every
rater has a personal bias and noise level, each sperm is rated by a random subset of the panel, and the normalised
histogram of its ratings is the target distribution.

Files written by :func:`generate_sperm_dataset`::

    videos/video_000.mp4          the microscope video (H.264 via PyAV)
    annotations/video_000.json    per-sperm ground truth: head track per frame, motility class, head shape,
                                  CASA kinematics, ratings and the grade distribution; debris positions
    dataset.json                  {"training"|"validation"|"test": [{"video": ..., "annotation": ...}], ...}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from monai_ext.metrics.kinematics import casa_kinematics, motility_class

__all__ = ["GRADES", "HEAD_SHAPES", "generate_sperm_dataset", "rate_sperm", "synthesize_sperm_video", "write_video"]

GRADES = ("A", "B", "C", "D", "E")
HEAD_SHAPES = ("normal", "large", "round", "tapered")
# latent grade (0 = A ... 4 = E) of each motility class before head shape and individual variation
_CLASS_QUALITY = {"rapid_progressive": 0.4, "slow_progressive": 1.4, "non_progressive": 2.6, "immotile": 3.5}
_ABNORMAL_HEAD_PENALTY = 0.9
# (speed in um/s, heading noise in rad/frame, turning rate in rad/frame) of each motion programme
_PROGRAMMES = {
    "fast": ((32.0, 55.0), 0.04, 0.0),
    "slow": ((9.0, 20.0), 0.10, 0.0),
    "circling": ((10.0, 22.0), 0.05, 0.45),
    "still": ((0.0, 0.0), 0.0, 0.0),
}


def _head_axes(shape: str) -> tuple[float, float]:
    """Half-axes (along, across) of the head ellipse in pixels."""
    return {"normal": (3.4, 2.2), "large": (4.6, 3.0), "round": (2.8, 2.7), "tapered": (4.0, 1.5)}[shape]


def _simulate_head_track(num_frames: int, size: int, programme: str, fps: float, um_per_pixel: float,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Head positions ``(T, 2)`` (y, x) and headings ``(T,)``; sperm bounce off a margin inside the frame."""
    (vmin, vmax), heading_noise, turn = _PROGRAMMES[programme]
    speed = rng.uniform(vmin, vmax) / fps / um_per_pixel if vmax > 0 else 0.0
    margin = 14.0
    pos = rng.uniform(margin, size - margin, 2)
    heading = rng.uniform(-np.pi, np.pi)
    turn = turn * rng.choice((-1.0, 1.0)) * rng.uniform(0.7, 1.3)
    # lateral head displacement (ALH) of a beating flagellum; zero for still sperm
    alh = rng.uniform(0.4, 1.2) if speed > 0 else 0.0
    beat_phase = rng.uniform(0, 2 * np.pi)
    positions, headings = np.zeros((num_frames, 2)), np.zeros(num_frames)
    for t in range(num_frames):
        heading += turn + rng.normal(0.0, heading_noise)
        step = speed * np.array([np.sin(heading), np.cos(heading)])
        pos = pos + step + (rng.normal(0.0, 0.15, 2) if speed == 0 else 0.0)
        for d in range(2):  # reflect at the margins so every sperm stays in view
            if pos[d] < margin or pos[d] > size - margin:
                pos[d] = np.clip(pos[d], margin, size - margin)
                heading = np.arctan2(-np.sin(heading), np.cos(heading)) if d == 0 else np.arctan2(
                    np.sin(heading), -np.cos(heading))
        lateral = alh * np.sin(beat_phase + 2.3 * t) * np.array([np.cos(heading), -np.sin(heading)])
        positions[t] = pos + lateral
        headings[t] = heading
    return positions, headings


def _splat(canvas: np.ndarray, pts: np.ndarray, values: np.ndarray) -> None:
    """Add ``values`` at sub-pixel points ``(N, 2)`` with bilinear weights (points outside are dropped)."""
    h, w = canvas.shape
    y0, x0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    fy, fx = pts[:, 0] - y0, pts[:, 1] - x0
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(canvas, (yy[ok], xx[ok]), values[ok] * wgt[ok])


def _draw_sperm(canvas: np.ndarray, head: np.ndarray, heading: float, axes: tuple[float, float], tail_phase: float,
                tail_amplitude: float) -> None:
    """Draw one sperm (head ellipse, midpiece, travelling-wave tail) into ``canvas`` in place."""
    h, w = canvas.shape
    a, b = axes
    forward = np.array([np.sin(heading), np.cos(heading)])
    side = np.array([np.cos(heading), -np.sin(heading)])
    r = int(np.ceil(a + 2))
    cy, cx = int(round(head[0])), int(round(head[1]))
    ys, xs = np.mgrid[max(cy - r, 0):min(cy + r + 1, h), max(cx - r, 0):min(cx + r + 1, w)]
    if ys.size:
        dy, dx = ys - head[0], xs - head[1]
        u, v = dy * forward[0] + dx * forward[1], dy * side[0] + dx * side[1]
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        canvas[ys, xs] += 0.85 / (1.0 + np.exp((rho - 1.0) * 6.0))
    # midpiece then tail: a curve behind the head, s = arc length from the head's back
    s = np.arange(0.0, 26.0, 0.4)
    lateral = tail_amplitude * np.clip((s - 4.0) / 22.0, 0.0, None) * np.sin(tail_phase - 0.45 * s)
    pts = head[None] - (a + s)[:, None] * forward[None] + lateral[:, None] * side[None]
    vals = np.where(s < 4.0, 0.25, 0.16) * 0.4
    _splat(canvas, pts, vals)


def rate_sperm(quality: float, rater_bias: np.ndarray, rater_noise: np.ndarray, raters: np.ndarray,
               rng: np.random.Generator, num_grades: int = 5) -> tuple[list[int], list[float]]:
    """Ratings of one sperm by a subset of the panel, and their normalised histogram.

    Args:
        quality: latent grade on the ``0 .. num_grades - 1`` scale (0 = best).
        rater_bias: ``(R,)`` personal bias of every rater (in grades).
        rater_noise: ``(R,)`` personal noise standard deviation of every rater (in grades).
        raters: indices of the raters who rate this sperm.
        rng: random generator.
        num_grades: number of ordered grades.

    Returns:
        ``(ratings, distribution)``: one integer grade per rater in ``raters`` and the ``(num_grades,)`` pmf.
    """
    raw = quality + rater_bias[raters] + rng.normal(0.0, 1.0, len(raters)) * rater_noise[raters]
    ratings = np.clip(np.rint(raw), 0, num_grades - 1).astype(int)
    dist = np.bincount(ratings, minlength=num_grades) / len(ratings)
    return ratings.tolist(), dist.tolist()


def synthesize_sperm_video(size: int = 256, num_frames: int = 60, num_sperm: int = 10, num_debris: int = 8,
                           fps: float = 15.0, um_per_pixel: float = 1.0, noise_std: float = 0.03,
                           abnormal_fraction: float = 0.2, seed: int | np.random.Generator = 0
                           ) -> tuple[np.ndarray, list[dict[str, Any]], list[list[float]]]:
    """One synthetic microscope video with its per-sperm ground truth (no ratings; see :func:`rate_sperm`).

    Args:
        size: frame side in pixels (square), at least 64.
        num_frames: number of frames, at least 2.
        num_sperm: number of sperm, at least 1.
        num_debris: number of debris particles (round or irregular blobs drifting slowly).
        fps: frame rate, used for the speeds.
        um_per_pixel: pixel size in micrometres, used for the speeds.
        noise_std: standard deviation of the additive Gaussian noise (intensity range 0..1).
        abnormal_fraction: probability that a sperm has an abnormal head.
        seed: seed or numpy ``Generator``.

    Returns:
        ``(frames, sperm, debris)``: ``uint8`` frames ``(T, size, size)``; one dict per sperm with ``"track"``
        (``(T, 2)`` head ``(y, x)`` per frame, list), ``"motility"``, ``"head"``, ``"programme"``, ``"vcl"``,
        ``"vsl"``, ``"lin"`` and ``"quality"`` (latent grade); debris centres ``(y, x)`` at frame 0.

    Raises:
        ValueError: for out-of-range sizes, counts, rates or fractions.
    """
    if size < 64:
        raise ValueError(f"size must be >= 64, got {size}.")
    if num_frames < 2 or num_sperm < 1 or num_debris < 0:
        raise ValueError(f"need num_frames >= 2, num_sperm >= 1, num_debris >= 0; got {num_frames}, {num_sperm}, "
                         f"{num_debris}.")
    if not fps > 0 or not um_per_pixel > 0 or noise_std < 0 or not 0 <= abnormal_fraction <= 1:
        raise ValueError(f"need fps > 0, um_per_pixel > 0, noise_std >= 0, 0 <= abnormal_fraction <= 1; got {fps}, "
                         f"{um_per_pixel}, {noise_std}, {abnormal_fraction}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    programmes = rng.choice(list(_PROGRAMMES), size=num_sperm, p=(0.35, 0.25, 0.2, 0.2))
    sperm, tracks, headings = [], [], []
    for i, prog in enumerate(programmes):
        track, heading = _simulate_head_track(num_frames, size, str(prog), fps, um_per_pixel, rng)
        head = str(rng.choice(HEAD_SHAPES[1:])) if rng.random() < abnormal_fraction else "normal"
        kin = casa_kinematics(track, fps, um_per_pixel)
        motility = motility_class(**kin)
        quality = _CLASS_QUALITY[motility] + (_ABNORMAL_HEAD_PENALTY if head != "normal" else 0.0)
        quality += rng.normal(0.0, 0.3)
        sperm.append({"id": i, "programme": str(prog), "head": head, "motility": motility, **kin,
                      "quality": float(quality), "track": track.round(3).tolist()})
        tracks.append(track)
        headings.append(heading)
    debris = rng.uniform(8, size - 8, (num_debris, 2))
    debris_drift = rng.normal(0.0, 0.08, (num_debris, 2))
    debris_radius = rng.uniform(0.8, 3.0, num_debris)
    debris_level = rng.uniform(0.15, 0.5, num_debris)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    illumination = 0.08 + 0.05 * np.sin(yy / size * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi)) * np.cos(
        xx / size * np.pi * rng.uniform(0.5, 1.5))
    frames = np.zeros((num_frames, size, size), np.uint8)
    tail_phase = rng.uniform(0, 2 * np.pi, num_sperm)
    tail_speed = np.array([1.6 if s["programme"] != "still" else 0.0 for s in sperm])
    tail_amp = np.array([rng.uniform(2.0, 3.5) if s["programme"] != "still" else rng.uniform(0.3, 1.5) for s in sperm])
    for t in range(num_frames):
        canvas = np.zeros((size, size))
        for i, s in enumerate(sperm):
            _draw_sperm(canvas, tracks[i][t], headings[i][t], _head_axes(s["head"]),
                        tail_phase[i] + tail_speed[i] * t, tail_amp[i])
        canvas = ndimage.gaussian_filter(canvas, 0.6)
        centres = debris + debris_drift * t
        for c, r, lv in zip(centres, debris_radius, debris_level, strict=True):
            y0, y1, x0, x1 = int(max(c[0] - 8, 0)), int(min(c[0] + 9, size)), int(max(c[1] - 8, 0)), int(
                min(c[1] + 9, size))
            d2 = (yy[y0:y1, x0:x1] - c[0]) ** 2 + (xx[y0:y1, x0:x1] - c[1]) ** 2
            canvas[y0:y1, x0:x1] += lv * np.exp(-d2 / (2 * r**2))
        img = illumination + canvas + rng.normal(0.0, noise_std, (size, size))
        frames[t] = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return frames, sperm, debris.round(3).tolist()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 15.0) -> Path:
    """Write grey ``(T, H, W)`` or RGB ``(T, H, W, 3)`` ``uint8`` frames as an H.264 mp4 with PyAV."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=int(round(fps)),
                out_pixel_format="yuv420p")
    return path


def generate_sperm_dataset(out_dir: str | os.PathLike, seed: int = 0, num_videos: int = 6, num_frames: int = 60,
                           num_sperm: int = 10, size: int = 256, fps: float = 15.0, num_raters: int = 40,
                           raters_per_sperm: int = 10, num_debris: int = 8, noise_std: float = 0.03,
                           split: tuple[float, float, float] | list[float] = (0.6, 0.2, 0.2)) -> Path:
    """Write the synthetic ``sperm_emd`` data set (videos, annotations, ``dataset.json``) and return the JSON path.

    The panel of ``num_raters`` simulated embryologists (personal bias ``N(0, 0.35)`` grades, noise standard
    deviation ``U(0.3, 0.9)`` grades) is shared by all videos; each sperm is rated by ``raters_per_sperm`` of them.
    Videos are split whole into training / validation / test (``split`` fractions; at least one video each when
    ``num_videos >= 3``).

    Args:
        out_dir: output folder (created).
        seed: seed of the numpy generator; the same arguments give the same files.
        num_videos: number of videos.
        num_frames: frames per video.
        num_sperm: sperm per video.
        size: frame side in pixels.
        fps: frame rate.
        num_raters: panel size.
        raters_per_sperm: raters per sperm (<= ``num_raters``).
        num_debris: debris particles per video.
        noise_std: image noise.
        split: training / validation / test fractions of the videos.

    Returns:
        Path of ``dataset.json``.

    Raises:
        ValueError: for fewer than 3 videos, ``raters_per_sperm`` outside ``1 .. num_raters`` or a bad ``split``.

    Example::

        >>> from monai_ext.data.synthetic.sperm import generate_sperm_dataset
        >>> path = generate_sperm_dataset("/tmp/sperm", num_videos=3, num_frames=16, num_sperm=3)
    """
    if num_videos < 3:
        raise ValueError(f"num_videos must be >= 3 (one per split), got {num_videos}.")
    if not 1 <= raters_per_sperm <= num_raters:
        raise ValueError(f"raters_per_sperm must be in 1..num_raters={num_raters}, got {raters_per_sperm}.")
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split must be three non-negative fractions, got {split!r}.")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rater_bias = rng.normal(0.0, 0.35, num_raters)
    rater_noise = rng.uniform(0.3, 0.9, num_raters)
    frac = np.asarray(split, np.float64) / np.sum(split)
    n_val = max(1, int(round(frac[1] * num_videos)))
    n_test = max(1, int(round(frac[2] * num_videos)))
    n_train = num_videos - n_val - n_test
    if n_train < 1:
        raise ValueError(f"split {split!r} leaves no training video out of {num_videos}.")
    sections: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    for v in range(num_videos):
        frames, sperm, debris = synthesize_sperm_video(size=size, num_frames=num_frames, num_sperm=num_sperm,
                                                       num_debris=num_debris, fps=fps, noise_std=noise_std, seed=rng)
        for s in sperm:
            raters = rng.choice(num_raters, raters_per_sperm, replace=False)
            s["raters"] = raters.tolist()
            s["ratings"], s["distribution"] = rate_sperm(s["quality"], rater_bias, rater_noise, raters, rng)
        name = f"video_{v:03d}"
        write_video(out / "videos" / f"{name}.mp4", frames, fps)
        ann = {"video": f"videos/{name}.mp4", "fps": fps, "um_per_pixel": 1.0, "size": [size, size],
               "num_frames": num_frames, "grades": list(GRADES), "sperm": sperm, "debris": debris}
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        with open(out / "annotations" / f"{name}.json", "w") as f:
            json.dump(ann, f)
        key = "training" if v < n_train else "validation" if v < n_train + n_val else "test"
        sections[key].append({"video": f"videos/{name}.mp4", "annotation": f"annotations/{name}.json"})
    datalist = {
        "name": "synthetic sperm_emd", "description": "seeded synthetic microscope videos (monai_ext)",
        "fps": fps, "grades": list(GRADES), "num_raters": num_raters,
        "rater_bias": rater_bias.round(4).tolist(), "rater_noise": rater_noise.round(4).tolist(), **sections,
    }
    path = out / "dataset.json"
    with open(path, "w") as f:
        json.dump(datalist, f, indent=1)
    return path
