"""Atomic, safe checkpoint I/O shared by every study workflow.

A checkpoint is first written to a temporary file in the target folder and then moved over the target with
:func:`os.replace`, which is atomic on POSIX and Windows: a run killed while saving leaves either the previous
checkpoint or the new one, never a half-written file. Loading uses ``torch.load(weights_only=True)``, so a
checkpoint cannot execute code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "get_rng_state", "set_rng_state"]


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save ``obj`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically.

    Args:
        obj: the checkpoint content, e.g. ``{"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``.
        path: destination file; its folder is created when missing.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        FileNotFoundError: when ``path`` does not exist (the message names it).
        RuntimeError: when the file is not a readable checkpoint (truncated, foreign format); names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: '{path}'.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file; name the file in one clear error
        raise RuntimeError(f"cannot read checkpoint '{path}': {e}") from e


def get_rng_state() -> dict[str, Any]:
    """Return the Python, NumPy and torch RNG states as a ``weights_only``-loadable dict (for exact resume)."""
    np_state = np.random.get_state()  # noqa: NPY002 - MONAI transforms draw from the global state
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`get_rng_state`."""
    random.setstate((3, tuple(int(v) for v in state["python"]), state["python_pos"]))
    keys = np.asarray(state["numpy_keys"], dtype=np.int64).astype(np.uint32)
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), int(has_gauss), float(gauss)))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
