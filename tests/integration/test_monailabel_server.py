"""The MONAI Label app over HTTP: a real server on 127.0.0.1, a studies folder of generated images.

Needs the ``label`` extra (``tox -e label`` or ``.ci/label_tests.sh``); skipped where ``monailabel`` is missing.
The server serves two kinds of bundle at once from a temporary ``bundles_dir``:

- ``tiny_seg``: a 2D BasicUNet bundle written by this file (a few kB, trains in a second) that proves the app's
  generic bundle contract on its own;
- the repository's ``ips_histogram`` bundle when it exists (copied, never modified), with its own synthetic images.

One server for the whole module (start-up costs ~10 s of CPU); every request has a bounded timeout and the server is
terminated in the fixture's finalizer whatever happens.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
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
TIMEOUT = 60  # seconds, for one HTTP request
START_TIMEOUT = 180  # seconds, for the server to answer /info
TRAIN_TIMEOUT = 300  # seconds, for one train task
TINY_LABELS = {"0": "background", "1": "good colony", "2": "bad colony"}
IMAGE_HW = (48, 64)  # not square, so a transposed result cannot pass


def _write_tiny_bundle(root: Path) -> None:
    """A minimal bundle following our contract (inference.json + train.json with the contract ids)."""
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
    train = {
        "imports": ["$import torch", "$import json", "$import os"],
        "bundle_root": ".",
        "dataset_dir": None,
        "output_dir": "$@bundle_root + '/outputs'",
        "ckpt_dir": "$@bundle_root + '/models'",
        "device": "cpu",
        "epochs": 1,
        "seed": 0,
        "network_def": net,
        "network": "$@network_def.to(@device)",
        "datalist": "$json.load(open(os.path.join(@dataset_dir, 'dataset.json')))['training']",
        "transforms": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": ["image", "label"], "reader": "PILReader"},
                {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
                {"_target_": "ScaleIntensityd", "keys": "image"},
                {"_target_": "RandSpatialCropd", "keys": ["image", "label"], "roi_size": [32, 32]},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@transforms"},
        "loader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 2, "num_workers": 0},
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
        "trainer": {
            "_target_": "SupervisedTrainer",
            "device": "@device",
            "max_epochs": "@epochs",
            "train_data_loader": "@loader",
            "network": "@network",
            "optimizer": "@optimizer",
            "loss_function": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
            "train_handlers": [
                {
                    "_target_": "CheckpointSaver",
                    "save_dir": "@ckpt_dir",
                    "save_dict": {"model": "@network"},
                    "save_final": True,
                }
            ],
        },
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@trainer.run()"],
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
    for name, obj in (("inference", inference), ("train", train), ("metadata", metadata)):
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel")
    studies = root / "studies"
    studies.mkdir()
    (root / "bundles").mkdir()
    _write_tiny_bundle(root / "bundles" / "tiny_seg")
    labels = _tiny_images(studies)
    models = ["tiny_seg"]
    if HAS_IPS:  # served from a link: the app copies it into model_dir and never writes into the repository
        (root / "bundles" / "ips_histogram").symlink_to(IPS_BUNDLE, target_is_directory=True)
        labels.update(_ips_images(studies, root / "ips_data"))
        models.append("ips_histogram")
    aneurysm = REPO / "bundles" / "aneurysm"
    if aneurysm.is_dir():  # a point/probability bundle: "models all" must leave it out rather than fail on it
        (root / "bundles" / "aneurysm").symlink_to(aneurysm, target_is_directory=True)
    srv = Server(root, models)
    srv.labels = labels
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
    for image_id in image_ids:
        files = {"label": (f"{image_id}.png", _png_bytes(server.labels[image_id]), "image/png")}
        r = server.put(f"/datastore/label?image={image_id}&tag=final", files=files)
        assert r.status_code == 200, r.text


def test_info_lists_models_and_labels(server):
    info = server.get("/info/").json()
    assert sorted(info["models"]) == sorted(server.models)  # "--conf models all": segmentation bundles only
    for m in server.models:
        assert m in info["models"], f"{m} missing from /info models {list(info['models'])}"
        assert m in info["trainers"]
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
    assert info["datastore"]["total"] == len(server.labels)
    assert sorted(server.get("/datastore/?output=all").json()["objects"]) == sorted(server.labels)


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


@pytest.mark.parametrize(
    "method, path, kwargs, status, match",
    [
        ("post", "/infer/no_such_model?image=tiny_0", {}, 404, "unknown model 'no_such_model'"),
        ("post", "/infer/tiny_seg?image=no_such_image", {}, 404, "image 'no_such_image' is neither"),
        ("post", "/infer/tiny_seg?image=tiny_0", {"data": {"params": '{"device": "gpu7"}'}}, 422, "'device' must"),
        ("post", "/train/no_such_model", {"json": {"max_epochs": 1}}, 404, "unknown model 'no_such_model'"),
        ("get", "/datastore/image?image=no_such_image", {}, 404, "Image NOT Found"),
    ],
)
def test_bad_requests_get_4xx(server, method, path, kwargs, status, match):
    r = getattr(server, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert match in r.json()["detail"]
    assert server.get("/info/").status_code == 200  # still serving


@pytest.mark.parametrize(
    "path, kwargs",
    [
        ("/infer/tiny_seg", {}),  # neither image nor file: MONAI Label's endpoint answers 500 itself
        ("/infer/tiny_seg?image=tiny_0", {"data": {"params": "{not json"}}),  # parsed by MONAI Label before the app
    ],
)
def test_requests_rejected_upstream_do_not_crash(server, path, kwargs):
    """Two malformed requests never reach the app: MONAI Label 0.8.5 answers them with 500 (see docs)."""
    r = server.post(path, **kwargs)
    assert r.status_code >= 400
    assert server.proc.poll() is None
    assert server.get("/info/").status_code == 200


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
    """The real bundle's own workflow (IPSHistogramWorkflow) trained from MONAI Label on two saved labels."""
    _save_final_labels(server, ("ips_case_000", "ips_case_001"))
    weights = server.model_dir / "ips_histogram" / "models" / "model.pt"
    before = weights.stat().st_mtime_ns
    small = {"num_patches": 64, "batch_size": 16}  # keep the CPU run short; every other setting is the bundle's
    st = _train(server, "ips_histogram", max_epochs=1, val_split=0.5, device="cpu", bundle_overrides=small)
    assert st["status"] == "DONE", "\n".join(st.get("details", []))
    assert weights.stat().st_mtime_ns > before
    info = server.get("/info/").json()
    assert info["models"]["ips_histogram"]["trained"] is True
    assert info["train_stats"]["ips_histogram"]["epochs"] == 1
    pred = _infer_png(server, "ips_histogram", "ips_case_002")
    assert pred.shape == (IPS_SIZE, IPS_SIZE)
    assert set(np.unique(pred).tolist()) <= {0, 1, 2}
    assert not (IPS_BUNDLE / "monailabel_runs").exists()  # the repository's bundle folder is left alone


def test_server_stops_cleanly(server):
    rc = server.stop()
    # uvicorn >= 0.29 finishes its graceful shutdown, then re-raises SIGTERM: -15 is a clean stop as well as 0
    assert rc in (0, -signal.SIGTERM), server.log_tail()
    assert "Application shutdown complete." in server.log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/info/", timeout=5)
