"""The embryo_pu bundle on tiny synthetic sequences: train.json (one method, fold and prior on MONAI engines with
the frame-level PU iteration), evaluate / inference configs, the cross-validation study on top. The model-zoo checks
shared by every bundle are in test_zoo_contract.py; train.json from the bundle folder, multi_gpu_train.json under
torchrun (gloo), resume and reproducibility in tests/integration.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_checks import bundle_dir, check_layout, check_metadata, run_bundle_cli, run_workflow
from sklearn.metrics import roc_auc_score

NAME = "embryo_pu"
# 40 sequences of 4 frames of 32^2, 2 folds, 1 epoch
TINY = {"epochs": 1, "num_cases": 40, "num_frames": 4, "image_size": 32, "channels": [4, 8], "num_folds": 2,
        "train_frames": 2, "batch_size": 8, "device": "cpu"}
NET = {"num_frames": 4, "image_size": 32, "channels": [4, 8], "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("embryo")
    dirs = {"output_dir": str(root / "out"), "ckpt_dir": str(root / "ckpt")}
    wf = run_workflow(NAME, ["train.json"], "train", **dirs, **TINY)
    return root, dirs, wf


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    meta = json.loads((bundle_dir(NAME) / "configs" / "metadata.json").read_text())
    assert {"monai_ext", "pytorch-ignite"} <= set(meta["required_packages_version"])


def test_train_with_the_pu_iteration(trained):
    root, _, wf = trained
    assert type(wf.trainer.loss_function).__name__ == "AUCNNPULoss" and wf.trainer.loss_function.prior == 0.24
    assert type(wf.trainer._process_function).__name__ == "FrameLevelPUIteration"  # ignite's step function
    assert 0.0 <= wf.trainer.state.metrics["train_negative_risk_fraction"] <= 1.0
    # every batch held labelled positives (PositiveBatchSampler); model.pt is the bare TimeLapseNet state_dict
    state = torch.load(root / "ckpt" / "model.pt", weights_only=True)
    assert set(state) == set(wf.network_def.state_dict())
    assert 0.0 <= wf.evaluator.state.metrics["val_pu_auc"] <= 1.0


def test_early_stopping_on_the_validation_pu_auc(trained, tmp_path):
    root, _, _ = trained
    over = {**TINY, "epochs": 4, "early_stop_patience": 1, "early_stop_min_delta": 1.0,  # no epoch improves by 1
            "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt"),
            "dataset_dir": str(root / "out" / "synthetic_data")}
    wf = run_workflow(NAME, ["train.json"], "train", **over)
    assert wf.trainer.state.epoch == 2
    assert torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=True)["run_status"]["terminated"]


def test_evaluate_and_inference(trained, tmp_path):
    root, dirs, _ = trained
    run_workflow(NAME, ["train.json", "evaluate.json"], "train", **{**dirs, "output_dir": str(tmp_path / "eval")},
                 **TINY, dataset_dir=str(root / "out" / "synthetic_data"))
    record = json.loads((tmp_path / "eval" / "test_results.json").read_text())
    assert 0.0 <= record["metrics"]["val_pu_auc"] <= 1.0 and record["info"]["fold"] == 0
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


def test_cross_validation_study(trained, tmp_path):
    root, _, _ = trained
    train = {k: v for k, v in TINY.items() if k not in ("epochs", "num_folds", "device")}
    over = {"output_dir": str(tmp_path / "cv"), "epochs": 1, "num_folds": 2, "methods": ["pn", "auc_nnpu"],
            "seeds": [0, 1], "device": "cpu", "train_overrides": train}
    run_bundle_cli(NAME, ["cross_validation.json"], over)
    rows = list(csv.DictReader(open(tmp_path / "cv" / "results_folds.csv")))
    assert sorted((r["method"], r["fold"], r["seed"]) for r in rows) == sorted(
        (m, f, s) for m in ("pn", "auc_nnpu") for f in ("0", "1") for s in ("0", "1"))
    summary = {r["method"]: r for r in csv.DictReader(open(tmp_path / "cv" / "results.csv"))}
    # the summary is over seeds of the per-seed fold means
    per_seed = [np.mean([float(r["auc"]) for r in rows if r["method"] == "pn" and r["seed"] == s]) for s in "01"]
    assert float(summary["pn"]["auc_mean"]) == pytest.approx(np.mean(per_seed))
    diff = next(r for r in csv.DictReader(open(tmp_path / "cv" / "results_vs_pn.csv")) if r["metric"] == "auc")
    nnpu = [np.mean([float(r["auc"]) for r in rows if r["method"] == "auc_nnpu" and r["seed"] == s]) for s in "01"]
    assert float(diff["diff_mean"]) == pytest.approx(np.mean(np.subtract(nnpu, per_seed)))
    assert (tmp_path / "cv" / "roc.png").is_file() and list((tmp_path / "cv" / "figures").glob("saliency_*.png"))
    # the AUC against the hidden viability (the PU positive class), recomputed from a cell's saved test scores
    cell = json.loads((tmp_path / "cv" / "auc_nnpu_pi0.24_fold1_seed1" / "scores.json").read_text())["metrics"]
    data = json.loads((tmp_path / "cv" / "data_seed1" / "synthetic_data" / "dataset.json").read_text())
    viable = {it["sequence"]: it["viable"] for it in data["training"]}
    truth = [viable[Path(p).name] for p in cell["test_index"]]
    row = next(r for r in rows if (r["method"], r["fold"], r["seed"]) == ("auc_nnpu", "1", "1"))
    assert float(row["auc_viable"]) == pytest.approx(roc_auc_score(truth, cell["test_scores"]), abs=1e-3)
