"""The aneurysm bundle on tiny synthetic data: train.json (landmark classifier on MONAI engines), study.json on top
(validation report, AdaBoost transfer, localisation), evaluate / inference configs. The model-zoo checks shared by
every bundle are in test_zoo_contract.py; train.json from the bundle folder, multi_gpu_train.json under torchrun
(gloo), resume and reproducibility in tests/integration.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from bundle_checks import bundle_dir, check_layout, check_metadata, config_paths, run_bundle_cli, run_workflow

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


# ---------------------------------------------------------------------------------------------------------------
# brain.json: the AFIDs brain landmark model on synthetic brains; inference.json on an image with model_meta.json.
# Tiny: the template at 4 mm (search grid 31 x 43 x 28), 8-pixel patches, 3 brains in the rolling cache.
BRAIN_TINY = {"epochs": 1, "template_voxel_size": 4, "registration_voxel_size": 4, "brain_instances": [1, 1, 1],
              "num_brains": 20, "cache_num": 3, "replace_num": 1, "repeats": 2, "samples_per_case": 8,
              "cases_per_batch": 2, "val_samples_per_case": 16, "val_interval": 1, "patch_size": 8,
              "channels": [4, 8], "hidden_features": 16, "search_radius": 2.0, "search_step": 2.0,
              "refine_radius": 1.0, "device": "cpu", "registration": {"bias_voxel_mm": 8.0}}
# registration: N4 fitted on an 8 mm grid (2x2x2 voxels of these 4 mm brains; the default 4 mm grid costs ~12 s a
# brain on one core), stored in model_meta.json and read back by inference.json


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    """One tiny epoch of train.json + brain.json (ConfigWorkflow: check_properties() == [] and a real trainer)."""
    out = tmp_path_factory.mktemp("brain_bundle")
    overrides = {**BRAIN_TINY, "output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models")}
    wf = run_workflow(NAME, ["train.json", "brain.json"], "train", **overrides)
    return out, overrides, wf


def test_brain_trains_on_a_rolling_cache_of_synthetic_brains(brain):
    from monai.engines import SupervisedTrainer

    from monai_ext.apps.aneurysm import RollingCacheDataset
    from monai_ext.data.synthetic.brain import afids_landmarks

    out, overrides, wf = brain
    assert isinstance(wf.trainer, SupervisedTrainer) and wf.trainer.state.epoch == 1
    assert wf.check_properties() == []
    dataset = wf.trainer.data_loader.dataset
    assert isinstance(dataset, RollingCacheDataset) and dataset.data[0] == {"seed": 50000}
    assert len(dataset) == overrides["cache_num"] * overrides["repeats"] and dataset.window() == [0, 1, 2]
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(state) == set(wf.network_def.state_dict()) and wf.network_def.num_classes == 33
    names, _ = afids_landmarks()
    datalist = json.loads((out / "outputs" / "brain_data" / "dataset.json").read_text())
    assert datalist["landmark_names"] == names
    assert {"validation", "test_t1", "test_t1_skull", "test_t2", "test_pd", "test_displaced"} <= set(datalist)


def test_brain_model_meta_written_by_training(brain):
    from monai_ext.apps.aneurysm import BrainTemplateSpace, meta_priors, read_model_meta

    out, overrides, _ = brain
    meta = read_model_meta(out / "models")
    assert meta["num_classes"] == 33 and meta["class_names"][0] == "background" and len(meta["class_names"]) == 33
    assert meta["network"]["channels"] == [4, 8] and meta["network"]["hidden_features"] == 16
    assert meta["patch"] == {"patch_size": 8, "extent_mm": None}
    search = dict(meta["search"])
    selection = search.pop("prior_sigma_selection")
    chosen = search.pop("prior_sigma_mm")
    mirror, mirror_labels = search.pop("mirror_selection"), search.pop("mirror_labels")
    mirror_coarse = search.pop("mirror_coarse")
    assert search == {"search_radius": 2.0, "search_step": 2.0, "refine_radius": 1.0, "score": "log_odds",
                      "coarse_lattice": "prior", "protocol_planes": True}  # brain.json: the AFIDs protocol planes
    # mirror averaging: without, from the refinement, everywhere, tried at the chosen prior on the same brains; the
    # lowest median error is kept, the cheaper on a tie
    from monai_ext.apps.aneurysm import left_right_mirror_labels

    candidates = ["without", "from the refinement", "everywhere"]
    assert mirror["candidates"] == candidates and mirror["prior_sigma_mm"] == chosen
    medians = mirror["median_error_mm"]  # rounded to 3 decimals: a near tie there may go either way
    assert mirror["chosen"] in [c for c, m in zip(candidates, medians, strict=True) if m <= min(medians) + 1e-3]
    assert mirror_labels == (None if mirror["chosen"] == "without" else left_right_mirror_labels(meta["class_names"]))
    assert mirror_coarse is (mirror["chosen"] == "everywhere")
    # the position prior: chosen among brain.json's candidates by the held-out error of the validation brains
    assert selection["candidates"] == [None, 3.0, 4.5, 6.0, 9.0, 12.0] and selection["images"] >= 1
    errors = selection["median_error_mm"]
    assert chosen == selection["candidates"][int(np.argmin(errors))] and all(np.isfinite(errors))
    assert meta["normalization"]["name"] == "masked_percentile" and meta["confidence_threshold"] == 0.5
    assert meta["registration"] == {"bias_voxel_mm": 8.0}  # brain.json's alignment settings, for inference
    space = BrainTemplateSpace.from_dict(meta["template"])
    assert space.voxel_size == 4 and list(space.spatial_size) == meta["template"]["spatial_size"] == [31, 43, 28]
    priors = meta_priors(meta)
    truth = space.priors()
    assert meta["priors"]["space"] == "template" and priors.names == truth.names
    np.testing.assert_allclose(priors.positions, truth.positions)  # the AFIDs ground truth, template mm
    assert meta["training"] == {"max_epochs": 1, "epochs_completed": 1, "complete": True}
    # the feature check of the best model: fitted on the validation patches, threshold from the search centres
    assert meta["feature_check"] == "feature_check.json"
    check = json.loads((out / "models" / "feature_check.json").read_text())
    assert np.isfinite(check["threshold"]) and len(check["means"]) >= 2


def test_brain_trains_on_a_datalist_of_own_brains(brain, tmp_path):
    """--dataset_dir: the datalist's brains are read, aligned to the template (ITK) and normalised like inference
    inputs; the priors are their mean aligned fiducial positions (template mm), not the template's own."""
    from monai_ext.apps.aneurysm import BrainTemplateSpace, RollingCacheDataset, meta_priors, read_model_meta

    out, overrides, _ = brain
    data = out / "outputs" / "brain_data"
    generated = json.loads((data / "dataset.json").read_text())
    # skull-stripped brains (at 4 mm, ITK cannot align a skull cut to the fiducials' box, see the README)
    own = {"landmark_names": generated["landmark_names"], "training": generated["test_t1"] + generated["test_t2"],
           "validation": generated["test_pd"]}
    (data / "own.json").write_text(json.dumps(own))
    wf = run_workflow(NAME, ["train.json", "brain.json"], "train", **{
        **overrides, "dataset_dir": str(data / "own.json"), "output_dir": str(tmp_path / "outputs"),
        "ckpt_dir": str(tmp_path / "models")})
    dataset = wf.trainer.data_loader.dataset
    assert isinstance(dataset, RollingCacheDataset) and dataset.data[0]["image"].endswith("test_t1_000.nii.gz")
    meta = read_model_meta(tmp_path / "models")
    assert meta["datalist"] == str(data / "own.json") and meta["priors"]["space"] == "template"
    truth = BrainTemplateSpace(4, 4).priors().positions
    priors = meta_priors(meta).positions
    assert priors.shape == truth.shape  # every fiducial, also those an aligned brain puts outside the grid
    shift = np.linalg.norm(priors - truth, axis=1)
    assert shift.max() > 0.1 and shift.mean() < 12.0  # two aligned brains: near, but not at, the template's fiducials


