"""The MONAI Label app over HTTP: a real server on 127.0.0.1, a studies folder of generated images.

Needs the ``label`` extra (``tox -e label`` or ``.ci/label_tests.sh``); skipped where ``monailabel`` is missing.
The server serves two kinds of bundle at once from a temporary ``bundles_dir``:

- ``tiny_seg``: a 2D BasicUNet bundle written by this file (a few kB, trains in a second) that proves the app's
  generic bundle contract on its own;
- ``slow_seg``: ``tiny_seg``'s inference with a last post-processing step that keeps the Python interpreter busy
  (holding the GIL) for ``SLOW_SECONDS``: a deterministically long inference, for ``/info`` latency during it;
- the repository's ``ips_histogram`` bundle when it exists (copied, never modified), with its own synthetic images;
- the repository's ``aneurysm`` landmark bundle when it exists: its configs, with a landmark network trained for two
  epochs by the bundle's own ``train.json`` in the fixture (~10 s), and a synthetic MRA volume on a flipped, shifted
  grid; plus ``aneurysm_untrained`` (the same configs, no checkpoint), which ``--conf models all`` must leave out.

Training runs through MONAI Label's stock ``BundleTrainTask`` (the app's thin subclass), so ``tiny_seg``'s
``train.json`` has the model-zoo shape that task overrides (``train#dataset#data``, ``train#handlers``,
``train#trainer#max_epochs``, ``validate#dataset#data``; the best model saved to ``models/model.pt``).

One server for the whole module (start-up costs ~10 s of CPU); every request has a bounded timeout and the server is
terminated in the fixture's finalizer whatever happens.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.label

if importlib.util.find_spec("monailabel") is None:  # the main environment: skip the whole file cleanly
    pytest.skip("monailabel is not installed (pip install -e '.[label]')", allow_module_level=True)

import requests  # noqa: E402  (a monailabel dependency)
from PIL import Image  # noqa: E402

from monai_ext.label import APP_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IPS_BUNDLE = REPO / "bundles" / "ips_histogram"
HAS_IPS = (IPS_BUNDLE / "configs" / "inference.json").is_file() and (IPS_BUNDLE / "configs" / "train.json").is_file()
IPS_SIZE = 96  # side of the generated iPS images (the bundle's patch is 64)
needs_ips = pytest.mark.skipif(not HAS_IPS, reason="bundles/ips_histogram is not in this checkout")
ANEURYSM_BUNDLE = REPO / "bundles" / "aneurysm"
HAS_ANEURYSM = (ANEURYSM_BUNDLE / "configs" / "inference.json").is_file()
needs_aneurysm = pytest.mark.skipif(not HAS_ANEURYSM, reason="bundles/aneurysm is not in this checkout")
ANEURYSM_SIZE = 40  # side of the synthetic MRA volumes
# a small localisation search (the bundle's default, radius 10, costs ~7 s a volume on a 2-core CPU)
ANEURYSM_SEARCH = {"search_radius": 3, "search_step": 3, "refine_radius": 1}
TIMEOUT = 60  # seconds, for one HTTP request
START_TIMEOUT = 180  # seconds, for the server to answer /info
TRAIN_TIMEOUT = 300  # seconds, for one train task
TINY_LABELS = {"0": "background", "1": "good colony", "2": "bad colony"}
SLOW_SECONDS = 4.0  # busy post-processing of slow_seg
INFO_BOUND = 1.0  # seconds: /info must answer within this while an inference runs (3D Slicer polls it)
IMAGE_HW = (48, 64)  # not square, so a transposed result cannot pass


def _write_tiny_bundle(root: Path, busy_seconds: float | None = None) -> None:
    """A minimal bundle following our contract (inference.json + train.json with the contract ids).

    With ``busy_seconds``: inference only, and its post-processing ends with a pure-Python busy loop of that length
    (a ``Lambdad``; it holds the GIL except when the interpreter switches threads, the worst case for the server's
    other requests).
    """
    net = {
        "_target_": "BasicUNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 3,
        "features": [4, 4, 8, 8, 16, 4],
    }
    load = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "PILReader"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "ScaleIntensityd", "keys": "image"},
    ]
    inference = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": net,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": load},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32], "sw_batch_size": 4},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True}],
        },
    }
    if busy_seconds is not None:
        inference["imports"].append("$import time")
        inference["busy_seconds"] = busy_seconds
        until = "lambda d=time.perf_counter() + @busy_seconds: time.perf_counter() >= d"  # True once the time is up
        busy = f"$lambda x: any(False for _ in iter({until}, True)) or x"
        inference["postprocessing"]["transforms"].append({"_target_": "Lambdad", "keys": "pred", "func": busy})
    load = [
        {"_target_": "LoadImaged", "keys": ["image", "label"], "reader": "PILReader"},
        {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
        {"_target_": "ScaleIntensityd", "keys": "image"},
    ]
    train = {  # the model-zoo shape MONAI Label's BundleTrainTask overrides
        "imports": ["$import torch", "$from monai.handlers import from_engine"],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "device": "cpu",
        "epochs": 1,
        "network_def": net,
        "network": "$@network_def.to(@device)",
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": [
                *load, {"_target_": "RandSpatialCropd", "keys": ["image", "label"], "roi_size": [32, 32]}]},
            "dataset": {"_target_": "Dataset", "data": [], "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2, "num_workers": 0},
            "handlers": [{"_target_": "ValidationHandler", "validator": "@validate#evaluator", "epoch_level": True,
                          "interval": 1}],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@device",
                "max_epochs": "@epochs",
                "train_data_loader": "@train#dataloader",
                "network": "@network",
                "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
                "loss_function": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
                "train_handlers": "@train#handlers",
            },
        },
        "validate": {
            "dataset": {"_target_": "Dataset", "data": [], "transform": {"_target_": "Compose", "transforms": load}},
            "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 1},
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@validate#dataloader",
                "network": "@network",
                "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32], "sw_batch_size": 4},
                "postprocessing": {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False],
                                   "to_onehot": 3},
                "key_val_metric": {"val_mean_dice": {"_target_": "MeanDice", "include_background": True,
                                                     "output_transform": "$from_engine(['pred', 'label'])"}},
                "val_handlers": [{"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir",
                                  "save_dict": {"model": "@network"}, "save_key_metric": True,
                                  "key_metric_filename": "model.pt"}],
            },
        },
        "run": ["$@train#trainer.run()"],
    }
    fmt = {"type": "image", "num_channels": 1, "spatial_shape": [32, 32], "dtype": "float32", "value_range": [0, 1]}
    metadata = {
        "version": "0.1.0",
        "description": "test-only 2D BasicUNet",
        "network_data_format": {
            "inputs": {"image": {**fmt, "format": "magnitude", "channel_def": {"0": "image"}}},
            "outputs": {"pred": {**fmt, "format": "segmentation", "num_channels": 3, "channel_def": TINY_LABELS}},
        },
    }
    (root / "configs").mkdir(parents=True)
    configs = {"inference": inference, "metadata": metadata}
    if busy_seconds is None:
        configs["train"] = train
    for name, obj in configs.items():
        (root / "configs" / f"{name}.json").write_text(json.dumps(obj, indent=1))


def _tiny_images(studies: Path) -> dict[str, np.ndarray]:
    """Three grey images with a bright and a dark square; returns the label map of each (0/1/2)."""
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(3):
        img = rng.integers(40, 90, IMAGE_HW).astype(np.uint8)
        lab = np.zeros(IMAGE_HW, np.uint8)
        lab[5 + i : 25 + i, 4:24] = 1
        lab[30:44, 36 + i : 58] = 2
        img[lab == 1] += 120
        img[lab == 2] -= 30
        Image.fromarray(img).save(studies / f"tiny_{i}.png")
        labels[f"tiny_{i}"] = lab
    return labels


def _ips_images(studies: Path, work: Path) -> dict[str, np.ndarray]:
    """Three images of the bundle's own synthetic generator; returns their label maps (0/1/2, 255 = ignore)."""
    from monai_ext.data.synthetic.ips import generate_ips_dataset

    dataset = json.loads(generate_ips_dataset(work, seed=0, num_cases=3, image_size=IPS_SIZE).read_text())
    labels = {}
    for item in dataset["training"] + dataset["validation"] + dataset["test"]:
        image_id = "ips_" + Path(item["image"]).stem
        (studies / f"{image_id}.png").write_bytes((work / item["image"]).read_bytes())
        labels[image_id] = np.asarray(Image.open(work / item["label"]))
    return labels


