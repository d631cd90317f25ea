"""Bundle contract checks for ``bundles/aneurysm`` on tiny synthetic data (see tests/bundles/bundle_checks.py)."""

from __future__ import annotations

import json

import pytest
from bundle_checks import (
    bundle_dir,
    check_layout,
    check_metadata,
    check_net_in_out,
    export_torchscript,
    run_bundle_cli,
    run_workflow,
)

NAME = "aneurysm"
# 6 cases of 32^3 (4 train / 1 val / 1 test), 1 epoch, few samples, 2 folds, 10 weak learners
TINY = {
    "epochs": 1,
    "num_cases": 6,
    "volume_size": 32,
    "samples_per_case": 16,
    "val_samples_per_case": 8,
    "natural_epochs": 1,
    "natural_samples_per_epoch": 32,
    "transfer_copies": 2,
    "n_estimators": 10,
    "n_splits": 2,
    "report_weak_learners": [1, 5, 10],
    "finetune_epochs": 1,
    "search_radius": 2.0,
    "search_step": 2.0,
    "refine_radius": 1.0,
    "channels": [4, 8],
    "hidden_features": 16,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("aneurysm_bundle")
    overrides = {**TINY, "output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models"), "device": "cpu"}
    wf = run_workflow(NAME, ["train.json"], "train", **overrides)
    return out, overrides, wf


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    check_net_in_out(NAME)


def test_train_leaves_checkpoints_tables_and_plots(trained):
    out, _, _ = trained
    for f in ("landmark_net.pt", "natural_net.pt", "aneurysm_net.pt", "landmark_priors.json"):
        assert (out / "models" / f).is_file(), f
    assert not list((out / "models").glob("finetune_fold*.pt"))
    for f in ("results.csv", "results.md", "transfer_auc.csv", "transfer_auc_curve.csv", "localisation.csv",
              "confusion_matrix.png", "transfer_auc_vs_weak_learners.png", "localisation_error.png"):
        assert (out / "outputs" / f).is_file(), f
    assert list((out / "outputs" / "tb").iterdir())
    rows = (out / "outputs" / "transfer_auc_curve.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + TINY["n_estimators"]
    md = (out / "outputs" / "transfer_auc.md").read_text()
    for source in ("landmark-pretrained", "random init", "natural-image pretrained", "fine-tuned"):
        assert source in md


def test_evaluate_and_inference(trained, tmp_path):
    out, overrides, _ = trained
    run_workflow(NAME, ["train.json", "evaluate.json"], "eval", **overrides)
    assert (out / "outputs" / "eval" / "results.md").is_file()
    common = {k: overrides[k] for k in ("output_dir", "ckpt_dir", "device", "num_cases", "volume_size", "channels",
                                        "hidden_features", "search_radius", "search_step", "refine_radius")}
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


def test_torchscript_export(trained, tmp_path):
    out, overrides, _ = trained
    export_torchscript(NAME, out / "models" / "landmark_net.pt", tmp_path / "model.ts", key_in_ckpt="model",
                       args_file=None, channels=overrides["channels"], hidden_features=overrides["hidden_features"])


def test_torchrun_two_gloo_processes(tmp_path):
    overrides = {**TINY, "output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"),
                 "device": "cpu", "stages": ["pretrain"]}
    run_bundle_cli(NAME, ["train.json", "multi_gpu_train.json"], overrides, nproc=2)
    assert (tmp_path / "models" / "landmark_net.pt").is_file()
    assert (tmp_path / "outputs" / "results.csv").is_file()


def test_cli_from_inside_the_bundle_folder(tmp_path):
    # only the path resolution is under test here: no training epoch, pre-training stage only
    overrides = {**TINY, "output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"),
                 "device": "cpu", "stages": ["pretrain"], "epochs": 0}
    run_bundle_cli(NAME, ["train.json"], overrides, cwd=bundle_dir(NAME))
    assert (tmp_path / "models" / "landmark_priors.json").is_file()
    assert (tmp_path / "outputs" / "results.csv").is_file()