def _brain_image(out, section="test_displaced"):
    items = json.loads((out / "outputs" / "brain_data" / "dataset.json").read_text())[section]
    return out / "outputs" / "brain_data" / items[0]["image"], out / "outputs" / "brain_data" / items[0]["landmarks"]


def test_brain_inference_cli_on_an_image_path(brain, tmp_path):
    """``python -m monai.bundle run --config_file inference.json --image PATH``: only the image and the checkpoint
    folder; class count, search settings, template and priors come from model_meta.json."""
    import nibabel as nib

    from monai_ext.apps.aneurysm import read_points

    out, _, _ = brain
    image, _ = _brain_image(out)
    proc = run_bundle_cli(NAME, ["inference.json"], {"image": str(image), "ckpt_dir": str(out / "models"),
                                                     "output_dir": str(tmp_path), "device": "cpu"})
    assert f"written to {tmp_path / 'inference'}" in proc.stdout  # the output location is printed
    result = json.loads((tmp_path / "inference" / "test_displaced_000_localise.json").read_text())
    assert len(result["landmarks"]) == 32 and result["model"]["template"].startswith("MNI152")
    search = json.loads((out / "models" / "model_meta.json").read_text())["search"]
    assert result["model"]["search"] == {"radius": 2.0, "step": 2.0, "score": "log_odds",
                                         "prior_sigma_mm": search["prior_sigma_mm"],
                                         "mirror_averaging": search["mirror_labels"] is not None,
                                         "mirror_coarse": search["mirror_labels"] is not None
                                         and search.get("mirror_coarse", True), "recentre": False,
                                         "coarse_lattice": search.get("coarse_lattice", "prior"),
                                         "protocol_planes": True}
    moved = {p["name"]: p["moved_to_protocol_plane_mm"] for p in result["landmarks"]}
    assert all(v == 0.0 for n, v in moved.items() if n not in ("RLVAC", "LLVAC", "RLVPC", "LLVPC"))
    affine = nib.load(image).affine
    probs = np.array([p["probability"] for p in result["landmarks"]])
    for p in result["landmarks"]:  # points in the input's RAS mm, voxel indices of the input's grid
        np.testing.assert_allclose(affine @ [*p["voxel"], 1.0], [*p["position"], 1.0], atol=1e-5)
        assert p["low_confidence"] == (p["probability"] < result["confidence_threshold"])
    assert result["num_low_confidence"] == int((probs < 0.5).sum())
    verdict = result["out_of_distribution"]
    assert verdict["flagged"] == (verdict["low_confidence_fraction"] >= 0.5 or bool(
        verdict["feature_check"] and verdict["feature_check"]["out_of_distribution"]))
    fcsv = read_points(tmp_path / "inference" / "test_displaced_000_localise.fcsv")
    np.testing.assert_allclose(fcsv.positions, [p["position"] for p in result["landmarks"]], atol=1e-3)


