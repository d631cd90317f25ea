"""Sequence loading and grouped cross-validation folds for the embryo time-lapse study."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_ext.data import read_image, validate_image

__all__ = ["FRAME_SUFFIXES", "load_sequence", "normalize_sequence", "sequence_folds"]

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _read_frame(path: Path) -> np.ndarray:
    img = np.asarray(read_image(path, what="frame"), dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] in (1, 2, 3, 4):  # grey + alpha or colour frames are converted to grey
        img = img[..., :3].mean(-1) if img.shape[-1] >= 3 else img[..., 0]
    validate_image(img, path, ndim=2, layout="a 2D grey or colour frame (H, W) or (H, W, C)", what="frame")
    return img


def load_sequence(path: str | os.PathLike | Sequence[str | os.PathLike], num_frames: int | None = None,
                  image_size: int | None = None) -> np.ndarray:
    """Read a time-lapse sequence as ``(T, H, W)`` float32.

    Accepted forms: a folder of frame images (sorted by file name), a list of frame files, or one 2D+t image file
    (NIfTI or anything ``monai.transforms.LoadImage`` reads) stored as ``(H, W, T)``.

    Args:
        path: folder, list of frame files or a 2D+t image file.
        num_frames: when given, keep this many frames evenly spaced over the sequence (the first and the last
            included); a shorter sequence raises.
        image_size: when given, resize every frame to ``image_size x image_size`` (bilinear).

    Raises:
        FileNotFoundError: when the path or a frame file does not exist or a folder holds no frame image.
        ValueError: when a file cannot be read (truncated, corrupt), a frame is not 2D, the image is not 2D+t, it
            holds NaN / infinite values, frames differ in size, or there are fewer than ``num_frames`` (names the
            file).
    """
    if isinstance(path, (list, tuple)):
        files = [Path(p) for p in path]
    else:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"sequence path not found: '{p}'.")
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES) if p.is_dir() else None
        if files is not None and not files:
            raise FileNotFoundError(f"sequence folder '{p}' holds no frame image ({', '.join(FRAME_SUFFIXES)}).")
    if files is None:
        from monai.transforms import LoadImage

        arr = np.asarray(read_image(path, LoadImage(image_only=True), what="2D+t image"), dtype=np.float32)
        if arr.ndim == 4 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        validate_image(arr, path, ndim=3, layout="a 2D+t image (H, W, T)", what="2D+t image")
        seq = np.moveaxis(arr, -1, 0)
    else:
        frames = [_read_frame(f) for f in files]
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"frames of sequence '{path}' differ in size: {sorted(shapes)}.")
        seq = np.stack(frames)
    if num_frames is not None:
        if seq.shape[0] < int(num_frames):
            raise ValueError(f"sequence '{path}' has {seq.shape[0]} frames, fewer than num_frames={num_frames}.")
        seq = seq[np.round(np.linspace(0, seq.shape[0] - 1, int(num_frames))).astype(int)]
    if image_size is not None and seq.shape[1:] != (image_size, image_size):
        t = torch.nn.functional.interpolate(torch.from_numpy(seq)[:, None], size=(image_size, image_size),
                                            mode="bilinear", align_corners=False)
        seq = t[:, 0].numpy()
    return seq.astype(np.float32)


def normalize_sequence(seq: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Zero mean, unit variance over the whole sequence (every frame shares the statistics, so brightness changes
    over time are kept)."""
    std = seq.std()
    return (seq - seq.mean()) / (std if float(std) > 0 else 1.0)


def sequence_folds(labels: Sequence[int] | np.ndarray, num_folds: int = 5, val_fraction: float = 0.2,
                   seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Stratified k-fold split of *sequences* (grouped CV: all frames of a sequence stay in one split).

    Each fold's test part is one of ``num_folds`` stratified parts; the rest is split (stratified) into training
    and a validation part of ``val_fraction`` used to choose the decision threshold.

    Args:
        labels: per-sequence 0/1 labels.
        num_folds: ``k >= 2``.
        val_fraction: fraction of the non-test sequences held out for validation, in (0, 1).
        seed: shuffling seed.

    Returns:
        A list of ``{"train": idx, "val": idx, "test": idx}`` sequence-index arrays; the test parts partition all
        sequences.

    Raises:
        ValueError: when ``num_folds < 2``, ``val_fraction`` is outside (0, 1) or a class has fewer than
            ``num_folds`` sequences.
    """
    y = np.asarray(labels).astype(int).ravel()
    if int(num_folds) < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds!r}.")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
    for c in (0, 1):
        if int((y == c).sum()) < num_folds:
            raise ValueError(f"class {c} has {(y == c).sum()} sequences, fewer than num_folds={num_folds}.")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(num_folds)]
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        for k, chunk in enumerate(np.array_split(idx, num_folds)):
            parts[k].extend(chunk.tolist())
    folds = []
    for k in range(num_folds):
        test = np.sort(np.asarray(parts[k], dtype=int))
        rest = np.setdiff1d(np.arange(y.size), test)
        val = []
        for c in (0, 1):
            rc = rng.permutation(rest[y[rest] == c])
            val.extend(rc[: max(1, int(round(val_fraction * rc.size)))].tolist())
        val = np.sort(np.asarray(val, dtype=int))
        folds.append({"train": np.setdiff1d(rest, val), "val": val, "test": test})
    return folds
