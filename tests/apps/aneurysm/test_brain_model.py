"""The brain landmark model's components (brain.json / inference.json): the rolling cache of brains, the
model-described transforms, the template space, model_meta.json and the inference items."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, RandomizableTransform

from monai_ext.apps.aneurysm import (
    BrainTemplateSpace,
    FeatureDistributionCheck,
    LandmarkVoxelsd,
    LoadLandmarkImaged,
    ModelInputError,
    ModelIntensityNormalized,
    ModelMetaWriter,
    PointSet,
    RollingCacheDataset,
    default_model_meta,
    inference_items,
    landmark_spread_mm,
    meta_priors,
    normalize_intensity,
    read_model_meta,
    write_points_json,
)
from monai_ext.apps.aneurysm.transforms import AlignToModelTemplated
from monai_ext.networks.nets import MiniVGG
from monai_ext.transforms import MaskedPercentileNormalize


class _Count(MapTransform):
    """Deterministic: records each call, adds ``x * 10``."""

    def __init__(self) -> None:
        super().__init__("x")
        self.calls: list[int] = []

    def __call__(self, d):
        self.calls.append(d["x"])
        return {**d, "y": d["x"] * 10}


class _Noise(RandomizableTransform, MapTransform):
    """Random: adds a uniform draw from its own generator."""

    def __init__(self) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, "y")

    def __call__(self, d):
        return {**d, "z": d["y"] + float(self.R.uniform())}


@pytest.mark.parametrize("n, cache_num, replace_num, epoch", [(10, 4, 3, 0), (10, 4, 3, 5), (3, 5, 1, 2), (7, 7, 0, 9)])
def test_rolling_cache_window(n, cache_num, replace_num, epoch):
    ds = RollingCacheDataset([{"x": i} for i in range(n)], transform=None, cache_num=cache_num,
                             replace_num=replace_num, repeats=2)
    ds.set_epoch(epoch)
    size = min(cache_num, n)
    expected = []
    for i in range(size):  # naive: start at epoch * replace_num, wrap around the data
        expected.append((epoch * replace_num + i) % n)
    assert ds.window() == expected and len(ds) == 2 * size
    assert [ds[i]["x"] for i in range(len(ds))] == expected * 2


def test_rolling_cache_prepares_each_item_once_and_randomises_every_access():
    count, noise = _Count(), _Noise()
    ds = RollingCacheDataset([{"x": i} for i in range(6)], transform=Compose([count, noise]), cache_num=3,
                             replace_num=2, repeats=2)
    noise.set_random_state(0)
    ds.set_epoch(0)
    first = [ds[i]["z"] for i in range(len(ds))]
    assert count.calls == [0, 1, 2]  # deterministic prefix once per cached item, in set_epoch
    assert first[0] != first[3] and [round(z) // 10 for z in first] == [0, 1, 2, 0, 1, 2]  # new draw per visit
    ds.set_epoch(1)  # items 2, 3, 4: item 2 stays cached, 3 and 4 are prepared
    assert count.calls == [0, 1, 2, 3, 4] and ds.window() == [2, 3, 4]
    # a dataset moved straight to epoch 1 (a resumed run) with the same seed gives the same samples
    noise.set_random_state(7)
    a = [ds[i]["z"] for i in range(len(ds))]
    fresh = RollingCacheDataset([{"x": i} for i in range(6)], transform=Compose([_Count(), noise]), cache_num=3,
                                replace_num=2, repeats=2)
    fresh.set_epoch(1)
    noise.set_random_state(7)
    assert [fresh[i]["z"] for i in range(len(fresh))] == a


@pytest.mark.parametrize("kwargs, match", [({"data": []}, "at least one item"),
                                           ({"cache_num": 0}, "cache_num >= 1"), ({"repeats": 0}, "repeats >= 1")])
def test_rolling_cache_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RollingCacheDataset(**{"data": [{"x": 0}], "transform": None, **kwargs})


def test_landmark_voxels_against_naive_inverse():
    affine = np.array([[0.0, -2.0, 0.0, 30.0], [1.5, 0.0, 0.0, -10.0], [0.0, 0.0, 1.0, 5.0], [0, 0, 0, 1.0]])
    image = MetaTensor(torch.zeros(1, 10, 12, 8), affine=torch.as_tensor(affine))
    world = np.array([[20.0, -4.0, 7.0], [14.0, 2.0, 9.5], [500.0, 0.0, 0.0]])
    out = LandmarkVoxelsd()({"image": image, "landmarks": world, "landmark_labels": np.array([3, 5, 8])})
    naive = np.array([np.linalg.solve(affine, [*p, 1.0])[:3] for p in world])
    inside = np.all((naive >= 0) & (naive <= np.array([9, 11, 7])), axis=1)
    assert inside.tolist() == [True, True, False]
    np.testing.assert_allclose(out["points"], naive[inside])
    assert out["point_labels"].tolist() == [3, 5] and out["landmarks_outside"].tolist() == [8]
    np.testing.assert_allclose(out["spacing"], [1.5, 2.0, 1.0])


def test_model_intensity_normalisation_matches_its_description():
    rng = np.random.default_rng(0)
    img = MetaTensor(torch.as_tensor(rng.gamma(2.0, 50.0, size=(1, 20, 20, 20)).astype(np.float32)),
                     meta={"filename_or_obj": "x.nii"})
    mask = np.zeros((1, 20, 20, 20), np.uint8)
    mask[0, 4:16, 4:16, 4:16] = 1
    pct = ModelIntensityNormalized("image", {"name": "percentile", "lower": 1.0, "upper": 99.9})({"image": img})
    np.testing.assert_allclose(pct["image"].numpy(), normalize_intensity(img.as_tensor(), 1.0, 99.9).numpy())
    assert pct["image"].meta["filename_or_obj"] == "x.nii"
    spec = {"name": "masked_percentile", "lower": 2.0, "upper": 98.0, "erode_mm": 1.0, "min_voxels": 10}
    got = ModelIntensityNormalized("image", spec)({"image": img, "brain_mask": mask})["image"]
    ref = MaskedPercentileNormalize(2.0, 98.0, erode_mm=1.0, min_voxels=10)(img, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref))
    with pytest.raises(ValueError, match="normalization name must be one of"):
        ModelIntensityNormalized("image", {"name": "zscore"})
    with pytest.raises(ValueError, match=r"needs \['erode_mm'\]"):
        ModelIntensityNormalized("image", {"name": "masked_percentile", "lower": 2.0, "upper": 98.0})
    with pytest.raises(KeyError, match="brain mask 'brain_mask'"):
        ModelIntensityNormalized("image", spec)({"image": img})
    with pytest.raises(ModelInputError, match="does not look like a brain"):  # constant inside the mask
        ModelIntensityNormalized("image", spec)({"image": img * 0, "brain_mask": mask})


def test_align_to_model_template_without_template_passes_through():
    d = {"image": MetaTensor(torch.rand(1, 5, 5, 5)), "landmarks": np.ones((2, 3))}
    out = AlignToModelTemplated("image", template=None, points_keys="landmarks")(d)
    assert out["image"] is d["image"] and out["landmarks"] is d["landmarks"] and "template_to_image" not in out


def test_brain_template_space_round_trip_and_errors():
    space = BrainTemplateSpace(voxel_size=4, registration_voxel_size=4)
    spec = space.to_dict()
    assert spec["spatial_size"] == [31, 43, 28] and json.loads(json.dumps(spec)) == spec
    again = BrainTemplateSpace.from_dict(spec)
    np.testing.assert_allclose(again.affine, space.affine)
    priors = space.priors()
    names, sets = space.landmarks
    assert priors.names == names and priors.labels.tolist() == list(range(1, 33))
    np.testing.assert_allclose(priors.positions, sets["groundtruth"])
    assert space.crop_mask().shape == (1, 31, 43, 28) and int(space.crop_mask().sum()) > 1000
    with pytest.raises(ValueError, match="does not match the grid"):
        BrainTemplateSpace.from_dict({**spec, "spatial_size": [30, 43, 28]}, source="m.json")
    with pytest.raises(ValueError, match=r"lacks \['margin_mm'\]"):
        BrainTemplateSpace.from_dict({"voxel_size": 4, "registration_voxel_size": 4})
    with pytest.raises(ValueError, match="voxel_size must be a positive integer"):
        BrainTemplateSpace(voxel_size=1.5)


def _write_case(tmp_path, names):
    affine = np.array([[-2.0, 0, 0, 20.0], [0, 2.0, 0, -20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    vol = np.random.default_rng(1).random((16, 18, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "brain.nii.gz")
    world = np.array([[10.0, -4.0, 2.0], [6.0, 0.0, 4.0]])
    write_points_json(PointSet([names[2], names[0]], [9, 9], world), tmp_path / "pts.json")  # labels from names
    return affine, vol, world


def test_load_landmark_image_keeps_intensities_and_world_landmarks(tmp_path):
    names = ["AC", "PC", "ICS"]
    affine, vol, world = _write_case(tmp_path, names)
    d = LoadLandmarkImaged(names)({"image": str(tmp_path / "brain.nii.gz"), "landmarks": str(tmp_path / "pts.json")})
    np.testing.assert_allclose(d["image"][0].numpy(), vol)
    np.testing.assert_allclose(d["image"].affine.numpy(), affine)
    assert d["image"].meta["filename_or_obj"].endswith("brain.nii.gz")
    np.testing.assert_allclose(d["landmarks"], world)
    assert d["landmark_labels"].tolist() == [3, 1]
    # a label volume instead of a points file: value k at landmark k, its centroid in world mm
    lab = np.zeros(vol.shape, np.uint8)
    lab[3:5, 6, 2] = 2
    nib.save(nib.Nifti1Image(lab, affine), tmp_path / "label.nii.gz")
    d = LoadLandmarkImaged(names)({"image": str(tmp_path / "brain.nii.gz"), "label": str(tmp_path / "label.nii.gz")})
    np.testing.assert_allclose(d["landmarks"], [(affine @ [3.5, 6, 2, 1])[:3]])
    assert d["landmark_labels"].tolist() == [2]
    with pytest.raises(ValueError, match=r"landmark name\(s\)"):
        LoadLandmarkImaged(["X"])({"image": str(tmp_path / "brain.nii.gz"), "landmarks": str(tmp_path / "pts.json")})
    with pytest.raises(KeyError, match="needs 'landmarks'"):
        LoadLandmarkImaged(names)({"image": str(tmp_path / "brain.nii.gz")})


def test_inference_items(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii")
    (tmp_path / "readme.txt").write_text("x")
    assert inference_items(tmp_path / "b.nii.gz") == [{"image": str(tmp_path / "b.nii.gz")}]
    assert inference_items(tmp_path) == [{"image": str(tmp_path / "a.nii")}, {"image": str(tmp_path / "b.nii.gz")}]
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "1.dcm").write_bytes(b"")
    assert inference_items(dicom) == [{"image": str(dicom)}]  # one DICOM series
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image file"):
        inference_items(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inference_items(tmp_path / "nope.nii.gz")
    with pytest.raises(ValueError, match="needs --image PATH"):
        inference_items(None, None)
    (tmp_path / "dataset.json").write_text(json.dumps({"test": [{"image": "a.nii", "candidates": "readme.txt"}]}))
    assert inference_items(None, tmp_path / "dataset.json") == [
        {"image": str(tmp_path / "a.nii"), "points": str(tmp_path / "readme.txt")}]



def _write_dicom_series(vol_zyx, spacing, origin_lps, direction_lps, folder, series_uid, prefix="IM"):
    """A DICOM series as scanners export it (one file per slice, no file extension), written slice by slice with
    ITK's GDCM writer: ``vol_zyx`` in ITK's array order, geometry in LPS (ITK's convention)."""
    import itk

    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(direction_lps, dtype=float)
    for k in range(vol_zyx.shape[0]):
        sl = itk.image_from_array(np.ascontiguousarray(vol_zyx[k : k + 1].astype(np.int16)))
        sl.SetSpacing([float(v) for v in spacing])
        sl.SetOrigin([float(v) for v in np.asarray(origin_lps, float) + d[:, 2] * spacing[2] * k])
        sl.SetDirection(itk.matrix_from_array(d))
        md = itk.MetaDataDictionary()  # the writer takes the tags from the image's dictionary
        for tag, value in {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.9", "0020|000e": series_uid,
                           "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1)}.items():
            md[tag] = value
        sl.SetMetaDataDictionary(md)
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        itk.ImageFileWriter[type(sl)].New(Input=sl, ImageIO=io, FileName=str(folder / f"{prefix}{k:04d}")).Update()


def test_inference_reads_a_dicom_series_without_file_extensions(tmp_path):
    """A folder of extensionless DICOM files (as scanners export them) is one input, read by inference.json's own
    load transforms into the volume and its RAS affine; a folder with two series is refused, each listed."""
    from monai.bundle import ConfigParser

    from monai_ext.apps.aneurysm import image_stem

    root = Path(__file__).resolve().parents[3] / "bundles" / "aneurysm" / "configs"
    vol = np.random.default_rng(0).integers(0, 1000, (6, 5, 4)).astype(np.int16)  # (z, y, x)
    sagittal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # slices along LPS x (left-right)
    folder = tmp_path / "T1_SAG"
    _write_dicom_series(vol, (0.8, 0.9, 2.0), (10.0, -20.0, 30.0), sagittal, folder, "1.2.826.0.1.3680043.2.1125.9.1")
    assert sorted(p.name for p in folder.iterdir()) == [f"IM{k:04d}" for k in range(6)]
    assert inference_items(folder) == [{"image": str(folder)}] and image_stem(folder) == "T1_SAG"
    parser = ConfigParser()
    parser.read_config(str(root / "inference.json"))
    image = Compose(parser.get_parsed_content("load_transforms"))({"image": str(folder)})["image"]
    np.testing.assert_array_equal(image[0].numpy(), vol.transpose(2, 1, 0))
    expected = np.eye(4)  # ITK's LPS geometry, turned into RAS
    expected[:3, :3], expected[:3, 3] = sagittal @ np.diag([0.8, 0.9, 2.0]), [10.0, -20.0, 30.0]
    np.testing.assert_allclose(image.affine.numpy(), np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected, atol=1e-4)
    _write_dicom_series(vol[:3], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), folder,
                        "1.2.826.0.1.3680043.2.1125.9.2", prefix="LOC")
    with pytest.raises(ValueError, match=r"'.*T1_SAG' holds 2 DICOM series \(.*\.9\.1 \(6 files\); .*\.9\.2 "
                       r"\(3 files\)\); give the folder of one series"):
        inference_items(folder)

@pytest.mark.parametrize(
    "content, match",
    [("{not json", "is not valid JSON"), ("[]", "expected a JSON object"),
     (json.dumps({"num_classes": 3}), r"missing \['class_names'"),
     (json.dumps({**default_model_meta(), "class_names": ["a"]}), "1 class_names for num_classes=10"),
     (json.dumps({**default_model_meta(), "confidence_threshold": 1.5}), r"confidence_threshold must be in \[0, 1\]"),
     (json.dumps({**default_model_meta(), "num_classes": "10"}), r"wrong types for \['num_classes'\]"),
     (json.dumps({**default_model_meta(), "registration": [4.0]}), r"registration must be null or an object")],
)
def test_read_model_meta_errors_name_the_file(tmp_path, content, match):
    (tmp_path / "model_meta.json").write_text(content)
    with pytest.raises(ValueError, match=f"model description '{tmp_path}/model_meta.json'.*{match}"):
        read_model_meta(tmp_path, missing_ok=True)  # a corrupt file is an error even with missing_ok


def test_read_model_meta_missing(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path}/model_meta.json' not found: training writes"):
        read_model_meta(tmp_path / "model_meta.json")
    with caplog.at_level(logging.WARNING):
        assert read_model_meta(tmp_path, missing_ok=True) == default_model_meta()
    assert "defaults of train.json's synthetic-vessel model" in caplog.text


def _engine(net, epochs=3):
    return SimpleNamespace(state=SimpleNamespace(max_epochs=epochs, epoch=epochs), network=net)


def test_model_meta_writer_round_trip_and_feature_check(tmp_path):
    torch.manual_seed(0)
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=3, channels=(4, 8), hidden_features=8)
    meta = {**default_model_meta(), "num_classes": 3, "class_names": ["background", "A", "B"],
            "network": {"name": "MiniVGG", "num_classes": 3, "channels": [4, 8], "hidden_features": 8},
            "patch": {"patch_size": 8, "extent_mm": None}}
    priors = PointSet(["A", "B"], [1, 2], [[4.0, 4.0, 4.0], [10.0, 8.0, 6.0]])
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(40, 3, 8, 8, generator=gen), "label": torch.arange(40) % 3} for _ in range(3)]
    held = [{"image": MetaTensor(torch.rand(1, 16, 16, 16, generator=gen))}]
    writer = ModelMetaWriter(tmp_path / "model_meta.json", meta, priors, feature_data=batches, holdout_data=held)
    writer.started(_engine(net, 0))
    first = read_model_meta(tmp_path)
    assert first["feature_check"] is None and first["training"]["epochs_completed"] == 0
    assert json.loads((tmp_path / "landmark_priors.json").read_text())["landmarks"][1]["name"] == "B"
    writer.completed(_engine(net))
    got = read_model_meta(tmp_path)
    assert got["training"] == {"max_epochs": 3, "epochs_completed": 3, "complete": True}
    back = meta_priors(got)
    assert back.names == ["A", "B"] and got["priors"]["space"] == "image"
    np.testing.assert_allclose(back.positions, priors.positions)
    check = FeatureDistributionCheck.load(tmp_path / got["feature_check"])
    # the class means are those of the features of feature_data's patches
    with torch.no_grad():
        feats = torch.cat([net.eval().features(b["image"]) for b in batches]).numpy()
    labels = np.concatenate([b["label"].numpy() for b in batches])
    for k in range(3):
        np.testing.assert_allclose(check.means[k], feats[labels == k].mean(0), rtol=1e-4, atol=1e-5)
    # too few patches: no check, and the description says why
    few = ModelMetaWriter(tmp_path / "few" / "model_meta.json", meta, priors,
                          feature_data=[{"image": torch.rand(4, 3, 8, 8), "label": torch.zeros(4)}])
    few.completed(_engine(net))
    got = read_model_meta(tmp_path / "few")
    assert got["feature_check"] is None and "N >= 10" in got["feature_check_note"]
    with pytest.raises(ValueError, match="ModelMetaWriter meta: missing"):
        ModelMetaWriter(tmp_path / "x.json", {"num_classes": 3}, priors)


