"""The aneurysm bundle on tiny synthetic data: train.json (landmark classifier on MONAI engines), study.json on top
(validation report, AdaBoost transfer, localisation), evaluate / inference configs, torchrun (gloo) and the CLI from
the bundle folder. The model-zoo checks shared by every bundle are in test_zoo_contract.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from bundle_checks import bundle_dir, check_layout, check_metadata, run_bundle_cli, run_workflow

NAME = "aneurysm"
# 6 cases of 32^3 (4 train / 1 val / 1 test), 1 epoch, few samples
TINY = {"epochs": 1, "num_cases": 6, "volume_size": 32, "samples_per_case": 16, "val_samples_per_case": 8,
        "channels": [4, 8], "hidden_features": 16, "device": "cpu"}
# the study's own sizes: 2 folds, 10 weak learners, short baselines, a small search
STUDY = {"natural_epochs": 1, "natural_samples_per_epoch": 32, "transfer_copies": 2, "n_estimators": 10,
         "n_splits": 2, "report_weak_learners": [1, 5, 10], "finetune_epochs": 1, "search_radius": 2.0,
         "search_step": 2.0, "refine_radius": 1.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("aneurysm_bundle")
    overrides = {**TINY, "output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models")}
    wf = run_workflow(NAME, ["train.json", "study.json"], "train", **overrides, **STUDY)
    return out, overrides, wf


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    meta = json.loads((bundle_dir(NAME) / "configs" / "metadata.json").read_text())
    assert {"monai_ext", "pytorch-ignite", "scikit-learn", "nilearn"} <= set(meta["required_packages_version"])
    assert (bundle_dir(NAME) / "docs" / "data_license.txt").is_file()


def test_train_and_study_leave_checkpoints_tables_and_plots(trained):
    out, _, wf = trained
    for f in ("model.pt", "checkpoint.pt", "natural_net.pt", "aneurysm_net.pt", "landmark_priors.json"):
        assert (out / "models" / f).is_file(), f
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(state) == set(wf.network_def.state_dict()), "model.pt is a bare state_dict of network_def"
    for f in ("results.csv", "results.md", "results.json", "transfer_auc.csv", "transfer_auc_curve.csv",
              "localisation.csv", "pretrain_per_class.csv", "confusion_matrix.png",
              "transfer_auc_vs_weak_learners.png", "localisation_error.png", "train_log.txt"):
        assert (out / "outputs" / f).is_file(), f
    assert list((out / "outputs" / "tensorboard").iterdir())
    rows = (out / "outputs" / "transfer_auc_curve.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + STUDY["n_estimators"]
    md = (out / "outputs" / "transfer_auc.md").read_text()
    for source in ("landmark-pretrained", "random init", "natural-image pretrained", "fine-tuned"):
        assert source in md
    record = json.loads((out / "outputs" / "results.json").read_text())
    assert "localise: mean localisation error (mm)" in record["metrics"] and record["provenance"]["cpu"]
    # the validation report scores the network the best-model saver kept (its top-1 on the same patches)
    best = torch.load(out / "models" / "checkpoint.pt", weights_only=True)["best_model_saver"]["_saved"][0][0]
    assert 0 <= best <= 1


def test_evaluate_and_inference(trained):
    out, overrides, _ = trained
    data = str(out / "outputs" / "synthetic_data")
    run_workflow(NAME, ["train.json", "evaluate.json"], "train", **{**overrides, "dataset_dir": data,
                                                                  "output_dir": str(out / "eval")})
    record = json.loads((out / "eval" / "validation_results.json").read_text())
    assert 0 <= record["metrics"]["val_top1"] <= 1 and record["info"]["section"] == "validation"
    common = {k: overrides[k] for k in ("output_dir", "ckpt_dir", "device", "num_cases", "volume_size", "channels",
                                        "hidden_features")}
    common.update({k: STUDY[k] for k in ("search_radius", "search_step", "refine_radius")})
    run_workflow(NAME, ["inference.json"], "infer", **common)
    preds = sorted((out / "outputs" / "inference").glob("*_localise.json"))
    assert preds
    content = json.loads(preds[0].read_text())
    assert [p["label"] for p in content["landmarks"]] == list(range(1, 10))
    run_workflow(NAME, ["inference.json"], "infer", **common, mode="classify", num_classes=2,
                 ckpt_path=str(out / "models" / "aneurysm_net.pt"), class_names=["normal", "aneurysm"])
    preds = sorted((out / "outputs" / "inference").glob("*_classify.json"))
    assert preds
    p = json.loads(preds[0].read_text())["landmarks"][0]
    assert set(p["probabilities"]) == {"normal", "aneurysm"}
    assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_torchrun_two_gloo_processes(tmp_path):
    # 10 cases: 2 validation volumes, one per process
    overrides = {**TINY, "num_cases": 10, "output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models")}
    overrides.pop("device")
    run_bundle_cli(NAME, ["train.json", "multi_gpu_train.json"], overrides, nproc=2)
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "landmark_priors.json").is_file()


def test_cli_from_inside_the_bundle_folder(tmp_path):
    overrides = {**TINY, "output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models")}
    run_bundle_cli(NAME, ["train.json"], overrides, cwd=bundle_dir(NAME))
    assert (tmp_path / "models" / "model.pt").is_file()
