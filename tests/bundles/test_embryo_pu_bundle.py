"""The embryo_pu bundle against the bundle contract, on tiny synthetic data (1 epoch, 2 folds, 30 sequences)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from bundle_checks import (
    bundle_dir,
    check_layout,
    check_metadata,
    check_net_in_out,
    cli_overrides,
    export_torchscript,
    run_bundle_cli,
    run_workflow,
)

NAME = "embryo_pu"
TINY = {"num_cases": 30, "num_frames": 3, "image_size": 32, "channels": [4, 8], "epochs": 1, "num_folds": 2,
        "train_frames": 2, "batch_size": 4, "methods": ["pn", "auc_nnpu"], "device": "cpu"}
NET = {"num_frames": 3, "image_size": 32, "channels": [4, 8], "num_cases": 30, "device": "cpu"}

pytestmark = pytest.mark.slow


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    check_net_in_out(NAME)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("embryo_pu")
    dirs = {"output_dir": str(root / "out"), "ckpt_dir": str(root / "ckpt")}
    wf = run_workflow(NAME, ["train.json"], "train", **dirs, **TINY)
    return root, dirs, wf


def test_train_outputs(trained):
    root, dirs, wf = trained
    out = root / "out"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows] == ["pn", "auc_nnpu"]
    assert all("±" in r["auc"] and "±" in r["recall@val"] for r in rows)
    assert (out / "roc.png").is_file() and list((out / "figures").glob("timeline_*.png"))
    assert list((out / "figures").glob("saliency_*.png"))
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    ckpt = torch.load(root / "ckpt" / "pn_pi0.24" / "fold1.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng"} <= set(ckpt)


def test_evaluate_and_inference(trained, tmp_path):
    root, dirs, _ = trained
    run_workflow(NAME, ["train.json", "evaluate.json"], "eval", **dirs, **TINY)
    # inference on the embedded sequences and on one folder of frames given with --input
    pred = str(tmp_path / "pred")
    run_workflow(NAME, ["inference.json"], "infer", output_dir=dirs["output_dir"], ckpt_dir=dirs["ckpt_dir"],
                 prediction_dir=pred, max_sequences=3, **NET)
    rows = list(csv.DictReader(open(tmp_path / "pred" / "scores.csv")))
    assert len(rows) == 3 and all(0.0 <= float(r["live_birth_probability"]) <= 1.0 for r in rows)
    folder = str(root / "out" / "synthetic_data" / "sequences" / "seq_004")
    run_workflow(NAME, ["inference.json"], "infer", output_dir=dirs["output_dir"], ckpt_dir=dirs["ckpt_dir"],
                 prediction_dir=pred, input=folder, **NET)
    rows = list(csv.DictReader(open(tmp_path / "pred" / "scores.csv")))
    assert [r["sequence"] for r in rows] == [folder]


def test_export_torchscript(trained, tmp_path):
    root, dirs, _ = trained
    path = export_torchscript(NAME, root / "ckpt" / "model.pt", tmp_path / "model.ts", key_in_ckpt="model",
                              channels=[4, 8], device="cpu")
    ts = torch.jit.load(str(path))
    assert ts(torch.zeros(2, 1, 3, 32, 32)).shape == (2, 1)


def test_multi_gpu_train_cli_gloo(tmp_path):
    over = {**TINY, "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt")}
    over.pop("device")
    run_bundle_cli(NAME, ["train.json", "multi_gpu_train.json"], over, nproc=2)
    rows = list(csv.DictReader(open(tmp_path / "out" / "results_folds.csv")))
    assert sorted((r["method"], r["fold"]) for r in rows) == [("auc_nnpu", "0"), ("auc_nnpu", "1"), ("pn", "0"),
                                                               ("pn", "1")]


def test_cli_from_bundle_folder(tmp_path):
    over = {**TINY, "methods": ["nnpu"], "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json"] + cli_overrides(over)
    proc = subprocess.run(cmd, cwd=bundle_dir(NAME), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((tmp_path / "out" / "synthetic_data" / ".generator.json").read_text())["num_cases"] == 30
    assert (tmp_path / "out" / "results.md").is_file()