def _aneurysm_bundles(root: Path, studies: Path) -> list[str]:
    """The aneurysm bundle trained by its own train.json (tiny settings), an untrained copy, one study volume.

    Returns the ids of the study images written.
    """
    import nibabel as nib

    for name in ("aneurysm", "aneurysm_untrained"):  # configs, docs and licence linked: nothing is written there
        (root / "bundles" / name).mkdir()
        for item in ("configs", "docs", "LICENSE"):
            (root / "bundles" / name / item).symlink_to(ANEURYSM_BUNDLE / item)
    bundle, out = root / "bundles" / "aneurysm", root / "aneurysm_train"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "train.json")]
    cmd += ["--bundle_root", str(bundle), "--output_dir", str(out), "--ckpt_dir", str(bundle / "models")]
    cmd += ["--num_cases", "6", "--volume_size", str(ANEURYSM_SIZE), "--epochs", "2"]
    cmd += ["--samples_per_case", "64", "--val_samples_per_case", "16", "--device", "cpu"]
    env = dict(os.environ, MPLBACKEND="Agg")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=TRAIN_TIMEOUT, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # a test case of that run on a flipped and shifted grid: voxel indices and RAS mm differ on every axis
    test_image = json.loads((out / "synthetic_data" / "dataset.json").read_text())["test"][0]["image"]
    img = nib.load(out / "synthetic_data" / test_image)
    affine = np.array([[-1.0, 0, 0, ANEURYSM_SIZE + 1.5], [0, 1, 0, -2.0], [0, 0, 1, 1.5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), affine), studies / "aneurysm_case.nii.gz")
    return ["aneurysm_case"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, models: list[str]):
        self.root = root
        self.models = models
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.model_dir = root / "label_models"
        env = dict(os.environ, MONAI_LABEL_SESSION_PATH=str(root / "sessions"), MPLBACKEND="Agg")
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", APP_DIR]
        cmd += ["--studies", str(root / "studies"), "-i", "127.0.0.1", "-p", str(self.port)]
        cmd += ["--conf", "models", "all", "--conf", "bundles_dir", str(root / "bundles")]
        cmd += ["--conf", "model_dir", str(self.model_dir)]
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        pytest.fail(f"server did not answer /info within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server; after ``timeout`` s, SIGKILL its whole process group (train subprocesses too)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers (a train task) of the group, if any
        except ProcessLookupError:
            pass
        self._log_file.close()
        return self.proc.returncode

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=TIMEOUT, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(f"{self.url}{path}", timeout=TIMEOUT, **kw)

    def put(self, path: str, **kw) -> requests.Response:
        return requests.put(f"{self.url}{path}", timeout=TIMEOUT, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return requests.delete(f"{self.url}{path}", timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel")
    studies = root / "studies"
    studies.mkdir()
    (root / "bundles").mkdir()
    _write_tiny_bundle(root / "bundles" / "tiny_seg")
    _write_tiny_bundle(root / "bundles" / "slow_seg", busy_seconds=SLOW_SECONDS)
    labels = _tiny_images(studies)
    models = ["tiny_seg", "slow_seg"]
    if HAS_IPS:  # served from a link: the app copies it into model_dir and never writes into the repository
        (root / "bundles" / "ips_histogram").symlink_to(IPS_BUNDLE, target_is_directory=True)
        labels.update(_ips_images(studies, root / "ips_data"))
        models.append("ips_histogram")
    volumes = []
    if HAS_ANEURYSM:
        volumes = _aneurysm_bundles(root, studies)
        models.append("aneurysm")
    srv = Server(root, models)
    srv.labels = labels
    srv.final_labels = set()
    srv.image_ids = [*labels, *volumes]
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _infer_png(server, model: str, image_id: str) -> np.ndarray:
    r = server.post(f"/infer/{model}?image={image_id}&output=image")
    assert r.status_code == 200, r.text
    return _png(r.content)


def _train(server, model: str, **params) -> dict:
    r = server.post(f"/train/{model}", json=params)
    assert r.status_code == 200, r.text
    return _wait_train(server)


def _save_final_labels(server, image_ids) -> None:
    """Save the final labels of ``image_ids`` and remove the other final labels this module saved.

    MONAI Label's bundle train task trains on every labelled image of the datastore, which all served models share:
    a model must not get the labels saved for another one (e.g. 48 x 64 tiny_seg images for ips_histogram, whose
    64-pixel patches do not fit them).
    """
    for image_id in sorted(server.final_labels - set(image_ids)):
        r = server.delete(f"/datastore/label?id={image_id}&tag=final")
        assert r.status_code == 200, r.text
        server.final_labels.discard(image_id)
    for image_id in image_ids:
        content = server.labels[image_id]
        name, data = (f"{image_id}.png", _png_bytes(content)) if isinstance(content, np.ndarray) else content
        r = server.put(f"/datastore/label?image={image_id}&tag=final", files={"label": (name, data)})
        assert r.status_code == 200, r.text
        server.final_labels.add(image_id)


def test_info_lists_models_and_labels(server):
    info = server.get("/info/").json()
    # "--conf models all": segmentation bundles and trained landmark bundles, not aneurysm_untrained
    assert sorted(info["models"]) == sorted(server.models)
    # every served bundle with a train.json (MONAI Label's stock BundleTrainTask), the landmark one included
    assert sorted(info["trainers"]) == sorted(m for m in server.models if m != "slow_seg")
    tiny = info["models"]["tiny_seg"]
    assert tiny["type"] == "segmentation"
    assert tiny["dimension"] == 2
    assert tiny["labels"] == {v: int(k) for k, v in TINY_LABELS.items() if v != "background"}
    assert tiny["trained"] is False  # seeded initial weights until /train runs
    if HAS_IPS:
        ips = info["models"]["ips_histogram"]
        assert (ips["type"], ips["dimension"]) == ("segmentation", 2)
        channel_def = json.loads((IPS_BUNDLE / "configs" / "metadata.json").read_text())["network_data_format"]
        channel_def = next(iter(channel_def["outputs"].values()))["channel_def"]
        assert ips["labels"] == {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
    assert info["datastore"]["total"] == len(server.image_ids)
    assert sorted(server.get("/datastore/?output=all").json()["objects"]) == sorted(server.image_ids)


@pytest.mark.parametrize("image_id", ["tiny_0", "tiny_2"])
def test_infer_returns_label_of_image_shape(server, image_id):
    r = server.post(f"/infer/tiny_seg?image={image_id}&output=image")
    assert r.status_code == 200, r.text
    pred = _png(r.content)
    assert pred.shape == IMAGE_HW
    assert set(np.unique(pred).tolist()) <= {0, 1, 2}


@needs_ips
@pytest.mark.parametrize("image_id", ["ips_case_000", "ips_case_002"])
def test_ips_histogram_infer_returns_label_of_image_shape(server, image_id):
    pred = _infer_png(server, "ips_histogram", image_id)
    assert pred.shape == (IPS_SIZE, IPS_SIZE)
    labels = server.get("/info/").json()["models"]["ips_histogram"]["labels"]
    assert set(np.unique(pred).tolist()) <= {0, *labels.values()}


def _landmark_names() -> dict[str, int]:
    from monai_ext.data.synthetic.aneurysm import LANDMARK_NAMES

    return {n: k + 1 for k, n in enumerate(LANDMARK_NAMES)}


@needs_aneurysm
def test_aneurysm_info(server):
    info = server.get("/info/").json()
    lm = info["models"]["aneurysm"]
    assert (lm["type"], lm["dimension"], lm["trained"]) == ("segmentation", 3, True)
    assert lm["labels"] == _landmark_names()  # names of the priors its training wrote, value = landmark class
    # the served copy holds the bundle's model.pt (a bare state_dict) and priors, copied from its ckpt_dir
    assert lm["checkpoint"] == str(server.model_dir / "aneurysm" / "models" / "model.pt")
    assert {"sphere_radius", "search_radius", "search_step", "refine_radius"} <= set(lm["config"])
    assert "aneurysm_untrained" not in info["models"]


def _read_label(content: bytes, ext: str, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The label array in (X, Y, Z) order and its voxel-to-RAS affine, read back from the result file."""
    path = tmp_path / f"label{ext}"
    path.write_bytes(content)
    if ext == ".nii.gz":
        import nibabel as nib

        img = nib.load(path)
        return np.asarray(img.dataobj), img.affine
    import SimpleITK as sitk  # .nrrd, what 3D Slicer asks for: LPS origin/direction, (Z, Y, X) array

    img = sitk.ReadImage(str(path))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.asarray(img.GetOrigin())
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), affine


def _spheres_reference(shape, points: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Every voxel takes the label of its nearest point (first on ties) when that point is within the radius."""
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), -1).astype(float)
    d2 = ((grid[None] - points[:, None, None, None]) ** 2).sum(-1)
    nearest = d2.argmin(0)
    return np.where(d2.min(0) <= radius**2, labels[nearest], 0)


@needs_aneurysm
@pytest.mark.parametrize("source, ext, radius", [("stored", ".nii.gz", 2.0), ("upload", ".nrrd", 1.5)])
def test_aneurysm_infer_returns_landmark_spheres_and_points(server, source, ext, radius, tmp_path):
    """Multipart answer (MONAI Label's default, what 3D Slicer reads): the label volume and the points JSON."""
    import nibabel as nib
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    volume = server.root / "studies" / "aneurysm_case.nii.gz"
    params = json.dumps({**ANEURYSM_SEARCH, "sphere_radius": radius, "result_extension": ext})
    if source == "stored":
        r = server.post("/infer/aneurysm?image=aneurysm_case", data={"params": params})
    else:
        files = {"file": ("upload.nii.gz", volume.read_bytes(), "application/octet-stream")}
        r = server.post("/infer/aneurysm", data={"params": params}, files=files)
    assert r.status_code == 200, r.text
    parts = {}
    for part in MultipartDecoder.from_response(r).parts:
        name = part.headers[b"Content-Disposition"].decode().split('name="')[1].split('"')[0]
        parts[name] = part.content
    result = json.loads(parts["params"])
    label, label_affine = _read_label(parts["image"], ext, tmp_path)

    src = nib.load(volume)
    assert label.shape == src.shape == (ANEURYSM_SIZE,) * 3
    np.testing.assert_allclose(label_affine, src.affine, atol=1e-5)
    names = _landmark_names()
    assert set(np.unique(label).tolist()) <= {0, *names.values()}
    assert result["label_names"] == names and result["sphere_radius"] == radius
    assert (result["coordinate_system"], result["units"]) == ("RAS", "mm")
    points = result["landmarks"]
    assert [(p["name"], p["label"]) for p in points] == list(names.items())
    voxels = np.array([p["voxel"] for p in points])
    world = np.array([p["position"] for p in points])
    assert ((voxels >= 0) & (voxels <= ANEURYSM_SIZE - 1)).all()
    np.testing.assert_allclose((src.affine @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3], world, atol=1e-6)
    labels = np.array([p["label"] for p in points])
    np.testing.assert_array_equal(label, _spheres_reference(label.shape, voxels, labels, radius))


@needs_aneurysm
def test_aneurysm_points_match_bundle_inference(server, tmp_path):
    """The served points are those of the bundle's own inference (inference.json's evaluator) with the same model."""
    from monai.bundle import ConfigParser

    from monai_ext.apps.aneurysm import AneurysmInference, TriPlanarPointInferer

    r = server.post("/infer/aneurysm?image=aneurysm_case&output=json", data={"params": json.dumps(ANEURYSM_SEARCH)})
    assert r.status_code == 200, r.text
    served = r.json()["landmarks"]
    models = server.root / "bundles" / "aneurysm" / "models"  # where the bundle's own training wrote them
    parser = ConfigParser()
    parser.read_config(str(ANEURYSM_BUNDLE / "configs" / "inference.json"))
    ref = AneurysmInference(
        parser.get_parsed_content("network_def"), models / "model.pt",
        [{"image": str(server.root / "studies" / "aneurysm_case.nii.gz")}], parser.get_parsed_content("preprocessing"),
        TriPlanarPointInferer(mode="localise", **ANEURYSM_SEARCH), tmp_path,
        priors_path=models / "landmark_priors.json", device="cpu",
    )
    expected = json.loads(ref.run()[0].read_text())["landmarks"]
    assert [p["name"] for p in served] == [p["name"] for p in expected]
    np.testing.assert_allclose([p["position"] for p in served], [p["position"] for p in expected], atol=1e-4)
    np.testing.assert_allclose([p["probability"] for p in served], [p["probability"] for p in expected], rtol=1e-5)


@needs_aneurysm
def test_naming_an_untrained_landmark_bundle_stops_start_up(server, tmp_path):
    """--conf models aneurysm without its checkpoint: the app refuses to start and names the missing files."""
    from monai_ext.label.main import MonaiExtLabelApp

    conf = {"models": "aneurysm_untrained", "bundles_dir": str(server.root / "bundles"), "model_dir": str(tmp_path)}
    match = r"aneurysm_untrained: no trained landmark model, missing \[.*model.pt', .*landmark_priors.json'\]"
    with pytest.raises(ValueError, match=match):
        MonaiExtLabelApp(APP_DIR, str(server.root / "studies"), conf)


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])
def test_infer_result_extension_for_slicer(server, ext, tmp_path):
    """3D Slicer's MONAI Label module asks for ``.nrrd`` results; a 2D label stays a 2D image of the right size."""
    import SimpleITK as sitk

    params = json.dumps({"result_extension": ext, "result_dtype": "uint8"})
    r = server.post("/infer/tiny_seg?image=tiny_1&output=image", data={"params": params})
    assert r.status_code == 200, r.text
    out = tmp_path / f"pred{ext}"
    out.write_bytes(r.content)
    img = sitk.ReadImage(str(out))
    assert img.GetDimension() == 2
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == IMAGE_HW
    assert set(np.unique(arr).tolist()) <= {0, 1, 2}


def test_infer_uploaded_file(server):
    img = (np.random.default_rng(1).random((40, 56)) * 255).astype(np.uint8)
    r = server.post("/infer/tiny_seg?output=image", files={"file": ("upload.png", _png_bytes(img), "image/png")})
    assert r.status_code == 200, r.text
    assert _png(r.content).shape == (40, 56)


def _png_upload(shape: tuple[int, ...]) -> dict:
    return {"files": {"file": ("flat.png", _png_bytes(np.zeros(shape, np.uint8)), "image/png")}}


def _nifti_bytes(arr: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    import nibabel as nib

    buf = io.BytesIO()
    nib.Nifti1Image(arr, np.eye(4) if affine is None else affine).to_stream(buf)
    return buf.getvalue()


def _nifti_upload(shape: tuple[int, ...], nan_at: tuple[int, ...] | None = None) -> dict:
    arr = np.ones(shape, np.float32)
    if nan_at is not None:
        arr[nan_at] = np.nan
    return {"files": {"file": ("flat.nii", _nifti_bytes(arr), "application/octet-stream")}}


def _raw_upload(name: str, content: bytes) -> dict:
    return {"files": {"file": (name, content, "application/octet-stream")}}


@pytest.mark.parametrize(
    "method, path, kwargs, status, match",
    [
        ("post", "/infer/no_such_model?image=tiny_0", {}, 404, "unknown model 'no_such_model'"),
        ("post", "/infer/tiny_seg?image=no_such_image", {}, 404, "image 'no_such_image' is neither"),
        ("post", "/infer/tiny_seg", {}, 422, "/infer/tiny_seg needs an image: an image id (?image=<id>) or an upl"),
        ("post", "/infer/tiny_seg?image=tiny_0", {"data": {"params": "{not json"}}, 422, "params must be a JSON obj"),
        ("post", "/infer/tiny_seg?image=tiny_0", {"data": {"params": "[1, 2]"}}, 422, "JSON object, got list"),
        ("post", "/infer/tiny_seg?image=tiny_0", {"data": {"params": '{"device": "gpu7"}'}}, 422, "'device' must"),
        ("post", "/infer/tiny_seg?image=tiny_0&output=dicom_seg", {}, 422, "output=dicom_seg needs a DICOMweb"),
        ("post", "/train/no_such_model", {"json": {"max_epochs": 1}}, 404, "unknown model 'no_such_model'"),
        ("get", "/datastore/image?image=no_such_image", {}, 404, "Image NOT Found"),
        pytest.param("post", "/infer/aneurysm", _png_upload((20, 30)), 422,
                     "localises landmarks in a single-channel 3D volume (e.g. NIfTI X x Y x Z); got an image of shape "
                     "(1, 30, 20)", marks=needs_aneurysm, id="aneurysm-2d-png"),
        pytest.param("post", "/infer/aneurysm", _nifti_upload((24, 28)), 422, "got an image of shape (1, 24, 28)",
                     marks=needs_aneurysm, id="aneurysm-2d-nifti"),
        pytest.param("post", "/infer/aneurysm?image=aneurysm_case", {"data": {"params": '{"sphere_radius": "big"}'}},
                     422, "sphere_radius must be a number > 0 (voxels), got 'big'", marks=needs_aneurysm,
                     id="aneurysm-bad-radius"),
        ("post", "/train/slow_seg", {"json": {}}, 404, "(served for inference only: it has no configs/train.json)"),
        # images a segmentation bundle cannot take: 422 naming the problem (MONAI Label: a bare 500)
        ("post", "/infer/tiny_seg", _raw_upload("junk.png", b"not an image"), 422, "as an image: "),
        pytest.param("post", "/infer/ips_histogram", _nifti_upload((24, 28), nan_at=(3, 4)), 422,
                     "holds 1 NaN and 0 infinite value(s) (the first at index (0, 3, 4)); expected finite intensities",
                     marks=needs_ips, id="ips-nan-2d"),
        pytest.param("post", "/infer/ips_histogram", _nifti_upload((24, 28, 1), nan_at=(5, 6, 0)), 422,
                     "holds 1 NaN and 0 infinite value(s) (the first at index (0, 5, 6))", marks=needs_ips,
                     id="ips-nan-xy1"),
        pytest.param("post", "/infer/ips_histogram", _raw_upload("empty.png", b""), 422,
                     "the file is empty (0 bytes)", marks=needs_ips, id="ips-empty-file"),
        pytest.param("post", "/infer/ips_histogram", _nifti_upload((0, 28)), 422, "is empty: it has no pixels (shape "
                     "(0, 28) as read)", marks=needs_ips, id="ips-no-pixels"),
        pytest.param("post", "/infer/ips_histogram", _raw_upload("junk.png", b"\x89PNG but not one"), 422,
                     "as an image: ", marks=needs_ips, id="ips-unreadable"),
        pytest.param("post", "/infer/ips_histogram", _nifti_upload((10, 12, 14)), 422, "has shape (1, 10, 12, 14) "
                     "(4 dimensions); expected a 2D grey or colour image", marks=needs_ips, id="ips-3d-volume"),
    ],
)
def test_bad_requests_get_4xx(server, method, path, kwargs, status, match):
    r = getattr(server, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert match in r.json()["detail"]
    assert server.proc.poll() is None
    assert server.get("/info/").status_code == 200  # still serving


@needs_ips
@pytest.mark.parametrize("ext", [None, ".nrrd"])
def test_ips_histogram_2d_image_stored_as_xy1_nifti(server, ext, tmp_path):
    """An X x Y x 1 NIfTI (ITK/Slicer's 2D layout): the label of the same image as PNG, on the input's grid and affine.

    ``ext=None``: the result in the input's format (``.nii.gz``); ``.nrrd``: what 3D Slicer asks for.
    """
    expected = _infer_png(server, "ips_histogram", "ips_case_002")  # (H, W), PIL order
    pixels = np.asarray(Image.open(server.root / "studies" / "ips_case_002.png"))
    volume = np.ascontiguousarray(pixels.T[..., None])  # (X=W, Y=H, 1): MONAI's reading of the PNG, plus an axis
    affine = np.array([[0.5, 0, 0, -10.0], [0, -0.25, 0, 7.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]])
    files = {"file": ("slice.nii.gz", gzip.compress(_nifti_bytes(volume, affine)), "application/octet-stream")}
    params = json.dumps({"result_extension": ext} if ext else {})
    r = server.post("/infer/ips_histogram?output=image", files=files, data={"params": params})
    assert r.status_code == 200, r.text
    label, label_affine = _read_label(r.content, ext or ".nii.gz", tmp_path)
    assert label.shape == volume.shape
    np.testing.assert_allclose(label_affine, affine, atol=1e-5)
    np.testing.assert_array_equal(label[..., 0].T, expected)


def test_info_answers_while_an_inference_runs(server):
    """3D Slicer polls /info: it answers within INFO_BOUND s while slow_seg's inference (SLOW_SECONDS) runs.

    The bound is a latency with a wide margin (an idle /info takes milliseconds), not a benchmark; before the fix
    every poll waited for the whole inference.
    """
    answer = {}

    def infer() -> None:
        answer["r"] = server.post("/infer/slow_seg?image=tiny_0&output=image")

    worker = threading.Thread(target=infer)
    start = time.monotonic()
    worker.start()
    time.sleep(0.5)  # the request has reached the server
    latencies = []
    while worker.is_alive():  # every poll sent while the inference runs counts, however long it waits
        t0 = time.monotonic()
        info = server.get("/info/")
        latencies.append(time.monotonic() - t0)
        assert info.status_code == 200, info.text
        assert "slow_seg" in info.json()["models"]
        time.sleep(0.2)
    worker.join()
    took = time.monotonic() - start
    assert answer["r"].status_code == 200, answer["r"].text
    assert _png(answer["r"].content).shape == IMAGE_HW
    assert took >= SLOW_SECONDS  # the polls did overlap a long inference
    assert len(latencies) >= 5, latencies
    assert max(latencies) < INFO_BOUND, latencies


@pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")  # ITK's SWIG
@pytest.mark.parametrize(
    "ext, shape, affine",
    [
        (".png", (40, 56), None),
        (".nrrd", (40, 56), None),
        (".nii.gz", (40, 56), None),
        (".nrrd", (40, 56, 1), [[0.5, 0, 0, -10.0], [0, -0.25, 0, 7.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]]),
        (".nii.gz", (12, 9, 7), [[0, -0.7, 0, 4.0], [1.2, 0, 0, -3.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1]]),
    ],
)
def test_label_writer_writes_what_monailabel_writer_writes(ext, shape, affine, tmp_path):
    """LabelWriter (SimpleITK) against MONAI Label's own Writer (ITK): same pixels, pixel type and geometry."""
    import SimpleITK as sitk
    from monai.data import MetaTensor
    from monailabel.transform.writer import Writer

    from monai_ext.label.main import LabelWriter

    label = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8)
    pred = label if affine is None else MetaTensor(label, affine=np.asarray(affine))
    data = {"image_path": str(tmp_path / f"input{ext}"), "pred": pred, "result": {"a": 1}}
    ours, ours_json = LabelWriter(label="pred", json="result")(dict(data))
    ref, ref_json = Writer(label="pred", json="result")(dict(data))
    assert ours.endswith(ext) and ours_json == ref_json == {"a": 1}
    a, b = sitk.ReadImage(ours), sitk.ReadImage(ref)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert a.GetPixelIDTypeAsString() == b.GetPixelIDTypeAsString() == "8-bit unsigned integer"
    assert a.GetSize() == b.GetSize() == shape  # ITK's (x, y, z) is MONAI's index order
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), atol=1e-6)
    # result_dtype and result_extension from the request are honoured as by MONAI Label
    ours16, _ = LabelWriter(label="pred")({**data, "result_extension": ".nrrd", "result_dtype": "uint16"})
    assert ours16.endswith(".nrrd")
    assert sitk.ReadImage(ours16).GetPixelIDTypeAsString() == "16-bit unsigned integer"
    for f in (ours, ref, ours16):
        os.remove(f)


