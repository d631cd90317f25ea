"""Resume after SIGKILL, for every bundle (issue 10, part 1).

Each bundle's tiny training run (3 epochs, see ``reliability_runs.SPECS``) is started with
``python -m monai.bundle run`` and killed with SIGKILL as soon as its first per-epoch checkpoint appears, i.e. during
epoch 2. Then:

- every ``*.pt`` file left on disk loads with ``torch.load(weights_only=True)`` (checkpoints are written to a
  ``.<name>.<random>.tmp`` file and moved into place with ``os.replace``, so a kill while saving leaves at most such a
  temporary file, never a truncated checkpoint);
- the same command again (``resume`` is ``true`` by default in every train.json) continues from that checkpoint and
  finishes; its results tables and trained weights are *bit-identical* to those of an uninterrupted run with the
  same seed. Exact equality holds on CPU because each workflow restores model, optimiser, scheduler, epoch and every
  RNG stream it draws from (global Python/NumPy/torch state, plus the workflow's own generators), and all runs use one
  thread (``OMP_NUM_THREADS=1``) so that floating-point reductions happen in the same order.
"""

from __future__ import annotations

import pytest
import torch
from reliability_runs import (
    BUNDLES,
    SPECS,
    assert_same_outcome,
    epoch_of,
    model_state,
    outcome,
    reference_run,
    start_and_kill,
    train,
)

pytestmark = pytest.mark.slow


def _checkpoints_after_kill(root):
    files = sorted((root / "ckpt").rglob("*.pt"))
    assert files, f"no checkpoint under {root / 'ckpt'}"
    for f in files:
        state = torch.load(f, weights_only=True)  # raises on a truncated or non-tensor pickle
        assert model_state(state) and all(isinstance(v, torch.Tensor) for v in model_state(state).values()), f
    return files


@pytest.mark.parametrize("name", BUNDLES)
def test_sigkill_then_resume_matches_uninterrupted(name, tmp_path):
    ref_root, _ = reference_run(name)
    epochs = SPECS[name].overrides["epochs"]

    killed_at, _ = start_and_kill(name, tmp_path, kill_after_epoch=1)
    # the kill landed before the run finished, so the rerun has epochs left to resume
    assert 1 <= killed_at < epochs, f"{name}: killed after epoch {killed_at} of {epochs}"
    _checkpoints_after_kill(tmp_path)
    leftovers = [p.name for p in (tmp_path / "ckpt").rglob("*.tmp")]
    assert all(p.startswith(".") and not p.endswith(".pt") for p in leftovers), leftovers

    train(name, tmp_path)  # same command: resumes (resume defaults to true)
    state = torch.load(tmp_path / "ckpt" / SPECS[name].poll, weights_only=True)
    assert epoch_of(state) == epochs
    assert_same_outcome(name, outcome(name, ref_root), outcome(name, tmp_path), "resumed vs uninterrupted")


def test_resume_false_starts_over(tmp_path):
    """``--resume false`` ignores an existing checkpoint: the run trains from epoch 0 (ips_histogram, cheapest)."""
    name = "ips_histogram"
    ref_root, _ = reference_run(name)
    killed_at, _ = start_and_kill(name, tmp_path, kill_after_epoch=1)
    assert killed_at >= 1
    # a corrupted optimiser state would make a resumed run fail; a fresh run must not even read it
    path = tmp_path / "ckpt" / SPECS[name].poll
    state = torch.load(path, weights_only=True)
    state["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(state, path)
    train(name, tmp_path, resume=False)
    assert_same_outcome(name, outcome(name, ref_root), outcome(name, tmp_path), "--resume false vs fresh run")