def test_landmark_spread_is_the_median_per_axis_sd_over_images(tmp_path):
    priors = PointSet(["A", "B"], [1, 2], [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    # image 1: both landmarks 3 mm off along one axis -> per-axis SD sqrt(9 / 3); image 2: 6 mm off; image 3: an
    # alignment failure, 60 mm off; an item without landmarks is skipped
    items = [{"landmarks": np.array([[3.0, 0, 0], [10.0, 3.0, 0]]), "landmark_labels": np.array([1, 2])},
             {"landmarks": np.array([[0, 6.0, 0], [10.0, 0, 6.0]]), "landmark_labels": np.array([1, 2])},
             {"landmarks": np.array([[60.0, 0, 0], [70.0, 0, 0]]), "landmark_labels": np.array([1, 2])},
             {"image": None}]
    sigma, n = landmark_spread_mm(items, priors)
    assert n == 6 and sigma == pytest.approx(np.sqrt(36 / 3))  # the median image, not the pooled 60 mm outlier
    assert landmark_spread_mm(items[:1], priors) == (pytest.approx(np.sqrt(3.0)), 2)
    assert np.isnan(landmark_spread_mm([{"image": None}], priors)[0])


class _BlobNet(torch.nn.Module):
    """Landmark class k's logit grows with the centre intensity of plane 0 near k (blob k has peak k)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        c = x[:, 0, 16, 16]
        return torch.stack([torch.zeros_like(c), 5.0 - 8.0 * (c - 1).abs(), 5.0 - 8.0 * (c - 2).abs()], 1) * self.w


def test_model_meta_writer_chooses_the_position_prior_on_held_out_images(tmp_path):
    # two blobs per image at the true landmarks and a decoy of class 1, 6 voxels from its prior, that matches better
    # than the true blob (peak 1 against 0.9): without a prior the decoy wins, so the held-out error is lowest with
    # a prior
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    zz = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), -1)
    priors = PointSet(["A", "B"], [1, 2], [[30.0, 30.0, 30.0], [50.0, 50.0, 50.0]])  # world mm = voxels 15, 25
    items = []
    for shift in ([1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]):
        true_vox = np.array([[15.0, 15.0, 15.0], [25.0, 25.0, 25.0]]) + shift
        vol = sum(h * np.exp(-((zz - p) ** 2).sum(-1) / 4.0) for h, p in zip((0.9, 2.0), true_vox, strict=True))
        vol = vol + 1.0 * np.exp(-((zz - np.array([15.0, 15.0, 9.0])) ** 2).sum(-1) / 4.0)  # decoy of class 1
        items.append({"image": MetaTensor(torch.as_tensor(vol, dtype=torch.float32)[None], affine=affine),
                      "landmarks": true_vox * 2.0, "landmark_labels": np.array([1, 2])})
    meta = {**default_model_meta(), "num_classes": 3, "class_names": ["background", "A", "B"],
            "network": {"name": "MiniVGG", "num_classes": 3, "channels": [4, 8], "hidden_features": 8},
            "search": {"search_radius": 8.0, "search_step": 2.0, "refine_radius": 2.0, "score": "log_odds"}}
    net = _BlobNet()
    writer = ModelMetaWriter(tmp_path / "model_meta.json", meta, priors, holdout_data=iter(items),
                             prior_sigma_candidates=[None, 4.0])
    writer.started(_engine(net, 0))
    writer.completed(_engine(net))
    search = read_model_meta(tmp_path)["search"]
    sel = search["prior_sigma_selection"]
    assert sel["candidates"] == [None, 4.0] and sel["images"] == 3
    assert search["prior_sigma_mm"] == 4.0 and sel["median_error_mm"][1] < sel["median_error_mm"][0]
    assert sel["landmark_spread_mm"] == pytest.approx(np.sqrt(4.0 / 3.0), abs=1e-3)  # 2 mm off, per axis
    # without candidates the description's search settings are kept as they are
    plain = ModelMetaWriter(tmp_path / "plain" / "model_meta.json", meta, priors, holdout_data=items)
    plain.completed(_engine(net))
    assert "prior_sigma_mm" not in read_model_meta(tmp_path / "plain")["search"]
    with pytest.raises(ValueError, match="prior_sigma_candidates"):
        ModelMetaWriter(tmp_path / "x.json", meta, priors, prior_sigma_candidates=[0.0])



def test_model_meta_writer_keeps_mirror_averaging_only_when_it_lowers_the_held_out_error(tmp_path):
    """The writer localises the held-out images without mirror averaging, with it from the refinement on, and with
    it everywhere at the chosen prior, records the three errors (the same as direct searches give) and keeps the
    one with the lowest median, the cheaper on a tie."""
    from monai_ext.apps.aneurysm import localise_landmarks

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    zz = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), -1)
    priors = PointSet(["A", "B"], [1, 2], [[30.0, 30.0, 30.0], [50.0, 50.0, 50.0]])
    mirror = [0, 2, 1]  # A and B as a left-right pair
    meta = {**default_model_meta(), "num_classes": 3, "class_names": ["background", "A", "B"],
            "network": {"name": "MiniVGG", "num_classes": 3, "channels": [4, 8], "hidden_features": 8},
            "search": {"search_radius": 6.0, "search_step": 2.0, "refine_radius": 2.0, "score": "log_odds"}}
    net = _BlobNet()
    vols = []
    for shift in ([1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]):
        true_vox = np.array([[15.0, 15.0, 15.0], [25.0, 25.0, 25.0]]) + shift
        vol = sum(h * np.exp(-((zz - p) ** 2).sum(-1) / 4.0) for h, p in zip((1.0, 2.0), true_vox, strict=True))
        vols.append((MetaTensor(torch.as_tensor(vol, dtype=torch.float32)[None], affine=affine), true_vox))
    vox = np.array([[15.0, 15.0, 15.0], [25.0, 25.0, 25.0]])
    kw = {"search_radius": 6.0, "step": 2.0, "refine_radius": 2.0, "score": "log_odds", "prior_sigma_mm": 4.0}
    searches = {"without": (None, True), "from the refinement": (mirror, False), "everywhere": (mirror, True)}

    def direct(image, name):
        m, coarse = searches[name]
        return localise_landmarks(net, image, vox, [1, 2], torch.device("cpu"), **kw, mirror_labels=m,
                                  mirror_coarse=coarse)[0] * 2.0

    for truth_from, expect in (("blobs", "without"), ("everywhere", "from the refinement")):
        items = [{"image": img, "landmark_labels": np.array([1, 2]),
                  "landmarks": true_vox * 2.0 if truth_from == "blobs" else direct(img, truth_from)}
                 for img, true_vox in vols]
        medians = [np.median([np.linalg.norm(direct(it["image"], name) - it["landmarks"], axis=1).mean()
                              for it in items]) for name in searches]
        out = tmp_path / truth_from.replace(" ", "_")
        writer = ModelMetaWriter(out / "model_meta.json", meta, priors, holdout_data=items,
                                 prior_sigma_candidates=[4.0], mirror_labels=mirror)
        writer.started(_engine(net, 0))
        writer.completed(_engine(net))
        search = read_model_meta(out)["search"]
        sel = search["mirror_selection"]
        assert sel["candidates"] == list(searches) and sel["images"] == 3 and sel["prior_sigma_mm"] == 4.0
        np.testing.assert_allclose(sel["median_error_mm"], medians, atol=1e-3)
        # on these blobs the plain coarse lattice already ranks the right seeds: the two mirror searches tie
        assert sel["chosen"] == expect, sel
        assert search["mirror_labels"] == (None if expect == "without" else mirror)
        assert search["mirror_coarse"] is (expect == "everywhere")


@pytest.mark.parametrize("medians,chosen", [((1.4, 1.2, 1.1), "everywhere"), ((1.4, 1.2, 1.2), "from the refinement"),
                                            ((1.0, 1.2, 1.2), "without"), ((1.2, 1.2, 1.0), "everywhere")])
def test_mirror_selection_keeps_the_lowest_median_and_the_cheaper_on_a_tie(tmp_path, monkeypatch, medians, chosen):
    """The choice rule alone (the searches stubbed): lowest median held-out error; a tie goes to the cheaper."""
    meta = {**default_model_meta(), "num_classes": 3, "class_names": ["background", "A", "B"],
            "network": {"name": "MiniVGG", "num_classes": 3, "channels": [4, 8], "hidden_features": 8},
            "search": {"search_radius": 6.0, "search_step": 2.0, "refine_radius": 2.0, "prior_sigma_mm": 4.0}}
    priors = PointSet(["A", "B"], [1, 2], [[30.0, 30.0, 30.0], [50.0, 50.0, 50.0]])
    writer = ModelMetaWriter(tmp_path / "model_meta.json", meta, priors, mirror_labels=[0, 2, 1])
    asked = []

    def errors(net, settings):
        asked.extend(settings)
        return np.array([[m, m + 1.0, m - 0.5] for m in medians])  # per image: median over 3 images = m

    monkeypatch.setattr(writer, "_holdout_errors", errors)
    monkeypatch.setattr(writer, "_best_network", lambda net: net)
    sel = writer.select_mirror(torch.nn.Linear(1, 1))
    assert asked == [{"mirror_labels": None}, {"mirror_labels": [0, 2, 1], "mirror_coarse": False},
                     {"mirror_labels": [0, 2, 1], "mirror_coarse": True}]
    assert sel["chosen"] == chosen and sel["median_error_mm"] == list(medians)

    with pytest.raises(ValueError, match="mirror_labels has 2 entries"):
        ModelMetaWriter(tmp_path / "x.json", meta, priors, mirror_labels=[0, 1])

@pytest.mark.slow  # ITK's first import takes 10-20 s
def test_align_to_model_template_carries_landmarks_into_template_space():
    """A brain displaced by a known affine (no elastic part): after the alignment its landmarks, carried into
    template space, are back at the AFIDs ground truth, and the image is on the model's search grid."""
    from monai_ext.data.synthetic.brain import SynthesizeBraind

    space = BrainTemplateSpace(voxel_size=4, registration_voxel_size=4)
    names, sets = space.landmarks
    tpl = space.template
    sample = SynthesizeBraind(template=tpl, landmark_sets=sets, spatial_size=tpl.shape, output_affine=tpl.affine,
                              artefacts=None, warp={"elastic_mm": 0.0},
                              contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 0.0})({"seed": 3})
    moved = np.linalg.norm(sample["landmarks"] - sets["groundtruth"], axis=1).mean()
    align = AlignToModelTemplated("image", space.to_dict(), points_keys="landmarks",
                                  registration={"shrink_factors": (2, 1), "smoothing_mm": (4.0, 0.0),
                                                "iterations": (100, 60), "bias_voxel_mm": 8.0})
    d = align({"image": sample["image"], "landmarks": sample["landmarks"]})
    err = np.linalg.norm(d["landmarks"] - sets["groundtruth"], axis=1)
    assert moved > 5.0 and err.mean() < 2.0  # half a voxel of the 4 mm template
    assert tuple(d["image"].shape[1:]) == space.spatial_size and tuple(d["brain_mask"].shape[1:]) == space.spatial_size
    np.testing.assert_allclose(d["image"].affine.numpy(), space.affine)


def test_align_to_model_template_names_an_unknown_setting():
    """``registration`` (brain.json's, stored in model_meta.json) is checked when the transform is built, before any
    image is read; every setting it takes is one AlignToTemplated takes."""
    import inspect

    from monai_ext.transforms import AlignToTemplated
    from monai_ext.transforms.alignment import ALIGNMENT_SETTINGS, REGISTRATION_OPTIONS

    template = BrainTemplateSpace(voxel_size=4, registration_voxel_size=4).to_dict()
    with pytest.raises(ValueError, match=r"registration: unknown alignment settings \['bias_voxels'\]"):
        AlignToModelTemplated("image", template, registration={"bias_voxels": 8.0, "min_overlap": 0.4})
    with pytest.raises(ValueError, match=r"registration must be a mapping of alignment settings, got \[8.0\]"):
        AlignToModelTemplated("image", template, registration=[8.0])
    own = set(inspect.signature(AlignToTemplated).parameters) - {"kwargs"}
    assert set(ALIGNMENT_SETTINGS) == (own | set(REGISTRATION_OPTIONS)) - {
        "keys", "template", "template_mask", "brain_mask", "spatial_size", "output_affine", "mask_key", "matrix_key",
        "allow_missing_keys", "info_key"}
    assert AlignToModelTemplated("image", template, registration={"bias_voxel_mm": 8.0}).registration == {
        "bias_voxel_mm": 8.0}


def test_write_prior_selection_table(tmp_path):
    import csv

    from monai_ext.apps.aneurysm.study import write_prior_selection

    assert write_prior_selection({"search_radius": 12.0}, tmp_path) is None  # no choice made: no table
    search = {"prior_sigma_selection": {"chosen": 6.0, "candidates": [None, 3.0, 6.0],
                                        "median_error_mm": [1.6, 1.7, 1.4], "images": 4, "landmark_spread_mm": 3.1}}
    rows = list(csv.DictReader(open(write_prior_selection(search, tmp_path))))
    assert [r["prior_sigma_mm"] for r in rows] == ["none", "3.0", "6.0"]
    assert [r["chosen"] for r in rows] == ["0", "0", "1"] and float(rows[2]["median_validation_error_mm"]) == 1.4
    assert not (tmp_path / "mirror_selection.csv").exists()
    search["mirror_selection"] = {"chosen": True, "candidates": [False, True], "median_error_mm": [1.4, 1.2],
                                  "mean_error_mm": [1.5, 1.3], "images": 4, "prior_sigma_mm": 6.0}
    write_prior_selection(search, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "mirror_selection.csv")))
    assert [(r["mirror_averaging"], r["chosen"], r["median_validation_error_mm"]) for r in rows] == [
        ("without", "0", "1.4"), ("with", "1", "1.2")]  # a description written before the third candidate
    search["mirror_selection"] = {"chosen": "from the refinement",
                                  "candidates": ["without", "from the refinement", "everywhere"],
                                  "median_error_mm": [1.4, 1.2, 1.2], "mean_error_mm": [1.5, 1.3, 1.3], "images": 4,
                                  "prior_sigma_mm": 6.0}
    write_prior_selection(search, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "mirror_selection.csv")))
    assert [(r["mirror_averaging"], r["chosen"]) for r in rows] == [
        ("without", "0"), ("from the refinement", "1"), ("everywhere", "0")]


