"""MONAI Label app serving the monai_ext bundles: pass this folder as ``--app``.

Start it (with the ``label`` extra installed; see ``docs/monailabel.md``)::

    monailabel start_server --app "$(python -c 'import monai_ext.label as m; print(m.APP_DIR)')" \
        --studies /path/to/images --conf models ips_histogram --conf model_dir /path/to/label_models

Configuration (``--conf key value``):

- ``models``: bundle names separated by commas, or ``all`` (default): every bundle under ``bundles_dir`` with
  ``configs/inference.json`` and a ``configs/metadata.json`` whose first output is a ``segmentation``
  (:func:`monai_ext.label.bundles.list_label_bundles`).
- ``bundles_dir``: folder of the bundles (default: the ``bundles/`` folder of this checkout).
- ``model_dir``: where the served copies live, with their weights, training logs and checkpoints
  (default ``~/.cache/monai_ext/label``).

Each selected bundle becomes an infer task (MONAI Label's bundle loader: ``network_def``, ``preprocessing``,
``inferer``, ``postprocessing``; labels from ``channel_def``) and a train task that runs the bundle's own
``train.json`` on the images labelled in the datastore. No bundle is downloaded: MONAI Label's model-zoo lookup is
never called, so no ``--conf zoo_source`` is needed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import device_list, name_to_device

import monai_ext
from monai_ext.label.bundles import (
    MODEL_FILE,
    UNTRAINED_MARKER,
    default_bundles_dir,
    ensure_initial_weights,
    export_trained_weights,
    list_label_bundles,
    parse_train_request,
    prepare_bundle,
    select_bundles,
    write_datalist,
)

logger = logging.getLogger(__name__)

__all__ = ["MonaiExtLabelApp", "MonaiExtInferTask", "MonaiExtTrainTask", "Restore2Dd"]

_DEVICE_PREFIXES = ("cpu", "cuda")


def _check_device(value: Any, where: str) -> None:
    names = value if isinstance(value, list | tuple) else [value]
    for v in names:
        if not isinstance(v, str) or not (v.startswith(_DEVICE_PREFIXES) or v in device_list()):
            raise HTTPException(status_code=422, detail=f"{where}: 'device' must be 'cpu' or 'cuda[:N]', got {v!r}.")


class Restore2Dd:
    """Bring a 2D label back to the stored image's grid and to one 2D ``uint8`` plane for MONAI Label's writer.

    MONAI Label's ``Restored`` keeps a singleton channel on 2D results, which its writer then saves as a 1-pixel-high
    image; this replaces it for 2D bundles. A ``(1, W, H)`` or ``(W, H)`` label (MONAI's reader layout) is resized
    with nearest neighbour to the input's ``spatial_shape`` when the bundle's preprocessing changed the size.

    Args:
        key: the label key (the bundle's output key, usually ``pred``).
        ref_image: the image key whose metadata holds the original ``spatial_shape``.

    Raises:
        ValueError: when the label has several channels (2D bundles must end in a discrete label map).
    """

    def __init__(self, key: str, ref_image: str):
        self.key = key
        self.ref_image = ref_image

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        pred = d[self.key]
        pred = pred.detach().cpu() if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
        if pred.ndim == 3:
            if pred.shape[0] != 1:
                raise ValueError(f"2D label '{self.key}' must have one channel, got shape {tuple(pred.shape)}.")
            pred = pred[0]
        if pred.ndim != 2:
            raise ValueError(f"2D label '{self.key}' must be 2D after the channel, got shape {tuple(pred.shape)}.")
        ref = d.get(self.ref_image)
        meta = ref.meta if isinstance(ref, MetaTensor) else d.get(f"{self.ref_image}_meta_dict", {})
        shape = meta.get("spatial_shape")
        if shape is not None:
            shape = tuple(int(s) for s in np.asarray(shape).ravel()[-2:])
            if tuple(pred.shape) != shape:
                pred = torch.nn.functional.interpolate(pred[None, None].float(), size=shape, mode="nearest")[0, 0]
        d[self.key] = np.ascontiguousarray(pred.numpy().astype(np.uint8))
        return d


class MonaiExtInferTask(BundleInferTask):
    """MONAI Label's bundle infer task over a served copy of a monai_ext bundle.

    Additions to :class:`monailabel.tasks.infer.bundle.BundleInferTask`: 2D bundles end with :class:`Restore2Dd`
    (a label image of the stored image's size, written as PNG for PNG input) instead of MONAI Label's 3D restore;
    the bundle's ``Save*`` post-transforms are dropped (the label goes back in the answer, not to files); ``/info``
    says whether the weights are trained (``trained: false`` while ``models/.untrained`` exists).
    """

    def __init__(self, path: str, conf: dict[str, str]):
        with open(os.path.join(path, "configs", "metadata.json")) as f:
            image_fmt = next(iter(json.load(f)["network_data_format"]["inputs"].values()))
        self._is_2d = len(image_fmt.get("spatial_shape") or [0, 0, 0]) == 2
        super().__init__(path, conf, add_post_restore=not self._is_2d)
        self._untrained_marker = Path(path) / "models" / UNTRAINED_MARKER

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        # a server answers with the label; the bundle's Save* transforms (NIfTI, overlays) would write a file per
        # request under the served copy
        post = [t for t in super().post_transforms(data) if not type(t).__name__.startswith("Save")]
        if self._is_2d:
            post.append(Restore2Dd(self.key_pred, self.key_image))
        return post

    def info(self) -> dict[str, Any]:
        i = super().info()
        i["trained"] = not self._untrained_marker.exists()
        return i


class MonaiExtTrainTask(TrainTask):
    """Train a monai_ext bundle on the images labelled in MONAI Label, then serve the result.

    The labelled images (tag ``final``) are written as a Decathlon ``dataset.json`` and the bundle's own
    ``configs/train.json`` runs with the contract overrides ``bundle_root``, ``dataset_dir``, ``output_dir``,
    ``ckpt_dir``, ``epochs`` and ``device`` (see ``docs/monailabel.md``). The newest checkpoint it writes is checked
    against ``inference.json``'s ``network_def`` and becomes ``models/model.pt``; the infer task reloads it on the
    next request (MONAI Label compares the file time).

    Request options: ``max_epochs`` (int >= 1, default 1), ``val_split`` (float in [0, 1), default 0.2),
    ``device`` (default: CUDA when available, else CPU), ``bundle_overrides`` (other top-level ids of ``train.json``,
    e.g. ``{"batch_size": 16}``; not the contract ids above).
    """

    def __init__(self, path: str, name: str):
        self.bundle_path = path
        self.name = name
        with open(os.path.join(path, "configs", "metadata.json")) as f:
            meta = json.load(f)
        super().__init__(f"Train {name} ({meta.get('version', '?')}) on the labelled images with its train.json")

    def config(self) -> dict[str, Any]:
        return {"max_epochs": 1, "val_split": 0.2, "device": device_list()}

    def stats(self) -> dict[str, Any]:
        path = os.path.join(self.bundle_path, "models", "train_stats.json")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        configs = Path(self.bundle_path) / "configs"
        opts = parse_train_request(request, configs / "train.json")
        max_epochs, val_split, extra = opts["max_epochs"], opts["val_split"], opts["bundle_overrides"]
        device = name_to_device(request.get("device"))
        device = device if isinstance(device, str) else str(device)

        run_dir = Path(self.bundle_path) / "monailabel_runs" / f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
        datalist = write_datalist(datastore.datalist(), run_dir, val_fraction=val_split)
        ckpt_dir = run_dir / "checkpoints"
        logging_file = configs / "logging.conf"
        overrides = {
            "bundle_root": self.bundle_path,
            "dataset_dir": str(run_dir),
            "output_dir": str(run_dir / "outputs"),
            "ckpt_dir": str(ckpt_dir),
            "epochs": max_epochs,
            "device": device,
            **extra,
        }
        logger.info(f"Training {self.name}: {overrides}")
        start = time.time()
        from monai.bundle import run

        run(
            config_file=str(configs / "train.json"),
            meta_file=str(configs / "metadata.json"),
            logging_file=str(logging_file) if logging_file.is_file() else None,
            **overrides,
        )
        model = export_trained_weights(ckpt_dir, self.bundle_path)
        with open(datalist) as f:
            n_train = len(json.load(f)["training"])
        stats = {
            "name": self.name,
            "epochs": int(max_epochs),
            "total_time": round(time.time() - start, 1),
            "train_images": n_train,
            "device": device,
            "model": str(model),
            "run_dir": str(run_dir),
        }
        with open(Path(self.bundle_path) / "models" / "train_stats.json", "w") as f:
            json.dump(stats, f, indent=2)
        return stats


class MonaiExtLabelApp(MONAILabelApp):
    """MONAI Label app exposing the selected monai_ext bundles as infer and train tasks (see the module doc).

    Args:
        app_dir: this folder (MONAI Label passes ``--app``).
        studies: the datastore (a local folder of images, or a DICOMweb URL).
        conf: ``--conf`` pairs: ``models``, ``bundles_dir``, ``model_dir``.

    Raises:
        ValueError: when ``models`` names a bundle that is not in ``bundles_dir``.
        FileNotFoundError: when ``bundles_dir`` is missing.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        bundles_dir = Path(conf["bundles_dir"]) if conf.get("bundles_dir") else default_bundles_dir()
        model_dir = Path(conf.get("model_dir") or Path.home() / ".cache" / "monai_ext" / "label").expanduser()
        names = select_bundles(conf.get("models"), list_label_bundles(bundles_dir))
        self.served: dict[str, str] = {}
        for name in names:
            dst = prepare_bundle(bundles_dir / name, model_dir / name)
            if ensure_initial_weights(dst):
                logger.warning(f"{name}: no {MODEL_FILE}; serving seeded initial weights until /train/{name} runs")
            self.served[name] = str(dst)
        logger.info(f"Serving bundles {names} from {model_dir} (source {bundles_dir})")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_ext",
            description="monai_ext study bundles (iPS colony segmentation, ...) served from local bundles",
            version=monai_ext.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.served.items():
            task = MonaiExtInferTask(path, self.conf)
            if not task.is_valid():
                raise ValueError(f"bundle '{name}' at '{path}' cannot be served (see the log for the reason).")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: MonaiExtTrainTask(path, name)
            for name, path in self.served.items()
            if os.path.exists(os.path.join(path, "configs", "train.json"))
        }

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Check the request, then run MONAI Label's inference; a bad request is a 4xx, not a 500.

        Raises:
            HTTPException: 404 for an unknown model or an image that is neither a file nor in the datastore;
                422 for a bad ``device``.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; served: {sorted(self._infers)}.")
        image = request.get("image")
        if isinstance(image, str):
            store = datastore if datastore else self.datastore()
            if not image or (not os.path.exists(image) and not store.get_image_uri(image)):
                raise HTTPException(status_code=404, detail=f"image {image!r} is neither a file nor in the datastore.")
        if "device" in request:
            _check_device(request["device"], f"/infer/{model}")
        return super().infer(request, datastore)

    def bundle_path(self, model: str | None) -> str | None:
        """Bundle folder of ``model`` for MONAI Label's background tasks; rejects unknown models with a 404.

        MONAI Label calls this in the server process before it starts ``/train/<model>`` in the background, so the
        check answers the client at once instead of failing in the subprocess.
        """
        if model and model not in self._trainers and model not in self._infers:
            raise HTTPException(
                status_code=404, detail=f"unknown model {model!r}; trainable: {sorted(self._trainers)}."
            )
        return self.served.get(model) if model else None
