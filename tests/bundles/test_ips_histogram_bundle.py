"""The ips_histogram bundle on tiny synthetic data: train / evaluate / inference configs, the three method files,
the method comparison study, real microscopy images of other sizes. The model-zoo checks shared by every bundle are in
test_zoo_contract.py; train.json from the bundle folder, multi_gpu_train.json under torchrun (gloo), resume and
reproducibility in tests/integration.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_checks import bundle_dir, check_layout, check_metadata, run_bundle_cli, run_workflow
from skimage import data as skdata

NAME = "ips_histogram"
# tiny: 4 images of 96 px, 32-pixel patches, one epoch of 2 batches of 2 x 4 patches
TINY = {"epochs": 1, "num_cases": 4, "image_size": 96, "patch_size": 32, "patches_per_image": 4,
        "images_per_batch": 2, "stride": 8, "channels": [4, 8], "device": "cpu"}
TINY_INFER = {"num_cases": 4, "image_size": 96, "patch_size": 32, "stride": 8, "channels": [4, 8], "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ips")
    paths = {"output_dir": str(root / "out"), "ckpt_dir": str(root / "ckpt")}
    wf = run_workflow(NAME, ["train.json"], "train", **paths, **TINY)
    return root, paths, wf


def test_layout_and_metadata():
    check_layout(NAME)
    check_metadata(NAME)
    meta = json.loads((bundle_dir(NAME) / "configs" / "metadata.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channel_def["0"] == "background" and len(channel_def) == 3
    assert {"monai_ext", "pytorch-ignite"} <= set(meta["required_packages_version"])


def test_train_leaves_model_state_logs_and_validation(trained):
    root, paths, wf = trained
    out, ckpt = Path(paths["output_dir"]), Path(paths["ckpt_dir"])
    assert (out / "synthetic_data" / "dataset.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    log = (out / "train_log.txt").read_text()
    assert "train_loss" in log and "val_mean_jaccard" in log
    state = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "best_model_saver"} <= set(state)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]  # one epoch done
    best = state["best_model_saver"]["_saved"][0][0]
    assert best == pytest.approx(wf.evaluator.state.metrics["val_mean_jaccard"])
    # the run finished, so the same command again is a new run (only an unfinished run is resumed)
    before = (ckpt / "checkpoint.pt").stat().st_mtime_ns
    run_workflow(NAME, ["train.json"], "train", **paths, **TINY)
    assert (ckpt / "checkpoint.pt").stat().st_mtime_ns != before
    state = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]


def test_early_stopping_stops_and_is_not_resumed(tmp_path):
    """--early_stop_patience: MONAI's EarlyStopHandler on the validation Jaccard; a run it stopped is finished."""
    paths = {"output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt")}
    stop = {**TINY, "epochs": 5, "early_stop_patience": 1, "early_stop_min_delta": 1.0}  # no epoch can improve by 1
    wf = run_workflow(NAME, ["train.json"], "train", **paths, **stop)
    assert wf.trainer.state.epoch == 2  # the first validation sets the best score, the second one stops
    state = torch.load(Path(paths["ckpt_dir"]) / "checkpoint.pt", weights_only=True)
    assert state["run_status"] == {"terminated": True, "epoch": 2}
    # the same command again starts a new run (an early-stopped run is not resumed) and stops the same way
    wf = run_workflow(NAME, ["train.json"], "train", **paths, **stop)
    assert wf.trainer.state.epoch == 2
    # by default the patience is the number of epochs: nothing stops early
    wf = run_workflow(NAME, ["train.json"], "train", **{**paths, "ckpt_dir": str(tmp_path / "c2")},
                      **{**TINY, "epochs": 3, "early_stop_min_delta": 1.0})
    assert wf.trainer.state.epoch == 3


def test_evaluate_writes_results_and_predictions(trained):
    _, paths, _ = trained
    out = Path(paths["output_dir"]) / "eval"
    run_workflow(NAME, ["train.json", "evaluate.json"], "train", **{**paths, "output_dir": str(out)}, **TINY,
                 dataset_dir=str(Path(paths["output_dir"]) / "synthetic_data"))
    record = json.loads((out / "test_results.json").read_text())
    m = record["metrics"]
    assert 0 <= m["val_mean_jaccard"] <= 1
    # the mean is the mean of the classes that occur (all three occur in the synthetic test images)
    per_class = [m[f"val_jaccard_{c}"] for c in ("background", "good", "bad")]
    assert m["val_mean_jaccard"] == pytest.approx(np.mean(per_class))
    assert record["info"]["section"] == "test" and record["provenance"]["cpu"]
    preds = out / "predictions"
    prob = nib.load(str(next(preds.glob("*_prob.nii.gz")))).get_fdata()
    assert prob.shape[:2] == (96, 96) and prob.shape[-1] == 3 and np.allclose(prob.sum(-1), 1, atol=1e-4)
    assert nib.load(str(next(preds.glob("*_seg.nii.gz")))).shape[:2] == (96, 96)
    assert list(preds.glob("*_overlay.png"))


