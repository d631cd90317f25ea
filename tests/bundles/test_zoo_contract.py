"""The model-zoo contract of every bundle, checked the way the MONAI Model Zoo's CI and a MONAI user exercise it.

For each bundle, after one tiny training run of its ``train.json``:

- ``ConfigWorkflow(...)`` exposes a real ignite trainer (MONAI ``SupervisedTrainer``) with handlers, a key metric
  and an evaluator (``SupervisedEvaluator``) with handlers, and ``check_properties()`` finds nothing missing;
- the zoo CI's checks (``ci/verify_bundle.py``): required files, ``version`` in the ``changelog``,
  ``verify_metadata`` (offline schema), ``verify_net_in_out`` on ``inference.json`` with ``bundle_root``, and
  ``ckpt_export`` of ``models/model.pt`` *without* ``key_in_ckpt`` (a bare ``state_dict``); the TorchScript file
  loads and gives the eager network's outputs;
- command-line overrides reach the run: ``--loss#_target_`` and a replaced training transform are called (they
  raise), ``--optimizer#lr`` is the optimiser's learning rate, a handler appended to the trainer's handlers runs,
  and ``--tracking mlflow`` writes an MLflow store under the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bundle_checks import (
    META_SCHEMA,
    bundle_dir,
    config_paths,
    run_bundle_cli,
    run_workflow,
)
from ignite.engine import Engine
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from monai.engines import SupervisedEvaluator, SupervisedTrainer

pytestmark = pytest.mark.slow

# per bundle: tiny train.json overrides, and which training transform the override test replaces
SPECS = {
    "embryo_pu": {
        "tiny": {"epochs": 1, "num_cases": 40, "num_frames": 4, "image_size": 32, "channels": [4, 8], "num_folds": 2,
                 "train_frames": 2, "batch_size": 8, "device": "cpu"},
        "net": {"channels": [4, 8]},
        "input": (1, 4, 32, 32),
        "transform": "train#random_transforms#0",
    },
    "sperm_emd": {
        "tiny": {"epochs": 1, "num_videos": 3, "num_frames": 16, "num_sperm": 4, "video_size": 96, "crop_size": 16,
                 "clip_length": 4, "batch_size": 4, "warmup_epochs": 0, "network_kwargs": {"num_layers": 1},
                 "device": "cpu"},
        "net": {"crop_size": 16, "clip_length": 4, "network_kwargs": {"num_layers": 1}},
        "input": (1, 4, 16, 16),
        "transform": "train#random_transforms#0",
        "logs_lr": False,  # the lr changes every iteration (warm-up + cosine): not printed per step
    },
    "aneurysm": {
        "tiny": {"epochs": 1, "num_cases": 6, "volume_size": 32, "samples_per_case": 8, "val_samples_per_case": 8,
                 "channels": [4, 8], "hidden_features": 16, "device": "cpu"},
        "net": {"channels": [4, 8], "hidden_features": 16, "num_classes": 10},
        "input": (3, 32, 32),
        "transform": "train#random_transforms#0",
    },
    "ips_histogram": {
        "tiny": {"epochs": 1, "num_cases": 4, "image_size": 96, "patch_size": 32, "patches_per_image": 4,
                 "images_per_batch": 2, "stride": 8, "channels": [4, 8], "device": "cpu"},
        "net": {"patch_size": 32, "channels": [4, 8]},
        "input": (1, 32, 32),
        "transform": "train#random_transforms#2",
    },
}
BUNDLES = tuple(SPECS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(name)``: the finished ConfigWorkflow and its folders of one tiny run per bundle (cached)."""
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            paths = {"output_dir": str(root / "out"), "ckpt_dir": str(root / "models")}
            wf = run_workflow(name, ["train.json"], "train", **paths, **SPECS[name]["tiny"])
            cache[name] = (wf, root, paths)
        return cache[name]

    return get


@pytest.mark.parametrize("name", BUNDLES)
def test_trainer_and_evaluator_are_monai_engines(name, trained):
    wf, _, _ = trained(name)
    assert isinstance(wf.trainer, SupervisedTrainer) and isinstance(wf.trainer, Engine)
    assert wf.train_handlers and wf.train_key_metric
    assert isinstance(wf.evaluator, SupervisedEvaluator) and wf.val_handlers and wf.val_key_metric
    assert wf.check_properties() == []
    # the training really ran through ignite: one epoch, metrics recorded by the engines
    assert wf.trainer.state.epoch == 1 and wf.trainer.state.iteration > 0
    assert set(wf.val_key_metric) <= set(wf.evaluator.state.metrics)


@pytest.mark.parametrize("name", BUNDLES)
def test_zoo_ci_checks_and_bare_state_dict(name, trained, tmp_path):
    _, _, paths = trained(name)
    root = bundle_dir(name)
    for f in ("configs/metadata.json", "LICENSE", "configs/inference.json"):
        assert (root / f).is_file(), f
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(META_SCHEMA))
    # as the zoo CI runs it: the bundle's own network at the metadata's input shape
    verify_net_in_out(net_id="network_def", meta_file=str(root / "configs" / "metadata.json"),
                      config_file=str(root / "configs" / "inference.json"), bundle_root=str(root), device="cpu")
    over = SPECS[name]["net"]  # the tiny run's network size
    # models/model.pt is the bare state_dict of inference.json's network_def
    model_pt = Path(paths["ckpt_dir"]) / "model.pt"
    state = torch.load(model_pt, weights_only=True)
    parser = ConfigParser()
    parser.read_config(config_paths(name, ["inference.json"]))
    parser.update(over)
    net = parser.get_parsed_content("network_def")
    assert set(state) == set(net.state_dict()), "model.pt must hold network_def's parameters at the top level"
    net.load_state_dict(state)
    ts = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(model_pt),
                meta_file=str(root / "configs" / "metadata.json"),
                config_file=str(root / "configs" / "inference.json"), bundle_root=str(root), **over)
    scripted = torch.jit.load(str(ts))
    x = torch.randn(2, *SPECS[name]["input"], generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def _cli(name, tmp_path, **extra):
    over = {**SPECS[name]["tiny"], "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "models"), **extra}
    return over


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("what", ["loss", "transform"])
def test_cli_override_of_loss_and_transform_is_used(name, what, tmp_path):
    key = "loss#_target_" if what == "loss" else SPECS[name]["transform"] + "#_target_"
    target = "override_helpers.ExplodingLoss" if what == "loss" else "override_helpers.ExplodingTransformd"
    proc = run_bundle_cli(name, ["train.json"], _cli(name, tmp_path, **{key: target}), check=False)
    assert proc.returncode != 0
    marker = "ExplodingLoss was called" if what == "loss" else "ExplodingTransformd was called"
    assert marker in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", BUNDLES)
def test_cli_lr_handler_and_mlflow_overrides(name, tmp_path):
    marker = tmp_path / "marker.txt"
    handler = {"_target_": "override_helpers.MarkerHandler", "path": str(marker)}
    over = _cli(name, tmp_path, **{"optimizer#lr": 0.0123, "marker_handler": handler,
                                   "train#trainer#train_handlers": "$@train#handlers + [@marker_handler]"})
    run_bundle_cli(name, ["train.json"], over, extra_args=["--tracking", "mlflow"])
    state = torch.load(tmp_path / "models" / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.0123)
    assert marker.read_text() == "1"
    assert (tmp_path / "out" / "mlruns.db").is_file()
    if SPECS[name].get("logs_lr", True):
        assert "Current learning rate" in (tmp_path / "out" / "train_log.txt").read_text()
