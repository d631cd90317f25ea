"""Tiny bundle training runs shared by the resume, reproducibility and distributed tests (tests/integration).

Every run is ``python -m monai.bundle run`` in a subprocess (one thread, CPU), so that a run can be killed and so that
all compared runs execute the same way (:func:`train` from the bundle's folder). :func:`reference_run` runs the
uninterrupted seed-0 run of each bundle once for the whole pytest session, shared by the xdist workers (a folder of
the session's base temporary directory and a file lock, :func:`use_session_dir`): the resume test compares against it
and the reproducibility test reruns it.

A run's *outcome* is what a user would compare: its results tables (CSV, without the wall-clock columns), the
validation history of the best-model saver (bundles on MONAI engines) and the trained weights of every final
checkpoint.
"""

from __future__ import annotations

import atexit
import csv
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from bundle_checks import REPO, bundle_dir, cli_overrides, config_paths, run_bundle_cli  # noqa: E402

# wall-clock measurements differ between any two runs; everything else in the tables must not
TIMING_COLUMNS = ("train_seconds", "infer_mpix_per_s")
#: the file of a run's folder that keeps what :func:`train`'s command printed
LOG_NAME = "cli_output.txt"


@dataclass(frozen=True)
class Spec:
    """How to run one bundle tiny and what to compare.

    Attributes:
        overrides: CLI overrides of train.json (3 epochs so that a run killed after epoch 1 still has work left).
        poll: checkpoint (relative to ``ckpt_dir``) written atomically after every epoch of the first training job.
        tables: results CSVs (relative to ``output_dir``) compared between runs.
        models: checkpoints (relative to ``ckpt_dir``) whose ``model`` tensors are compared between runs.
        share_data: every run after the reference reads the reference run's synthetic data (``--dataset_dir``)
            instead of generating its own. Needed for sperm_emd: its generator writes H.264 videos and libx264 in
            this PyAV build does not encode the same frames to the same bytes twice (decoded pixels differ by up
            to ~40 grey levels), so two fresh runs would train and test on different pixels.
    """

    overrides: dict[str, Any]
    poll: str
    tables: tuple[str, ...]
    models: tuple[str, ...]
    share_data: bool = False


SPECS: dict[str, Spec] = {
    # the landmark classifier of train.json; 12 classes of 32x32 tri-planar patches
    "aneurysm": Spec(
        overrides={"epochs": 3, "num_cases": 6, "volume_size": 32, "samples_per_case": 48, "val_samples_per_case": 32,
                   "channels": [4, 8], "hidden_features": 16, "cases_per_batch": 2},
        poll="checkpoint.pt",
        tables=(),
        models=("checkpoint.pt", "model.pt"),
    ),
    # one method on fold 0 of 40 sequences
    "embryo_pu": Spec(
        overrides={"epochs": 3, "num_cases": 40, "num_frames": 4, "image_size": 32, "channels": [4, 8],
                   "num_folds": 2, "train_frames": 2, "batch_size": 4},
        poll="checkpoint.pt",
        tables=(),
        models=("checkpoint.pt", "model.pt"),
    ),
    # MONAI engines: the training state (checkpoint.pt) and the best model (model.pt, a bare state_dict)
    "ips_histogram": Spec(
        overrides={"epochs": 3, "num_cases": 6, "image_size": 96, "patches_per_image": 16, "images_per_batch": 2,
                   "patch_size": 32, "stride": 8, "channels": [4, 8]},
        poll="checkpoint.pt",
        tables=(),
        models=("checkpoint.pt", "model.pt"),
    ),
    "sperm_emd": Spec(
        overrides={"epochs": 3, "num_videos": 3, "num_frames": 16, "num_sperm": 4, "video_size": 96, "crop_size": 16,
                   "clip_length": 4, "batch_size": 4, "warmup_epochs": 0, "network_kwargs": {"num_layers": 1}},
        poll="checkpoint.pt",
        tables=(),
        models=("checkpoint.pt", "model.pt"),
        share_data=True,
    ),
}
BUNDLES = tuple(SPECS)

# a reference run takes 10-40 s on a 2-core CPU; a worker waiting for another's run gives up after this long
REFERENCE_LOCK_TIMEOUT = 900.0
_SESSION_DIR: Path | None = None


def use_session_dir(path: str | os.PathLike) -> None:
    """Keep the reference runs in ``path``: the same folder for every xdist worker of a pytest session
    (tests/integration/conftest.py passes a folder of the session's base temporary directory), so that each reference
    run happens once per session instead of once per worker."""
    global _SESSION_DIR
    _SESSION_DIR = Path(path)
    _SESSION_DIR.mkdir(parents=True, exist_ok=True)


def session_dir() -> Path:
    """The folder of the session's reference runs (a temporary folder of this process when none was set)."""
    if _SESSION_DIR is None:
        path = tempfile.mkdtemp(prefix="monai_ext_reliability_")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        use_session_dir(path)
    return _SESSION_DIR


def reference_root(name: str, seed: int = 0) -> Path:
    return session_dir() / f"{name}_seed{seed}_reference"


def shared_data_dir(name: str) -> Path:
    return reference_root(name) / "out" / "synthetic_data"


def run_overrides(name: str, root: Path, seed: int = 0, **extra: Any) -> dict[str, Any]:
    over = {**SPECS[name].overrides, "output_dir": str(root / "out"), "ckpt_dir": str(root / "ckpt"), "seed": seed}
    if SPECS[name].share_data and root != reference_root(name):
        reference_run(name)
        over["dataset_dir"] = str(shared_data_dir(name))
    over.update(extra)
    return over