def test_inference_on_synthetic_and_real_microscopy(trained, tmp_path):
    _, paths, _ = trained
    run_workflow(NAME, ["inference.json"], "infer", **paths, **TINY_INFER)
    assert list((Path(paths["output_dir"]) / "inference").glob("*_seg.nii.gz"))
    # real images of other sizes and channel counts: a grey 660x550 and an RGB 512x512 (cropped to keep it fast)
    cell = skdata.cell()[:200, :150]
    ihc = skdata.immunohistochemistry()[:130, :170]
    # dotted names (as microscopes export them): every result file keeps the name up to its extension
    iio.imwrite(tmp_path / "cell.t0.png", cell)
    iio.imwrite(tmp_path / "cell.t1.png", cell)
    iio.imwrite(tmp_path / "ihc.png", ihc)
    datalist = [{"image": str(tmp_path / f)} for f in ("cell.t0.png", "cell.t1.png", "ihc.png")]
    pred_dir = tmp_path / "pred"
    run_workflow(NAME, ["inference.json"], "infer", **paths, **TINY_INFER, datalist=datalist,
                 prediction_dir=str(pred_dir))
    assert len(list(pred_dir.glob("*_overlay.png"))) == 3
    for name, img in (("cell.t0", cell), ("cell.t1", cell), ("ihc", ihc)):
        seg = np.asarray(nib.load(str(pred_dir / f"{name}_seg.nii.gz")).dataobj)
        prob = np.asarray(nib.load(str(pred_dir / f"{name}_prob.nii.gz")).dataobj)
        # MONAI's PIL reader puts the image's width first; the prediction is on the image's own grid
        assert seg.squeeze().shape == (img.shape[1], img.shape[0])
        assert np.isfinite(prob).all() and set(np.unique(seg).tolist()) <= {0, 1, 2}
        assert iio.imread(pred_dir / f"{name}_overlay.png").shape[:2] == (img.shape[1], img.shape[0])
    # two images whose results would share a name stop the run before anything is written
    (tmp_path / "other").mkdir()
    iio.imwrite(tmp_path / "other" / "ihc.png", ihc)
    with pytest.raises(RuntimeError, match="check_output_names") as err:  # MONAI wraps the config's error
        run_workflow(NAME, ["inference.json"], "infer", **paths, **TINY_INFER, prediction_dir=str(tmp_path / "p2"),
                     datalist=datalist + [{"image": str(tmp_path / "other" / "ihc.png")}])
    assert isinstance(err.value.__cause__, ValueError)
    assert re.search(r"2 images would write their results under the same name.*'ihc' from \[.*/ihc\.png', "
                     r"'.*/other/ihc\.png'\]", str(err.value.__cause__))
    assert not (tmp_path / "p2").exists()


@pytest.mark.parametrize("method, loss", [("patch_classification", "CrossEntropyLoss"),
                                          ("fcn", "CrossEntropyLoss")])