def test_inference_config_takes_the_mirror_averaging_of_the_model_description(brain, tmp_path):
    """inference.json's inferer searches with the description's ``search.mirror_labels`` (and without when it is
    null), whatever training chose for the tiny model."""
    import shutil

    from monai.bundle import ConfigParser

    from monai_ext.apps.aneurysm import left_right_mirror_labels

    out, _, _ = brain
    for mirror, coarse in ((True, True), (True, False), (False, False), (True, "absent")):
        ckpt = tmp_path / f"mirror_{mirror}_{coarse}"
        shutil.copytree(out / "models", ckpt)
        meta = json.loads((ckpt / "model_meta.json").read_text())
        meta["search"]["mirror_labels"] = left_right_mirror_labels(meta["class_names"]) if mirror else None
        meta["search"].pop("mirror_coarse", None)
        if coarse != "absent":  # a description written before mirror_coarse existed: everywhere, as then
            meta["search"]["mirror_coarse"] = coarse
        (ckpt / "model_meta.json").write_text(json.dumps(meta))
        parser = ConfigParser()
        parser.read_config(config_paths(NAME, ["inference.json"]))
        parser["ckpt_dir"], parser["output_dir"] = str(ckpt), str(tmp_path)
        inferer = parser.get_parsed_content("inferer")
        assert inferer.mirror_labels == meta["search"]["mirror_labels"]
        if mirror:
            assert inferer.mirror_coarse is (coarse is not False), coarse
        assert inferer.coarse_lattice == "prior"  # a description without search.coarse_lattice: as before it
        assert inferer.protocol_planes is True  # brain.json's description turns the AFIDs protocol planes on
    # the description's coarse lattice, and the command line's --search_lattice over it
    meta["search"]["coarse_lattice"] = "shared"
    (ckpt / "model_meta.json").write_text(json.dumps(meta))
    for override, want in ((None, "shared"), ("prior", "prior")):
        parser = ConfigParser()
        parser.read_config(config_paths(NAME, ["inference.json"]))
        parser["ckpt_dir"], parser["output_dir"] = str(ckpt), str(tmp_path)
        if override:
            parser["search_lattice"] = override
        assert parser.get_parsed_content("inferer").coarse_lattice == want
    # a description without search.protocol_planes (written before it existed): off, as then; the command line's
    # --search_protocol_planes over the description
    meta["search"].pop("protocol_planes")
    (ckpt / "model_meta.json").write_text(json.dumps(meta))
    for override, want in ((None, False), ("true", True)):
        parser = ConfigParser()
        parser.read_config(config_paths(NAME, ["inference.json"]))
        parser["ckpt_dir"], parser["output_dir"] = str(ckpt), str(tmp_path)
        if override:
            parser["search_protocol_planes"] = override
        assert parser.get_parsed_content("inferer").protocol_planes is want
    # the alignment settings of the description (training's), and the defaults for a description without them
    align = parser.get_parsed_content("model_transforms")[0]
    assert align.registration == meta["registration"] == {"bias_voxel_mm": 8.0}
    meta.pop("registration")
    (ckpt / "model_meta.json").write_text(json.dumps(meta))
    parser = ConfigParser()
    parser.read_config(config_paths(NAME, ["inference.json"]))
    parser["ckpt_dir"], parser["output_dir"] = str(ckpt), str(tmp_path)
    assert parser.get_parsed_content("model_transforms")[0].registration == {}



