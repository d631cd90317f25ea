"""Bundle contract checks for ``bundles/sperm_emd`` on tiny synthetic data (see tests/bundles/bundle_checks.py)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from bundle_checks import (
    bundle_dir,
    check_layout,
    check_metadata,
    check_net_in_out,
    export_torchscript,
    run_bundle_cli,
    run_workflow,
)

NAME = "sperm_emd"
# 3 videos (1 train / 1 val / 1 test) of 16 frames of 96^2 with 4 sperm, 16^2 crops, 4-frame clips, 1 epoch
TINY = {
    "epochs": 1,
    "num_videos": 3,
    "num_frames": 16,
    "num_sperm": 4,
    "video_size": 96,
    "crop_size": 16,
    "clip_length": 4,
    "network_kwargs": {"timesformer_tiny": {"num_layers": 1}, "tiny3d": {}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sperm_emd_bundle")
    overrides = {**TINY, "output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models"), "device": "cpu"}
    wf = run_workflow(NAME, ["train.json"], "train", **overrides)
    return out, overrides, wf


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    check_net_in_out(NAME)
    assert (bundle_dir(NAME) / "configs" / "stream.json").is_file()


def test_train_leaves_checkpoints_tables_and_plots(trained):
    out, _, wf = trained
    cell = out / "models" / "timesformer_tiny_emd"
    assert (cell / "model.pt").is_file() and (cell / "checkpoint_last.pt").is_file()
    for f in ("results.csv", "results.md", "tracking_quality.csv", "tracking_quality.md",
              "distributions_timesformer_tiny_emd.png", "curves_timesformer_tiny_emd.png",
              "confusion_timesformer_tiny_emd.png"):
        assert (out / "outputs" / f).is_file(), f
    assert list((out / "outputs" / "runs" / "timesformer_tiny_emd").iterdir())
    with open(out / "outputs" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["backbone"], r["loss"]) for r in rows] == [("training-mean prior", "-"), ("timesformer_tiny", "emd")]
    assert all(0.0 <= float(r["intersection"]) <= 1.0 for r in rows)
    with open(out / "outputs" / "tracking_quality.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_resume_continues_from_last_checkpoint(trained):
    out, overrides, _ = trained
    run_workflow(NAME, ["train.json"], "train", **{**overrides, "epochs": 2})
    ck = torch.load(out / "models" / "timesformer_tiny_emd" / "checkpoint_last.pt", weights_only=True)
    assert ck["epoch"] == 2 and len(json.loads(ck["history"])) == 2


def test_evaluate_and_stream_inference(trained):
    out, overrides, _ = trained
    run_workflow(NAME, ["train.json", "evaluate.json"], "infer", **overrides)
    assert (out / "outputs" / "results_evaluate.md").is_file()
    common = {k: overrides[k] for k in ("output_dir", "ckpt_dir", "device", "num_videos", "num_frames", "num_sperm",
                                        "video_size", "crop_size", "clip_length", "network_kwargs")}
    run_workflow(NAME, ["inference.json"], "infer", **common, rescore_every=4)
    assert (out / "outputs" / "stream" / "annotated.mp4").stat().st_size > 0
    with open(out / "outputs" / "stream" / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and any(r["grade"] in "ABCDE" and r["grade"] for r in rows)


def test_torchscript_export(trained, tmp_path):
    out, overrides, _ = trained
    export_torchscript(NAME, out / "models" / "timesformer_tiny_emd" / "model.pt", tmp_path / "model.ts",
                       key_in_ckpt="model", args_file=None, crop_size=overrides["crop_size"],
                       clip_length=overrides["clip_length"], network_kwargs=overrides["network_kwargs"])


def test_grid_cli_from_bundle_folder(tmp_path):
    """The CLI from inside the bundle folder, with a 1 x 2 grid on the tiny 3D CNN."""
    overrides = {**TINY, "output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"),
                 "device": "cpu", "backbones": ["tiny3d"], "losses": ["mse", "hi"]}
    proc = run_bundle_cli(NAME, ["train.json"], overrides, cwd=bundle_dir(NAME))
    assert proc.returncode == 0
    with open(tmp_path / "outputs" / "results.csv") as f:
        assert [r["loss"] for r in csv.DictReader(f)] == ["-", "mse", "hi"]


def test_torchrun_two_gloo_processes(tmp_path):
    overrides = {**TINY, "output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"),
                 "device": "cpu"}
    run_bundle_cli(NAME, ["train.json", "multi_gpu_train.json"], overrides, nproc=2)
    assert (tmp_path / "models" / "timesformer_tiny_emd" / "model.pt").is_file()
    assert (tmp_path / "outputs" / "results.csv").is_file()
