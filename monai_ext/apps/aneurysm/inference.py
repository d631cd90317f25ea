"""Inference of the aneurysm bundle: classify given points, or localise every landmark in a new volume.

``inference.json`` wires :class:`TriPlanarPointInferer` (the bundle's ``inferer``) and :class:`AneurysmInference`
(its ``evaluator``). Landmark localisation needs the search priors written at training time
(``landmark_priors.json``: mean training position of every landmark in world mm), so it works on volumes with any
grid as long as they are roughly aligned with the training data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_ext.transforms import TriPlanarPatch
from monai_ext.utils import default_device, load_checkpoint

from .evaluation import localise_landmarks
from .landmarks import PointSet, points_to_voxels, read_points, write_points_json

__all__ = ["TriPlanarPointInferer", "AneurysmInference", "save_priors", "load_priors", "write_landmark_priors",
           "LandmarkPriorsWriter"]

logger = logging.getLogger(__name__)


def save_priors(cases: Sequence[Any], names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write the mean world (RAS mm) position of every landmark over ``cases`` (:class:`~.data.Case`) as JSON."""
    world = {k: [] for k in range(1, len(names) + 1)}
    for c in cases:
        pts = (c.affine @ np.c_[c.landmarks, np.ones(len(c.landmarks))].T).T[:, :3]
        for p, lab in zip(pts, c.landmark_labels, strict=False):
            world[int(lab)].append(p)
    points = PointSet([names[k - 1] for k in world if world[k]], [k for k in world if world[k]],
                      np.array([np.mean(world[k], 0) for k in world if world[k]]).reshape(-1, 3))
    return write_points_json(points, path)


def write_landmark_priors(datalist: str | os.PathLike, path: str | os.PathLike, section: str = "training",
                          match_by_label: bool = False) -> Path:
    """:func:`save_priors` of a datalist section (what ``train.json`` writes next to ``models/model.pt``, for
    localisation at inference). Under ``torch.distributed`` only rank 0 writes."""
    import torch.distributed as dist

    from .data import landmark_names_of, load_cases

    path = Path(path)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return path
    names = landmark_names_of(datalist)
    return save_priors(load_cases(datalist, section, names, match_by_label=match_by_label), names, path)


