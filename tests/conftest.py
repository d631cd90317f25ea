"""Suite-wide setting: under pytest-xdist (the README's ``pytest -n 2``), each worker computes on its share of the
cores instead of every worker starting one thread per core.

Two workers on two cores, each with torch's and the BLAS's default of one thread per core, run four compute threads
on two cores: OpenMP's threads spin while they wait for each other, and the in-process tests of networks, losses,
inferers and metrics took 62-66 s instead of 44-47 s (AMD EPYC, 2 cores, 7 Dec 2026). An ``OMP_NUM_THREADS`` set by
the caller is kept; the subprocesses of the bundle tests set one thread themselves (``bundle_checks.run_bundle_cli``).
"""

from __future__ import annotations

import os


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // int(workers))
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy's BLAS keeps its default
        return
    threadpool_limits(threads)
