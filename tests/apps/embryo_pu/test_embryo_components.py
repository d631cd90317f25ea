"""embryo_pu workflow pieces: sequence loading, grouped folds, methods, network wrapper, transforms, a tiny CV run."""

from __future__ import annotations

import csv
import json

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import torch

from monai_ext.apps.embryo_pu import (
    EmbryoPUWorkflow,
    LoadSequenced,
    SaveSequenceScored,
    build_criterion,
    load_sequence,
    normalize_sequence,
    parse_method,
    sequence_folds,
)
from monai_ext.losses import AUCNNPULoss, NNPULoss


def _write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        iio.imwrite(folder / f"f{t:02d}.png", f)


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 255, (6, 20, 24), dtype=np.uint8)


def test_load_sequence_folder_list_and_nifti(tmp_path, frames):
    _write_frames(tmp_path / "seq", frames)
    np.testing.assert_array_equal(load_sequence(tmp_path / "seq"), frames.astype(np.float32))
    files = [tmp_path / "seq" / f"f{t:02d}.png" for t in (4, 1)]
    np.testing.assert_array_equal(load_sequence(files), frames[[4, 1]].astype(np.float32))
    nib.save(nib.Nifti1Image(np.moveaxis(frames, 0, -1).astype(np.float32), np.eye(4)), tmp_path / "seq.nii.gz")
    np.testing.assert_allclose(load_sequence(tmp_path / "seq.nii.gz"), frames.astype(np.float32))


@pytest.mark.parametrize("num_frames", [2, 3, 6])
def test_load_sequence_even_subsampling(tmp_path, frames, num_frames):
    _write_frames(tmp_path / "seq", frames)
    out = load_sequence(tmp_path / "seq", num_frames=num_frames)
    # naive: frame i of n evenly spaced over 0..T-1, first and last included
    idx = [int(round(i * (len(frames) - 1) / (num_frames - 1))) for i in range(num_frames)]
    np.testing.assert_array_equal(out, frames[idx].astype(np.float32))


def test_load_sequence_resize_and_errors(tmp_path, frames):
    _write_frames(tmp_path / "seq", frames)
    assert load_sequence(tmp_path / "seq", image_size=16).shape == (6, 16, 16)
    with pytest.raises(ValueError, match="fewer than num_frames"):
        load_sequence(tmp_path / "seq", num_frames=7)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no frame"):
        load_sequence(tmp_path / "empty")
    iio.imwrite(tmp_path / "seq" / "f99.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        load_sequence(tmp_path / "seq")


@pytest.mark.parametrize("seq", [np.arange(24, dtype=np.float32).reshape(2, 3, 4), torch.rand(3, 5, 5) * 7 + 2])
def test_normalize_sequence(seq):
    out = normalize_sequence(seq)
    assert type(out) is type(seq)
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out.std()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("n_pos, n_neg, k", [(10, 40, 5), (7, 30, 3), (5, 5, 5)])
def test_sequence_folds_grouped_and_stratified(n_pos, n_neg, k):
    y = np.array([1] * n_pos + [0] * n_neg)
    folds = sequence_folds(y, k, 0.25, seed=1)
    tests = np.concatenate([f["test"] for f in folds])
    assert sorted(tests.tolist()) == list(range(y.size))  # test parts partition the sequences
    for f in folds:
        parts = [set(f[s].tolist()) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert parts[0] | parts[1] | parts[2] == set(range(y.size))
        # stratified: each test part holds floor or ceil of n_c / k of each class
        for c, n in ((1, n_pos), (0, n_neg)):
            assert int((y[f["test"]] == c).sum()) in (n // k, -(-n // k))
        assert (y[f["val"]] == 1).any() and (y[f["val"]] == 0).any()


@pytest.mark.parametrize("kwargs, match", [
    ({"num_folds": 1}, "num_folds"), ({"val_fraction": 1.0}, "val_fraction"), ({"num_folds": 11}, "class 1"),
])
def test_sequence_folds_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sequence_folds([1] * 10 + [0] * 40, **kwargs)


@pytest.mark.parametrize("name, base, infonce", [
    ("pn", "pn", False), ("auc_nnpu+infonce", "auc_nnpu", True), ("upu", "upu", False),
])
def test_parse_method(name, base, infonce):
    assert parse_method(name) == (base, infonce)


@pytest.mark.parametrize("name", ["svm", "nnpu+mi", "auc"])
def test_parse_method_errors(name):
    with pytest.raises(ValueError, match="method must be one of"):
        parse_method(name)


def test_build_criterion_values():
    x = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0, 0.1])
    t = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    bce = torch.mean(torch.stack([torch.log1p(torch.exp(-xi)) if ti else torch.log1p(torch.exp(xi))
                                  for xi, ti in zip(x, t, strict=True)]))
    assert build_criterion("pn", 0.3)(x, t).item() == pytest.approx(bce.item(), rel=1e-6)
    assert build_criterion("nnpu", 0.3)(x, t).item() == pytest.approx(NNPULoss(0.3)(x, t).item())
    assert build_criterion("upu", 0.3)(x, t).item() == pytest.approx(NNPULoss(0.3, nonnegative=False)(x, t).item())
    ref = AUCNNPULoss(0.3, nonnegative=False, classification_weight=0.2)(x, t).item()
    assert build_criterion("auc_pu", 0.3, classification_weight=0.2)(x, t).item() == pytest.approx(ref)
    with pytest.raises(ValueError, match="method must be one of"):
        build_criterion("auc_nnpu+infonce", 0.3)


def test_load_and_save_transforms(tmp_path, frames):
    _write_frames(tmp_path / "seq", frames)
    d = LoadSequenced("image", num_frames=3, image_size=16)({"image": str(tmp_path / "seq")})
    assert d["image"].shape == (1, 3, 16, 16) and d["image_path"] == str(tmp_path / "seq")
    assert float(d["image"].mean()) == pytest.approx(0.0, abs=1e-5)
    saver = SaveSequenceScored("pred", tmp_path / "out", frame_key="frames")
    saver({"pred": torch.tensor([0.0]), "image_path": "a", "frames": torch.tensor([0.0, 100.0])})
    saver({"pred": torch.tensor([2.0]), "image_path": "b", "frames": torch.tensor([-100.0, 0.0])})
    rows = list(csv.reader(open(tmp_path / "out" / "scores.csv")))
    assert rows[0] == ["sequence", "live_birth_probability", "frame_probabilities"]
    assert rows[1] == ["a", "0.500000", "0.5000 1.0000"]
    assert float(rows[2][1]) == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)