def test_image_intervals_of_an_evaluation_row():
    """Each image is one sample (its mean over the landmarks): the paired model - baseline interval is that of the
    per-image differences, against scipy's t distribution."""
    from scipy import stats

    from monai_ext.apps.aneurysm.study import _image_intervals

    err = np.array([[1.0, 3.0], [2.0, 2.0], [1.5, 2.5], [np.nan, 4.0]])  # 4 images x 2 landmarks
    base = err + np.array([[2.0], [3.0], [1.0], [2.5]])
    spread = np.full_like(err, 2.0)
    got = _image_intervals(err, base, spread)
    d = -np.array([2.0, 3.0, 1.0, 2.5])
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2.0
    assert got["model_minus_baseline_mm"] == pytest.approx(d.mean())
    assert got["model_minus_baseline_ci_low"] == pytest.approx(d.mean() - half)
    assert got["model_minus_baseline_ci_high"] == pytest.approx(d.mean() + half)
    assert got["model_minus_baseline_ci_high"] < 0  # the model beats the baseline on every image here
    model = np.array([2.0, 2.0, 2.0, 4.0])
    assert (got["model_mm_ci_low"] + got["model_mm_ci_high"]) / 2 == pytest.approx(model.mean())
    assert (got["model_over_rater_ci_low"] + got["model_over_rater_ci_high"]) / 2 == pytest.approx(model.mean() / 2)
    one = _image_intervals(err[:1], base[:1], None)
    assert np.isnan(one["model_mm_ci_low"]) and np.isnan(one["model_over_rater_ci_high"])


