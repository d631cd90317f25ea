"""Bad inputs through each bundle's real entry point (issue 10, part 2).

Every test builds a tiny clean data set with the study's synthetic generator, breaks one thing in a copy of it (a
truncated file, a missing file, a wrong dimensionality, NaN voxels, an empty label map, landmarks in the wrong
coordinate system, a broken datalist, a bad class prior or grade distribution), runs ``train.json`` through MONAI's
``ConfigWorkflow`` with ``dataset_dir`` pointing at the copy, and asserts

* the exception type and a message that names the file / key / argument and what was expected, and
* that it failed fast: no checkpoint was written, i.e. the fault stopped the run at data loading, before training.

MONAI's bundle machinery wraps errors raised while evaluating a config expression in ``RuntimeError("Failed to
evaluate ...")`` (or ``"Failed to instantiate ..."``) chained to the real error; the user reads the real error in
the chained traceback, so the tests unwrap those wrappers and assert on the real error. The table of faults and
outcomes is in ``docs/input_validation.md``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from bundle_checks import REPO, run_workflow  # noqa: E402

from monai_ext.apps.aneurysm import load_cases  # noqa: E402
from monai_ext.data.synthetic.aneurysm import generate_aneurysm_dataset  # noqa: E402
from monai_ext.data.synthetic.embryo import generate_embryo_dataset  # noqa: E402
from monai_ext.data.synthetic.ips import generate_ips_dataset  # noqa: E402
from monai_ext.data.synthetic.sperm import generate_sperm_dataset  # noqa: E402
from monai_ext.losses import AUCNNPULoss, NNPULoss  # noqa: E402

# tiny data and runs: if a fault were *not* caught at loading, these would train for one short epoch and the test
# would fail on the message or on the checkpoint written
GENERATORS: dict[str, tuple[Callable[..., Path], dict[str, Any]]] = {
    "aneurysm": (generate_aneurysm_dataset, {"num_cases": 4, "shape": 24}),
    "embryo_pu": (generate_embryo_dataset, {"num_cases": 24, "num_frames": 3, "image_size": 32}),
    "ips_histogram": (generate_ips_dataset, {"num_cases": 3, "image_size": 64}),
    "sperm_emd": (generate_sperm_dataset, {"num_videos": 3, "num_frames": 10, "num_sperm": 2, "size": 64}),
}
TINY: dict[str, dict[str, Any]] = {
    "aneurysm": {"epochs": 1, "samples_per_case": 8, "val_samples_per_case": 4, "channels": [4, 8],
                 "hidden_features": 8},
    "embryo_pu": {"epochs": 1, "num_frames": 3, "image_size": 32, "channels": [4, 8], "num_folds": 2,
                  "batch_size": 4, "train_frames": 2},
    "ips_histogram": {"epochs": 1, "patch_size": 32, "patches_per_image": 4, "images_per_batch": 1,
                      "channels": [4, 8], "stride": 16},
    "sperm_emd": {"epochs": 1, "crop_size": 16, "clip_length": 4, "clip_stride": 4, "batch_size": 4,
                  "network_kwargs": {"num_layers": 1}},
}
_WRAPPERS = ("Failed to evaluate", "Failed to instantiate", "applying transform")


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Callable[[str], Path]:
    """``clean_data(name)``: folder of the study's tiny synthetic data set (generated once per module)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            gen, kwargs = GENERATORS[name]
            cache[name] = gen(tmp_path_factory.mktemp(name), seed=0, **kwargs).parent
        return cache[name]

    return get


def _user_error(err: BaseException) -> BaseException:
    """The error a user reads under MONAI's config-evaluation wrappers."""
    while isinstance(err, RuntimeError) and str(err).startswith(_WRAPPERS) and err.__cause__ is not None:
        err = err.__cause__
    return err


def run_bundle(name: str, dataset_dir: Path, tmp_path: Path, **overrides: Any) -> None:
    """Run ``train.json`` of bundle ``name`` on ``dataset_dir``; re-raise the real error under MONAI's wrappers."""
    try:
        run_workflow(name, ["train.json"], "train", dataset_dir=str(dataset_dir), output_dir=str(tmp_path / "out"),
                     ckpt_dir=str(tmp_path / "ckpt"), device="cpu", **{**TINY[name], **overrides})
    except RuntimeError as e:
        err = _user_error(e)
        if err is e:
            raise
        raise err from None


