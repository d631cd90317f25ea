"""The MONAI Label app's landmark plumbing (``monai_ext.label.landmarks``); needs no ``monailabel``.

The served task is tested over HTTP in ``tests/integration/test_monailabel_server.py`` (``label`` extra).
"""

from __future__ import annotations

import json
import os
from itertools import product
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from monai_ext.apps.aneurysm import AneurysmInference, PointSet, TriPlanarPointInferer, write_points_json
from monai_ext.data.synthetic.aneurysm import LANDMARK_NAMES, generate_aneurysm_dataset
from monai_ext.label.bundles import bundle_kind, list_label_bundles
from monai_ext.label.landmarks import (
    InvalidInferInput,
    LandmarkLocaliser,
    ModelNotTrained,
    is_landmark_bundle,
    landmark_model_files,
    missing_landmark_files,
    render_landmark_spheres,
)
from monai_ext.networks.nets import MiniVGG
from monai_ext.utils import save_checkpoint

REPO = Path(__file__).resolve().parents[2]
ANEURYSM = REPO / "bundles" / "aneurysm"
needs_aneurysm = pytest.mark.skipif(not (ANEURYSM / "configs" / "inference.json").is_file(),
                                    reason="bundles/aneurysm is not in this checkout")
SEARCH = {"search_radius": 3.0, "search_step": 3.0, "refine_radius": 1.0}  # small: a few hundred patches a call


def _spheres_naive(shape, points, labels, radius):
    """Reference: every voxel against every point, nearest centre within the radius wins, ties to the first."""
    out = np.zeros(shape, dtype=np.int64)
    for v in product(*(range(s) for s in shape)):
        best, lab = np.inf, 0
        for p, k in zip(points, labels, strict=True):
            d2 = sum((a - b) ** 2 for a, b in zip(v, p, strict=True))
            if d2 <= radius**2 and d2 < best:
                best, lab = d2, k
        out[v] = lab
    return out


@pytest.mark.parametrize(
    "shape, points, labels, radius",
    [
        ((7, 7, 7), [[3, 3, 3]], [1], 1.0),  # the 6-neighbourhood cross: 7 voxels
        ((7, 8, 9), [[3.4, 2.6, 4.5]], [5], 2.0),  # fractional centre
        ((9, 9, 9), [[3, 4, 4], [5, 4, 4]], [1, 2], 2.0),  # overlap: nearest centre wins, the middle tie to the first
        ((6, 6, 6), [[0, 0, 5], [5.4, 2, 0.2]], [3, 4], 2.5),  # cut by the border
        ((5, 5, 5), [[2, 2, 2]], [300], 1.5),  # a label over 255
        ((4, 4, 4), np.zeros((0, 3)), np.zeros(0, dtype=int), 2.0),  # no landmark: background only
    ],
)
def test_render_landmark_spheres_matches_naive(shape, points, labels, radius):
    got = render_landmark_spheres(shape, points, labels, radius)
    expected = _spheres_naive(shape, np.asarray(points, float), list(labels), radius)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == (np.uint16 if len(labels) and max(labels) > 255 else np.uint8)


def test_render_landmark_spheres_torch_points_and_ball_size():
    pts = torch.tensor([[10.0, 10.0, 10.0]])
    got = render_landmark_spheres((21, 21, 21), pts, torch.tensor([7]), radius=3.0)
    n = sum(1 for v in product(range(-3, 4), repeat=3) if sum(c * c for c in v) <= 9)  # lattice points in the ball
    assert int((got == 7).sum()) == n == 123


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(*(st.floats(0, 5.0, allow_nan=False),) * 3), min_size=1, max_size=4),
    st.floats(0.9, 2.5),  # >= sqrt(3)/2: the voxel nearest a centre always lies in its sphere
)
def test_render_landmark_spheres_property(points, radius):
    shape = (6, 6, 6)
    labels = list(range(1, len(points) + 1))
    got = render_landmark_spheres(shape, points, labels, radius)
    np.testing.assert_array_equal(got, _spheres_naive(shape, np.asarray(points), labels, radius))
    for p in points:  # each centre's nearest voxel is drawn (by it, or by a nearer centre)
        assert got[tuple(int(round(c)) for c in p)] != 0