def test_oblique_resample_keeps_the_world_image():
    """The oblique copy of the evaluation's (d) row: the grid is rotated and anisotropic, holds the whole field of
    view, and a small bright blob stays at its world position."""
    from scipy.spatial.transform import Rotation

    from monai_ext.apps.aneurysm.brain import oblique_resample
    from monai_ext.transforms import apply_matrix

    vol = np.zeros((40, 50, 30), np.float32)
    vol[24:27, 14:17, 9:12] = 1.0  # centre voxel (25, 15, 10)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40.0, -50.0, -30.0]
    out, new = oblique_resample(vol, affine, [25.0, -15.0, 10.0], [2.0, 2.4, 3.0])
    np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), [2.0, 2.4, 3.0])
    axes = new[:3, :3] / np.linalg.norm(new[:3, :3], axis=0)
    assert Rotation.from_matrix(axes).magnitude() > np.deg2rad(10.0)  # really oblique
    centre = apply_matrix(new, np.argwhere(out > 0.5 * out.max()).mean(0))
    np.testing.assert_allclose(centre, apply_matrix(affine, np.array([25.0, 15.0, 10.0])), atol=1.5)
    corners = np.array([[i, j, k] for i in (0, 39) for j in (0, 49) for k in (0, 29)], dtype=np.float64)
    inside = apply_matrix(np.linalg.inv(new), apply_matrix(affine, corners))
    assert ((inside > -0.5) & (inside < np.array(out.shape) - 0.5)).all()  # the whole field of view is kept
    assert abs(out.sum() * np.prod([2.0, 2.4, 3.0]) - vol.sum() * 8.0) < 0.15 * vol.sum() * 8.0  # same volume


