"""The MONAI Label app's bundle plumbing (``monai_ext.label.bundles``); needs no ``monailabel``.

The server itself is tested over HTTP in ``tests/integration/test_monailabel_server.py``, MONAI Label's stock bundle
tasks on our bundles in ``tests/label/test_label_stock_tasks.py`` (both ``label`` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_ext.label import APP_DIR
from monai_ext.label.bundles import (
    MODEL_FILE,
    UNTRAINED_MARKER,
    ensure_initial_weights,
    extract_state_dict,
    is_untrained,
    list_label_bundles,
    prepare_bundle,
    select_bundles,
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


def _touch(path: Path, content: bytes, mtime_s: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))  # explicit times: no dependence on clock resolution


def test_prepare_bundle_copies_configs_and_keeps_weights(tmp_path):
    src = _bundle(tmp_path / "src")
    (src / "docs").mkdir()
    (src / "docs" / "README.md").write_text("readme")
    (src / "LICENSE").write_text("licence")
    (src / "outputs").mkdir()
    (src / "outputs" / "big.bin").write_text("run output")
    _touch(src / "models" / "checkpoint.pt", b"resume state", 100)
    dst = prepare_bundle(src, tmp_path / "served" / "seg")
    assert (dst / "configs" / "inference.json").read_text() == (src / "configs" / "inference.json").read_text()
    assert (dst / "docs" / "README.md").read_text() == "readme"
    assert (dst / "LICENSE").read_text() == "licence"
    assert not (dst / "outputs").exists() and not (dst / "models").exists()  # no model.pt: nothing copied
    # weights trained in the served copy (newer) survive a refresh; edited configs are refreshed
    _touch(dst / "models" / MODEL_FILE, b"trained", 200)
    _touch(src / "models" / MODEL_FILE, b"shipped", 150)
    (src / "configs" / "metadata.json").write_text(json.dumps({**_metadata(), "version": "0.2.0"}))
    prepare_bundle(src, dst)
    assert (dst / "models" / MODEL_FILE).read_bytes() == b"trained"
    assert json.loads((dst / "configs" / "metadata.json").read_text())["version"] == "0.2.0"
    # a source retrained later (the bundle command) replaces them; a fresh copy takes the source's weights
    _touch(src / "models" / MODEL_FILE, b"retrained", 300)
    prepare_bundle(src, dst)
    assert (dst / "models" / MODEL_FILE).read_bytes() == b"retrained"
    fresh = prepare_bundle(src, tmp_path / "served2" / "seg")
    assert (fresh / "models" / MODEL_FILE).read_bytes() == b"retrained"
    assert not (fresh / "models" / "checkpoint.pt").exists()  # training state is not served


def test_prepare_bundle_model_files_from_another_folder(tmp_path):
    """Landmark bundles: the checkpoint and priors come from their ckpt_dir, wherever it is."""
    src = _bundle(tmp_path / "src")
    files = [tmp_path / "ckpt" / MODEL_FILE, tmp_path / "ckpt" / "landmark_priors.json", tmp_path / "ckpt" / "gone"]
    _touch(files[0], b"weights", 100)
    _touch(files[1], b"priors", 100)
    dst = prepare_bundle(src, tmp_path / "served", model_files=files)
    assert sorted(p.name for p in (dst / "models").iterdir()) == ["landmark_priors.json", MODEL_FILE]
    assert (dst / "models" / "landmark_priors.json").read_bytes() == b"priors"


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
    saved = torch.load(b / "models" / MODEL_FILE, weights_only=True)  # a bare state_dict, the zoo's format
    torch.manual_seed(0)
    ref = _net().state_dict()
    assert saved.keys() == ref.keys()
    assert all(torch.equal(saved[k], ref[k]) for k in ref)
    mtime = (b / "models" / MODEL_FILE).stat().st_mtime_ns
    assert ensure_initial_weights(b) is False
    assert (b / "models" / MODEL_FILE).stat().st_mtime_ns == mtime


def test_is_untrained_until_the_weights_change(tmp_path):
    b = _bundle(tmp_path)
    assert is_untrained(b) is False  # no weights, no marker
    ensure_initial_weights(b)
    marker = json.loads((b / "models" / UNTRAINED_MARKER).read_text())
    assert marker["sha256"] == hashlib.sha256((b / "models" / MODEL_FILE).read_bytes()).hexdigest()
    assert is_untrained(b) is True
    # any trainer replacing the file (MONAI Label's BundleTrainTask writes it through the bundle's CheckpointSaver)
    torch.manual_seed(1)
    save_checkpoint(_net().state_dict(), b / "models" / MODEL_FILE)
    assert is_untrained(b) is False
    (b / "models" / UNTRAINED_MARKER).write_text("seeded initial weights; run /train to get a real model\n")
    assert is_untrained(b) is True  # a marker of the earlier app version (no hash): untrained while it exists
    (b / "models" / UNTRAINED_MARKER).unlink()
    assert is_untrained(b) is False


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