def assert_no_training(tmp_path: Path) -> None:
    """Fail fast: the fault stopped the run before any checkpoint was written."""
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "ckpt").rglob("*.pt"))
    assert not written, f"the run trained before failing (checkpoints {written}): validation came too late"


# ------------------------------------------------------------------------------------------------ corruption helpers
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    content = json.loads(path.read_text())
    path.write_text(json.dumps(fn(content)))


def nifti_edit(path: Path, fn: Callable[[np.ndarray], np.ndarray], affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(fn(np.asarray(img.get_fdata(), dtype=np.float32)),
                             img.affine if affine is None else affine), str(path))


def _set_voxel(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        a[3, 3, 3] = value
        return a

    return fn


def _item(section: str, i: int, key: str, value: Any = None, delete: bool = False) -> Callable[[Any], Any]:
    def fn(d: Any) -> Any:
        if delete:
            del d[section][i][key]
        else:
            d[section][i][key] = value
        return d

    return fn


def _drop(key: str) -> Callable[[Any], Any]:
    def fn(d: Any) -> Any:
        del d[key]
        return d

    return fn


def _landmarks(fn: Callable[[dict], dict]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "landmarks" / "case_000.json", fn)


def _shift_points(offset: float) -> Callable[[dict], dict]:
    def fn(d: dict) -> dict:
        for lm in d["landmarks"]:
            lm["position"] = [v + offset for v in lm["position"]]
        return d

    return fn


def _lps_values_labelled_ras(d: dict) -> dict:
    for lm in d["landmarks"]:
        x, y, z = lm["position"]
        lm["position"] = [-x, -y, z]
    d["coordinate_system"] = "RAS"
    return d


def _voxel_values_labelled_mm(root: Path) -> None:
    """Move the volume's origin to -12 mm (as a real scan has) but leave the landmarks as voxel indices in 'mm'."""
    affine = np.eye(4)
    affine[:3, 3] = -12.0
    nifti_edit(root / "imagesTr" / "case_000.nii.gz", lambda a: a, affine)


def _landmarks_as(fmt: str, flip: bool = False, header: str = "RAS") -> Callable[[Path], None]:
    """Rewrite case 0's landmarks as a 3D Slicer ``.fcsv`` or a ``.csv`` file (optionally with x, y negated)."""
    def fn(root: Path) -> None:
        d = json.loads((root / "landmarks" / "case_000.json").read_text())
        rows = []
        for lm in d["landmarks"]:
            x, y, z = lm["position"]
            rows.append((lm["name"], -x if flip else x, -y if flip else y, z))
        if fmt == "fcsv":
            text = (f"# Markups fiducial file version = 4.11\n# CoordinateSystem = {header}\n"
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")
            text += "".join(f"p{i},{x},{y},{z},0,0,0,1,1,1,0,{n},,\n" for i, (n, x, y, z) in enumerate(rows))
        else:
            text = "name,x,y,z\n" + "".join(f"{n},{x},{y},{z}\n" for n, x, y, z in rows)
        (root / "landmarks" / f"case_000.{fmt}").write_text(text)
        edit_json(root / "dataset.json", _item("training", 0, "landmarks", f"landmarks/case_000.{fmt}"))

    return fn


def _write(path_fn: Callable[[Path], Path], data: Any) -> Callable[[Path], None]:
    def fn(root: Path) -> None:
        path = path_fn(root)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            iio.imwrite(path, data)

    return fn


def _unlink(rel: str) -> Callable[[Path], None]:
    def fn(root: Path) -> None:
        target = root / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return fn


def _datalist(fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "dataset.json", fn)


def _not_json(root: Path) -> None:
    (root / "dataset.json").write_text('{"training": [')


# ------------------------------------------------------------------------------------------------ the fault table
_AN_IMG = "imagesTr/case_000.nii.gz"
_EM_NAN = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
_EM_NAN[4, 5, 1] = np.nan


def _embryo_nifti(array: np.ndarray) -> Callable[[Path], None]:
    def fn(root: Path) -> None:
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(root / "seq.nii.gz"))
        edit_json(root / "dataset.json", _item("training", 1, "image", "seq.nii.gz"))

    return fn


_IPS_NAN = np.random.default_rng(0).random((64, 64)).astype(np.float32)
_IPS_NAN[2, 3] = np.nan


def _ips_image(name: str, data: Any) -> Callable[[Path], None]:
    """Replace training case 0's image by ``name`` holding ``data``."""
    def fn(root: Path) -> None:
        iio.imwrite(root / "images" / name, data)
        edit_json(root / "dataset.json", _item("training", 0, "image", f"images/{name}"))

    return fn


def _sperm_annotation(fn: Callable[[dict], dict]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "annotations" / "video_000.json", fn)


def _distribution(value: Any) -> Callable[[dict], dict]:
    def fn(d: dict) -> dict:
        d["sperm"][0]["distribution"] = value
        return d

    return fn


def _short_video(root: Path) -> None:
    """A video that decodes to fewer frames than its annotated tracks (what a partly written file looks like)."""
    frames = iio.imread(root / "videos" / "video_000.mp4", plugin="pyav")
    iio.imwrite(root / "videos" / "video_000.mp4", frames[:6], plugin="pyav", fps=15, codec="libx264")


def _still_image_as_video(root: Path) -> None:
    iio.imwrite(root / "videos" / "still.png", np.zeros((64, 64), np.uint8))
    edit_json(root / "dataset.json", _item("training", 0, "video", "videos/still.png"))


FAULTS = [
    # ---------------------------------------------------------------------------------------------- aneurysm (3D)
    ("aneurysm", "truncated NIfTI", lambda r: truncate(r / _AN_IMG), ValueError,
     r"image '.*case_000\.nii\.gz' could not be read \(EOFError.*expected a complete, readable \.nii\.gz"),
    ("aneurysm", "corrupt NIfTI (not gzip)", lambda r: (r / _AN_IMG).write_bytes(b"not a nifti" * 40), ValueError,
     r"image '.*case_000\.nii\.gz' could not be read .*truncated or corrupt"),
    ("aneurysm", "missing image file", _unlink(_AN_IMG), FileNotFoundError,
     r"section 'training' item 0 key 'image': file not found '.*case_000\.nii\.gz'"),
    ("aneurysm", "missing landmark file", _unlink("landmarks/case_000.json"), FileNotFoundError,
     r"item 0 key 'landmarks': file not found '.*case_000\.json'"),
    ("aneurysm", "2D image where 3D expected", lambda r: nifti_edit(r / _AN_IMG, lambda a: a[:, :, 12]), ValueError,
     r"image '.*case_000\.nii\.gz' has shape \(1, 24, 24\) \(3 dimensions\); expected a 3D volume"),
    ("aneurysm", "4D image (2 channels)", lambda r: nifti_edit(r / _AN_IMG, lambda a: np.stack([a, a], -1)),
     ValueError, r"case_000\.nii\.gz: expected a single-channel volume, got 2 channels"),
    ("aneurysm", "NaN voxel", lambda r: nifti_edit(r / _AN_IMG, _set_voxel(np.nan)), ValueError,
     r"image '.*case_000\.nii\.gz' holds 1 NaN and 0 infinite value\(s\) \(the first at index "
     r"\(0, 3, 3, 3\)\); expected finite intensities"),
    ("aneurysm", "Inf voxel", lambda r: nifti_edit(r / _AN_IMG, _set_voxel(-np.inf)), ValueError,
     r"case_000\.nii\.gz' holds 0 NaN and 1 infinite value\(s\)"),
    ("aneurysm", "landmarks outside the volume", _landmarks(_shift_points(500.0)), ValueError,
     r"case_000\.json: 9 of 9 point\(s\) lie outside the volume of shape \(24, 24, 24\) \(mm, RAS\)"),
    ("aneurysm", "LPS landmarks labelled RAS", _landmarks(_lps_values_labelled_ras), ValueError,
     r"case_000\.json: .* lie outside the volume .*They fit the volume in LPS: is the coordinate system LPS\?"),
    ("aneurysm", "voxel landmarks labelled mm", _voxel_values_labelled_mm, ValueError,
     r"case_000\.json: .* lie outside .*They fit the volume as voxel indices: are they voxel coordinates"),
    ("aneurysm", ".fcsv with LPS coordinates but 'CoordinateSystem = RAS'", _landmarks_as("fcsv", flip=True),
     ValueError, r"case_000\.fcsv: 9 of 9 point\(s\) lie outside .*They fit the volume in LPS: is the coordinate "
     r"system LPS\?"),
    ("aneurysm", ".csv with voxel indices read as mm",
     lambda r: (_voxel_values_labelled_mm(r), _landmarks_as("csv")(r)), ValueError,
     r"case_000\.csv: .* lie outside .*They fit the volume as voxel indices"),
    ("aneurysm", "NaN landmark coordinate", _landmarks(lambda d: {**d, "landmarks": [
        {**d["landmarks"][0], "position": [float("nan"), 1.0, 2.0]}, *d["landmarks"][1:]]}), ValueError,
     r"case_000\.json: positions must be finite numbers"),
    ("aneurysm", "unknown landmark name", _landmarks(lambda d: {**d, "landmarks": [
        {**d["landmarks"][0], "name": "nasion"}, *d["landmarks"][1:]]}), ValueError,
     r"case_000\.json: landmark name\(s\) \['nasion'\] not in the expected names"),
    ("aneurysm", "datalist not JSON", _not_json, ValueError, r"datalist '.*dataset\.json' is not valid JSON"),
    ("aneurysm", "datalist item without 'landmarks'", _datalist(_item("training", 0, "landmarks", delete=True)),
     ValueError, r"section 'training' item 0 lacks key\(s\) \['landmarks'\]; expected keys \['image', 'landmarks'\]"),
    ("aneurysm", "datalist without 'validation' section", _datalist(_drop("validation")), ValueError,
     r"datalist '.*dataset\.json' has no section 'validation' \(found: \["),
    ("aneurysm", "datalist without 'landmark_names'", _datalist(_drop("landmark_names")), ValueError,
     r"datalist '.*dataset\.json' needs a top-level 'landmark_names' list of strings"),
    # -------------------------------------------------------------------------------------------- embryo_pu (2D+t)
    # (sequence 1 is in fold 0's training split of these 24 sequences: the one-fold run reads it)
    ("embryo_pu", "truncated PNG frame", lambda r: truncate(r / "sequences/seq_001/frame_01.png"), ValueError,
     r"frame '.*seq_001/frame_01\.png' could not be read \(OSError: image file is truncated\)"),
    ("embryo_pu", "corrupt PNG frame header", lambda r: truncate(r / "sequences/seq_001/frame_01.png", 0.02),
     ValueError, r"frame '.*seq_001/frame_01\.png' could not be read .*truncated or corrupt"),
    ("embryo_pu", "missing sequence folder", _unlink("sequences/seq_000"), FileNotFoundError,
     r"section 'training' item 0 key 'image': file not found '.*seq_000'"),
    ("embryo_pu", "3D stack as a frame", lambda r: (
        _unlink("sequences/seq_001/frame_01.png")(r),
        iio.imwrite(r / "sequences/seq_001/frame_01.tif", np.zeros((5, 32, 32), np.uint8))), ValueError,
     r"frame '.*frame_01\.tif' has shape \(5, 32, 32\) \(3 dimensions\); expected a 2D grey or colour frame"),
    ("embryo_pu", "2D image where 2D+t expected", _embryo_nifti(np.zeros((32, 32), np.float32)), ValueError,
     r"2D\+t image '.*seq\.nii\.gz' has shape \(32, 32\) \(2 dimensions\); expected a 2D\+t image \(H, W, T\)"),
    ("embryo_pu", "NaN in a 2D+t image", _embryo_nifti(_EM_NAN), ValueError,
     r"2D\+t image '.*seq\.nii\.gz' holds 1 NaN and 0 infinite value\(s\) \(the first at index \(4, 5, 1\)\)"),
    ("embryo_pu", "datalist not JSON", _not_json, ValueError, r"datalist '.*dataset\.json' is not valid JSON"),
    ("embryo_pu", "datalist item without 'label'", _datalist(_item("training", 0, "label", delete=True)),
     ValueError, r"section 'training' item 0 lacks key\(s\) \['label'\]; expected keys \['image', 'label'\]"),
    ("embryo_pu", "label not 0/1", _datalist(_item("training", 2, "label", 2)), ValueError,
     r"datalist '.*dataset\.json' item 2 key 'label' must be 0 or 1, got 2"),
    ("embryo_pu", "datalist without 'training'", _datalist(_drop("training")), ValueError,
     r"datalist '.*dataset\.json' has no section 'training'"),
    # ---------------------------------------------------------------------------------------- ips_histogram (2D)
    ("ips_histogram", "truncated PNG image", lambda r: truncate(r / "images/case_000.png"), ValueError,
     r"image '.*images/case_000\.png' could not be read \(OSError: image file is truncated\)"),
    ("ips_histogram", "truncated PNG label map", lambda r: truncate(r / "labels/case_000.png", 0.3), ValueError,
     r"label map '.*labels/case_000\.png' could not be read"),
    ("ips_histogram", "corrupt validation image (checked before training)",
     lambda r: truncate(r / "images/case_001.png"), ValueError, r"image '.*images/case_001\.png' could not be read"),
    ("ips_histogram", "missing label file", _unlink("labels/case_000.png"), FileNotFoundError,
     r"section 'training' item 0 key 'label': file not found '.*labels/case_000\.png'"),
    ("ips_histogram", "3D stack where 2D expected", _ips_image("stack.tif", np.zeros((5, 64, 64), np.uint8)),
     ValueError, r"image '.*stack\.tif' must be a 2D grey or colour image, got shape \(5, 64, 64\)"),
    ("ips_histogram", "label map of another size", lambda r: iio.imwrite(
        r / "labels/case_000.png", np.zeros((32, 32), np.uint8)), ValueError,
     r"label '.*labels/case_000\.png' has shape \(32, 32\), expected the image's \(64, 64\)"),
    ("ips_histogram", "NaN in a float TIFF image", _ips_image("nan.tif", _IPS_NAN), ValueError,
     r"image '.*nan\.tif' holds 1 NaN and 0 infinite value\(s\) \(the first at index \(0, 2, 3\)\)"),
    ("ips_histogram", "empty label map (all ignore)", lambda r: iio.imwrite(
        r / "labels/case_000.png", np.full((64, 64), 255, np.uint8)), ValueError,
     r"label map '.*case_000\.png' is empty: every pixel is the ignore label 255; expected at least one pixel"),
    ("ips_histogram", "empty validation label map (all background)", lambda r: iio.imwrite(
        r / "labels/case_001.png", np.zeros((64, 64), np.uint8)), ValueError,
     r"label map '.*case_001\.png' is empty: no pixel of a foreground class \(only background 0 or ignore 255\); "
     r"expected at least one pixel of a class 1\.\.2"),
    ("ips_histogram", "label values not class ids (0/128 mask)", lambda r: iio.imwrite(
        r / "labels/case_000.png", np.where(np.eye(64) > 0, 128, 0).astype(np.uint8)), ValueError,
     r"label map '.*case_000\.png' holds value\(s\) \[128\] that are not class ids; expected 0\.\.2 or the ignore "
     r"label 255"),
    ("ips_histogram", "datalist not JSON", _not_json, ValueError, r"datalist '.*dataset\.json' is not valid JSON"),
    ("ips_histogram", "validation item without 'label' (no silent fallback)",
     _datalist(_item("validation", 0, "label", delete=True)), ValueError,
     r"section 'validation' item 0 lacks key\(s\) \['label'\]"),
    ("ips_histogram", "datalist without 'training'", _datalist(_drop("training")), ValueError,
     r"datalist '.*dataset\.json' has no section 'training' \(found: \['description', "),
    # ------------------------------------------------------------------------------------------ sperm_emd (video)
    ("sperm_emd", "truncated mp4", lambda r: truncate(r / "videos/video_000.mp4"), ValueError,
     r"video '.*video_000\.mp4' could not be read \(.*\); expected a complete, readable \.mp4 file"),
    ("sperm_emd", "video shorter than its annotation", _short_video, ValueError,
     r"annotation '.*video_000\.json' has tracks of 10 frames but video '.*video_000\.mp4' decodes to 6 frames"),
    ("sperm_emd", "missing video", _unlink("videos/video_000.mp4"), FileNotFoundError,
     r"section 'training' item 0 key 'video': file not found '.*video_000\.mp4'"),
    ("sperm_emd", "still image where a video is expected", _still_image_as_video, ValueError,
     r"video '.*still\.png' has 1 frame\(s\), fewer than clip_length=4"),
    ("sperm_emd", "grade distribution not summing to 1", _sperm_annotation(_distribution([0.5, 0.5, 0.5, 0, 0])),
     ValueError, r"annotation '.*video_000\.json' sperm 0 'distribution' must sum to 1 .*got sum 1\.5"),
    ("sperm_emd", "negative grade probability", _sperm_annotation(_distribution([1.2, -0.2, 0, 0, 0])), ValueError,
     r"sperm 0 'distribution' must be non-negative"),
    ("sperm_emd", "grade distribution of wrong length", _sperm_annotation(_distribution([0.25] * 4)), ValueError,
     r"sperm 0 'distribution' has 4 entries, expected 5 \(one per grade\)"),
    ("sperm_emd", "NaN grade probability", _sperm_annotation(_distribution([float("nan"), 0.5, 0.5, 0, 0])),
     ValueError, r"sperm 0 'distribution' must hold finite numbers"),
    ("sperm_emd", "annotation without 'distribution'", _sperm_annotation(lambda d: {
        **d, "sperm": [{k: v for k, v in s.items() if k != "distribution"} for s in d["sperm"]]}), ValueError,
     r"annotation '.*video_000\.json' sperm 0 lacks key\(s\) \['distribution'\]"),
    ("sperm_emd", "annotation not JSON", lambda r: (r / "annotations/video_000.json").write_text("{"), ValueError,
     r"annotation '.*video_000\.json' is not valid JSON"),
    ("sperm_emd", "datalist not JSON", _not_json, ValueError, r"datalist '.*dataset\.json' is not valid JSON"),
    ("sperm_emd", "datalist item without 'annotation'", _datalist(_item("training", 0, "annotation", delete=True)),
     ValueError, r"section 'training' item 0 lacks key\(s\) \['annotation'\]"),
    ("sperm_emd", "datalist without 'training'", _datalist(_drop("training")), ValueError,
     r"datalist '.*dataset\.json' has no section 'training' \(found: \["),
]


@pytest.mark.parametrize("bundle, fault, corrupt, error, match", FAULTS, ids=[f"{b}: {f}" for b, f, *_ in FAULTS])
def test_bad_input_through_the_bundle(bundle, fault, corrupt, error, match, clean_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean_data(bundle), data)
    corrupt(data)
    with pytest.raises(error, match=match):
        run_bundle(bundle, data, tmp_path)
    assert_no_training(tmp_path)


# ------------------------------------------------------------------------------------------------ class priors
_PRIOR_MESSAGE = r"prior \(positive rate of the unlabeled data\) must be a float in \(0, 1\), got "
BAD_PRIORS = [
    ({"prior": 1.5}, _PRIOR_MESSAGE + r"1\.5"),
    ({"prior": 0.0}, _PRIOR_MESSAGE + r"0\.0"),
    ({"prior": -0.1}, _PRIOR_MESSAGE + r"-0\.1"),
    ({"prior": float("nan")}, _PRIOR_MESSAGE + r"nan"),
    ({"prior": "a quarter"}, _PRIOR_MESSAGE + r"'a quarter'"),
]


@pytest.mark.parametrize("override, match", BAD_PRIORS)
def test_embryo_class_prior_outside_unit_interval(override, match, clean_data, tmp_path):
    with pytest.raises(ValueError, match=match):
        run_bundle("embryo_pu", clean_data("embryo_pu"), tmp_path, **override)
    assert_no_training(tmp_path)


@pytest.mark.parametrize("priors, match", [
    ([0.2, 1.0], r"prior must be in \(0, 1\), got 1\.0"),
    ([0.2, "a quarter"], r"prior must be a number in \(0, 1\), got 'a quarter'"),
])
def test_embryo_study_prior_sweep_checked_before_any_run(priors, match, tmp_path):
    from monai_ext.apps.embryo_pu import EmbryoPUStudy

    with pytest.raises(ValueError, match=match):
        EmbryoPUStudy(REPO / "bundles" / "embryo_pu", tmp_path, priors=priors)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("loss", [NNPULoss, AUCNNPULoss])
@pytest.mark.parametrize("prior", [0.0, 1.0, -0.5, 1.5, float("nan"), True, "0.3"])
def test_pu_loss_prior_outside_unit_interval(loss, prior):
    with pytest.raises(ValueError, match=r"prior \(positive rate of the unlabeled data\) must be a float in \(0, 1\)"):
        loss(prior)


# ------------------------------------------------------------------------------------------------ coordinate systems
def test_aneurysm_lps_and_voxel_files_that_say_so_load_like_ras(clean_data, tmp_path):
    """The readers convert correctly labelled LPS and voxel files: the errors above are about *mislabelled* files."""
    data = tmp_path / "data"
    shutil.copytree(clean_data("aneurysm"), data)
    ref = load_cases(data, "training")[0].landmarks

    def lps(d: dict) -> dict:
        d = _lps_values_labelled_ras(d)
        d["coordinate_system"] = "LPS"
        return d

    edit_json(data / "landmarks" / "case_000.json", lps)
    np.testing.assert_allclose(load_cases(data, "training")[0].landmarks, ref, atol=1e-9)
    edit_json(data / "landmarks" / "case_000.json", _lps_values_labelled_ras)  # back to RAS values
    _voxel_values_labelled_mm(data)  # origin at -12 mm: landmark files in voxel units, candidates moved to world mm
    edit_json(data / "landmarks" / "case_000.json", lambda d: {**d, "units": "voxel"})
    edit_json(data / "candidates" / "case_000.json", _shift_points(-12.0))
    np.testing.assert_allclose(load_cases(data, "training")[0].landmarks, ref, atol=1e-9)


# ------------------------------------------------------------------------------------------------ inference inputs
def _inference_preprocessing(bundle: str) -> Callable[[dict], dict]:
    """The ``preprocessing`` of the bundle's ``inference.json``, as its workflow (and MONAI Label) builds it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs" / "inference.json")
    return parser.get_parsed_content("preprocessing")


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


INFERENCE_FAULTS = [
    ("aneurysm", "NaN voxel", lambda d: _nifti(d / "nan.nii.gz", np.where(np.arange(512).reshape(8, 8, 8) == 9,
                                                                           np.nan, 0.5).astype(np.float32)),
     r"image \(key 'image'\) '.*nan\.nii\.gz' holds 1 NaN and 0 infinite value\(s\) \(the first at index "
     r"\(0, 0, 1, 1\)\); expected finite intensities"),
    ("aneurysm", "2D image", lambda d: _nifti(d / "slice.nii.gz", np.zeros((8, 9), np.float32)),
     r"image \(key 'image'\) '.*slice\.nii\.gz' has shape \(1, 8, 9\) \(3 dimensions\); expected a single-channel "
     r"3D volume, read channel-first as \(1, X, Y, Z\)"),
    ("aneurysm", "two-channel volume", lambda d: _nifti(d / "two.nii.gz", np.zeros((8, 8, 8, 2), np.float32)),
     r"image \(key 'image'\) '.*two\.nii\.gz' has 2 channel\(s\) \(shape \(2, 8, 8, 8\)\); expected 1 channel\(s\)"),
    ("ips_histogram", "infinite pixel in a float TIFF",
     lambda d: (iio.imwrite(d / "inf.tif", np.where(np.eye(16) > 0, np.inf, 0.2).astype(np.float32)), d / "inf.tif")[1],
     r"image \(key 'image'\) '.*inf\.tif' holds 0 NaN and 16 infinite value\(s\)"),
    ("ips_histogram", "3D stack", lambda d: _nifti(d / "stack.nii.gz", np.zeros((16, 16, 4), np.float32)),
     r"image \(key 'image'\) '.*stack\.nii\.gz' has shape \(1, 16, 16, 4\) \(4 dimensions\); expected a 2D grey or "
     r"colour image, read channel-first as \(C, H, W\)"),
]


@pytest.mark.parametrize("bundle, fault, make, match", INFERENCE_FAULTS,
                         ids=[f"{b}: {f}" for b, f, *_ in INFERENCE_FAULTS])
def test_bad_input_through_inference_preprocessing(bundle, fault, make, match, tmp_path):
    """``inference.json`` reads single files through ``LoadImaged``; its ``ValidateImaged`` names the bad one."""
    from monai_ext.transforms import ImageValidationError

    path = make(tmp_path)
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the transform error
        _inference_preprocessing(bundle)({"image": str(path)})
    err = info.value
    while not isinstance(err, ImageValidationError) and err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, ImageValidationError), repr(info.value)
    assert re.search(match, str(err)), str(err)


@pytest.mark.parametrize("bundle, shape", [("aneurysm", (8, 8, 8)), ("ips_histogram", (16, 12))])
def test_valid_input_passes_inference_preprocessing(bundle, shape, tmp_path):
    path = _nifti(tmp_path / "ok.nii.gz", np.random.default_rng(0).random(shape).astype(np.float32))
    out = _inference_preprocessing(bundle)({"image": str(path)})["image"]
    assert np.isfinite(np.asarray(out)).all() and out.shape[-len(shape):] == shape
