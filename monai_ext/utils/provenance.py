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

__all__ = ["cpu_model", "provenance"]

_PACKAGES = ("monai_ext", "monai", "torch", "pytorch-ignite", "numpy", "scikit-learn")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """A JSON-serialisable description of this run: command line, UTC time, package versions, git commit (when run
    from a clone), CPU model, logical CPUs, torch threads, load average and the device.

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
    return {
        "command": " ".join(sys.argv),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": _git_commit(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "device": dev,
        "gpu": gpu,
    }