class LandmarkPriorsWriter:
    """Ignite handler writing the landmark priors of the *training data* when training starts (``train.json``'s
    handlers), so that ``models/`` holds what localisation at inference needs next to ``model.pt``.

    The priors are the mean world (RAS mm) position of each landmark over ``data`` (the trainer's datalist: the
    bundle's own data, or the labelled images MONAI Label passes as ``train#dataset#data``), read with ``loader``
    (the bundle's :class:`~monai_ext.apps.aneurysm.LoadLandmarkCased`, which also accepts landmark label volumes).
    Under ``torch.distributed`` only rank 0 writes.

    Args:
        data: datalist items.
        loader: dictionary transform giving ``image`` (with its affine), ``points`` (voxels) and ``point_labels``.
        names: landmark names (class ``k`` is ``names[k - 1]``).
        path: the priors file (``<ckpt_dir>/landmark_priors.json``).

    Raises:
        ValueError: when ``data`` is empty.
    """

    def __init__(self, data: Sequence[dict[str, Any]], loader: Callable[[dict[str, Any]], dict[str, Any]],
                 names: Sequence[str], path: str | os.PathLike) -> None:
        self.data, self.loader, self.names, self.path = list(data), loader, list(names), Path(path)
        if not self.data:
            raise ValueError("LandmarkPriorsWriter needs at least one training item.")

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def priors(self) -> PointSet:
        """Mean world position of every landmark present in the data."""
        world: dict[int, list[np.ndarray]] = {k: [] for k in range(1, len(self.names) + 1)}
        for item in self.data:
            d = self.loader(dict(item))
            affine = np.asarray(d["image"].affine, dtype=np.float64)
            pts = (affine @ np.c_[np.asarray(d["points"]), np.ones(len(d["points"]))].T).T[:, :3]
            for p, lab in zip(pts, np.asarray(d["point_labels"]), strict=True):
                world[int(lab)].append(p)
        present = [k for k in world if world[k]]
        return PointSet([self.names[k - 1] for k in present], present,
                        np.array([np.mean(world[k], 0) for k in present]).reshape(-1, 3))

    def __call__(self, engine: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        write_points_json(self.priors(), self.path)


def load_priors(path: str | os.PathLike) -> PointSet:
    """Read the priors written by :func:`save_priors`."""
    return read_points(path)


class TriPlanarPointInferer(Inferer):
    """Tri-planar patch inference at points: class probabilities at given points, or landmark localisation.

    ``mode="classify"``: ``inferer(image, network, points=(N, 3) voxel)`` returns ``(N, num_classes)``
    softmax probabilities of the patches centred on the points (landmark classes for the landmark network, or
    normal/aneurysm for the fine-tuned ``aneurysm_net.pt``).

    ``mode="localise"``: ``inferer(image, network, priors=(L, 3) voxel, labels=(L,))`` returns ``(L, 4)``: the
    predicted voxel position of every landmark and its peak probability
    (:func:`~monai_ext.apps.aneurysm.evaluation.localise_landmarks`).

    Args:
        mode: ``"classify"`` or ``"localise"``.
        patch_size: plane side used in training.
        extent_mm: physical plane side used in training.
        search_radius: localisation search half side (voxels).
        search_step: coarse localisation grid step (voxels).
        refine_radius: half side of the unit-step refinement cube (voxels).
        batch_size: patches per forward pass.

    Raises:
        ValueError: for an unknown ``mode``, or missing points/priors at call time.
    """

    def __init__(self, mode: str = "localise", patch_size: int = 32, extent_mm: float | None = None,
                 search_radius: float = 10.0, search_step: float = 3.0, refine_radius: float = 2.0,
                 batch_size: int = 512) -> None:
        super().__init__()
        if mode not in ("classify", "localise"):
            raise ValueError(f"mode must be 'classify' or 'localise', got {mode!r}.")
        self.mode, self.patch_size, self.extent_mm = mode, int(patch_size), extent_mm
        self.search_radius, self.search_step, self.batch_size = float(search_radius), float(search_step), batch_size
        self.refine_radius = float(refine_radius)

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any,
                 points: np.ndarray | None = None, priors: np.ndarray | None = None,
                 labels: Sequence[int] | None = None, **kwargs: Any) -> torch.Tensor:
        image = inputs[0] if inputs.ndim == 5 else inputs  # a batch of one volume is accepted
        device = next(network.parameters()).device if isinstance(network, nn.Module) else torch.device("cpu")
        if self.mode == "classify":
            if points is None or len(points) == 0:
                raise ValueError("mode='classify' needs points=(N, 3) voxel coordinates.")
            patcher = TriPlanarPatch(self.patch_size, self.extent_mm)
            out = []
            for i in range(0, len(points), self.batch_size):
                x = torch.as_tensor(patcher(image, np.asarray(points)[i : i + self.batch_size])).float().to(device)
                out.append(torch.softmax(network(x).float(), 1).cpu())
            return torch.cat(out)
        if priors is None or labels is None:
            raise ValueError("mode='localise' needs priors=(L, 3) voxel positions and labels=(L,).")
        pos, peak = localise_landmarks(network, image, priors, labels, device, self.search_radius, self.search_step,
                                       self.patch_size, self.extent_mm, self.batch_size, self.refine_radius)
        return torch.as_tensor(np.c_[pos, peak])


