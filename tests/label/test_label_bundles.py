"""The MONAI Label app's bundle plumbing (``monai_ext.label.bundles``); needs no ``monailabel``.

The server itself is tested over HTTP in ``tests/integration/test_monailabel_server.py`` (``label`` extra).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_ext.label import APP_DIR
from monai_ext.label.bundles import (
    MODEL_FILE,
    UNTRAINED_MARKER,
    ensure_initial_weights,
    export_trained_weights,
    extract_state_dict,
    list_label_bundles,
    parse_train_request,
    prepare_bundle,
    select_bundles,
    write_datalist,
)
from monai_ext.utils import save_checkpoint

NET = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "features": [4, 4, 8, 8, 16, 4]}


def _net() -> torch.nn.Module:  # the same network, built directly (reference for the config path)
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 4, 8, 8, 16, 4))


def _metadata(fmt: str = "segmentation") -> dict:
    out = {"type": "image", "format": fmt, "num_channels": 3}
    return {"version": "0.1.0", "network_data_format": {"inputs": {"image": {}}, "outputs": {"pred": out}}}


def _bundle(root: Path, name: str = "seg", inference: bool = True, metadata: dict | None = None) -> Path:
    b = root / name
    (b / "configs").mkdir(parents=True)
    if inference:
        (b / "configs" / "inference.json").write_text(json.dumps({"network_def": NET}))
    if metadata != {}:
        (b / "configs" / "metadata.json").write_text(json.dumps(metadata or _metadata()))
    return b


def test_app_dir_holds_main_py():
    assert (Path(APP_DIR) / "main.py").is_file()


def test_list_label_bundles_needs_inference_and_metadata(tmp_path):
    _bundle(tmp_path, "b_ok")
    _bundle(tmp_path, "a_ok")
    _bundle(tmp_path, "no_inference", inference=False)
    _bundle(tmp_path, "no_metadata", metadata={})
    _bundle(tmp_path, "classifier", metadata=_metadata("classes"))  # e.g. aneurysm: probabilities, not a label map
    _bundle(tmp_path, "bad_metadata", metadata={"version": "0.1.0"})
    (tmp_path / "loose_file.json").write_text("{}")
    assert list_label_bundles(tmp_path) == ["a_ok", "b_ok"]
    with pytest.raises(FileNotFoundError, match="bundles_dir '.*missing' is not a folder"):
        list_label_bundles(tmp_path / "missing")


@pytest.mark.parametrize(
    "models, expected",
    [
        (None, ["a", "b", "c"]),
        ("all", ["a", "b", "c"]),
        (" ALL ", ["a", "b", "c"]),
        ("", ["a", "b", "c"]),
        ("c", ["c"]),
        ("c, a,c,", ["c", "a"]),
        (["b", "a"], ["b", "a"]),
    ],
)
def test_select_bundles(models, expected):
    assert select_bundles(models, ["b", "c", "a"]) == expected


@pytest.mark.parametrize(
    "models, available, match",
    [
        ("a,zzz", ["a", "b"], r"bundle\(s\) \['zzz'\] that cannot be served .*; available: \['a', 'b'\]"),
        ("all", [], "no bundle with configs/inference.json"),
        (",", ["a"], "no bundle with configs/inference.json"),
    ],
)
def test_select_bundles_errors(models, available, match):
    with pytest.raises(ValueError, match=match):
        select_bundles(models, available)


def test_prepare_bundle_copies_configs_and_keeps_weights(tmp_path):
    src = _bundle(tmp_path / "src")
    (src / "docs").mkdir()
    (src / "docs" / "README.md").write_text("readme")
    (src / "LICENSE").write_text("licence")
    (src / "outputs").mkdir()
    (src / "outputs" / "big.bin").write_text("run output")
    dst = prepare_bundle(src, tmp_path / "served" / "seg")
    assert (dst / "configs" / "inference.json").read_text() == (src / "configs" / "inference.json").read_text()
    assert (dst / "docs" / "README.md").read_text() == "readme"
    assert (dst / "LICENSE").read_text() == "licence"
    assert not (dst / "outputs").exists()
    # trained weights in the served copy survive a refresh; edited configs are refreshed
    (dst / "models").mkdir()
    (dst / "models" / MODEL_FILE).write_bytes(b"trained")
    (src / "models").mkdir()
    (src / "models" / MODEL_FILE).write_bytes(b"shipped")
    (src / "configs" / "metadata.json").write_text(json.dumps({**_metadata(), "version": "0.2.0"}))
    prepare_bundle(src, dst)
    assert (dst / "models" / MODEL_FILE).read_bytes() == b"trained"
    assert json.loads((dst / "configs" / "metadata.json").read_text())["version"] == "0.2.0"
    # a fresh copy takes the shipped weights
    fresh = prepare_bundle(src, tmp_path / "served2" / "seg")
    assert (fresh / "models" / MODEL_FILE).read_bytes() == b"shipped"


def test_prepare_bundle_without_configs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty' has no configs folder"):
        prepare_bundle(tmp_path / "empty", tmp_path / "dst")


def test_ensure_initial_weights_seeded_and_idempotent(tmp_path):
    b = _bundle(tmp_path)
    torch.manual_seed(123)
    rng_before = torch.random.get_rng_state()
    assert ensure_initial_weights(b, seed=0) is True
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG stream is untouched
    assert (b / "models" / UNTRAINED_MARKER).is_file()
    saved = torch.load(b / "models" / MODEL_FILE, weights_only=True)["model"]
    torch.manual_seed(0)
    ref = _net().state_dict()
    assert saved.keys() == ref.keys()
    assert all(torch.equal(saved[k], ref[k]) for k in ref)
    mtime = (b / "models" / MODEL_FILE).stat().st_mtime_ns
    assert ensure_initial_weights(b) is False
    assert (b / "models" / MODEL_FILE).stat().st_mtime_ns == mtime


def test_ensure_initial_weights_needs_network_def(tmp_path):
    b = tmp_path / "nonet"
    (b / "configs").mkdir(parents=True)
    (b / "configs" / "inference.json").write_text(json.dumps({"inferer": {"_target_": "SimpleInferer"}}))
    with pytest.raises(KeyError, match="has no top-level 'network_def'"):
        ensure_initial_weights(b)


_SD = {"w": torch.ones(2), "b": torch.zeros(1)}


@pytest.mark.parametrize(
    "checkpoint",
    [
        _SD,
        {"model": _SD, "epoch": 3},
        {"network": _SD, "optimizer": {"state": {}}},
        {"net": _SD},
        {"state_dict": _SD},
        {"module.w": torch.ones(2), "module.b": torch.zeros(1)},
        {"model": {"module.w": torch.ones(2), "module.b": torch.zeros(1)}},
    ],
)
def test_extract_state_dict(checkpoint):
    sd = extract_state_dict(checkpoint)
    assert sorted(sd) == ["b", "w"]
    assert torch.equal(sd["w"], torch.ones(2))


@pytest.mark.parametrize("checkpoint", [{}, {"epoch": 3}, {"model": {}}, {"optimizer": {"lr": torch.ones(1)}, "x": 1}])
def test_extract_state_dict_errors(checkpoint):
    with pytest.raises(ValueError, match="no network weights in ckpt.pt"):
        extract_state_dict(checkpoint, source="ckpt.pt")


def test_export_trained_weights_takes_newest_valid_checkpoint(tmp_path):
    b = _bundle(tmp_path)
    ensure_initial_weights(b)
    ckpt = tmp_path / "ckpt"
    torch.manual_seed(1)
    old, new = _net(), _net()
    save_checkpoint({"model": old.state_dict()}, ckpt / "epoch_1.pt")
    time.sleep(0.01)
    save_checkpoint({"model": new.state_dict(), "epoch": 2}, ckpt / "sub" / "epoch_2.pt")
    os.utime(ckpt / "epoch_1.pt", ns=(1, 1))  # older by construction, whatever the clock resolution
    out = export_trained_weights(ckpt, b)
    assert out == b / "models" / MODEL_FILE
    got = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(got[k], v) for k, v in new.state_dict().items())
    assert not (b / "models" / UNTRAINED_MARKER).exists()


def test_export_trained_weights_errors(tmp_path):
    b = _bundle(tmp_path)
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="training wrote no checkpoint"):
        export_trained_weights(tmp_path / "none", b)
    other = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    save_checkpoint({"model": other.state_dict()}, tmp_path / "bad" / "model.pt")
    with pytest.raises(ValueError, match="does not fit network_def"):
        export_trained_weights(tmp_path / "bad", b)
    assert not (b / "models" / MODEL_FILE).exists()  # nothing half-written


@pytest.mark.parametrize(
    "n, val_fraction, n_train, n_val",
    [(5, 0.2, 4, 1), (5, 0.6, 2, 3), (10, 0.2, 8, 2), (3, 0.01, 2, 1), (1, 0.2, 1, 1), (4, 0.0, 4, 4)],
)
def test_write_datalist_split(tmp_path, n, val_fraction, n_train, n_val):
    items = [{"image": f"/d/img{i}.png", "label": f"/d/lab{i}.png", "extra": "dropped"} for i in range(n)]
    path = write_datalist(items, tmp_path / "run", val_fraction=val_fraction)
    d = json.loads(path.read_text())
    assert path == tmp_path / "run" / "dataset.json"
    assert (len(d["training"]), len(d["validation"])) == (n_train, n_val)
    assert d["test"] == d["validation"]
    assert d["training"][0] == {"image": "/d/img0.png", "label": "/d/lab0.png"}
    if n_train + n_val == n:  # a real hold-out: disjoint and complete
        names = [r["image"] for r in d["training"] + d["validation"]]
        assert sorted(names) == sorted(i["image"] for i in items)


@pytest.mark.parametrize(
    "items, val_fraction, match",
    [
        ([], 0.2, "no labelled images to train on"),
        ([{"image": "a.png"}], 0.2, r"datalist item 0 needs 'image' and 'label'"),
        ([{"image": "a.png", "label": "b.png"}], 1.0, r"val_fraction must be in \[0, 1\), got 1.0"),
        ([{"image": "a.png", "label": "b.png"}], -0.1, r"val_fraction must be in \[0, 1\), got -0.1"),
    ],
)
def test_write_datalist_errors(tmp_path, items, val_fraction, match):
    with pytest.raises(ValueError, match=match):
        write_datalist(items, tmp_path, val_fraction=val_fraction)


@pytest.mark.parametrize(
    "request_, expected",
    [
        ({}, {"max_epochs": 1, "val_split": 0.2, "bundle_overrides": {}}),
        ({"max_epochs": 3, "val_split": 0}, {"max_epochs": 3, "val_split": 0.0, "bundle_overrides": {}}),
        (
            {"max_epochs": 1, "val_split": 0.5, "bundle_overrides": {"batch_size": 4, "train#x": 2}},
            {"max_epochs": 1, "val_split": 0.5, "bundle_overrides": {"batch_size": 4, "train#x": 2}},
        ),
        ({"bundle_overrides": None, "model": "seg"}, {"max_epochs": 1, "val_split": 0.2, "bundle_overrides": {}}),
    ],
)
def test_parse_train_request(tmp_path, request_, expected):
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 1, "batch_size": 2, "train": {"x": 1}}))
    assert parse_train_request(request_, cfg) == expected


@pytest.mark.parametrize(
    "request_, match",
    [
        ({"max_epochs": 0}, "max_epochs must be an integer >= 1, got 0"),
        ({"max_epochs": 1.5}, "max_epochs must be an integer >= 1, got 1.5"),
        ({"max_epochs": True}, "max_epochs must be an integer >= 1, got True"),
        ({"max_epochs": "2"}, "max_epochs must be an integer >= 1, got '2'"),
        ({"val_split": 1}, r"val_split must be a number in \[0, 1\), got 1"),
        ({"val_split": -0.5}, r"val_split must be a number in \[0, 1\), got -0.5"),
        ({"val_split": "0.2"}, r"val_split must be a number in \[0, 1\), got '0.2'"),
        ({"bundle_overrides": [1]}, r"bundle_overrides must be a JSON object of config ids to values, got \[1\]"),
        ({"bundle_overrides": {"epochs": 3, "device": "cpu"}}, r"must not set \['device', 'epochs'\]"),
        ({"bundle_overrides": {"no_such_id": 1}}, r"names ids \['no_such_id'\] that '.*train.json' does not have"),
    ],
)
def test_parse_train_request_errors(tmp_path, request_, match):
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 1, "batch_size": 2}))
    with pytest.raises(ValueError, match=match):
        parse_train_request(request_, cfg)
