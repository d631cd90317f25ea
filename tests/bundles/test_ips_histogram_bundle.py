"""The ips_histogram bundle contract on tiny synthetic data: train / evaluate / inference workflows, metadata, network
in/out, TorchScript export, real microscopy images of other sizes, torchrun (gloo) and the CLI from the bundle folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
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
from skimage import data as skdata

NAME = "ips_histogram"
# tiny: 4 images of 96 px, 32-pixel patches, one epoch of 32 patches
TINY = {"epochs": 1, "num_cases": 4, "image_size": 96, "num_patches": 32, "batch_size": 16, "patch_size": 32,
        "hist_stride": 8, "channels": [4, 8], "device": "cpu"}
TINY_INFER = {"num_cases": 4, "image_size": 96, "patch_size": 32, "stride": 8, "channels": [4, 8], "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ips")
    paths = {"output_dir": str(root / "out"), "ckpt_dir": str(root / "ckpt")}
    run_workflow(NAME, ["train.json"], "train", **paths, **TINY)
    return root, paths


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    meta = json.loads((bundle_dir(NAME) / "configs" / "metadata.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channel_def["0"] == "background" and len(channel_def) == 3


def test_train_outputs_and_resume(trained):
    root, paths = trained
    out, ckpt = Path(paths["output_dir"]), Path(paths["ckpt_dir"])
    for f in ("jaccard_table.csv", "jaccard_table.md", "qualitative.png", "synthetic_data/dataset.json"):
        assert (out / f).is_file(), f
    assert list((out / "tensorboard" / "histogram_p32").glob("events.out.tfevents.*"))
    preds = out / "predictions" / "histogram_p32"
    label_file = next(preds.glob("*_label.nii.gz"))
    prob = nib.load(str(next(preds.glob("*_prob.nii.gz")))).get_fdata()
    assert prob.shape == (96, 96, 3) and np.allclose(prob.sum(-1), 1, atol=1e-4)
    assert nib.load(str(label_file)).shape == (96, 96)
    assert list(preds.glob("*_overlay.png"))
    with open(out / "jaccard_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["histogram"]
    assert 0 <= float(rows[0]["mean_jaccard"]) <= 100
    state = torch.load(ckpt / "histogram_p32" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng"} <= set(state)
    assert (ckpt / "model.pt").is_file()
    # resume: a second run with the same config finds the finished checkpoint and does not train again
    before = (ckpt / "histogram_p32" / "checkpoint.pt").stat().st_mtime_ns
    run_workflow(NAME, ["train.json"], "train", **paths, **TINY)
    assert (ckpt / "histogram_p32" / "checkpoint.pt").stat().st_mtime_ns == before


def test_evaluate_workflow(trained):
    _, paths = trained
    out = Path(paths["output_dir"]) / "eval"
    run_workflow(NAME, ["train.json", "evaluate.json"], "eval", **{**paths, "output_dir": str(out)}, **TINY)
    with open(out / "jaccard_table.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["histogram"]


def test_inference_on_synthetic_and_real_microscopy(trained, tmp_path):
    _, paths = trained
    run_workflow(NAME, ["inference.json"], "infer", **paths, **TINY_INFER)
    assert list((Path(paths["output_dir"]) / "inference").glob("*_seg.nii.gz"))
    # real images of other sizes and channel counts: a grey 660x550 and an RGB 512x512 (cropped to keep it fast)
    cell = skdata.cell()[:200, :150]
    ihc = skdata.immunohistochemistry()[:130, :170]
    iio.imwrite(tmp_path / "cell.png", cell)
    iio.imwrite(tmp_path / "ihc.png", ihc)
    datalist = [{"image": str(tmp_path / "cell.png")}, {"image": str(tmp_path / "ihc.png")}]
    pred_dir = tmp_path / "pred"
    run_workflow(NAME, ["inference.json"], "infer", **paths, **TINY_INFER, datalist=datalist,
                 prediction_dir=str(pred_dir))
    for name, img in (("cell", cell), ("ihc", ihc)):
        seg = np.asarray(nib.load(str(pred_dir / f"{name}_seg.nii.gz")).dataobj)
        prob = np.asarray(nib.load(str(pred_dir / f"{name}_prob.nii.gz")).dataobj)
        # MONAI's PIL reader puts the image's width first; the prediction is on the image's own grid
        assert seg.squeeze().shape == (img.shape[1], img.shape[0])
        assert np.isfinite(prob).all() and set(np.unique(seg).tolist()) <= {0, 1, 2}
        assert iio.imread(pred_dir / f"{name}_overlay.png").shape[:2] == (img.shape[1], img.shape[0])


def test_net_in_out_and_torchscript_export(trained, tmp_path):
    _, paths = trained
    check_net_in_out(NAME)
    ts = export_torchscript(NAME, Path(paths["ckpt_dir"]) / "model.pt", tmp_path / "model.ts", key_in_ckpt="model",
                            patch_size=32, channels=[4, 8])
    net = torch.jit.load(str(ts))
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 1 + 4 + 16)  # FlatHistogramNet: levels 1/2/4 flattened


def test_multi_gpu_train_torchrun_gloo(tmp_path):
    overrides = {**TINY, "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt")}
    overrides.pop("device")
    run_bundle_cli(NAME, ["train.json", "multi_gpu_train.json"], overrides, nproc=2)
    assert (tmp_path / "ckpt" / "histogram_p32" / "checkpoint.pt").is_file()
    assert (tmp_path / "out" / "jaccard_table.md").is_file()


def test_cli_from_inside_the_bundle_folder(tmp_path):
    overrides = {**TINY, "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt"),
                 "method": "patch_classification", "epochs": 1}
    run_bundle_cli(NAME, ["train.json"], overrides, cwd=bundle_dir(NAME))
    with open(tmp_path / "out" / "jaccard_table.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["patch_classification"]