class AneurysmInference:
    """Run :class:`TriPlanarPointInferer` over a list of items and write one JSON point file per item.

    Items are ``{"image": path}`` plus, for ``mode="classify"``, ``"points": path`` of a landmark/candidate file
    (``.fcsv``/``.json``/``.csv``). Outputs (``<output_dir>/<image stem>_<mode>.json``): classified points with
    their probabilities (``label`` = the most likely class), or localised landmarks (world RAS mm) with their peak
    probability; both readable by :func:`~monai_ext.apps.aneurysm.landmarks.read_points`.

    Args:
        network: the classifier.
        ckpt_path: the network's weights (a bare ``state_dict`` such as ``models/model.pt``).
        dataset: the items.
        preprocessing: dictionary transform giving ``data["image"]`` as a ``(1, X, Y, Z)`` MetaTensor.
        inferer: a :class:`TriPlanarPointInferer`.
        output_dir: output folder.
        postprocessing: optional dictionary transform applied to ``{"image", "pred"}`` before writing.
        priors_path: ``landmark_priors.json`` (localisation only).
        class_names: names of the network's classes (class 0 first).
        device: torch device.

    Raises:
        FileNotFoundError: missing checkpoint or priors.
    """

    def __init__(
        self,
        network: nn.Module,
        ckpt_path: str | os.PathLike,
        dataset: Sequence[dict[str, Any]],
        preprocessing: Callable[[dict[str, Any]], dict[str, Any]],
        inferer: TriPlanarPointInferer,
        output_dir: str | os.PathLike,
        postprocessing: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        priors_path: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = default_device(device)
        self.network = network.to(self.device)
        self.ckpt_path, self.dataset, self.preprocessing = Path(ckpt_path), list(dataset), preprocessing
        self.inferer, self.output_dir, self.postprocessing = inferer, Path(output_dir), postprocessing
        self.priors_path = None if priors_path is None else Path(priors_path)
        self.class_names = list(class_names) if class_names is not None else None

    def _post(self, d: dict[str, Any], pred: torch.Tensor) -> Any:
        d["pred"] = pred
        return self.postprocessing(d)["pred"] if self.postprocessing is not None else pred.numpy()

    def run(self) -> list[Path]:
        """Process every item; returns the written files."""
        state = load_checkpoint(self.ckpt_path, self.device)
        # a bundle's models/*.pt is a bare state_dict; older training checkpoints wrapped it as {"model": ...}
        self.network.load_state_dict(state["model"] if isinstance(state.get("model"), dict) else state)
        self.network.eval()
        priors = None
        if self.inferer.mode == "localise":
            if self.priors_path is None or not self.priors_path.is_file():
                raise FileNotFoundError(f"localisation needs the priors file '{self.priors_path}' written by training.")
            priors = load_priors(self.priors_path)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for item in self.dataset:
            d = self.preprocessing(dict(item))
            image = d["image"]
            affine = np.asarray(image.affine if isinstance(image, MetaTensor) else np.eye(4), dtype=np.float64)
            shape = tuple(image.shape[1:])
            stem = Path(str(item["image"])).name.split(".")[0]
            if self.inferer.mode == "classify":
                if "points" not in item:
                    raise ValueError(f"item {item} needs a 'points' file for mode='classify'.")
                pts = read_points(item["points"])
                vox = points_to_voxels(pts, affine, shape)
                prob = np.asarray(self._post(d, self.inferer(image, self.network, points=vox)))
                world = (affine @ np.c_[vox, np.ones(len(vox))].T).T[:, :3]
                names = self.class_names or [str(i) for i in range(prob.shape[1])]
                content = {"coordinate_system": "RAS", "units": "mm", "landmarks": [
                    {"name": pts.names[i], "label": int(prob[i].argmax()), "position": world[i].tolist(),
                     "probabilities": {names[c]: float(prob[i, c]) for c in range(prob.shape[1])}}
                    for i in range(len(vox))]}
            else:
                vox = points_to_voxels(priors, affine, shape, tolerance=1e6)  # priors may lie off a cropped volume
                out = np.asarray(self._post(d, self.inferer(image, self.network, priors=vox, labels=priors.labels)))
                world = (affine @ np.c_[out[:, :3], np.ones(len(out))].T).T[:, :3]
                content = {"coordinate_system": "RAS", "units": "mm", "landmarks": [
                    {"name": priors.names[i], "label": int(priors.labels[i]), "position": world[i].tolist(),
                     "probability": float(out[i, 3])} for i in range(len(out))]}
            path = self.output_dir / f"{stem}_{self.inferer.mode}.json"
            path.write_text(json.dumps(content, indent=1))
            logger.info("wrote %s", path)
            written.append(path)
        return written
