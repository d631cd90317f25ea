"""embryo_pu workflow pieces: sequence loading, grouped folds, methods, network wrapper, transforms, a tiny CV run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import torch

from monai_ext.apps.embryo_pu import (
    EmbryoPUStudy,
    FrameOutputs,
    LoadSequenced,
    RandFrameSubsetd,
    SaveSequenceScored,
    build_criterion,
    fold_items,
    infonce_weight,
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
    ("auc_nnpu+infonce@0.3", "auc_nnpu", True),
])
def test_parse_method(name, base, infonce):
    assert parse_method(name) == (base, infonce)


@pytest.mark.parametrize("name, weight", [("pn", 0.0), ("auc_nnpu+infonce", 0.1), ("nnpu+infonce@0.03", 0.03),
                                          ("auc_nnpu+infonce@1", 1.0)])
def test_infonce_weight(name, weight):
    assert infonce_weight(name, 0.1) == weight


@pytest.mark.parametrize("name, match", [("svm", "method must be one of"), ("nnpu+mi", "method must be one of"),
                                         ("auc", "method must be one of"), ("nnpu+@0.3", "method must be one of"),
                                         ("nnpu+infonce@x", "must be a number"),
                                         ("nnpu+infonce@-1", "must be positive")])
def test_parse_method_errors(name, match):
    with pytest.raises(ValueError, match=match):
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


def test_fold_items_split_sequences_and_check_labels(tmp_path):
    from monai_ext.data.synthetic.embryo import generate_embryo_dataset

    datalist = generate_embryo_dataset(tmp_path / "data", seed=0, num_cases=24, num_frames=3, image_size=32)
    folds = [fold_items(datalist, k, 3, 0.2, seed=0) for k in range(3)]
    tests = [{it["image"] for it in f["test"]} for f in folds]
    assert set().union(*tests) == {it["image"] for f in folds[:1] for s in f.values() for it in s}
    for f in folds:  # grouped: no sequence in two parts of a fold
        parts = [{it["image"] for it in f[k]} for k in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert all(it["label"] in (0, 1) for k in f for it in f[k])
    with pytest.raises(ValueError, match="fold must be in 0 .. 2"):
        fold_items(datalist, 3, 3)
    content = json.loads(datalist.read_text())
    content["training"][2]["label"] = 2
    datalist.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="item 2 key 'label' must be 0 or 1, got 2"):
        fold_items(datalist, 0, 3)


def test_rand_frame_subset_keeps_time_order():
    seq = torch.arange(6.0).reshape(1, 6, 1, 1).expand(1, 6, 2, 2).clone()
    t = RandFrameSubsetd("image", num_frames=3)
    t.set_random_state(0)
    out = t({"image": seq})["image"]
    kept = out[0, :, 0, 0].tolist()
    assert len(kept) == 3 and kept == sorted(kept) and set(kept) <= set(range(6))
    assert RandFrameSubsetd("image", num_frames=8)({"image": seq})["image"].shape == seq.shape
    with pytest.raises(ValueError, match="num_frames must be >= 0"):
        RandFrameSubsetd("image", num_frames=-1)


def test_frame_level_pu_iteration_matches_a_hand_computed_step():
    """One step of FrameLevelPUIteration in a real SupervisedTrainer equals the step written out by hand."""
    from monai.engines import SupervisedTrainer

    from monai_ext.engines import FrameLevelPUIteration
    from monai_ext.networks.nets import TimeLapseNet

    torch.manual_seed(0)
    net = TimeLapseNet(2, 1, channels=(4,))
    ref = TimeLapseNet(2, 1, channels=(4,))
    ref.load_state_dict(net.state_dict())
    x = torch.randn(4, 1, 3, 8, 8)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = AUCNNPULoss(0.3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = SupervisedTrainer("cpu", 1, [{"image": x, "label": y}], FrameOutputs(net), opt, loss,
                                iteration_update=FrameLevelPUIteration())
    trainer.run()
    out = ref.forward_all(x)
    expected = loss(out.frame_logits.reshape(-1), y.repeat_interleave(3))
    expected.backward()
    with torch.no_grad():
        for p in ref.parameters():
            if p.grad is not None:  # the projection head is unused without InfoNCE
                p -= 0.1 * p.grad
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert float(trainer.state.output[0]["loss"]) == pytest.approx(float(expected))


def test_study_errors(tmp_path):
    bundle = Path(__file__).resolve().parents[3] / "bundles" / "embryo_pu"
    with pytest.raises(ValueError, match="method must be one of"):
        EmbryoPUStudy(bundle, tmp_path, methods=["pn", "bogus"])
    with pytest.raises(ValueError, match="prior must be in"):
        EmbryoPUStudy(bundle, tmp_path, priors=[0.2, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        EmbryoPUStudy(bundle, tmp_path, methods=[])
    with pytest.raises(ValueError, match="positive_weight"):
        build_criterion("pn_weighted", 0.3)
