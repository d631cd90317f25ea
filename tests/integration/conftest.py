"""The integration tests' reference training runs (reliability_runs.reference_run) live in one folder of the pytest
session's base temporary directory, shared by the xdist workers, so that each runs once per session; pytest removes
old base directories itself (it keeps the last three)."""

from __future__ import annotations

import os

import pytest
from reliability_runs import use_session_dir


@pytest.fixture(scope="session", autouse=True)
def _shared_reference_runs(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's base is a folder of the session's (popen-gw0, popen-gw1...); without it, its own
    use_session_dir((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "reliability_reference_runs")
