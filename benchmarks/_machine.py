"""One-paragraph description of the machine a benchmark ran on, for the header of every benchmark's output.

Dependency-free on purpose (standard library only; torch is asked for its thread count only when it is already
importable), so that any benchmark can import it first::

    from _machine import describe_machine
    print(describe_machine())

Timings on a shared machine depend on its load: every benchmark prints this at the start and ``load_line()`` at the
end, and a figure recorded in the docs states the load average it was taken under.
"""

from __future__ import annotations

import os
import platform

#: CPU flags that decide which kernels torch and numpy can use (as named in /proc/cpuinfo).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """CPU model name and flag set from ``/proc/cpuinfo`` (``platform.processor()`` and no flags elsewhere)."""
    model, flags = "", set()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def torch_threads() -> str:
    """``torch.get_num_threads()`` as text, or why it is unknown."""
    try:
        import torch
    except ImportError:
        return "n/a (torch not installed)"
    return str(torch.get_num_threads())


def load_line() -> str:
    """``load average 1/5/15 min: a / b / c on N cores``."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average: unavailable"
    return f"load average 1/5/15 min: {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def describe_machine() -> str:
    """Multi-line description: CPU model and vector/matrix flags, cores, torch threads, OS, Python, load."""
    model, flags = cpu_info()
    present = ", ".join(f"{name} {'yes' if name in flags else 'no'}" for name in FLAGS) if flags else "flags unknown"
    return "\n".join(
        [
            f"CPU: {model}; {os.cpu_count()} logical cores; {present}",
            f"torch threads: {torch_threads()}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}",
            load_line(),
        ]
    )


if __name__ == "__main__":
    print(describe_machine())