def train(name: str, root: Path, seed: int = 0, nproc: int = 1, configs: tuple[str, ...] = ("train.json",),
          **extra: Any) -> tuple[Path, float]:
    """One training run of ``name`` into ``root`` (CPU, or ``nproc`` gloo processes); returns ``root`` and seconds.

    The command runs from the bundle's own folder, as a user calls it after changing into the bundle (the runs of
    tests/bundles call it from the repository root, and :func:`start_and_kill` too: a resumed run does not depend on
    the folder the killed one ran from). What it printed (stdout, then stderr) is kept in ``root / LOG_NAME``."""
    over = run_overrides(name, root, seed, **extra)
    if nproc == 1:
        over["device"] = "cpu"
    t0 = time.perf_counter()
    proc = run_bundle_cli(name, configs, over, nproc=nproc, timeout=300, cwd=bundle_dir(name))
    seconds = time.perf_counter() - t0
    root.mkdir(parents=True, exist_ok=True)
    (root / LOG_NAME).write_text(proc.stdout + proc.stderr)
    return root, seconds


@functools.cache
def reference_run(name: str, seed: int = 0) -> tuple[Path, float]:
    """The uninterrupted single-process run, once per session: the first worker to ask runs it under a file lock and
    marks it finished; the others wait for the lock and read it. A run that failed or was interrupted left no mark
    and is run again from scratch. Returns the run's folder and the seconds it took."""
    root = reference_root(name, seed)
    finished = root / "finished.json"
    with FileLock(f"{root}.lock", timeout=REFERENCE_LOCK_TIMEOUT):
        if not finished.is_file():
            shutil.rmtree(root, ignore_errors=True)
            _, seconds = train(name, root, seed)
            finished.write_text(json.dumps({"seconds": seconds, "pid": os.getpid()}))
    return root, float(json.loads(finished.read_text())["seconds"])


def epoch_of(state: dict[str, Any]) -> int:
    """Epochs finished in a training checkpoint: ``epoch`` of the workflow checkpoints, or the ignite trainer state
    (``iteration / epoch_length``) of the MONAI-engine bundles."""
    if "epoch" in state:
        return int(state["epoch"])
    trainer = state["trainer"]
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


def model_state(state: dict[str, Any]) -> dict[str, Any]:
    """The network weights of a checkpoint: ``state["model"]`` of a training checkpoint, or a bare state_dict."""
    return state["model"] if "model" in state and isinstance(state["model"], dict) else state


def start_and_kill(name: str, root: Path, seed: int = 0, kill_after_epoch: int = 1,
                   timeout: float = 240.0) -> tuple[int, float]:
    """Start a training run, SIGKILL it as soon as ``poll`` holds epoch ``kill_after_epoch`` (i.e. early in the next
    epoch); returns the epoch of the polled checkpoint at the moment of the kill and the seconds the run lived."""
    spec = SPECS[name]
    over = {**run_overrides(name, root, seed), "device": "cpu"}
    files = config_paths(name, ["train.json"])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files[0]] + cli_overrides(over)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    poll = root / "ckpt" / spec.poll
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    epoch = -1
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-4000:]
                raise AssertionError(f"{name}: run ended (exit {proc.returncode}) before it could be killed\n{err}")
            if poll.is_file():
                # the file only ever appears complete (os.replace), so this load never sees a partial write
                epoch = epoch_of(torch.load(poll, weights_only=True))
                if epoch >= kill_after_epoch:
                    break
            time.sleep(0.02)
        else:
            raise AssertionError(f"{name}: no checkpoint of epoch {kill_after_epoch} at '{poll}' after {timeout} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"{name}: the run was not killed (exit {proc.returncode})"
    # the checkpoint on disk after the kill, which is what the rerun resumes from
    return epoch_of(torch.load(poll, weights_only=True)), time.perf_counter() - t0


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def outcome(name: str, root: Path) -> dict[str, Any]:
    """``{"tables": {csv: rows}, "models": {ckpt: {param: tensor}}}`` of a finished run; for the bundles on MONAI
    engines, ``tables`` also holds the best-model saver's validation history (``best_model``: metric and file)."""
    spec = SPECS[name]
    tables = {t: read_table(root / "out" / t) for t in spec.tables}
    states = {m: torch.load(root / "ckpt" / m, weights_only=True) for m in spec.models}
    if "best_model_saver" in states.get(spec.poll, {}):
        tables["best_model"] = [list(x) for x in states[spec.poll]["best_model_saver"]["_saved"]]
    models = {m: model_state(s) for m, s in states.items()}
    return {"tables": tables, "models": models}


def max_weight_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference over every compared weight tensor of two outcomes."""
    worst = 0.0
    for m, state in a["models"].items():
        other = b["models"][m]
        assert state.keys() == other.keys(), f"{m}: different parameter names"
        for k, v in state.items():
            if v.is_floating_point():
                worst = max(worst, float((v.double() - other[k].double()).abs().max()) if v.numel() else 0.0)
            else:
                worst = max(worst, float(not torch.equal(v, other[k])))
    return worst


def assert_same_outcome(name: str, a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    """Bit-identical tables and weights."""
    for t, rows in a["tables"].items():
        assert rows == b["tables"][t], f"{name} {what}: '{t}' differs\n{json.dumps(rows)}\n{json.dumps(b['tables'][t])}"
    diff = max_weight_difference(a, b)
    assert diff == 0.0, f"{name} {what}: trained weights differ by up to {diff:.3e}"
