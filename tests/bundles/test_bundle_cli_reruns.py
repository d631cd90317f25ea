"""The bundle tests' CLI helper reruns a torchrun run on the gloo exit race only: from scratch (its checkpoint and
output folders removed), at most ``GLOO_EXIT_RERUNS`` times; any other failure, or the race once more, fails."""

from __future__ import annotations

import subprocess

import bundle_checks
import pytest
from bundle_checks import GLOO_EXIT_RACE, GLOO_EXIT_RERUNS, run_bundle_cli

RACE = subprocess.CompletedProcess([], -6, "", f"rank 1 ...\n{GLOO_EXIT_RACE}\n")
OTHER = subprocess.CompletedProcess([], 1, "", "ValueError: something else\n")
OK = subprocess.CompletedProcess([], 0, "done\n", "")


def _fake_runs(monkeypatch, outcomes, folders):
    """``subprocess.run`` in the helper answers ``outcomes`` in turn; each call records which folders still exist
    (a rerun must start from scratch) and writes into them, as a run would."""
    calls = []

    def fake(cmd, **kwargs):
        calls.append({"cmd": cmd, "existing": sorted(p.name for p in folders if p.exists())})
        for p in folders:
            p.mkdir(parents=True, exist_ok=True)
            (p / "checkpoint.pt").write_text("state")
        return outcomes[len(calls) - 1]

    monkeypatch.setattr(bundle_checks.subprocess, "run", fake)
    return calls


def _overrides(tmp_path):
    return {"ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "out"), "epochs": 1}


def test_reruns_from_scratch_on_the_gloo_exit_race(tmp_path, monkeypatch):
    assert GLOO_EXIT_RERUNS == 2
    folders = [tmp_path / "models", tmp_path / "out"]
    calls = _fake_runs(monkeypatch, [RACE, RACE, OK], folders)
    with pytest.warns(UserWarning, match="aborted at exit") as record:
        proc = run_bundle_cli("sperm_emd", ["train.json"], _overrides(tmp_path), nproc=2)
    assert proc.returncode == 0 and len(calls) == 3 and len(record) == 2
    assert calls[0]["existing"] == [] and all(c["existing"] == [] for c in calls[1:])  # removed before each rerun
    assert calls[0]["cmd"] == calls[1]["cmd"] == calls[2]["cmd"] and "torch.distributed.run" in calls[0]["cmd"]


def test_the_race_once_more_than_allowed_fails(tmp_path, monkeypatch):
    calls = _fake_runs(monkeypatch, [RACE] * (GLOO_EXIT_RERUNS + 1), [tmp_path / "models"])
    with pytest.warns(UserWarning), pytest.raises(AssertionError, match=GLOO_EXIT_RACE):
        run_bundle_cli("sperm_emd", ["train.json"], _overrides(tmp_path), nproc=2)
    assert len(calls) == GLOO_EXIT_RERUNS + 1


@pytest.mark.parametrize("first, nproc", [(OTHER, 2), (RACE, 1)])
def test_no_rerun_for_another_failure_or_a_single_process(tmp_path, monkeypatch, first, nproc):
    calls = _fake_runs(monkeypatch, [first, OK], [tmp_path / "models"])
    proc = run_bundle_cli("sperm_emd", ["train.json"], _overrides(tmp_path), nproc=nproc, check=False)
    assert len(calls) == 1 and proc.returncode == first.returncode
    assert (tmp_path / "models" / "checkpoint.pt").exists()  # nothing removed
