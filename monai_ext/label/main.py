"""MONAI Label app serving the monai_ext bundles: pass this folder as ``--app``.

Start it (with the ``label`` extra installed; see ``docs/monailabel.md``)::

    monailabel start_server --app "$(python -c 'import monai_ext.label as m; print(m.APP_DIR)')" \
        --studies /path/to/images --conf models ips_histogram --conf model_dir /path/to/label_models

Configuration (``--conf key value``):

- ``models``: bundle names separated by commas, or ``all`` (default): every segmentation bundle and every
  *trained* landmark bundle under ``bundles_dir`` (:func:`monai_ext.label.bundles.bundle_kind`). A landmark bundle
  without its checkpoint is left out of ``all`` with a warning in the log; naming it stops the start-up with a
  message naming the missing file.
- ``bundles_dir``: folder of the bundles (default: the ``bundles/`` folder of this checkout).
- ``model_dir``: where the served copies live, with their weights, training logs and checkpoints
  (default ``~/.cache/monai_ext/label``).
- ``<bundle>_ckpt_dir`` (landmark bundles, e.g. ``aneurysm_ckpt_dir``): the folder holding the checkpoint
  (``model.pt``) and priors its ``train.json`` wrote (default ``<bundles_dir>/<bundle>/models``, the bundle's own
  ``ckpt_dir``); they are copied into the served copy when it has none or they are newer.

Each segmentation bundle becomes an infer task (MONAI Label's bundle infer task, :class:`MonaiExtInferTask`:
``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``; labels from ``channel_def``). Each landmark
bundle becomes an infer task (:class:`MonaiExtLandmarkInferTask`: a label volume with a sphere per landmark, plus the
points), because MONAI Label's bundle infer task can only write the network's output as an image, while
localisation answers points found by a search around priors. Every bundle with a ``train.json`` is trained by MONAI
Label's stock ``BundleTrainTask`` (:class:`MonaiExtTrainTask` adds three checks and the run's stats). No bundle is
downloaded: MONAI Label's model-zoo lookup is never called, so no ``--conf zoo_source`` is needed.

Malformed requests get a 4xx answer with a message (:func:`install_request_checks`), not MONAI Label's 500.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.interfaces.utils.transform import run_transforms
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.transform.cache import CacheTransformDatad
from monailabel.transform.writer import Writer
from monailabel.utils.others.generic import device_list, file_ext, name_to_device

import monai_ext
from monai_ext.label.bundles import (
    MODEL_FILE,
    bundle_kind,
    default_bundles_dir,
    ensure_initial_weights,
    is_untrained,
    list_label_bundles,
    prepare_bundle,
    select_bundles,
)
from monai_ext.label.landmarks import (
    InvalidInferInput,
    LandmarkLocaliser,
    ModelNotTrained,
    landmark_model_files,
    missing_landmark_files,
    render_landmark_spheres,
)
from monai_ext.label.transforms import Restore2Dd, SqueezeSingletonAxisd, check_not_empty, input_error
from monai_ext.label.writer import write_label_image

logger = logging.getLogger(__name__)

__all__ = [
    "MonaiExtLabelApp",
    "MonaiExtInferTask",
    "MonaiExtLandmarkInferTask",
    "MonaiExtTrainTask",
    "LabelWriter",
    "Restore2Dd",
    "check_infer_request",
    "check_train_request",
    "install_request_checks",
]

_DEVICE_PREFIXES = ("cpu", "cuda")


def _check_device(value: Any, where: str) -> None:
    names = value if isinstance(value, list | tuple) else [value]
    for v in names:
        if not isinstance(v, str) or not (v.startswith(_DEVICE_PREFIXES) or v in device_list()):
            raise HTTPException(status_code=422, detail=f"{where}: 'device' must be 'cpu' or 'cuda[:N]', got {v!r}.")


class LabelWriter(Writer):
    """MONAI Label's :class:`~monailabel.transform.writer.Writer` with SimpleITK in place of ITK's Python wrapping.

    Same options (``result_extension``, ``result_dtype``, ``result_compress``, ``result_write_to_file``), same file
    name rules and the same files for single-channel labels (:func:`monai_ext.label.writer.write_label_image`), but
    no multi-second lazy loading of ITK's Python modules on the first request of a server process (the first
    ``ips_histogram`` request of a 660 x 550 image spent 2.7-6.9 s there on the loaded 2-core test VM, 8.5 s in a lab;
    ``benchmarks/bench_monailabel.py``). Multi-channel labels (``.seg.nrrd``) and
    the ``nibabel`` option go to MONAI Label's own code.
    """

    def __call__(self, data: dict[str, Any]) -> tuple[Any, Any]:
        label = data[self.label]
        image_np = label.array if isinstance(label, MetaTensor) else label
        path = data.get("image_path")
        ext = data.get(self.key_extension) or (file_ext(path) if path else None)
        write_to_file = data.get(self.key_write_to_file, True) and ext
        if not write_to_file or self.nibabel or self.is_multichannel_image(image_np):
            return super().__call__(data)
        meta_dict = data.get(f"{self.ref_image}_{self.meta_key_postfix}")
        affine = meta_dict.get("affine") if meta_dict else None
        if affine is None and isinstance(data[self.ref_image], MetaTensor):
            affine = data[self.ref_image].affine
        output_file = tempfile.NamedTemporaryFile(suffix=ext).name
        write_label_image(image_np, output_file, affine if len(image_np.shape) > 2 else None,
                          data.get(self.key_dtype), data.get(self.key_compress, False))
        return output_file, data.get(self.json, {})


class MonaiExtInferTask(BundleInferTask):
    """MONAI Label's bundle infer task over a served copy of a monai_ext bundle.

    Additions to :class:`monailabel.tasks.infer.bundle.BundleInferTask`:

    - 2D bundles take a 2D image stored as a 3D file with one singleton axis (an ``X x Y x 1`` NIfTI or NRRD, the
      usual ITK/Slicer layout; :class:`~monai_ext.label.transforms.SqueezeSingletonAxisd` after the bundle's
      ``EnsureChannelFirstd``) and end with :class:`~monai_ext.label.transforms.Restore2Dd` instead of MONAI Label's
      3D restore: a label of the stored image's size (written as PNG for PNG input), on the ``X x Y x 1`` grid and
      affine of such a file;
    - the pre-processing runs step by step, so that an image the bundle cannot take is answered with
      :class:`~monai_ext.label.landmarks.InvalidInferInput` (HTTP 422 naming the problem) instead of a bare 500: a
      file the loader cannot read or that is empty, an image without pixels, and what the bundle's own
      ``ValidateImaged`` refuses (NaN or infinite values, a wrong layout)
      (:func:`~monai_ext.label.transforms.input_error`);
    - the label is written by :class:`LabelWriter` (SimpleITK, no ITK lazy loading on the first request);
    - the bundle's ``Save*`` post-transforms are dropped (the label goes back in the answer, not to files);
    - ``/info`` says whether the weights are trained (``trained: false`` while ``models/model.pt`` is still the
      seeded initialisation, :func:`~monai_ext.label.bundles.is_untrained`).
    """

    def __init__(self, path: str, conf: dict[str, str]):
        with open(os.path.join(path, "configs", "metadata.json")) as f:
            image_fmt = next(iter(json.load(f)["network_data_format"]["inputs"].values()))
        self._is_2d = len(image_fmt.get("spatial_shape") or [0, 0, 0]) == 2
        super().__init__(path, conf, add_post_restore=not self._is_2d)

    def pre_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        pre = list(super().pre_transforms(data))
        if self._is_2d:  # after the first EnsureChannelFirstd: the squeeze needs the channel axis in front
            at = next((i for i, t in enumerate(pre) if isinstance(t, EnsureChannelFirstd)), None)
            if at is not None:
                pre.insert(at + 1, SqueezeSingletonAxisd(keys=self.key_image))
        return pre

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        if any(isinstance(t, CacheTransformDatad) for t in transforms):  # MONAI Label's cached path: unchanged
            return super().run_pre_transforms(data, transforms)
        image_path = data.get("image_path")
        for t in transforms:  # as MONAI Label (one run_transforms per step), knowing which step failed
            try:
                data = run_transforms(data, [t], log_prefix="PRE", use_compose=False)
            except Exception as e:
                invalid = input_error(t, e, image_path)
                if invalid is None:
                    raise
                raise invalid from e
            if isinstance(t, LoadImaged) or isinstance(getattr(t, "load_image_d", None), LoadImaged):
                check_not_empty(data, self.key_image, image_path)
        return data

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        # a server answers with the label; the bundle's Save* transforms (NIfTI, overlays) would write a file per
        # request under the served copy
        post = [t for t in super().post_transforms(data) if not type(t).__name__.startswith("Save")]
        if self._is_2d:
            post.append(Restore2Dd(self.key_pred, self.key_image))
        return post

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        if self.type in (InferType.CLASSIFICATION, InferType.DETECTION):  # MONAI Label's own writers, no image
            return super().writer(data, extension, dtype)
        if extension is not None:  # as BasicInferTask.writer
            data["result_extension"] = extension
        if dtype is not None:
            data["result_dtype"] = dtype
        if self.labels is not None:
            data["labels"] = self.labels
        return LabelWriter(label=self.output_label_key, json=self.output_json_key)(data)

    def info(self) -> dict[str, Any]:
        i = super().info()
        i["trained"] = not is_untrained(self.bundle_path)
        return i


class MonaiExtLandmarkInferTask(InferTask):
    """Landmark localisation of a landmark bundle (``aneurysm``), answered as a label volume plus the points.

    Input: a single-channel 3D volume (NIfTI, NRRD, ... anything MONAI's ``LoadImage`` reads), by datastore id or
    upload. The bundle's own preprocessing and :class:`~monai_ext.apps.aneurysm.TriPlanarPointInferer` localise every
    landmark (:class:`monai_ext.label.landmarks.LandmarkLocaliser`; weights and priors from ``ckpt_dir``, reloaded
    when they change on disk).

    Result (MONAI Label type ``segmentation``, so 3D Slicer loads it as a segmentation over the input):

    - the label file: a volume on the input's grid and affine, ``0`` background and a solid sphere of
      ``sphere_radius`` voxels around each landmark valued with its class (:func:`render_landmark_spheres`;
      ``uint8``), in the input's format or the ``result_extension`` the client asks for (Slicer: ``.nrrd``);
    - the result JSON (``params``): ``landmarks`` (``name``, ``label``, ``position`` in RAS world mm, ``voxel``
      0-based voxel coordinates of the input, ``probability`` the classifier's peak), ``coordinate_system``,
      ``units``, ``sphere_radius``, ``label_names`` (name -> value) and ``latencies``.

    Request options (validated; a bad one is answered with 422): ``sphere_radius`` (voxels, > 0, default 2),
    ``search_radius``, ``search_step``, ``refine_radius`` (voxels; defaults from ``inference.json``), ``device``.
    When the checkpoint or priors file disappears while the server runs, requests get 503 naming the file and
    ``/info`` leaves the model out (MONAI Label lists valid models only), until the files are back; a replaced
    checkpoint that does not fit ``network_def`` shows as ``trained: false`` with the reason in ``/info``.

    Args:
        path: the served copy of the bundle.
        name: the model name.
        ckpt_dir: folder of the checkpoint and priors.

    Raises:
        ModelNotTrained: the checkpoint or priors is missing.
        ValueError: the checkpoint does not fit the bundle's ``network_def``.
    """

    def __init__(self, path: str, name: str, ckpt_dir: str | os.PathLike):
        self.name = name
        self.localiser = LandmarkLocaliser(path, ckpt_dir)
        defaults = {k: self.localiser.inferer_args[k] for k in ("search_radius", "search_step", "refine_radius")}
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=self.localiser.labels,
            dimension=3,
            description=f"{name}: 3D landmark localisation; a label volume with a sphere per landmark (value = "
            "landmark class) and the points (RAS mm and voxel) in the result JSON",
            config={"device": device_list(), "sphere_radius": 2.0, **defaults},
        )

    def is_valid(self) -> bool:
        return self.localiser.ckpt_path.is_file() and self.localiser.priors_path.is_file()

    def info(self) -> dict[str, Any]:
        i = super().info()
        try:  # picks up a checkpoint retrained while the server runs (two file stats when nothing changed)
            self.localiser.reload()
            i["trained"] = True
        except (ModelNotTrained, ValueError) as e:
            i["trained"], i["error"] = False, str(e)
        i["labels"] = self.localiser.labels
        i["checkpoint"] = str(self.localiser.ckpt_path)
        return i

    @staticmethod
    def _number(request: dict[str, Any], key: str, positive: bool) -> float:
        v = request[key]
        if isinstance(v, str):  # Slicer sends option values typed in its UI as text
            try:
                v = float(v)
            except ValueError:
                pass
        bad = isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v)
        if bad or v < 0 or (positive and v == 0):
            raise InvalidInferInput(f"{key} must be a number {'> 0' if positive else '>= 0'} (voxels), got {v!r}.")
        return float(v)

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        begin = time.time()
        req = {**self.config(), **request}
        image_path = req.get("image")
        if not isinstance(image_path, str) or not os.path.exists(image_path):
            raise InvalidInferInput(f"model '{self.name}' needs an image file, got {image_path!r}.")
        radius = self._number(req, "sphere_radius", positive=True)
        search = {k: self._number(req, k, positive=k == "search_step") for k in ("search_radius", "search_step",
                                                                               "refine_radius")}
        device = name_to_device(req.get("device"))
        image = self.localiser.load_image(image_path)
        loaded = time.time()
        result = self.localiser.localise(image, device if isinstance(device, str) else str(device), **search)
        localised = time.time()
        points = result["landmarks"]
        label = render_landmark_spheres(
            image.shape[1:], [p["voxel"] for p in points], [p["label"] for p in points], radius=radius
        )
        data = {
            "image_path": image_path,
            "pred": MetaTensor(label, affine=image.affine),
            "result": result,
            **{k: req[k] for k in ("result_extension", "result_dtype", "result_compress") if k in req},
        }
        if os.path.isdir(image_path) and not data.get("result_extension"):  # a DICOM series has no extension to keep
            data["result_extension"] = ".nii.gz"
        label_file, result_json = Writer(label="pred", json="result")(data)
        result_json.update(
            sphere_radius=radius,
            label_names=self.localiser.labels,
            latencies={"pre": round(loaded - begin, 2), "infer": round(localised - loaded, 2),
                       "write": round(time.time() - localised, 2), "total": round(time.time() - begin, 2)},
        )
        logger.info(f"{self.name}: {len(points)} landmarks in {result_json['latencies']['total']} s -> {label_file}")
        return label_file, result_json


class MonaiExtTrainTask(BundleTrainTask):
    """MONAI Label's stock :class:`~monailabel.tasks.train.bundle.BundleTrainTask` with three checks and run stats.

    The training itself is the stock task's: the bundle's ``train.json`` runs (``monai.bundle.run``, ``init_id=None``)
    with ``bundle_root`` = the served copy, ``train#trainer#max_epochs``, ``train#dataset#data`` and
    ``validate#dataset#data`` = MONAI Label's labelled ``{"image", "label"}`` items split by ``val_split``,
    ``device``, and a ``CheckpointLoader`` of ``models/model.pt`` prepended to ``train#handlers`` (``pretrained``,
    default true: training continues from the served weights). The bundle's own ``CheckpointSaver`` writes the best
    model to ``models/model.pt`` (a bare ``state_dict``), which the infer task reloads on its next request. Our
    bundles train this way unchanged (their ``TrainingStateLoader`` starts a new run when the saved state is of a
    finished one); the tests run the unsubclassed stock task on them.

    What this subclass adds, each for a case where the stock task fails late or silently:

    - **validation is never empty**: with one or two labelled images (``val_split`` 0.2) or ``val_split: 0`` the
      stock split holds out nothing and sets ``validate#dataset#data`` to ``[]``; MONAI's evaluator then skips
      validation, no key metric is computed, the best-model saver never writes, and the request "succeeds" with the
      old weights. Here the training images are validated on instead (logged). ``val_split < 0`` keeps the stock
      meaning (the bundle's own validation data).
    - **request checks** before anything runs: ``max_epochs`` an integer >= 1, ``val_split`` a number < 1, at least
      one labelled image (the stock task would train on an empty list and report success); a bad request ends the
      background task with ``ERROR`` and a message naming the option.
    - **stats**: the run's epochs, time, image counts, device and whether ``models/model.pt`` was written go to
      ``models/train_stats.json`` and appear under ``train_stats`` in ``/info`` (the stock bundle task reports none).

    Args:
        path: the served copy of the bundle.
        conf: the app's ``--conf`` values.
        name: the model name.
    """

    STATS_FILE = "train_stats.json"

    def __init__(self, path: str, conf: dict[str, str], name: str):
        super().__init__(path, conf)
        self.name = name

    def stats(self) -> dict[str, Any]:
        path = os.path.join(self.bundle_path, "models", self.STATS_FILE)
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    @staticmethod
    def check_request(request: dict[str, Any], num_labelled: int) -> None:
        """Raise ``ValueError`` naming the first bad option of ``request`` (see the class doc)."""
        max_epochs = request.get("max_epochs", 50)
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}.")
        val_split = request.get("val_split", 0.2)
        if isinstance(val_split, bool) or not isinstance(val_split, int | float) or not val_split < 1:
            raise ValueError(f"val_split must be a number < 1 (< 0: the bundle's own validation data), got "
                             f"{val_split!r}.")
        if num_labelled == 0:
            raise ValueError("no labelled images to train on: save at least one final label first.")

    def _partition_datalist(self, datalist: list[dict], request: dict[str, Any], shuffle: bool = False):
        train, val = super()._partition_datalist(datalist, request, shuffle)
        if val is not None and not val:
            logger.warning(f"{self.name}: val_split {request.get('val_split', 0.2)} holds out none of {len(train)} "
                           "labelled image(s); validating on the training images")
            val = list(train)
        self._counts = (len(train), len(val) if val is not None else None)
        return train, val

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        self.check_request(request, len(self._fetch_datalist(request, datastore)))
        model = Path(self.bundle_path) / "models" / MODEL_FILE
        before = model.stat().st_mtime_ns if model.is_file() else None
        start = time.time()
        super().__call__(request, datastore)
        n_train, n_val = getattr(self, "_counts", (None, None))
        stats = {
            "name": self.name,
            "epochs": int(request.get("max_epochs", 50)),
            "total_time": round(time.time() - start, 1),
            "train_images": n_train,
            "val_images": n_val,
            "device": str(name_to_device(request.get("device", "cuda"))),
            "model": str(model),
            "model_updated": model.is_file() and model.stat().st_mtime_ns != before,
        }
        with open(model.parent / self.STATS_FILE, "w") as f:
            json.dump(stats, f, indent=2)
        return stats


def _served_app() -> MonaiExtLabelApp | None:
    from monailabel.interfaces.utils.app import app_instance

    app = app_instance()
    return app if isinstance(app, MonaiExtLabelApp) else None


def check_infer_request(
    model: str,
    image: str = "",
    session_id: str = "",
    params: Annotated[str, Form()] = "{}",
    file: Annotated[UploadFile | None, File()] = None,
    output: str | None = None,
) -> None:
    """FastAPI dependency run before MONAI Label's ``POST /infer/{model}``: reject a malformed request with a 4xx.

    MONAI Label 0.8.5 answers a request with neither ``image`` nor ``file`` with a 500 of its own, and a ``params``
    form field that is not JSON with an unhandled ``JSONDecodeError`` (500); this check answers both first.

    Raises:
        HTTPException: 404 for a model the app does not serve; 422 when neither ``image``, ``file`` nor
            ``session_id`` is given, ``params`` is not a JSON object, or ``output=dicom_seg`` is asked of a datastore
            that is not DICOMweb (MONAI Label answers that with a 500 after running the model).
    """
    app = _served_app()
    if app is not None and model not in app.infer_models:
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}; served: {sorted(app.infer_models)}.")
    if not image and not session_id and not file:
        raise HTTPException(
            status_code=422,
            detail=f"/infer/{model} needs an image: an image id (?image=<id>) or an uploaded file (form field "
            "'file'); neither was given.",
        )
    try:
        p = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        raise HTTPException(
            status_code=422, detail=f"params must be a JSON object, got {params[:80]!r} (not JSON: {e})."
        ) from e
    if not isinstance(p, dict):
        raise HTTPException(status_code=422, detail=f"params must be a JSON object, got {type(p).__name__}.")
    if output == "dicom_seg" and app is not None:
        from monailabel.datastore.dicom import DICOMWebDatastore

        if not isinstance(app.datastore(), DICOMWebDatastore):
            raise HTTPException(
                status_code=422,
                detail="output=dicom_seg needs a DICOMweb datastore (--studies http://...); this one is a local "
                "folder: ask for output=image, json or all.",
            )


def check_train_request(model: str) -> None:
    """FastAPI dependency run before MONAI Label's ``POST /train/{model}``: 404 for a model without a train task.

    Without it the request is accepted and the background task fails later.

    Raises:
        HTTPException: 404 naming the trainable models.
    """
    app = _served_app()
    if app is not None and model not in app.train_models:
        hint = " (served for inference only: it has no configs/train.json)" if model in app.infer_models else ""
        trainable = sorted(app.train_models)
        detail = f"unknown model {model!r} for training{hint}; trainable: {trainable}."
        raise HTTPException(status_code=404, detail=detail)


_CHECKS = {("POST", "/infer/{model}"): check_infer_request, ("POST", "/train/{model}"): check_train_request}
_IN_WORKER_THREAD = {("POST", "/infer/{model}")}


def run_in_worker_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A synchronous version of an ``async def`` endpoint that never awaits, for FastAPI to run in its thread pool.

    MONAI Label 0.8.5 declares ``POST /infer/{model}`` as ``async def`` but runs the whole inference synchronously
    inside it (``run_inference`` -> ``app.infer``; with ``MONAI_LABEL_INFER_CONCURRENCY`` it waits on a thread's
    result, which blocks just the same). The coroutine therefore occupies the server's only event loop for as long as
    the inference lasts, and every other request, ``/info`` included, waits (3D Slicer froze for up to 25 s). FastAPI
    runs plain ``def`` endpoints in a worker thread instead; this wrapper is such an endpoint with the original's
    signature (so FastAPI reads the same parameters and dependencies) and drives the original coroutine to completion
    on a private event loop in that thread. A plain ``def`` endpoint is returned unchanged.
    """
    if not inspect.iscoroutinefunction(endpoint):
        return endpoint

    def endpoint_in_thread(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(endpoint(*args, **kwargs))

    # not functools.wraps: FastAPI follows __wrapped__ and would await the wrapper as a coroutine again
    endpoint_in_thread.__signature__ = inspect.signature(endpoint)  # type: ignore[attr-defined]
    endpoint_in_thread.__name__ = endpoint.__name__
    endpoint_in_thread.__doc__ = endpoint.__doc__
    return endpoint_in_thread


def install_request_checks(app: FastAPI, prefix: str = "") -> list[str]:
    """Put :func:`check_infer_request` and :func:`check_train_request` in front of MONAI Label's endpoints.

    MONAI Label builds its FastAPI app (``monailabel.app:app``) and starts serving it before it creates the MONAI
    Label app, so neither middleware nor exception handlers can be added any more. Instead, for each checked
    endpoint, a route with the same path, method and endpoint function but the check as its first dependency is
    put first in the app's route list; the router matches routes in order, so the request reaches MONAI Label's
    endpoint only after the check (FastAPI runs dependencies before the endpoint and answers their
    ``HTTPException``). The ``/infer/{model}`` endpoint is also moved off the event loop
    (:func:`run_in_worker_thread`), so that ``/info`` and the other requests are answered while an inference runs.
    Calling it again does nothing.

    Args:
        app: MONAI Label's FastAPI app.
        prefix: MONAI Label's API prefix (``settings.MONAI_LABEL_API_STR``).

    Returns:
        The paths that got a check.
    """
    if any(getattr(r, "monai_ext_checked", False) for r in app.router.routes):
        return []
    candidates: list[tuple[APIRoute, str]] = []
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            candidates.append((route, ""))
        included = getattr(route, "original_router", None)  # FastAPI >= 0.130 keeps included routers as a unit
        if included is not None:
            candidates += [(r, prefix) for r in included.routes if isinstance(r, APIRoute)]
    checked = []
    for route, route_prefix in candidates:
        path = route_prefix + route.path
        for (method, checked_path), check in _CHECKS.items():
            if path != prefix + checked_path or method not in route.methods:
                continue
            endpoint = route.endpoint
            if (method, checked_path) in _IN_WORKER_THREAD:
                endpoint = run_in_worker_thread(endpoint)
            new = APIRoute(
                path,
                endpoint,
                methods=[method],
                dependencies=[Depends(check), *route.dependencies],
                name=route.name,
                summary=route.summary,
                description=route.description,
                tags=route.tags,
                responses=route.responses,
                response_model=route.response_model,
                status_code=route.status_code,
                response_class=route.response_class,
                include_in_schema=False,  # MONAI Label's own route still documents the endpoint
            )
            new.monai_ext_checked = True
            app.router.routes.insert(0, new)
            checked.append(path)
    return checked


class MonaiExtLabelApp(MONAILabelApp):
    """MONAI Label app exposing the selected monai_ext bundles as infer and train tasks (see the module doc).

    Args:
        app_dir: this folder (MONAI Label passes ``--app``).
        studies: the datastore (a local folder of images, or a DICOMweb URL).
        conf: ``--conf`` pairs: ``models``, ``bundles_dir``, ``model_dir``, ``<bundle>_ckpt_dir``.

    Raises:
        ValueError: when ``models`` names a bundle that is not in ``bundles_dir``, or names a landmark bundle whose
            checkpoint or priors file is missing (the message names the files and the training command).
        FileNotFoundError: when ``bundles_dir`` is missing.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        bundles_dir = Path(conf["bundles_dir"]) if conf.get("bundles_dir") else default_bundles_dir()
        model_dir = Path(conf.get("model_dir") or Path.home() / ".cache" / "monai_ext" / "label").expanduser()
        selection = conf.get("models")
        names = select_bundles(selection, list_label_bundles(bundles_dir))
        explicit = not (selection is None or selection.strip().lower() in ("", "all"))
        self._infer_lock = threading.Lock()
        self.served: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.ckpt_dirs: dict[str, Path] = {}
        for name in names:
            src = bundles_dir / name
            kind = bundle_kind(src)
            if kind == "landmarks":  # trained weights and priors are copied in (no seeded placeholder: no priors)
                ckpt_dir = Path(conf.get(f"{name}_ckpt_dir") or src / "models").expanduser()
                dst = model_dir / name
                missing = [p for p in missing_landmark_files(src, ckpt_dir)
                           if not (dst / "models" / p.name).is_file()]
                if missing:
                    msg = (
                        f"{name}: no trained landmark model, missing {[str(m) for m in missing]}; train it with "
                        f"python -m monai.bundle run --config_file {src / 'configs' / 'train.json'} (or point "
                        f"--conf {name}_ckpt_dir at the folder holding them)"
                    )
                    if explicit:
                        raise ValueError(msg + ".")
                    logger.warning(msg + f"; {name} is not served.")
                    continue
                dst = prepare_bundle(src, dst, model_files=landmark_model_files(src, ckpt_dir))
                self.ckpt_dirs[name] = dst / "models"
            else:
                dst = prepare_bundle(src, model_dir / name)
                if ensure_initial_weights(dst):
                    logger.warning(f"{name}: no {MODEL_FILE}; serving seeded initial weights until /train/{name} runs")
            self.served[name] = str(dst)
            self.kinds[name] = str(kind)
        logger.info(f"Serving bundles {list(self.served)} from {model_dir} (source {bundles_dir})")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_ext",
            description="monai_ext study bundles (iPS colony segmentation, aneurysm landmarks, ...) served from local "
            "bundles",
            version=monai_ext.__version__,
        )
        fastapi_app = sys.modules.get("monailabel.app")  # present in the server process only, not in train tasks
        if fastapi_app is not None and isinstance(getattr(fastapi_app, "app", None), FastAPI):
            from monailabel.config import settings

            checked = install_request_checks(fastapi_app.app, settings.MONAI_LABEL_API_STR)
            logger.info(f"request checks in front of {checked}")

    @property
    def infer_models(self) -> list[str]:
        """Names of the infer tasks."""
        return list(self._infers)

    @property
    def train_models(self) -> list[str]:
        """Names of the train tasks."""
        return list(self._trainers)

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.served.items():
            if self.kinds[name] == "landmarks":
                infers[name] = MonaiExtLandmarkInferTask(path, name, self.ckpt_dirs[name])
                continue
            task = MonaiExtInferTask(path, self.conf)
            if not task.is_valid():
                raise ValueError(f"bundle '{name}' at '{path}' cannot be served (see the log for the reason).")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            name: MonaiExtTrainTask(path, self.conf, name)
            for name, path in self.served.items()
            if os.path.exists(os.path.join(path, "configs", "train.json"))
        }

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Check the request, then run MONAI Label's inference; a bad request is a 4xx, not a 500.

        Requests arrive in FastAPI's worker threads (:func:`run_in_worker_thread`); one inference runs at a time (a
        lock: the tasks cache their networks and bundle configs and are not written for concurrent calls), while
        ``/info`` and the other requests are answered on the event loop without waiting for it.

        Raises:
            HTTPException: 404 for an unknown model or an image that is neither a file nor in the datastore;
                422 for a bad ``device`` or input the model cannot take (:class:`InvalidInferInput`, e.g. a 2D image
                for a 3D model); 503 when a landmark model's files have gone (:class:`ModelNotTrained`).
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
        try:
            with self._infer_lock:
                return super().infer(request, datastore)
        except InvalidInferInput as e:
            raise HTTPException(status_code=422, detail=f"/infer/{model}: {e}") from e
        except ModelNotTrained as e:
            raise HTTPException(status_code=503, detail=f"/infer/{model}: {e}") from e

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