@pytest.mark.parametrize("fill", [None, "false", "true", True])
def test_inference_reads_nan_voxels_only_when_asked(tmp_path, fill, caplog):
    """inference.json refuses an image with NaN voxels (the error names the file and the --fill_nonfinite option);
    with ``--fill_nonfinite true`` they are read as background, with a warning."""
    import nibabel as nib
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from monai_ext.transforms import ImageValidationError

    data = np.random.default_rng(0).uniform(10, 20, (6, 7, 8)).astype(np.float32)
    data[:2] = np.nan  # as SPM writes outside the source's field of view
    path = tmp_path / "wT1.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    parser = ConfigParser()
    parser.read_config(config_paths(NAME, ["inference.json"]))
    if fill is not None:
        parser["fill_nonfinite"] = fill
    load = Compose(parser.get_parsed_content("load_transforms"))
    if fill in (None, "false"):
        with pytest.raises(RuntimeError) as err:  # Compose wraps the transform's error
            load({"image": str(path)})
        assert isinstance(err.value.__cause__, ImageValidationError)
        assert re.search(r"'.*wT1\.nii' holds 112 NaN .* rerun with --fill_nonfinite true\.", str(err.value.__cause__))
        return
    with caplog.at_level("WARNING"):
        image = load({"image": str(path)})["image"]
    assert torch.isfinite(image).all() and float(image[0, :2].max()) == pytest.approx(float(np.nanmin(data)))
    np.testing.assert_allclose(image[0, 2:].numpy(), data[2:])
    assert "wT1.nii': 112 NaN or infinite value(s) of 336 read as background" in caplog.text

