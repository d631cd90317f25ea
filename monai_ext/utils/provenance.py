"""Where a result came from: command, package versions, machine, time (stored in every results file)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .hardware import probe_hardware

__all__ = ["provenance"]

_PACKAGES = ("monai_ext", "monai", "torch", "pytorch-ignite", "numpy", "scikit-learn")


def _git_state(root: Path | None = None) -> tuple[str | None, list[str] | None]:
    """The short commit of the clone at ``root`` (default: the one this package is imported from) and the tracked
    files that differ from it (staged or not; untracked files are not listed); ``(None, None)`` outside a clone or
    without git."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)
    if not (root / ".git").exists():
        return None, None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    commit = head.stdout.strip() or None
    if commit is None or status.returncode != 0:
        return commit, None
    return commit, sorted(line[3:].strip() for line in status.stdout.splitlines() if line.strip())


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """A JSON-serialisable description of this run: command line, UTC time, package versions, git commit and the
    tracked files that differ from it (``git_modified``, empty for a clean tree; both ``None`` when not run from a
    clone), CPU model and the flags that decide its kernels (:func:`~monai_ext.utils.probe_hardware`),
    logical CPUs, torch threads, load average and the device.

    Example::

        >>> sorted(provenance())[:3]
        ['command', 'cpu', 'cpu_count']
    """
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    dev = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    hw = probe_hardware()
    commit, modified = _git_state()
    return {
        "command": " ".join(sys.argv),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit,
        "git_modified": modified,
        "cpu": hw.name,
        "cpu_flags": sorted(f for f in hw.flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")),
        "native_bf16": hw.native_bf16,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "device": dev,
        "gpu": gpu,
    }