def test_install_request_checks_once_in_front():
    """The checked routes go first in MONAI Label's route list, once: a second call (an app reload) adds nothing."""
    import monailabel.app as ml

    from monai_ext.label.main import check_infer_request, check_train_request, install_request_checks

    before = len(ml.app.router.routes)
    assert install_request_checks(ml.app) == ["/infer/{model}", "/train/{model}"]
    assert install_request_checks(ml.app) == []
    assert len(ml.app.router.routes) == before + 2
    first = {r.path: r for r in ml.app.router.routes[:2]}
    assert first["/infer/{model}"].dependencies[0].dependency is check_infer_request
    assert first["/train/{model}"].dependencies[0].dependency is check_train_request
    assert first["/infer/{model}"].methods == {"POST"} and first["/train/{model}"].methods == {"POST"}
    # /infer runs in FastAPI's worker threads (a plain def endpoint), not on the event loop; same parameters
    import inspect

    from monailabel.endpoints.infer import api_run_inference

    assert inspect.iscoroutinefunction(api_run_inference)
    assert not inspect.iscoroutinefunction(first["/infer/{model}"].endpoint)
    assert inspect.signature(first["/infer/{model}"].endpoint) == inspect.signature(api_run_inference)


def _wait_train(server) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while time.monotonic() < deadline:
        st = server.get("/train/").json()
        if st.get("status") not in ("SUBMITTED", "RUNNING", "QUEUED"):
            return st
        time.sleep(2)
    pytest.fail(f"training did not finish in {TRAIN_TIMEOUT} s:\n{server.log_tail()}")


