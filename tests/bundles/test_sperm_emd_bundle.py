"""The sperm_emd bundle on tiny synthetic videos: train.json (one backbone and loss on MONAI engines), evaluate.json,
the backbone x loss grid on top (grid.json, from the bundle folder), the stream inference. The model-zoo checks shared
by every bundle are in test_zoo_contract.py; train.json from the bundle folder, multi_gpu_train.json under torchrun
(gloo), resume and reproducibility in tests/integration.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from bundle_checks import bundle_dir, check_layout, check_metadata, config_paths, run_bundle_cli, run_workflow
from monai.bundle import ConfigWorkflow

NAME = "sperm_emd"
# 3 videos (1 train / 1 val / 1 test) of 16 frames of 96^2 with 4 sperm, 16^2 crops, 4-frame clips, 1 epoch
TINY = {"epochs": 1, "num_videos": 3, "num_frames": 16, "num_sperm": 4, "video_size": 96, "crop_size": 16,
        "clip_length": 4, "batch_size": 4, "warmup_epochs": 0, "network_kwargs": {"num_layers": 1}, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sperm_emd_bundle")
    overrides = {**TINY, "output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models")}
    wf = run_workflow(NAME, ["train.json"], "train", **overrides)
    return out, overrides, wf


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    meta = json.loads((bundle_dir(NAME) / "configs" / "metadata.json").read_text())
    assert {"monai_ext", "pytorch-ignite", "av", "motmetrics"} <= set(meta["required_packages_version"])
    assert (bundle_dir(NAME) / "configs" / "stream.json").is_file()


def test_train_leaves_model_state_and_tracking(trained):
    out, _, wf = trained
    assert type(wf.trainer.loss_function).__name__ == "EMDLoss"
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(state) == set(wf.network_def.state_dict())
    ck = torch.load(out / "models" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "best_model_saver"} <= set(ck)
    # the best-model saver keeps the lowest validation EMD (negative sign) and its value is the evaluator's
    assert -ck["best_model_saver"]["_saved"][0][0] == pytest.approx(wf.evaluator.state.metrics["val_emd"])
    with open(out / "outputs" / "tracking_quality.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert "val_emd" in (out / "outputs" / "train_log.txt").read_text()


def test_evaluate_and_stream_inference(trained):
    out, overrides, _ = trained
    run_workflow(NAME, ["train.json", "evaluate.json"], "train", **{**overrides, "output_dir": str(out / "eval"),
                                                                  "dataset_dir": str(out / "outputs" /
                                                                                     "synthetic_data")})
    record = json.loads((out / "eval" / "test_results.json").read_text())
    assert record["metrics"]["val_emd"] > 0 and record["info"]["section"] == "test"
    common = {k: overrides[k] for k in ("output_dir", "ckpt_dir", "device", "num_videos", "num_frames", "num_sperm",
                                        "video_size", "crop_size", "clip_length", "network_kwargs")}
    run_workflow(NAME, ["inference.json"], "infer", **common, rescore_every=4, precision="fp32")
    assert (out / "outputs" / "stream" / "annotated.mp4").stat().st_size > 0
    with open(out / "outputs" / "stream" / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and any(r["grade"] in "ABCDE" and r["grade"] for r in rows)


def test_grid_study_from_the_bundle_folder(trained, tmp_path):
    """grid.json from inside the bundle folder: a 1 x 2 grid on the tiny 3D CNN, two seeds, prior rows, tables."""
    out, _, _ = trained
    train = {k: v for k, v in TINY.items() if k not in ("epochs", "network_kwargs", "device")}
    over = {"output_dir": str(tmp_path / "grid"), "epochs": 1, "backbones": ["tiny3d"], "losses": ["emd", "hi"],
            "seeds": [0, 1], "num_videos": 3, "device": "cpu", "train_overrides": train,
            "dataset_dir": str(out / "outputs" / "synthetic_data")}
    run_bundle_cli(NAME, ["grid.json"], over, cwd=bundle_dir(NAME))
    with open(tmp_path / "grid" / "results_cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert [(r["backbone"], r["loss"], r["seed"]) for r in cells] == [
        ("training-mean prior", "-", "0"), ("tiny3d", "emd", "0"), ("tiny3d", "hi", "0"),
        ("training-mean prior", "-", "1"), ("tiny3d", "emd", "1"), ("tiny3d", "hi", "1")]
    with open(tmp_path / "grid" / "results.csv") as f:
        summary = {(r["backbone"], r["loss"]): r for r in csv.DictReader(f)}
    emd = [float(r["emd"]) for r in cells if r["loss"] == "emd"]
    assert float(summary[("tiny3d", "emd")]["emd_mean"]) == pytest.approx(sum(emd) / 2)
    assert (tmp_path / "grid" / "loss_differences.csv").is_file()
    assert (tmp_path / "grid" / "distributions_tiny3d_emd.png").is_file()


def test_pretrained_weights_are_loaded_before_training(trained, tmp_path):
    """--pretrained PATH: the network starts from that state_dict (loaded in ``initialize``, before the trainer)."""
    out, overrides, _ = trained
    source = torch.load(out / "models" / "model.pt", weights_only=True)
    over = {**overrides, "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "models"),
            "dataset_dir": str(out / "outputs" / "synthetic_data"), "pretrained": str(out / "models" / "model.pt"),
            "seed": 7}
    wf = ConfigWorkflow(config_file=config_paths(NAME, ["train.json"]), workflow_type="train", **over)
    wf.initialize()
    state = wf.parser.get_parsed_content("network").state_dict()
    assert set(state) == set(source)
    assert all(torch.equal(state[k], source[k]) for k in source)
    # without it the seeded initialisation differs from the trained weights
    wf = ConfigWorkflow(config_file=config_paths(NAME, ["train.json"]), workflow_type="train",
                        **{**over, "pretrained": None})
    wf.initialize()
    state = wf.parser.get_parsed_content("network").state_dict()
    assert not all(torch.equal(state[k], source[k]) for k in source)


def test_grid_with_a_pretraining_corpus(trained, tmp_path):
    """pretrain_videos: one pre-training run per backbone and seed, each loss cell from scratch and pre-trained."""
    out, _, _ = trained
    train = {k: v for k, v in TINY.items() if k not in ("epochs", "network_kwargs", "device")}
    grid = tmp_path / "grid"
    over = {"output_dir": str(grid), "epochs": 1, "backbones": ["tiny3d"], "losses": ["emd"], "seeds": [0, 1],
            "num_videos": 3, "device": "cpu", "train_overrides": train, "pretrain_videos": 4,
            "dataset_dir": str(out / "outputs" / "synthetic_data")}
    run_bundle_cli(NAME, ["grid.json"], over)
    for seed in (0, 1):
        assert (grid / f"pretrain_tiny3d_seed{seed}" / "models" / "model.pt").is_file()
        datalist = json.loads((grid / f"pretrain_data_seed{seed}" / "synthetic_data" / "dataset.json").read_text())
        assert sum(len(datalist[k]) for k in ("training", "validation", "test")) == 4  # its own corpus
    with open(grid / "results_cells.csv") as f:
        cells = [(r["backbone"], r["init"], r["seed"]) for r in csv.DictReader(f)]
    assert cells == [("training-mean prior", "-", "0"), ("tiny3d", "scratch", "0"), ("tiny3d", "pretrained", "0"),
                     ("training-mean prior", "-", "1"), ("tiny3d", "scratch", "1"), ("tiny3d", "pretrained", "1")]
    with open(grid / "init_differences.csv") as f:
        diffs = list(csv.DictReader(f))
    assert {(d["init"], d["reference"], d["metric"]) for d in diffs} == {("pretrained", "scratch", "emd"),
                                                                         ("pretrained", "scratch", "mode_accuracy")}
