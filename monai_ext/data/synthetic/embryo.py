"""Seeded synthetic blastocyst time-lapse sequences: the embedded default data of the ``embryo_pu`` study.

Each sequence shows one embryo over ``num_frames`` frames: a bright zona pellucida ring, a trophectoderm (TE) layer
of small cells lining the blastocoel, an inner cell mass (ICM) on one side, loose fragments, and an expansion of the
blastocoel over time (the zona thins as the embryo expands). A latent quality ``q`` in [0, 1] drives every visual
cue: good embryos have many uniform TE cells, a dense and large ICM, few fragments and fast expansion. Frames are
degraded by per-frame defocus blur, an illumination gradient and noise.

Outcome model (the point of the study). An embryo is *viable-looking* (the PU "positive" class) with probability
``sigmoid((q - quality_threshold) / quality_slope)``; independently it carries a hidden abnormality (e.g. a
chromosomal one) with probability ``abnormal_rate`` that leaves **no visual trace**. Live birth happens when the
embryo is viable-looking and normal. The failures therefore contain good-looking embryos (viable but abnormal), which
is why the study treats failures as *unlabeled* rather than negative. With the defaults about 40 % of embryos are
viable and 45 % of those are abnormal, giving about 22 % live births as in the seed study (140 of 643).

The true class prior of the PU problem is the viable fraction *among the failures*,
``pi = P(viable | no live birth) = P(viable, abnormal) / P(no live birth)``; the generator writes its empirical value
(``prior_true``) and its population value (``prior_population``) into ``dataset.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

__all__ = ["generate_embryo_dataset", "synthesize_embryo_sequence", "viable_probability"]


def viable_probability(quality: np.ndarray | float, threshold: float = 0.565, slope: float = 0.06) -> np.ndarray:
    """Probability that an embryo of latent quality ``quality`` is viable-looking (before the hidden abnormality).

    Args:
        quality: latent quality in [0, 1].
        threshold: quality at which the probability is one half.
        slope: logistic scale (smaller is steeper).
    """
    return 1.0 / (1.0 + np.exp(-(np.asarray(quality, dtype=np.float64) - threshold) / slope))


def _blob_sum(yy: np.ndarray, xx: np.ndarray, centers: np.ndarray, radii: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Sum of Gaussian blobs (vectorised over blobs)."""
    if centers.size == 0:
        return np.zeros_like(yy)
    d2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (xx[None] - centers[:, 1, None, None]) ** 2
    return (amps[:, None, None] * np.exp(-d2 / (2.0 * radii[:, None, None] ** 2))).sum(0)