def _ellipsoid_head(spacing=2.0):
    """A bright-rimmed ellipsoid on an axis-aligned RAS grid whose lowest slices cut the head (as the template's
    whole-head grid does), with a faint noisy background."""
    shape = (60, 70, 50)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-59.0, -80.0, -30.0]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    r = np.sqrt((((idx - [30, 35, 20]) / [24, 30, 28]) ** 2).sum(-1))
    vol = np.where(r <= 1, 0.7, 0.0) + np.where((r > 0.9) & (r <= 1), 0.6, 0.0)  # rim (scalp fat) 1.3
    vol = vol + np.random.default_rng(0).normal(0.01, 0.005, shape)
    return vol.astype(np.float32), affine


def test_synthetic_neck_extends_the_grid_below_the_head():
    from monai_ext.apps.aneurysm import NECK_T1_RELATIVE, add_synthetic_neck
    from monai_ext.transforms import apply_matrix

    vol, affine = _ellipsoid_head()
    out, out_affine = add_synthetic_neck(vol, affine, length_mm=60.0, seed=1)
    n = 30  # 60 mm at 2 mm
    assert out.shape == vol.shape[:2] + (vol.shape[2] + n,) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, n:], vol)  # the head's voxels are untouched
    np.testing.assert_allclose(apply_matrix(out_affine, np.array([[3.0, 4.0, n + 5.0]])),
                               apply_matrix(affine, np.array([[3.0, 4.0, 5.0]])))  # ... and stay where they were
    neck = out[:, :, : n - 3]
    fat = float(np.percentile(vol[vol > 0.1 * np.percentile(vol, 99.5)], 99.5))
    body = neck > 0.1 * fat
    assert 0.15 < body.mean() < 0.8  # an elliptic cross-section, not the whole slice
    values = neck[body]
    assert abs(np.median(values) - NECK_T1_RELATIVE["muscle"] * fat) < 0.1 * fat  # mostly muscle
    assert np.percentile(values, 99) > 0.85 * fat  # the fat ring
    assert abs(float(out[:3, :3, :3].mean()) - 0.01) < 0.005  # background at the image's level
    again, _ = add_synthetic_neck(vol, affine, length_mm=60.0, seed=1)
    np.testing.assert_array_equal(again, out)  # seeded
    other, _ = add_synthetic_neck(vol, affine, length_mm=60.0, seed=2)
    assert not np.array_equal(other, out)


