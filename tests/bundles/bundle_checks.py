"""Checks every monai_ext bundle must pass (the bundle contract of DESIGN.md), shared by tests/bundles/test_*.py.

Each bundle test calls these with its own tiny overrides (1 epoch, a few synthetic cases), e.g.::

    wf = run_workflow("aneurysm", ["train.json"], "train", output_dir=str(tmp_path), epochs=1, num_cases=4)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
META_SCHEMA = BUNDLES / "meta_schema.json"
REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
)
# What a gloo rank prints when it aborts (SIGABRT) at interpreter exit after its work is done: PyTorch keeps a gloo
# process group that DistributedDataParallel used alive after destroy_process_group (its worker threads are still
# running at exit, checked 6 Dec 2026 with torch 2.13: the threads of a group used by DDP outlive
# destroy_process_group and deleting the DDP module, those of a group used only by collectives do not), and a
# worker thread that touches Python while the interpreter finalises aborts the process (pytorch/pytorch#190489; the
# atexit fix pytorch/pytorch#179291 was abandoned). Seen in 2 of about 12 clean-clone `bash .ci/run` runs, and once
# (7th session) on a run and on its rerun in a row: runs are rerun up to GLOO_EXIT_RERUNS times on that message only.
GLOO_EXIT_RACE = "terminate called without an active exception"
GLOO_EXIT_RERUNS = 2
REQUIRED_TOP_LEVEL_IDS = ("bundle_root", "dataset_dir", "output_dir", "ckpt_dir", "device", "epochs", "seed")


def bundle_dir(name: str) -> Path:
    return BUNDLES / name


def config_paths(name: str, configs: Sequence[str]) -> list[str]:
    return [str(bundle_dir(name) / "configs" / c) for c in configs]


def check_layout(name: str) -> None:
    """All contract files exist and train.json has the required top-level ids."""
    root = bundle_dir(name)
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    assert not missing, f"bundle '{name}' lacks {missing}"
    with open(root / "configs" / "train.json") as f:
        train = json.load(f)
    absent = [k for k in REQUIRED_TOP_LEVEL_IDS if k not in train]
    assert not absent, f"bundle '{name}' train.json lacks top-level ids {absent}"
    with open(root / "configs" / "inference.json") as f:
        infer = json.load(f)
    absent = [k for k in ("network_def", "preprocessing", "inferer", "postprocessing") if k not in infer]
    assert not absent, f"bundle '{name}' inference.json lacks top-level ids {absent} (MONAI Label needs them)"


def run_workflow(name: str, configs: Sequence[str], workflow_type: str, **overrides: Any) -> ConfigWorkflow:
    """ConfigWorkflow initialize / check_properties / run / finalize, asserting no required property is missing."""
    wf = ConfigWorkflow(
        config_file=config_paths(name, configs),
        meta_file=str(bundle_dir(name) / "configs" / "metadata.json"),
        logging_file=str(bundle_dir(name) / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    wf.initialize()
    missing = wf.check_properties()
    assert not missing, f"bundle '{name}' {configs} misses required properties {missing}"
    wf.run()
    wf.finalize()
    return wf


def check_metadata(name: str) -> None:
    """``verify_metadata`` against our offline schema (nothing is downloaded: the schema file exists)."""
    verify_metadata(meta_file=str(bundle_dir(name) / "configs" / "metadata.json"), filepath=str(META_SCHEMA))


def check_net_in_out(name: str, config: str = "inference.json", **overrides: Any) -> None:
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_dir(name) / "configs" / "metadata.json"),
        config_file=str(bundle_dir(name) / "configs" / config),
        device="cpu",
        **overrides,
    )


def export_torchscript(name: str, ckpt_file: str | os.PathLike, filepath: str | os.PathLike,
                       config: str = "inference.json", **kwargs: Any) -> Path:
    """``ckpt_export`` of ``network_def`` from ``ckpt_file``; returns the written TorchScript path."""
    ckpt_export(
        net_id="network_def",
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        meta_file=str(bundle_dir(name) / "configs" / "metadata.json"),
        config_file=str(bundle_dir(name) / "configs" / config),
        **kwargs,
    )
    path = Path(filepath)
    assert path.is_file() and path.stat().st_size > 0, f"ckpt_export wrote nothing to {path}"
    return path


def cli_overrides(overrides: dict[str, Any]) -> list[str]:
    args = []
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return args


def run_bundle_cli(name: str, configs: Sequence[str], overrides: dict[str, Any], nproc: int = 1,
                   cwd: str | os.PathLike | None = None, timeout: int = 600, check: bool = True,
                   extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` in a subprocess; with ``nproc > 1`` under ``torchrun`` (gloo on CPU).

    ``tests/bundles`` is on ``PYTHONPATH`` so that overrides can name ``override_helpers`` components; with
    ``check=False`` a failing run is returned instead of failing the test.
    """
    files = config_paths(name, configs)
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    helpers = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (helpers, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = launcher + ["-m", "monai.bundle", "run", "--config_file", config_arg] + cli_overrides(overrides)
    cmd += list(extra_args)
    proc = subprocess.run(cmd, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)
    for attempt in range(1, GLOO_EXIT_RERUNS + 1):
        if not (nproc > 1 and proc.returncode != 0 and GLOO_EXIT_RACE in proc.stderr):
            break
        # A rank aborted after training, at interpreter exit (see GLOO_EXIT_RACE): rerun from scratch (a rerun must
        # not resume from the failed run's checkpoint); any other failure, or this one GLOO_EXIT_RERUNS + 1 times
        # in a row, fails the test.
        for key in ("ckpt_dir", "output_dir"):
            if key in overrides and Path(overrides[key]).is_dir():
                shutil.rmtree(overrides[key])
        warnings.warn(f"{name}: a torchrun rank aborted at exit ({GLOO_EXIT_RACE!r}); rerun {attempt} of at most "
                      f"{GLOO_EXIT_RERUNS}", stacklevel=2)
        proc = subprocess.run(cmd, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)
    tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{tail}"
    return proc