def test_brain_inference_image_folder_and_model_meta_errors(brain, tmp_path):
    import shutil

    import nibabel as nib

    out, _, _ = brain
    folder = tmp_path / "scans"
    folder.mkdir()
    for section in ("test_t1", "test_t2"):
        shutil.copy(_brain_image(out, section)[0], folder)
    (folder / "notes.txt").write_text("not an image")
    common = {"ckpt_dir": str(out / "models"), "output_dir": str(tmp_path / "res"), "device": "cpu"}
    # a bad scan first in the folder: the others are still localised, then the run stops naming it
    nib.save(nib.Nifti1Image(np.full((6, 7, 8), np.nan, np.float32), np.eye(4)), folder / "a_broken.nii.gz")
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the run's error; the causes name the file
        run_workflow(NAME, ["inference.json"], "infer", image=str(folder), **common)
    assert re.search(r"1 of 3 images could not be processed \(the results of the other 2 are written to "
                     r".*res/inference\): '.*a_broken\.nii\.gz': ImageValidationError: .*holds 336 NaN .* rerun with "
                     r"--fill_nonfinite true\.$", _causes(err.value), re.M)
    assert sorted(p.name for p in (tmp_path / "res" / "inference").glob("*.json")) == [
        "test_t1_000_localise.json", "test_t2_000_localise.json"]
    # a checkpoint folder without its description, or with a corrupt one: an error naming the file
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "models" / "model.pt", bare)
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the evaluator's error; the cause names the file
        run_workflow(NAME, ["inference.json"], "infer", image=str(folder), **{**common, "ckpt_dir": str(bare)})
    assert re.search(r"FileNotFoundError: model description '.*bare/model_meta.json' not found", _causes(err.value))
    (bare / "model_meta.json").write_text('{"num_classes": 33, "class_names": ')
    with pytest.raises(RuntimeError) as err:
        run_workflow(NAME, ["inference.json"], "infer", image=str(folder), **{**common, "ckpt_dir": str(bare)})
    assert re.search(r"ValueError: model description '.*bare/model_meta.json' is not valid JSON", _causes(err.value))


def _causes(e: BaseException | None) -> str:
    """The messages of an exception and of its causes (MONAI's ConfigExpression wraps the original error)."""
    lines = []
    while e is not None:
        lines.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(lines)


def test_vessel_and_brain_models_through_one_inference_config(trained, brain, tmp_path):
    """The synthetic-vessel model's description has no template (no alignment); each model applied to the other's
    data is judged out of distribution (tiny models: this checks the plumbing, the brain evaluation measures it)."""
    from monai_ext.apps.aneurysm import read_model_meta

    vessel_out, vessel_over, _ = trained
    brain_out, _, _ = brain
    vessel_meta = read_model_meta(vessel_out / "models")
    assert vessel_meta["template"] is None and vessel_meta["normalization"]["name"] == "percentile"
    assert vessel_meta["num_classes"] == 10 and vessel_meta["priors"]["space"] == "image"
    image, _ = _brain_image(brain_out, "test_t1")
    run_workflow(NAME, ["inference.json"], "infer", image=str(image), ckpt_dir=str(vessel_out / "models"),
                 output_dir=str(tmp_path / "v"), device="cpu")
    result = json.loads((tmp_path / "v" / "inference" / "test_t1_000_localise.json").read_text())
    assert len(result["landmarks"]) == 9 and "template_position" not in result["landmarks"][0]
    assert result["out_of_distribution"]["flagged"]
    vessel_image = sorted((vessel_out / "outputs" / "synthetic_data").rglob("*.nii.gz"))[0]
    run_workflow(NAME, ["inference.json"], "infer", image=str(vessel_image), ckpt_dir=str(brain_out / "models"),
                 output_dir=str(tmp_path / "b"), device="cpu")
    result = json.loads(next((tmp_path / "b" / "inference").glob("*_localise.json")).read_text())
    # the small vessel volume, once aligned, covers too little of the template's brain to normalise it: no point
    assert result["landmarks"] == [] and result["out_of_distribution"]["flagged"]
    assert re.search(r"cannot take this image .*brain mask", result["out_of_distribution"]["reasons"][0])