def test_train_bad_params_fail_in_task(server):
    """Train options reach the app only in MONAI Label's background process: the task ends with ERROR and says why.

    (Each option's check is unit-tested in tests/label; one case here proves the error reaches the client.)
    """
    st = _train(server, "tiny_seg", max_epochs=0)
    assert st["status"] == "ERROR"
    assert any("max_epochs must be an integer >= 1, got 0" in line for line in st["details"]), st["details"]


def test_upload_labels_then_train_one_epoch(server):
    _save_final_labels(server, ("tiny_0", "tiny_1"))
    weights = server.model_dir / "tiny_seg" / "models" / "model.pt"
    before = weights.stat().st_mtime_ns
    st = _train(server, "tiny_seg", max_epochs=1, val_split=0.5, device="cpu")
    assert st["status"] == "DONE", "\n".join(st.get("details", []))
    assert weights.stat().st_mtime_ns > before
    info = server.get("/info/").json()
    assert info["models"]["tiny_seg"]["trained"] is True
    assert info["train_stats"]["tiny_seg"]["epochs"] == 1
    assert info["train_stats"]["tiny_seg"]["train_images"] == 1  # 2 labelled, val_split 0.5
    r = server.post("/infer/tiny_seg?image=tiny_2&output=image")  # served with the new weights
    assert r.status_code == 200, r.text
    assert _png(r.content).shape == IMAGE_HW