def synthesize_embryo_sequence(quality: float, rng: np.random.Generator, num_frames: int = 8,
                               image_size: int = 64, abnormal_cue: float = 0.0) -> np.ndarray:
    """Draw one blastocyst time-lapse sequence whose appearance is driven by ``quality``.

    Args:
        quality: latent quality in [0, 1] (1 = best).
        rng: numpy random generator (the only source of randomness).
        num_frames: frames ``T``.
        image_size: frame height and width ``S``.
        abnormal_cue: strength in [0, 1] of a visible trace of an abnormality, independent of ``quality``: extra
            fragments, ``Poisson(12 * abnormal_cue)`` of them, on top of the quality-driven ones (0: none, and no
            extra random draw, so sequences without a cue are the same as before the option existed).

    Returns:
        ``(T, S, S)`` float32 frames in [0, 1].

    Raises:
        ValueError: when ``quality`` or ``abnormal_cue`` is outside [0, 1], ``num_frames < 2`` or
            ``image_size < 32``.
    """
    if not 0.0 <= float(abnormal_cue) <= 1.0:
        raise ValueError(f"abnormal_cue must be in [0, 1], got {abnormal_cue!r}.")
    if not 0.0 <= float(quality) <= 1.0:
        raise ValueError(f"quality must be in [0, 1], got {quality!r}.")
    if int(num_frames) < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames!r}.")
    if int(image_size) < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size!r}.")
    q = float(quality)
    s = int(image_size)
    yy, xx = np.mgrid[:s, :s].astype(np.float64)
    c = s / 2.0 + rng.normal(0.0, s * 0.02, 2)
    dy, dx = yy - c[0], xx - c[1]
    rho = np.hypot(dy, dx)
    # expansion: blastocoel radius grows from r0 to r1 over the sequence; better embryos expand further and faster
    r_zona = s * 0.40
    r0 = s * rng.uniform(0.18, 0.22)
    r1 = r_zona * (0.62 + 0.33 * q + rng.normal(0, 0.03))
    onset = rng.uniform(0.0, 0.4) + 0.3 * (1 - q)
    # trophectoderm: number of cells and size uniformity from quality
    n_te = int(round(10 + 14 * q + rng.normal(0, 1.5)))
    n_te = max(n_te, 6)
    te_angles = np.sort(rng.uniform(0, 2 * np.pi, n_te)) if q < 0.5 else (
        np.linspace(0, 2 * np.pi, n_te, endpoint=False) + rng.normal(0, 0.25 * (1 - q), n_te)
    )
    te_size = s * 0.035 * np.exp(rng.normal(0, 0.05 + 0.45 * (1 - q), n_te))
    te_amp = 0.35 * np.exp(rng.normal(0, 0.1 + 0.3 * (1 - q), n_te))
    # inner cell mass: density (number and compactness of cells) from quality
    icm_angle = rng.uniform(0, 2 * np.pi)
    n_icm = int(round(3 + 12 * q + rng.normal(0, 1.0)))
    n_icm = max(n_icm, 2)
    icm_spread = s * (0.10 - 0.05 * q)
    icm_offsets = rng.normal(0, 1, (n_icm, 2)) * icm_spread
    icm_amp = (0.25 + 0.35 * q) * np.exp(rng.normal(0, 0.15, n_icm))
    # fragments: loose debris inside the zona, many when quality is low
    n_frag = rng.poisson(1 + 10 * (1 - q) ** 2)
    if abnormal_cue > 0:
        n_frag += rng.poisson(12.0 * float(abnormal_cue))
    frag_r = rng.uniform(0.1, 0.8, n_frag)
    frag_a = rng.uniform(0, 2 * np.pi, n_frag)
    frag_size = s * rng.uniform(0.012, 0.025, n_frag)
    frag_amp = rng.uniform(0.3, 0.6, n_frag)
    # acquisition: illumination gradient direction and strength
    ill_dir = rng.uniform(0, 2 * np.pi)
    ill_amp = rng.uniform(0.0, 0.15)
    frames = np.empty((num_frames, s, s), dtype=np.float32)
    for t in range(num_frames):
        tau = t / (num_frames - 1)
        grow = np.clip((tau - onset) / max(1e-3, 1.0 - onset), 0.0, 1.0)
        r_cav = r0 + (r1 - r0) * grow
        zona_w = s * (0.05 - 0.02 * grow * q)  # the zona thins while the embryo expands
        img = 0.25 * np.ones((s, s))
        img += 0.45 * np.exp(-((rho - r_zona) ** 2) / (2 * zona_w**2))
        inside = rho < r_zona - zona_w
        img[inside] = 0.30  # perivitelline space and cytoplasm
        img += 0.10 * np.exp(-((rho - r_cav) ** 2) / (2 * (s * 0.02) ** 2))  # TE layer membrane
        img -= 0.12 * (rho < r_cav - s * 0.02)  # the blastocoel is darker
        te_centers = np.stack([c[0] + r_cav * np.sin(te_angles), c[1] + r_cav * np.cos(te_angles)], 1)
        img += _blob_sum(yy, xx, te_centers, te_size, te_amp)
        icm_c = np.array([c[0] + (r_cav - s * 0.06) * np.sin(icm_angle), c[1] + (r_cav - s * 0.06) * np.cos(icm_angle)])
        img += _blob_sum(yy, xx, icm_c + icm_offsets * (0.8 + 0.2 * grow), np.full(n_icm, s * 0.03), icm_amp)
        fr = frag_r * (r_zona - zona_w)
        frag_c = np.stack([c[0] + fr * np.sin(frag_a + 0.1 * t), c[1] + fr * np.cos(frag_a + 0.1 * t)], 1)
        img += _blob_sum(yy, xx, frag_c, frag_size, frag_amp)
        img *= 1.0 + ill_amp * (np.cos(ill_dir) * dx + np.sin(ill_dir) * dy) / s
        img = ndimage.gaussian_filter(img, sigma=abs(rng.normal(0.6, 0.4)))  # focus drift
        img += rng.normal(0, 0.03, img.shape)
        frames[t] = np.clip(img, 0.0, 1.0)
    return frames