def test_synthetic_neck_errors():
    from monai_ext.apps.aneurysm import add_synthetic_neck

    vol, affine = _ellipsoid_head()
    flipped = affine.copy()
    flipped[2, 2] = -2.0  # third axis pointing inferior
    with pytest.raises(ValueError, match="points superior"):
        add_synthetic_neck(vol, flipped)
    with pytest.raises(ValueError, match="length_mm"):
        add_synthetic_neck(vol, affine, length_mm=0.0)
    with pytest.raises(ValueError, match="no head"):
        add_synthetic_neck(np.zeros_like(vol), affine)


def _displaced_brains(tmp_path, seeds=(3, 5)):
    """Skull-stripped T1 brains on the 4 mm template grid moved by a random affine (no elastic part), written with
    their landmarks and a datalist (section ``test``)."""
    from monai_ext.data.synthetic.brain import SynthesizeBraind

    space = BrainTemplateSpace(voxel_size=4, registration_voxel_size=4)
    names, sets = space.landmarks
    tpl = space.template
    gen = SynthesizeBraind(template=tpl, landmark_sets=sets, spatial_size=tpl.shape, output_affine=tpl.affine,
                           artefacts=None, warp={"elastic_mm": 0.0},
                           contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 0.0})
    items = []
    for seed in seeds:
        s = gen({"seed": seed})
        nib.save(nib.Nifti1Image(s["image"][0].numpy(), np.asarray(s["image"].affine)), tmp_path / f"b{seed}.nii.gz")
        ok = np.isfinite(s["landmarks"]).all(1)
        labels = np.arange(1, len(names) + 1)[ok]
        write_points_json(PointSet([names[k - 1] for k in labels], labels, s["landmarks"][ok], "RAS", "mm"),
                          tmp_path / f"b{seed}.json")
        items.append({"image": f"b{seed}.nii.gz", "landmarks": f"b{seed}.json"})
    (tmp_path / "dataset.json").write_text(json.dumps({"test": items, "empty": []}))
    return space, tmp_path / "dataset.json", items