@needs_ips
def test_ips_histogram_train_one_epoch_then_infer(server):
    """The real bundle's train.json, run by MONAI Label's stock BundleTrainTask on two saved labels."""
    _save_final_labels(server, ("ips_case_000", "ips_case_001"))
    weights = server.model_dir / "ips_histogram" / "models" / "model.pt"
    before = weights.stat().st_mtime_ns
    st = _train(server, "ips_histogram", max_epochs=1, val_split=0.5, device="cpu")
    assert st["status"] == "DONE", "\n".join(st.get("details", []))
    assert weights.stat().st_mtime_ns > before
    info = server.get("/info/").json()
    assert info["models"]["ips_histogram"]["trained"] is True
    assert info["train_stats"]["ips_histogram"]["epochs"] == 1
    pred = _infer_png(server, "ips_histogram", "ips_case_002")
    assert pred.shape == (IPS_SIZE, IPS_SIZE)
    assert set(np.unique(pred).tolist()) <= {0, 1, 2}
    assert info["train_stats"]["ips_histogram"]["model_updated"] is True
    # a second request trains again (the first run's finished state is not resumed) and replaces the model again
    before = weights.stat().st_mtime_ns
    st = _train(server, "ips_histogram", max_epochs=1, val_split=0.5, device="cpu")
    assert st["status"] == "DONE" and weights.stat().st_mtime_ns > before, "\n".join(st.get("details", []))