@pytest.mark.parametrize(
    "shape, points, labels, radius, match",
    [
        ((4, 4), [[1, 1, 1]], [1], 1.0, r"shape must be 3 positive sizes"),
        ((4, 0, 4), [[1, 1, 1]], [1], 1.0, r"shape must be 3 positive sizes"),
        ((4, 4, 4), [[1, 1]], [1], 1.0, r"points must be \(L, 3\) finite"),
        ((4, 4, 4), [[1, np.nan, 1]], [1], 1.0, r"points must be \(L, 3\) finite"),
        ((4, 4, 4), [[1, 1, 1]], [1, 2], 1.0, r"labels must be 1 integers"),
        ((4, 4, 4), [[1, 1, 1]], [1.5], 1.0, r"labels must be 1 integers"),
        ((4, 4, 4), [[1, 1, 1]], [0], 1.0, r"labels must be in 1\.\.65535"),
        ((4, 4, 4), [[1, 1, 1]], [1], 0.0, r"radius must be > 0 voxels, got 0.0"),
        ((4, 4, 4), [[1, 1, 1], [4, 1, 1]], [1, 2], 1.0, r"points \[\[4.0, 1.0, 1.0\]\] lie outside the volume"),
        ((4, 4, 4), [[-0.6, 1, 1]], [1], 1.0, r"lie outside the volume of shape \(4, 4, 4\)"),
    ],
)
def test_render_landmark_spheres_errors(shape, points, labels, radius, match):
    with pytest.raises(ValueError, match=match):
        render_landmark_spheres(shape, points, labels, radius)


def _landmark_bundle(root: Path) -> Path:
    """A minimal landmark bundle (the shape is_landmark_bundle looks for)."""
    b = root / "lm"
    (b / "configs").mkdir(parents=True)
    inference = {
        "ckpt_dir": "$@bundle_root + '/models'",
        "ckpt_path": "$@ckpt_dir + '/net.pt'",
        "priors_path": "$@ckpt_dir + '/priors.json'",
        "network_def": {"_target_": "monai_ext.networks.nets.MiniVGG"},
        "preprocessing": {"_target_": "Compose", "transforms": []},
        "inferer": {"_target_": "monai_ext.apps.aneurysm.TriPlanarPointInferer", "mode": "localise"},
    }
    (b / "configs" / "inference.json").write_text(json.dumps(inference))
    out = {"type": "probabilities", "format": "classes", "num_channels": 3}
    meta = {"version": "0.1.0", "network_data_format": {"inputs": {"image": {}}, "outputs": {"pred": out}}}
    (b / "configs" / "metadata.json").write_text(json.dumps(meta))
    return b


def test_bundle_kind_and_listing(tmp_path):
    b = _landmark_bundle(tmp_path)
    assert is_landmark_bundle(b) and bundle_kind(b) == "landmarks"
    assert list_label_bundles(tmp_path) == ["lm"]
    assert [p.name for p in landmark_model_files(b)] == ["net.pt", "priors.json"]
    assert missing_landmark_files(b) == [b / "models" / "net.pt", b / "models" / "priors.json"]
    other = tmp_path / "ckpts"
    other.mkdir()
    (other / "net.pt").write_bytes(b"x")
    assert missing_landmark_files(b, other) == [other / "priors.json"]
    cfg = json.loads((b / "configs" / "inference.json").read_text())
    cfg["inferer"]["_target_"] = "SlidingWindowInferer"  # any other inferer: not a landmark bundle
    (b / "configs" / "inference.json").write_text(json.dumps(cfg))
    assert not is_landmark_bundle(b) and bundle_kind(b) is None
    (b / "configs" / "inference.json").write_text("{not json")
    assert not is_landmark_bundle(b)


@needs_aneurysm
def test_repository_bundle_kinds():
    assert bundle_kind(ANEURYSM) == "landmarks"
    for name, kind in (("ips_histogram", "segmentation"), ("sperm_emd", None)):
        if (REPO / "bundles" / name / "configs" / "inference.json").is_file():
            assert bundle_kind(REPO / "bundles" / name) == kind


