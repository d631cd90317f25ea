"""Description of the machine a benchmark ran on, for the header of every benchmark's output.

The probe itself is :func:`monai_ext.utils.probe_hardware` (CPU model, instruction-set flags, ISA caps set in the
environment, native bf16, threads, load); this module formats it for benchmark headers::

    from _machine import describe_machine, load_line
    print(describe_machine())

Timings on a shared machine depend on its load: every benchmark prints this at the start and ``load_line()`` at the
end, and a figure recorded in the docs states the load average it was taken under.
"""

from __future__ import annotations

import os
import platform

from monai_ext.utils import probe_hardware


def load_line() -> str:
    """``load average 1/5/15 min: a / b / c on N cores``."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average: unavailable"
    return f"load average 1/5/15 min: {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def describe_machine() -> str:
    """Multi-line description: the hardware probe's summary, OS and Python, load."""
    return "\n".join([probe_hardware().summary(),
                      f"{platform.system()} {platform.release()}; Python {platform.python_version()}", load_line()])


if __name__ == "__main__":
    print(describe_machine())