def _tiny_workflow(tmp_path, **kwargs):
    args = dict(dataset_dir=None, output_dir=str(tmp_path / "out"), ckpt_dir=str(tmp_path / "ckpt"),
                methods=["pn", "auc_nnpu+infonce"], num_folds=2, max_epochs=1, batch_size=4, num_cases=30,
                num_frames=3, image_size=32, channels=(4, 8), train_frames=2, seed=0)
    args.update(kwargs)
    return EmbryoPUWorkflow(**args)


def test_tiny_cross_validation_run_and_resume(tmp_path):
    wf = _tiny_workflow(tmp_path)
    rows = wf.run()
    y = wf.data["y"]
    assert [(r["method"], r["fold"]) for r in rows] == [("pn", 0), ("pn", 1), ("auc_nnpu+infonce", 0),
                                                        ("auc_nnpu+infonce", 1)]
    for r in rows:
        f = wf.folds[r["fold"]]
        assert not set(f["test"].tolist()) & set(f["train"].tolist())
        # recall at 0.5 recomputed naively from the stored test scores
        s, t = np.asarray(r["test_scores"]), y[r["test_index"]]
        assert r["recall@0.5"] == pytest.approx(((s >= 0.5) & (t == 1)).sum() / (t == 1).sum())
    out = tmp_path / "out"
    for name in ("results.csv", "results.md", "results_folds.csv", "roc.png"):
        assert (out / name).is_file()
    assert len(list((out / "figures").glob("saliency_*.png"))) == 2
    assert (tmp_path / "ckpt" / "model.pt").is_file()
    summary = list(csv.DictReader(open(out / "results.csv")))
    aucs = [r["auc"] for r in rows if r["method"] == "pn"]
    assert summary[0]["auc"].startswith(f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}")
    # a rerun resumes from the finished checkpoints: same scores, nothing retrained
    stamp = (tmp_path / "ckpt" / "pn_pi0.24" / "fold0.pt").stat().st_mtime_ns
    again = _tiny_workflow(tmp_path).evaluate()
    assert (tmp_path / "ckpt" / "pn_pi0.24" / "fold0.pt").stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again[0]["test_scores"], rows[0]["test_scores"], rtol=1e-5)
    info = json.loads((out / "synthetic_data" / "dataset.json").read_text())
    assert 0.0 <= info["prior_true"] <= 1.0


def test_workflow_errors(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        _tiny_workflow(tmp_path, methods=["pn", "bogus"])
    with pytest.raises(ValueError, match="prior must be in"):
        _tiny_workflow(tmp_path, priors=[0.2, 1.0])
    with pytest.raises(ValueError, match="at least one method"):
        _tiny_workflow(tmp_path, methods=[])
    with pytest.raises(ValueError, match="resume must be a boolean"):
        _tiny_workflow(tmp_path, resume="maybe")
    assert _tiny_workflow(tmp_path, resume="false", augment="True").resume is False
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
        _tiny_workflow(tmp_path).evaluate()