@pytest.fixture(scope="module")
def landmark_model(tmp_path_factory):
    """Random-init MiniVGG weights + priors from synthetic landmarks, and two synthetic test volumes.

    The weights are not trained: these tests check that the localiser reproduces the bundle's own inference and that
    its coordinates are consistent, not how well it localises (the bundle tests measure that).
    """
    root = tmp_path_factory.mktemp("landmarks")
    data = generate_aneurysm_dataset(root / "data", seed=3, num_cases=2, shape=40, val_fraction=0, test_fraction=0)
    items = json.loads(data.read_text())["training"]
    lm = json.loads((root / "data" / items[0]["landmarks"]).read_text())["landmarks"]
    ckpt = root / "models"
    write_points_json(PointSet([p["name"] for p in lm], [p["label"] for p in lm], [p["position"] for p in lm]),
                      ckpt / "landmark_priors.json")
    torch.manual_seed(0)
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=len(lm) + 1, channels=(16, 32, 64), hidden_features=128)
    save_checkpoint(net.state_dict(), ckpt / "model.pt")  # a bare state_dict, as the bundle's CheckpointSaver writes
    # the second case with a shifted, flipped grid: voxel and world coordinates differ on every axis
    img = nib.load(root / "data" / items[1]["image"])
    arr = np.asarray(img.dataobj)[::-1].copy()
    affine = np.array([[-1.0, 0, 0, 41.5], [0, 1.0, 0, -2.0], [0, 0, 1.0, 1.5], [0, 0, 0, 1]])
    shifted = root / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(arr, affine), shifted)
    return {"ckpt_dir": ckpt, "images": [root / "data" / items[0]["image"], shifted], "root": root}


@needs_aneurysm
def test_localiser_labels_and_image(landmark_model):
    loc = LandmarkLocaliser(ANEURYSM, landmark_model["ckpt_dir"])
    assert loc.labels == {n: k + 1 for k, n in enumerate(LANDMARK_NAMES)}
    assert loc.ckpt_path == landmark_model["ckpt_dir"] / "model.pt"
    image = loc.load_image(landmark_model["images"][1])
    assert tuple(image.shape) == (1, 40, 40, 40)
    nifti = nib.load(landmark_model["images"][1])
    np.testing.assert_allclose(image.affine.numpy(), nifti.affine)
    # the image as read, on the input's grid (where the spheres are drawn); normalised later, in localise()
    assert image.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), np.asarray(nifti.dataobj, dtype=np.float32))
    assert loc.meta is None and loc.confidence_threshold == 0.5  # no model_meta.json: the defaults


@needs_aneurysm
@pytest.mark.parametrize("index", [0, 1])
def test_localiser_reproduces_bundle_inference(landmark_model, index, tmp_path):
    """Same points as the bundle's own AneurysmInference (inference.json's evaluator) on the same volume."""
    path = landmark_model["images"][index]
    loc = LandmarkLocaliser(ANEURYSM, landmark_model["ckpt_dir"])
    got = loc.localise(loc.load_image(path), "cpu", **SEARCH)
    assert (got["coordinate_system"], got["units"]) == ("RAS", "mm")
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=10, channels=(16, 32, 64), hidden_features=128)
    ref = AneurysmInference(net, landmark_model["ckpt_dir"] / "model.pt", [{"image": str(path)}],
                            loc.preprocessing, TriPlanarPointInferer(mode="localise", **SEARCH), tmp_path,
                            priors_path=landmark_model["ckpt_dir"] / "landmark_priors.json", device="cpu")
    expected = json.loads(ref.run()[0].read_text())["landmarks"]
    assert [p["name"] for p in got["landmarks"]] == [p["name"] for p in expected] == list(LANDMARK_NAMES)
    affine = nib.load(path).affine
    for g, e in zip(got["landmarks"], expected, strict=True):
        assert g["label"] == e["label"]
        np.testing.assert_allclose(g["position"], e["position"], atol=1e-4)
        np.testing.assert_allclose(g["probability"], e["probability"], rtol=1e-5)
        np.testing.assert_allclose(affine @ [*g["voxel"], 1.0], [*g["position"], 1.0], atol=1e-6)
        assert all(0 <= v <= 39 for v in g["voxel"])