def test_brain_resume_is_exact(brain, tmp_path):
    """Two epochs in one run, or a run stopped after one epoch and resumed: the same weights (the rolling cache of
    brains is a function of the epoch, moved by EpochSeedHandler)."""
    _, overrides, _ = brain
    runs = {}
    for name, stops in (("straight", [2]), ("resumed", [1, 2])):
        for stop in stops:  # the interrupted run keeps epochs=2 (same lr schedule) and stops after epoch 1
            run_workflow(NAME, ["train.json", "brain.json"], "train", **{
                **overrides, "epochs": 2, "train#trainer#max_epochs": stop,
                "output_dir": str(tmp_path / name / "outputs"), "ckpt_dir": str(tmp_path / name / "models")})
        runs[name] = torch.load(tmp_path / name / "models" / "checkpoint.pt", weights_only=True)["model"]
    assert runs["straight"].keys() == runs["resumed"].keys()
    for k, v in runs["straight"].items():
        assert torch.equal(v, runs["resumed"][k]), k


def test_brain_evaluate_writes_the_evidence_table(brain, tmp_path):
    """brain_evaluate.json on top of inference.json: one row per test set (model vs baseline vs raters, top-1), the
    out-of-distribution row, and a results record with provenance (tiny model: the numbers are not checked); then
    brain_compare.json (CLI) and brain_alignment.json on its output and data."""
    import csv
    import shutil

    out, _, _ = brain
    shutil.copytree(out / "outputs" / "brain_data", tmp_path / "brain_data")  # the data brain.json generated
    run_workflow(NAME, ["inference.json", "brain_evaluate.json"], "infer", ckpt_dir=str(out / "models"),
                 output_dir=str(tmp_path), dataset_dir=str(tmp_path / "brain_data"), device="cpu", max_cases=1,
                 afids_test_instances=1, **{"vessel_datalist#num_cases": 4, "vessel_datalist#volume_size": 32})
    with open(tmp_path / "brain_evaluation" / "localisation_by_row.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["section"] for r in rows] == ["test", "test_template_t1", "test_t2_whole", "test_pd_whole", "test_t2",
                                            "test_pd", "test_t1_whole", "test_t1_skull_whole", "test_t1",
                                            "test_t1_skull", "test_displaced", "test_t1_skull_oblique",
                                            "test_t1_skull_neck", "test"]
    for r in rows[:-1]:  # at 4 mm ITK may fail to align a brain: reported as unprocessed (and OOD), not scored
        assert r["images"] == "1" and r["unprocessed"] in ("0", "1")
        if r["unprocessed"] == "0":
            assert float(r["model_mm"]) >= 0 and float(r["baseline_mm"]) >= 0 and float(r["inter_rater_mm"]) > 0
            assert 0 <= float(r["top1"]) <= 1
        else:
            assert r["model_mm"] == "nan" and r["ood_flagged"] == "1"
    assert sum(r["unprocessed"] == "0" for r in rows[:-1]) >= 8
    assert rows[-1]["model_mm"] == "nan" and int(rows[-1]["ood_flagged"]) <= int(rows[-1]["images"])
    # one line per image: its mean error agrees with its row's (one image per row here), and the alignment kept
    with open(tmp_path / "brain_evaluation" / "localisation_by_image.csv") as f:
        images = list(csv.DictReader(f))
    assert [i["row"] for i in images] == [r["row"] for r in rows for _ in range(int(r["images"]))]
    starts = {"centre_of_mass", "field_of_view_centre", "head_top", "from_inverse", "inverse"}
    for r, i in zip(rows[:-1], images, strict=False):
        assert i["processed"] == str(1 - int(r["unprocessed"])) and i["ood_flagged"] == r["ood_flagged"]
        assert i["recentred"] == "0"  # the brain model's default search runs once (search.recentre absent)
        if i["processed"] == "1":
            assert float(i["model_mm"]) == pytest.approx(float(r["model_mm"]), rel=1e-9)
            assert float(i["baseline_mm"]) == pytest.approx(float(r["baseline_mm"]), rel=1e-9)
            assert float(i["top1"]) == pytest.approx(float(r["top1"]), rel=1e-9)
            assert i["alignment_start"] in starts and 0.0 <= float(i["alignment_overlap"]) <= 1.0
        else:
            assert i["model_mm"] == "nan"
    record = json.loads((tmp_path / "brain_evaluation" / "results.json").read_text())
    assert record["provenance"]["cpu"] and record["info"]["model"]["template"].startswith("MNI152")
    assert record["info"]["registration"] == {"bias_voxel_mm": 8.0}  # the model's alignment settings, as used
    # the truth as the datalist gives it, and the search with the protocol planes (brain.json's description)
    assert record["info"]["truth"] == "tissue" and record["info"]["model"]["search"]["protocol_planes"] is True
    assert (tmp_path / "brain_evaluation" / "study.json").is_file()
    # brain_compare.json (CLI): evaluations side by side; here the same one twice, so both columns are this run's
    evaluated_dir = str(tmp_path / "brain_evaluation")
    run_bundle_cli(NAME, ["brain_compare.json"], {"output_dir": str(tmp_path / "brain_compare"),
                                                  "evaluations": {"a": evaluated_dir, "b": evaluated_dir}})
    with open(tmp_path / "brain_compare" / "localisation_by_row_runs.csv") as f:
        side = {r["row"]: r for r in csv.DictReader(f)}
    for r in rows:
        assert side[r["row"]]["model_mm_a"] == side[r["row"]]["model_mm_b"] == r["model_mm"]
    # brain_alignment.json (no model), through monai.bundle.run, the function behind the CLI, in this process (ITK's
    # modules are loaded already: a new process spends ~20 s loading them): the alignment alone gives the evaluation's
    # baseline on the same images (one setting, two rows: a box cut and a whole head, in the order of the config's rows)
    from monai.bundle import run as bundle_run

    sections = ["test_t1_skull", "test_displaced"]
    bundle_run(config_file=config_paths(NAME, ["brain_alignment.json"]), output_dir=str(tmp_path),
               dataset_dir=str(tmp_path / "brain_data"), num_test=1, max_cases=1, template_voxel_size=4,
               registration_voxel_size=4, sections=sections,
               variants={"default": {"bias_voxel_mm": 8.0}})  # the tiny model's registration (BRAIN_TINY)
    with open(tmp_path / "brain_alignment" / "alignment_by_image.csv") as f:
        aligned = list(csv.DictReader(f))
    assert [(a["image"], a["variant"]) for a in aligned] == [(f"{s}_000.nii.gz", "default") for s in sections]
    evaluated = {i["image"]: i for i in images}
    compared = [a for a in aligned if evaluated[a["image"]]["processed"] == "1"]  # 4 mm: ITK may fail on one
    assert compared
    for a in compared:
        i = evaluated[a["image"]]
        assert float(a["baseline_mm"]) == pytest.approx(float(i["baseline_mm"]), abs=1e-3), a["image"]
        assert a["start"] == i["alignment_start"]
    with open(tmp_path / "brain_alignment" / "alignment_by_row.csv") as f:
        assert [r["section"] for r in csv.DictReader(f)] == sections
