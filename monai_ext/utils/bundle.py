"""Helpers the bundle configs call: locating the bundle folder and picking the device.

A MONAI Bundle config cannot see its own path, yet every monai_ext bundle must run with no argument both from the
repository root (``python -m monai.bundle run --config_file bundles/aneurysm/configs/train.json``) and from inside
the bundle folder (``python -m monai.bundle run --config_file configs/train.json``). The configs therefore set
``"bundle_root": "$find_bundle_root('aneurysm')"``; ``--bundle_root`` on the command line still overrides it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["find_bundle_root", "default_device", "as_bool", "rank_zero_handlers"]


def _bundle_name(folder: Path) -> str | None:
    meta = folder / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        with open(meta) as f:
            return json.load(f).get("name")
    except (OSError, json.JSONDecodeError):
        return None


def find_bundle_root(name: str, start: str | os.PathLike | None = None) -> str:
    """Return the folder of bundle ``name`` as seen from ``start`` (default: the working directory).

    Looked up in order: ``start`` itself (run from inside the bundle), ``start/bundles/<name>`` (run from the
    repository root), ``start/<name>`` (run from ``bundles/``), then each parent of ``start`` with ``bundles/<name>``.
    A folder counts when it holds ``configs/metadata.json`` whose ``name`` is ``name`` (or, for the first two
    candidates, when the folder is named ``name`` and has a ``configs`` folder).

    Args:
        name: the bundle's name, e.g. ``"aneurysm"``.
        start: folder to search from.

    Raises:
        FileNotFoundError: when no candidate holds the bundle; the message lists where it looked and suggests
            ``--bundle_root``.
    """
    start = Path(start or os.getcwd()).resolve()
    candidates = [start, start / "bundles" / name, start / name]
    candidates += [p / "bundles" / name for p in start.parents]
    for c in candidates:
        if _bundle_name(c) == name or (c.name == name and (c / "configs").is_dir()):
            return str(c)
    looked = ", ".join(str(c) for c in candidates[:4])
    raise FileNotFoundError(
        f"cannot find bundle '{name}' from '{start}' (looked in {looked}, ...); pass --bundle_root <folder>."
    )


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``cuda`` when available (or the given device), else CPU; a local rank under torchrun picks its GPU.

    Raises:
        ValueError: when ``device`` names CUDA but no CUDA device is available.
    """
    if device is not None and str(device) not in ("", "auto"):
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device '{device}' was requested but CUDA is not available; use --device cpu.")
        return dev
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def as_bool(value: Any, name: str) -> bool:
    """A boolean config value, also when it comes from the command line as a string.

    ``python -m monai.bundle run ... --resume false`` passes the *string* ``"false"``, and ``bool("false")`` is
    ``True``; every workflow flag therefore goes through this function.

    Args:
        value: a bool (or number), or one of the strings ``true/false``, ``1/0``, ``yes/no`` (any case).
        name: the config id, named in the error.

    Returns:
        The boolean.

    Raises:
        ValueError: for any other string.

    Example::

        >>> as_bool("false", "resume"), as_bool(True, "resume")
        (False, True)
    """
    if isinstance(value, str):
        if value.strip().lower() in ("true", "1", "yes"):
            return True
        if value.strip().lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{name} must be a boolean (true/false), got {value!r}.")
    return bool(value)


# handlers that only log or write files: one process does that under torch.distributed
_WRITING_HANDLERS = (
    "StatsHandler", "TensorBoardStatsHandler", "LogfileHandler", "ProgressBar", "CheckpointSaver",
    "ResumableCheckpointSaver", "ResultsSaver", "MetricsSaver", "MLFlowHandler", "ClearMLStatsHandler",
)


def rank_zero_handlers(handlers: Sequence[Any] | None) -> list[Any]:
    """``handlers`` on rank 0; on other ranks, without the handlers that only log or write files.

    ``multi_gpu_train.json`` sets ``train#trainer#train_handlers`` to ``rank_zero_handlers(@train#handlers)``: every
    process keeps the handlers that change training (resume loader, lr schedule, validation, reseeding), and only
    rank 0 prints, writes TensorBoard/MLflow logs and saves checkpoints. (The model zoo's ``handlers[: -2]`` slice does
    the same for a fixed list; this works when a user appends or removes handlers.)

    Example::

        >>> rank_zero_handlers(None)
        []
    """
    handlers = list(handlers or [])
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return handlers
    if torch.distributed.get_rank() == 0:
        return handlers
    return [h for h in handlers if not any(c.__name__ in _WRITING_HANDLERS for c in type(h).__mro__)]