def generate_embryo_dataset(out_dir: str | os.PathLike, seed: int = 0, num_cases: int = 200, num_frames: int = 8,
                            image_size: int = 64, abnormal_rate: float = 0.45, quality_threshold: float = 0.565,
                            quality_slope: float = 0.06, abnormal_visibility: float = 0.0) -> Path:
    """Write a seeded synthetic blastocyst time-lapse data set and its datalist.

    Layout: one folder of PNG frames per sequence (``sequences/seq_000/frame_00.png`` ...) and ``dataset.json``::

        {"training": [{"image": "sequences/seq_000", "label": 0, "sequence": "seq_000", "quality": 0.41,
                       "viable": 0, "abnormal": 1}, ...],
         "num_frames": 8, "image_size": 64, "live_birth_rate": 0.22, "prior_true": 0.23, ...}

    ``label`` is 1 for live birth. ``viable`` and ``abnormal`` are the hidden ground truth of the simulation (never
    used for training). ``prior_true`` is the viable fraction among the failures, the true class prior of the PU
    problem (positives labeled = live births, unlabeled = failures).

    Args:
        out_dir: destination folder (created).
        seed: seed of ``numpy.random.default_rng``.
        num_cases: number of sequences.
        num_frames: frames per sequence.
        image_size: frame height and width.
        abnormal_rate: probability of the hidden, invisible abnormality.
        quality_threshold: quality at which an embryo is viable with probability one half.
        quality_slope: logistic scale of viability against quality.
        abnormal_visibility: in [0, 1]; 0 (default): the abnormality leaves no visual trace, so the live-birth
            posterior is a monotone function of the viability posterior and PN and PU rank alike; above 0, abnormal
            embryos carry extra fragments (``synthesize_embryo_sequence(abnormal_cue=...)``), so the outcome depends
            on appearance beyond quality and a live-birth ranking (PN) and a viability ranking (PU) can differ.

    Returns:
        Path of ``dataset.json``.

    Raises:
        ValueError: on ``num_cases < 4``, ``abnormal_rate`` outside [0, 1), ``quality_slope <= 0`` or
            ``abnormal_visibility`` outside [0, 1].

    Example::

        >>> import tempfile
        >>> path = generate_embryo_dataset(tempfile.mkdtemp(), num_cases=8, num_frames=4)
    """
    if int(num_cases) < 4:
        raise ValueError(f"num_cases must be >= 4, got {num_cases!r}.")
    if not 0.0 <= float(abnormal_rate) < 1.0:
        raise ValueError(f"abnormal_rate must be in [0, 1), got {abnormal_rate!r}.")
    if not float(quality_slope) > 0:
        raise ValueError(f"quality_slope must be > 0, got {quality_slope!r}.")
    if not 0.0 <= float(abnormal_visibility) <= 1.0:
        raise ValueError(f"abnormal_visibility must be in [0, 1], got {abnormal_visibility!r}.")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "sequences").mkdir(parents=True, exist_ok=True)
    quality = rng.beta(2.0, 2.0, num_cases)
    p_viable = viable_probability(quality, quality_threshold, quality_slope)
    viable = rng.random(num_cases) < p_viable
    abnormal = rng.random(num_cases) < abnormal_rate
    live = viable & ~abnormal
    items = []
    for i in range(num_cases):
        name = f"seq_{i:03d}"
        frames = synthesize_embryo_sequence(float(quality[i]), rng, num_frames, image_size,
                                            float(abnormal_visibility) if abnormal[i] else 0.0)
        folder = out / "sequences" / name
        folder.mkdir(exist_ok=True)
        for t, frame in enumerate(frames):
            iio.imwrite(folder / f"frame_{t:02d}.png", np.round(frame * 255).astype(np.uint8))
        items.append({
            "image": f"sequences/{name}", "label": int(live[i]), "sequence": name,
            "quality": round(float(quality[i]), 4), "viable": int(viable[i]), "abnormal": int(abnormal[i]),
        })
    fails = ~live
    # population prior: E[p_viable] * abnormal_rate / (1 - E[p_viable] (1 - abnormal_rate)), E over Beta(2, 2)
    grid = np.linspace(0, 1, 2001)
    beta_pdf = 6 * grid * (1 - grid)
    ev = float(np.trapezoid(viable_probability(grid, quality_threshold, quality_slope) * beta_pdf, grid))
    content = {
        "name": "synthetic blastocyst time-lapse (monai_ext.data.synthetic.embryo)",
        "description": "label: 1 live birth, 0 failure; viable/abnormal are hidden simulation variables",
        "seed": int(seed), "num_frames": int(num_frames), "image_size": int(image_size),
        "abnormal_rate": float(abnormal_rate), "abnormal_visibility": float(abnormal_visibility),
        "live_birth_rate": float(live.mean()),
        "prior_true": float(viable[fails].mean()) if fails.any() else 0.0,
        "prior_population": ev * abnormal_rate / (1.0 - ev * (1.0 - abnormal_rate)),
        "training": items,
    }
    path = out / "dataset.json"
    with open(path, "w") as f:
        json.dump(content, f, indent=1)
    return path