@needs_aneurysm
def test_localiser_reloads_changed_files(landmark_model, tmp_path):
    ckpt = tmp_path / "models"
    ckpt.mkdir()
    for f in ("model.pt", "landmark_priors.json"):
        (ckpt / f).write_bytes((landmark_model["ckpt_dir"] / f).read_bytes())
    loc = LandmarkLocaliser(ANEURYSM, ckpt)
    assert loc.reload() is False  # unchanged
    priors = json.loads((ckpt / "landmark_priors.json").read_text())
    priors["landmarks"][0]["name"] = "renamed"
    (ckpt / "landmark_priors.json").write_text(json.dumps(priors))
    st_ = (ckpt / "landmark_priors.json").stat()
    os.utime(ckpt / "landmark_priors.json", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    assert loc.reload() is True
    assert next(iter(loc.labels)) == "renamed"
    (ckpt / "model.pt").unlink()
    with pytest.raises(ModelNotTrained, match=r"missing \[.*model.pt'\]") as err:
        loc.reload()
    assert isinstance(err.value, FileNotFoundError)


@needs_aneurysm
def test_localiser_accepts_older_wrapped_checkpoint(landmark_model, tmp_path):
    """A ``{"model": state_dict, ...}`` checkpoint (the bundle's format before model.pt was a bare state_dict)."""
    (tmp_path / "landmark_priors.json").write_bytes((landmark_model["ckpt_dir"] / "landmark_priors.json").read_bytes())
    bare = torch.load(landmark_model["ckpt_dir"] / "model.pt", weights_only=True)
    save_checkpoint({"model": bare, "epoch": 3}, tmp_path / "model.pt")
    loc = LandmarkLocaliser(ANEURYSM, tmp_path)
    assert all(torch.equal(loc.network.state_dict()[k], v) for k, v in bare.items())


@needs_aneurysm
def test_localiser_missing_and_mismatched_checkpoint(landmark_model, tmp_path):
    with pytest.raises(ModelNotTrained, match=r"is not trained: missing \[.*model.pt', .*landmark_priors"):
        LandmarkLocaliser(ANEURYSM, tmp_path)
    (tmp_path / "landmark_priors.json").write_bytes((landmark_model["ckpt_dir"] / "landmark_priors.json").read_bytes())
    other = MiniVGG(spatial_dims=2, in_channels=3, num_classes=10, channels=(8, 16, 32), hidden_features=32)
    save_checkpoint({"model": other.state_dict()}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"does not fit network_def .* num_classes=10 .* other channels"):
        LandmarkLocaliser(ANEURYSM, tmp_path)


@needs_aneurysm
def test_localiser_rejects_bad_input(landmark_model, tmp_path):
    loc = LandmarkLocaliser(ANEURYSM, landmark_model["ckpt_dir"])
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "flat.png")
    nib.save(nib.Nifti1Image(np.zeros((20, 30), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(InvalidInferInput, match=r"single-channel 3D volume .* shape \(1, 30, 20\) .* 2 spatial"):
        loc.load_image(tmp_path / "flat.png")
    with pytest.raises(InvalidInferInput, match=r"single-channel 3D volume .* shape \(1, 20, 30\)"):
        loc.load_image(tmp_path / "flat.nii.gz")
    with pytest.raises(InvalidInferInput, match=r"cannot read image 'junk.nii.gz' as a volume"):
        loc.load_image(tmp_path / "junk.nii.gz")
    # NaN voxels: refused by the bundle's ValidateImaged, answered with its message (a 422 from the server)
    nan = np.zeros((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(InvalidInferInput, match=r"cannot read image 'nan.nii.gz' as a volume: .* holds 1 NaN and 0 "
                       r"infinite value\(s\) \(the first at index \(0, 1, 2, 3\)\)"):
        loc.load_image(tmp_path / "nan.nii.gz")
    image = loc.load_image(landmark_model["images"][0])
    with pytest.raises(InvalidInferInput, match=r"search_step must be a number > 0 \(voxels\), got 0"):
        loc.localise(image, search_step=0)
    with pytest.raises(InvalidInferInput, match=r"search_radius must be a number >= 0 \(voxels\), got 'x'"):
        loc.localise(image, search_radius="x")
    with pytest.raises(InvalidInferInput, match=r"unknown search option\(s\) \['radius'\]"):
        loc.localise(image, radius=2)
    far = image.clone()
    far.affine = torch.tensor(np.diag([1.0, 1, 1, 1]) + np.c_[np.zeros((4, 3)), [500, 0, 0, 0]])  # 500 mm away
    with pytest.raises(InvalidInferInput, match=r"lies outside the volume .* aligned with the training data"):
        loc.localise(far, **SEARCH)


@pytest.fixture(scope="module")
def brain_model(tmp_path_factory):
    """A brain landmark checkpoint folder as brain.json writes it (random weights, the template at 4 mm) and a
    synthetic brain displaced on a whole-head grid, saved as NIfTI."""
    from monai_ext.apps.aneurysm import BrainTemplateSpace, ModelMetaWriter
    from monai_ext.data.synthetic.brain import SynthesizeBraind

    root = tmp_path_factory.mktemp("brain_landmarks")
    space = BrainTemplateSpace(voxel_size=4, registration_voxel_size=4)
    names = space.priors().names
    meta = {"num_classes": 33, "class_names": ["background", *names],
            "network": {"name": "MiniVGG", "spatial_dims": 2, "in_channels": 3, "num_classes": 33, "channels": [4, 8],
                        "hidden_features": 16},
            "patch": {"patch_size": 8, "extent_mm": None},
            "search": {"search_radius": 2.0, "search_step": 2.0, "refine_radius": 1.0},
            "normalization": {"name": "masked_percentile", "lower": 2.0, "upper": 98.0, "erode_mm": 5.0},
            "template": space.to_dict(), "confidence_threshold": 0.5, "max_low_fraction": 0.5,
            "registration": {"bias_voxel_mm": 8.0}}  # N4 on 2x2x2 blocks of the 4 mm brain (4 mm: ~12 s more)
    ckpt = root / "models"
    ModelMetaWriter(ckpt / "model_meta.json", meta, priors=space).started(None)
    torch.manual_seed(0)
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=33, channels=(4, 8), hidden_features=16)
    save_checkpoint(net.state_dict(), ckpt / "model.pt")
    tpl = space.template
    sample = SynthesizeBraind(template=tpl, landmark_sets=space.landmarks[1], spatial_size=tpl.shape,
                              output_affine=tpl.affine)({"seed": 4})
    path = root / "brain.nii.gz"
    nib.save(nib.Nifti1Image(sample["image"][0].numpy(), tpl.affine), path)
    return {"ckpt_dir": ckpt, "image": path, "shape": tpl.shape}


@needs_aneurysm
def test_localiser_brain_model_aligns_and_reports_confidence(brain_model, tmp_path, caplog):
    """model_meta.json drives the localiser: 33 classes, alignment to the template (ITK), the search on the
    template grid, points back on the input's grid; every point carries its probability and low-confidence flag,
    the result the out-of-distribution verdict, and both are logged as warnings. Same points as the bundle's own
    AneurysmInference with the same description."""
    import logging

    files = [p.name for p in landmark_model_files(ANEURYSM, brain_model["ckpt_dir"])]
    assert files == ["model.pt", "landmark_priors.json", "model_meta.json"]  # what the app copies when serving
    loc = LandmarkLocaliser(ANEURYSM, brain_model["ckpt_dir"])
    assert loc.meta["num_classes"] == 33 and loc.network.num_classes == 33 and loc.inferer_args["patch_size"] == 8
    image = loc.load_image(brain_model["image"])
    assert tuple(image.shape[1:]) == brain_model["shape"]  # the input's grid, not the template's
    aligners = [t for t in loc.preprocessing.transforms if type(t).__name__ == "AlignToModelTemplated"]
    assert [a.registration for a in aligners] == [{"bias_voxel_mm": 8.0}]  # the description's alignment settings
    with caplog.at_level(logging.WARNING):
        got = loc.localise(image, "cpu")
    assert got["template_aligned"] and len(got["landmarks"]) == 32
    assert got["recentred"] is False and loc.inferer_args["recentre"] is False  # the description's default: once
    record = got["alignment"]  # the registration's record, as the bundle's JSON carries it
    assert record["start"] in {s["start"] for s in record["starts"]} and 0.0 < record["overlap"] <= 1.0
    assert record["metric"] == min(s["metric"] for s in record["starts"] if s["overlap"] >= 0.5)
    affine = nib.load(brain_model["image"]).affine
    probs = np.array([p["probability"] for p in got["landmarks"]])
    for p in got["landmarks"]:
        np.testing.assert_allclose(affine @ [*p["voxel"], 1.0], [*p["position"], 1.0], atol=1e-5)
        assert p["low_confidence"] == (p["probability"] < 0.5)
    assert got["num_low_confidence"] == int((probs < got["confidence_threshold"]).sum())
    verdict = got["out_of_distribution"]
    assert verdict["low_confidence_fraction"] == pytest.approx(float((probs < 0.5).mean()))
    assert verdict["flagged"] == (verdict["low_confidence_fraction"] >= 0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("below the confidence threshold" in w for w in warnings) == bool(got["num_low_confidence"])
    assert any("unlike the model's training data" in w for w in warnings) == verdict["flagged"]
    # the bundle's inference (inference.json's evaluator) on the same file with the same description
    ref = AneurysmInference(MiniVGG(spatial_dims=2, in_channels=3, num_classes=33, channels=(4, 8),
                                    hidden_features=16), brain_model["ckpt_dir"] / "model.pt",
                            [{"image": str(brain_model["image"])}], loc.preprocessing,
                            TriPlanarPointInferer(mode="localise", patch_size=8, search_radius=2.0, search_step=2.0,
                                                  refine_radius=1.0), tmp_path,
                            model_meta=brain_model["ckpt_dir"], device="cpu")
    expected = json.loads(ref.run()[0].read_text())
    for g, e in zip(got["landmarks"], expected["landmarks"], strict=True):
        assert (g["name"], g["low_confidence"]) == (e["name"], e["low_confidence"])
        np.testing.assert_allclose(g["position"], e["position"], atol=1e-3)
        np.testing.assert_allclose(g["probability"], e["probability"], rtol=1e-5)
    assert expected["out_of_distribution"]["flagged"] == verdict["flagged"]
    assert loc.inferer_args["protocol_planes"] is False and "moved_to_protocol_plane_mm" not in got["landmarks"][0]
    # search.protocol_planes (the description's, or the bundle's --search_protocol_planes): the ventricle points
    # move into the coronal planes of the found AC / PC, every other point stays
    from monai_ext.apps.aneurysm import protocol_plane_offsets

    loc.inferer_args["protocol_planes"] = True
    placed = loc.localise(image, "cpu")["landmarks"]
    names = [p["name"] for p in placed]
    before, after = (np.array([p["position"] for p in lms]) for lms in (got["landmarks"], placed))
    moved = np.array([p["moved_to_protocol_plane_mm"] for p in placed])
    np.testing.assert_allclose(moved, np.linalg.norm(after - before, axis=1), atol=1e-6)
    plane = {"RLVAC", "LLVAC", "RLVPC", "LLVPC"}
    assert not moved[[n not in plane for n in names]].any()
    offsets = protocol_plane_offsets(loc.priors.positions, loc.priors.names)
    found = protocol_plane_offsets(after, names)
    assert all(found[n] == pytest.approx(offsets[n], abs=1e-6) for n in plane)


@needs_aneurysm
def test_localiser_corrupt_model_description(brain_model, tmp_path):
    for f in ("model.pt", "landmark_priors.json"):
        (tmp_path / f).write_bytes((brain_model["ckpt_dir"] / f).read_bytes())
    (tmp_path / "model_meta.json").write_text('{"num_classes": 33}')
    with pytest.raises(ValueError, match=r"model description '.*model_meta.json': missing \['class_names'"):
        LandmarkLocaliser(ANEURYSM, tmp_path)