@needs_aneurysm
def test_aneurysm_checkpoint_gone_gives_503_until_back(server):
    """A landmark checkpoint deleted while the server runs: 503 naming it, gone from /info, back when restored."""
    ckpt = server.model_dir / "aneurysm" / "models" / "model.pt"
    aside = ckpt.with_name("aside.pt")
    ckpt.rename(aside)
    try:
        r = server.post("/infer/aneurysm?image=aneurysm_case&output=json")
        assert r.status_code == 503, r.text
        assert f"is not trained: missing ['{ckpt}']" in r.json()["detail"]
        assert "aneurysm" not in server.get("/info/").json()["models"]  # MONAI Label lists valid models only
    finally:
        aside.rename(ckpt)
    assert server.get("/info/").json()["models"]["aneurysm"]["trained"] is True
    r = server.post("/infer/aneurysm?image=aneurysm_case&output=json", data={"params": json.dumps(ANEURYSM_SEARCH)})
    assert r.status_code == 200, r.text


@needs_aneurysm
def test_aneurysm_train_on_corrected_spheres(server, tmp_path):
    """/train/aneurysm (MONAI Label's stock BundleTrainTask): the label volume the landmark task answered, saved as
    the final label, trains the landmark classifier for one epoch (landmark k = centroid of the voxels valued k).

    Last of the aneurysm tests: its priors come from the bundle's default synthetic data until train.json takes them
    from the labelled images (see tests/label/test_label_stock_tasks.py).
    """
    params = json.dumps({**ANEURYSM_SEARCH, "result_extension": ".nii.gz"})
    r = server.post("/infer/aneurysm?image=aneurysm_case&output=image", data={"params": params})
    assert r.status_code == 200, r.text
    server.labels["aneurysm_case"] = ("aneurysm_case.nii.gz", r.content)
    _save_final_labels(server, ["aneurysm_case"])
    weights = server.model_dir / "aneurysm" / "models" / "model.pt"
    before = weights.read_bytes()
    st = _train(server, "aneurysm", max_epochs=1, device="cpu")
    assert st["status"] == "DONE", "\n".join(st.get("details", []))
    assert weights.read_bytes() != before
    stats = server.get("/info/").json()["train_stats"]["aneurysm"]
    # one labelled volume: nothing held out at val_split 0.2, so it is validated on too
    assert (stats["train_images"], stats["val_images"], stats["model_updated"]) == (1, 1, True)


def test_server_stops_cleanly(server):
    rc = server.stop()
    # uvicorn >= 0.29 finishes its graceful shutdown, then re-raises SIGTERM: -15 is a clean stop as well as 0
    assert rc in (0, -signal.SIGTERM), server.log_tail()
    assert "Application shutdown complete." in server.log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/info/", timeout=5)