def test_method_files_swap_network_loss_targets_and_inferer(method, loss, trained, tmp_path):
    _, paths, _ = trained
    data = str(Path(paths["output_dir"]) / "synthetic_data")
    over = {**TINY, "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "ckpt"), "dataset_dir": data}
    wf = run_workflow(NAME, ["train.json", f"method_{method}.json"], "train", **over)
    assert type(wf.trainer.loss_function).__name__ == loss
    net = wf.trainer.network
    assert type(net).__name__ == ("BasicUNet" if method == "fcn" else "FlatHistogramNet")
    assert (tmp_path / "ckpt" / "model.pt").is_file() and 0 <= wf.evaluator.state.metrics["val_mean_jaccard"] <= 1


def test_comparison_study_tables_and_figures(tmp_path):
    out = tmp_path / "compare"
    over = {"output_dir": str(out), "epochs": 1, "methods": ["histogram", "patch_classification"], "seeds": [0, 1],
            "num_cases": 4, "image_size": 96, "patch_sizes": [32], "device": "cpu",
            "train_overrides": {"patches_per_image": 4, "images_per_batch": 2, "stride": 8, "channels": [4, 8]}}
    run_bundle_cli(NAME, ["compare.json"], over)
    with open(out / "jaccard_cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert sorted((r["method"], r["seed"]) for r in cells) == [
        ("histogram", "0"), ("histogram", "1"), ("patch_classification", "0"), ("patch_classification", "1")]
    with open(out / "jaccard_table.csv") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    h = [float(r["mean_jaccard"]) for r in cells if r["method"] == "histogram"]
    assert float(summary["histogram"]["mean_jaccard_mean"]) == pytest.approx(np.mean(h))
    assert float(summary["histogram"]["mean_jaccard_sd"]) == pytest.approx(np.std(h, ddof=1))
    with open(out / "paired_differences.csv") as f:
        diff = next(csv.DictReader(f))
    p = [float(r["mean_jaccard"]) for r in cells if r["method"] == "patch_classification"]
    assert float(diff["diff_mean"]) == pytest.approx(np.mean(np.subtract(p, h)))
    # the boundary-band Jaccard of every cell, from its saved predictions, summarised and paired like the whole image
    hb = [float(r["boundary_jaccard"]) for r in cells if r["method"] == "histogram"]
    pb = [float(r["boundary_jaccard"]) for r in cells if r["method"] == "patch_classification"]
    assert all(0.0 <= v <= 100.0 for v in hb + pb)
    assert float(summary["histogram"]["boundary_jaccard_mean"]) == pytest.approx(np.mean(hb))
    with open(out / "paired_differences_boundary.csv") as f:
        diff = next(csv.DictReader(f))
    assert diff["metric"] == "boundary_jaccard"
    assert float(diff["diff_mean"]) == pytest.approx(np.mean(np.subtract(pb, hb)))
    assert (out / "patch_size_sweep.png").is_file() and (out / "qualitative.png").is_file()
    # every cell is an ordinary bundle run with its own results file; a rerun reuses them (no training)
    stamp = (out / "histogram_p32_seed0" / "models" / "model.pt").stat().st_mtime_ns
    run_bundle_cli(NAME, ["compare.json"], over)
    assert (out / "histogram_p32_seed0" / "models" / "model.pt").stat().st_mtime_ns == stamp


def test_levels_ablation_pairs_each_variant_with_the_first(tmp_path):
    """levels.json: the histogram method under named override sets (levels, combination rule), paired on seeds."""
    levels = json.loads((bundle_dir(NAME) / "configs" / "levels.json").read_text())["variants"]
    assert [v.get("grid_sizes", [1, 2, 4]) for v in levels.values()][:4] == [[1, 2, 4], [1], [2], [4]]
    out = tmp_path / "levels"
    over = {"output_dir": str(out), "epochs": 1, "seeds": [0, 1], "num_cases": 4, "image_size": 96,
            "patch_sizes": [32], "device": "cpu",
            "variants": {"levels_1_2": {"grid_sizes": [1, 2]}, "levels_1": {"grid_sizes": [1]}},
            "train_overrides": {"patches_per_image": 4, "images_per_batch": 2, "stride": 8, "channels": [4, 8],
                                "grid_sizes": [1, 2]}}
    run_bundle_cli(NAME, ["levels.json"], over)
    with open(out / "jaccard_cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert sorted((r["variant"], r["seed"]) for r in cells) == [
        ("levels_1", "0"), ("levels_1", "1"), ("levels_1_2", "0"), ("levels_1_2", "1")]
    assert (out / "histogram_levels_1_p32_seed0" / "models" / "model.pt").is_file()
    with open(out / "variant_differences.csv") as f:
        diffs = {(d["variant"], d["metric"]): d for d in csv.DictReader(f)}
    assert set(diffs) == {("levels_1", "mean_jaccard"), ("levels_1", "boundary_jaccard")}
    one = [float(r["mean_jaccard"]) for r in cells if r["variant"] == "levels_1"]
    both = [float(r["mean_jaccard"]) for r in cells if r["variant"] == "levels_1_2"]
    assert float(diffs[("levels_1", "mean_jaccard")]["diff_mean"]) == pytest.approx(np.mean(np.subtract(one, both)))
    # the variant's overrides reached the network: one head for grid [1], two for [1, 2]
    state = torch.load(out / "histogram_levels_1_p32_seed0" / "models" / "model.pt", weights_only=True)
    state2 = torch.load(out / "histogram_levels_1_2_p32_seed0" / "models" / "model.pt", weights_only=True)
    assert len(state) < len(state2)


def test_plateau_config_gives_one_method_its_own_budget(tmp_path):
    """plateau.json: per-method overrides (the FCN trains longer), recorded in study.json; a bad method is named."""
    from monai_ext.apps.ips_histogram import IPSComparison

    assert json.loads((bundle_dir(NAME) / "configs" / "plateau.json").read_text())["method_overrides"] == {
        "fcn": {"epochs": 60}}
    out = tmp_path / "plateau"
    over = {"output_dir": str(out), "epochs": 1, "methods": ["histogram", "patch_classification"], "seeds": [0],
            "num_cases": 4, "image_size": 96, "patch_sizes": [32], "device": "cpu",
            "method_overrides": {"patch_classification": {"epochs": 2}},
            "train_overrides": {"patches_per_image": 4, "images_per_batch": 2, "stride": 8, "channels": [4, 8]}}
    run_bundle_cli(NAME, ["compare.json", "plateau.json"], over)
    epochs = {m: len(list(csv.DictReader(open(out / f"{m}_p32_seed0" / "epochs.csv"))))
              for m in ("histogram", "patch_classification")}
    assert epochs == {"histogram": 1, "patch_classification": 2}
    record = json.loads((out / "study.json").read_text())
    assert record["settings"]["method_overrides"] == {"patch_classification": {"epochs": 2}}
    with pytest.raises(ValueError, match="method_overrides names methods not compared here"):
        IPSComparison(bundle_dir(NAME), tmp_path, methods=["histogram"], method_overrides={"fcn": {"epochs": 60}})