def test_alignment_evaluation_per_image_and_variant(tmp_path):
    """brain_alignment.json's table: per image and alignment setting, the template's fiducials placed by the
    alignment against the truth (the same distances an independent registration gives), the move from the first
    setting, the start kept; per row the summary."""
    import csv

    from monai_ext.apps.aneurysm import AlignmentEvaluation, read_points
    from monai_ext.transforms import apply_matrix

    space, datalist, items = _displaced_brains(tmp_path)
    fast = {"shrink_factors": (2, 1), "smoothing_mm": (4.0, 0.0), "iterations": (100, 60), "bias_correction": False}
    variants = {"fast": fast, "fast_no_swap": {**fast, "inverse_start_overlap": None},
                "coarse": {**fast, "shrink_factors": (2,), "smoothing_mm": (4.0,), "iterations": (5,)}}
    study = AlignmentEvaluation(space, [{"name": "displaced", "datalist": datalist, "section": "test"}],
                                tmp_path / "out", variants=variants, far_mm=3.0, info={"note": "unit"})
    table = study.run()
    with open(tmp_path / "out" / "alignment_by_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["variant"]) for r in rows] == [(i["image"], v) for i in items for v in variants]
    priors = space.priors()
    for i, item in enumerate(items):
        mine = {r["variant"]: r for r in rows if r["image"] == item["image"]}
        assert float(mine["fast"]["baseline_mm"]) < 2.0  # half a voxel: the known affine recovered
        assert float(mine["fast"]["shift_mm"]) == 0.0  # the first setting is the reference
        assert float(mine["fast_no_swap"]["shift_mm"]) < 1e-6  # whole heads: the swapped start does not run
        if i:
            continue
        # the first image: an independent registration with each setting gives the same placement
        img = nib.load(tmp_path / item["image"])
        truth = read_points(tmp_path / item["landmarks"]).positions
        placed = {}
        for name, kw in variants.items():
            aligner = space.aligner("image", **kw)
            image = MetaTensor(torch.as_tensor(np.asarray(img.dataobj, np.float32))[None], affine=img.affine)
            placed[name] = apply_matrix(aligner.register(image, img.affine), priors.positions)
            np.testing.assert_allclose(float(mine[name]["baseline_mm"]),
                                       np.linalg.norm(placed[name] - truth, axis=1).mean(), atol=0.05)
            assert mine[name]["start"] == aligner.last_info["start"]
            assert mine[name]["starts"].split()[0].startswith("centre_of_mass:")
        np.testing.assert_allclose(float(mine["coarse"]["shift_mm"]),
                                   np.linalg.norm(placed["coarse"] - placed["fast"], axis=1).mean(), atol=0.05)
    by_variant = {r["variant"]: r for r in table}
    assert [r["variant"] for r in table] == list(variants) and all(r["images"] == 2 for r in table)
    for name, r in by_variant.items():
        base = np.array([float(x["baseline_mm"]) for x in rows if x["variant"] == name])
        shift = np.array([float(x["shift_mm"]) for x in rows if x["variant"] == name])
        assert r["baseline_mm"] == pytest.approx(base.mean()) and r["baseline_max_mm"] == pytest.approx(base.max())
        assert r["far_images"] == int((base > 3.0).sum()) and r["moved_images"] == int((shift > 0.1).sum())
        assert sum(int(s.split(":")[1]) for s in r["starts_kept"].split()) == 2
    assert by_variant["fast"]["moved_images"] == 0 and by_variant["coarse"]["max_shift_mm"] > 0.0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert record["metrics"]["displaced [fast]: baseline_mm"] == pytest.approx(by_variant["fast"]["baseline_mm"])
    assert record["info"]["note"] == "unit" and "command" in json.dumps(record["provenance"])
    assert (tmp_path / "out" / "alignment_by_row.md").exists() and (tmp_path / "out" / "study.json").exists()
    with pytest.raises(ValueError, match="section 'empty'.*is empty"):
        AlignmentEvaluation(space, [{"name": "e", "datalist": datalist, "section": "empty"}], tmp_path / "e").run()


def test_add_spikes_and_a_spiked_alignment_row(tmp_path):
    """``spikes`` rows: the images get isolated spikes (seeded, inside the head); the alignment clips them and
    places the fiducials as on the clean images, and without the clipping it does not."""
    import csv

    from monai_ext.apps.aneurysm import AlignmentEvaluation
    from monai_ext.apps.aneurysm.study import add_spikes

    img = MetaTensor(torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10), affine=torch.eye(4) * 2)
    out = add_spikes(img, count=7, times_max=50.0, seed=3)
    spots = out != img
    assert int(spots.sum()) == 7 and torch.all(out[spots] == 999 * 50.0) and torch.all(img[spots] > 499.5)
    assert torch.equal(out, add_spikes(img, 7, 50.0, seed=3)) and not torch.equal(out, add_spikes(img, 7, 50.0, 4))
    assert torch.equal(out.affine, img.affine) and float(img.max()) == 999  # a copy, meta kept
    for count, times in ((0, 10.0), (501, 10.0), (3, 1.0)):
        with pytest.raises(ValueError, match="spikes: count must be in \\[1, 500\\] and times_max > 1"):
            add_spikes(img, count, times)
    space, datalist, items = _displaced_brains(tmp_path)
    fast = {"shrink_factors": (2, 1), "smoothing_mm": (4.0, 0.0), "iterations": (100, 60), "bias_correction": False}
    rows = [{"name": "clean", "datalist": datalist, "section": "test"},
            {"name": "spiked", "datalist": datalist, "section": "test", "spikes": {"count": 5, "times_max": 1000}},
            {"name": "seeded", "datalist": datalist, "section": "test",
             "spikes": {"count": 5, "times_max": 1000, "seed": 7}}]
    AlignmentEvaluation(space, rows, tmp_path / "out", variants={"clipped": fast,
                                                                "kept": {**fast, "spike_ratio": None}}).run()
    with open(tmp_path / "out" / "alignment_by_image.csv") as f:
        got = {(r["row"], r["image"], r["variant"]): r for r in csv.DictReader(f)}
    for item in items:
        clean, clipped = got["clean", item["image"], "clipped"], got["spiked", item["image"], "clipped"]
        assert int(clean["spikes_clipped"]) == 0 and int(clipped["spikes_clipped"]) > 0
        assert int(got["spiked", item["image"], "kept"]["spikes_clipped"]) == 0
        assert float(clipped["baseline_mm"]) == pytest.approx(float(clean["baseline_mm"]), abs=0.3)
        assert float(got["spiked", item["image"], "kept"]["baseline_mm"]) > float(clipped["baseline_mm"]) + 2.0
        assert int(got["seeded", item["image"], "clipped"]["spikes_clipped"]) > 0  # a row's own seed is taken


@pytest.mark.parametrize("kwargs, match", [
    ({"rows": [{"name": "r", "section": "test"}]}, "lacks \\['datalist'\\]"),
    ({"rows": [{"name": "r", "datalist": "d.json", "section": "t", "spikes": {"count": 5}}]},
     "row 'r': spikes must be"),
    ({"rows": [{"name": "r", "datalist": "d.json", "section": "t", "spikes": {"count": 5, "times_max": 9, "n": 1}}]},
     "row 'r': spikes must be"),
    ({"variants": {}}, "variants must be a non-empty mapping"),
    ({"variants": {"a": [1, 2]}}, "variant 'a': aligner arguments must be a mapping"),
    ({"far_mm": 0.0}, "far_mm and moved_mm must be positive"),
    ({"moved_mm": -1.0}, "far_mm and moved_mm must be positive"),
])
def test_alignment_evaluation_argument_errors(tmp_path, kwargs, match):
    from monai_ext.apps.aneurysm import AlignmentEvaluation

    args = {"rows": [{"name": "r", "datalist": "d.json", "section": "test"}], **kwargs}
    with pytest.raises(ValueError, match=match):
        AlignmentEvaluation(BrainTemplateSpace(4, 4), output_dir=tmp_path, **args)
