"""Bundle plumbing for the MONAI Label app: pick, copy, initialise and refresh the bundles it serves.

Nothing here imports ``monailabel``, so these helpers run (and are tested) in the main environment too. The app in
:mod:`monai_ext.label.main` calls them; see ``docs/monailabel.md`` for how a lab starts the server.

The app never serves a bundle from the repository folder itself: each selected bundle is copied into a model folder
(``--conf model_dir``) so that training writes its checkpoints, logs and ``models/model.pt`` there and leaves the
source tree clean.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_ext.utils import load_checkpoint, save_checkpoint

__all__ = [
    "MODEL_FILE",
    "UNTRAINED_MARKER",
    "default_bundles_dir",
    "bundle_kind",
    "list_label_bundles",
    "select_bundles",
    "prepare_bundle",
    "ensure_initial_weights",
    "extract_state_dict",
    "export_trained_weights",
    "write_datalist",
    "CONTRACT_IDS",
    "parse_train_request",
]

MODEL_FILE = "model.pt"
"""Weights file MONAI Label's bundle loader reads from ``<bundle>/models/``."""

UNTRAINED_MARKER = ".untrained"
"""File next to ``model.pt`` saying the weights are the seeded initialisation, not a trained model."""

_COPIED = ("configs", "docs", "LICENSE")

CONTRACT_IDS = ("bundle_root", "dataset_dir", "output_dir", "ckpt_dir", "epochs", "device")
"""Top-level ids of every monai_ext ``train.json`` that the MONAI Label train task sets itself."""


def default_bundles_dir() -> Path:
    """The repository's ``bundles/`` folder, next to the ``monai_ext`` package of an editable install.

    Raises:
        FileNotFoundError: when the folder is missing (e.g. a wheel install); pass ``--conf bundles_dir <folder>``.
    """
    here = Path(__file__).resolve().parents[2] / "bundles"
    if not here.is_dir():
        raise FileNotFoundError(
            f"bundles folder not found at '{here}'; start the server with --conf bundles_dir <folder holding the "
            "monai_ext bundles> (e.g. the 'bundles' folder of a monai_ext checkout)."
        )
    return here


def bundle_kind(folder: str | os.PathLike) -> str | None:
    """How the MONAI Label app serves the bundle in ``folder``: ``"segmentation"``, ``"landmarks"`` or ``None``.

    - ``"segmentation"``: ``configs/inference.json`` and a ``configs/metadata.json`` whose first network output has
      ``"format": "segmentation"`` (served by MONAI Label's bundle infer task: a label image).
    - ``"landmarks"``: an ``inference.json`` whose ``inferer`` is the tri-planar point inferer, with ``ckpt_path`` and
      ``priors_path`` (:func:`monai_ext.label.landmarks.is_landmark_bundle`; served by the landmark task: a label
      volume with a sphere per landmark, plus the points).
    - ``None``: anything else (e.g. ``sperm_emd``, ``embryo_pu``: scores of videos and sequences).
    """
    from .landmarks import is_landmark_bundle

    folder = Path(folder)
    configs = folder / "configs"
    if not (configs / "inference.json").is_file() or not (configs / "metadata.json").is_file():
        return None
    if is_landmark_bundle(folder):
        return "landmarks"
    try:
        with open(configs / "metadata.json") as f:
            outputs = json.load(f)["network_data_format"]["outputs"]
        if next(iter(outputs.values())).get("format") == "segmentation":
            return "segmentation"
    except (OSError, ValueError, KeyError, StopIteration, AttributeError):
        pass
    return None


def list_label_bundles(bundles_dir: str | os.PathLike) -> list[str]:
    """Names of the bundles in ``bundles_dir`` that MONAI Label can serve (:func:`bundle_kind` not ``None``), sorted.

    Raises:
        FileNotFoundError: when ``bundles_dir`` is not a folder.
    """
    root = Path(bundles_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"bundles_dir '{root}' is not a folder.")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and bundle_kind(p) is not None)


def select_bundles(models: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Resolve the ``--conf models`` value against the available bundle names.

    Args:
        models: ``"all"`` (or ``None``/empty) for every available bundle, or names separated by commas.
        available: names found by :func:`list_label_bundles`.

    Returns:
        The selected names in the order given (``all``: sorted), without duplicates.

    Raises:
        ValueError: when a name is not available (the message lists what is), or nothing is available.
    """
    if models is None or (isinstance(models, str) and models.strip().lower() in ("", "all")):
        names = sorted(available)
    else:
        items = models.split(",") if isinstance(models, str) else list(models)
        names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(
            f"--conf models names bundle(s) {unknown} that cannot be served (missing, or neither a segmentation "
            f"nor a landmark bundle: see monai_ext.label.bundles.bundle_kind); available: {sorted(available)}."
        )
    if not names:
        raise ValueError(f"no bundle with configs/inference.json and configs/metadata.json to serve ({available=}).")
    return names


def prepare_bundle(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy bundle ``src`` into ``dst`` for serving: configs, docs and licence are refreshed, weights are kept.

    ``dst/models`` is left as it is (it holds what the server trained); when it has no ``model.pt`` and ``src`` ships
    one, that file is copied.

    Returns:
        ``dst`` as a path.

    Raises:
        FileNotFoundError: when ``src`` has no ``configs`` folder.
    """
    src, dst = Path(src), Path(dst)
    if not (src / "configs").is_dir():
        raise FileNotFoundError(f"bundle '{src}' has no configs folder.")
    dst.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        s = src / name
        if s.is_dir():
            shutil.copytree(s, dst / name, dirs_exist_ok=True)
        elif s.is_file():
            shutil.copy2(s, dst / name)
    shipped = src / "models" / MODEL_FILE
    if shipped.is_file() and not (dst / "models" / MODEL_FILE).is_file():
        (dst / "models").mkdir(exist_ok=True)
        shutil.copy2(shipped, dst / "models" / MODEL_FILE)
    return dst


def _inference_network(bundle_dir: Path) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    if "network_def" not in parser.config:
        raise KeyError(f"'{bundle_dir / 'configs' / 'inference.json'}' has no top-level 'network_def'.")
    return parser.get_parsed_content("network_def", instantiate=True)


def ensure_initial_weights(bundle_dir: str | os.PathLike, seed: int = 0) -> bool:
    """Write seeded initial weights to ``<bundle_dir>/models/model.pt`` when the bundle has none yet.

    MONAI Label ignores a bundle without weights; a fresh lab has none until it trains. The initial network is
    built from ``inference.json``'s ``network_def`` with ``torch.manual_seed(seed)`` and a marker file
    (:data:`UNTRAINED_MARKER`) records that its predictions are meaningless until ``/train`` has run.

    Returns:
        ``True`` when weights were written, ``False`` when ``model.pt`` already existed.
    """
    bundle_dir = Path(bundle_dir)
    target = bundle_dir / "models" / MODEL_FILE
    if target.is_file():
        return False
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = _inference_network(bundle_dir)
    finally:
        torch.random.set_rng_state(state)
    save_checkpoint({"model": net.state_dict()}, target)
    (bundle_dir / "models" / UNTRAINED_MARKER).write_text("seeded initial weights; run /train to get a real model\n")
    return True


def extract_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network weights inside a training checkpoint.

    Accepts a bare ``state_dict`` or a dict holding one under ``model``, ``network``, ``net`` or ``state_dict``
    (the keys MONAI's ``CheckpointSaver`` and :func:`monai_ext.utils.save_checkpoint` users write). A DDP
    ``module.`` prefix is removed.

    Raises:
        ValueError: when no weights are found (the message names ``source`` and the keys seen).
    """
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        sd = dict(checkpoint)
    else:
        sd = None
        for key in ("model", "network", "net", "state_dict"):
            v = checkpoint.get(key)
            if isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values()):
                sd = dict(v)
                break
        if sd is None:
            raise ValueError(
                f"no network weights in {source}: expected a state_dict or one under 'model'/'network'/'net'/"
                f"'state_dict', got keys {sorted(checkpoint)[:10]}."
            )
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def export_trained_weights(ckpt_dir: str | os.PathLike, bundle_dir: str | os.PathLike) -> Path:
    """Copy the newest checkpoint under ``ckpt_dir`` into ``<bundle_dir>/models/model.pt`` for inference.

    The weights are checked against ``inference.json``'s ``network_def`` (strict load) before they replace the
    served model, so a checkpoint of another network never reaches the viewer. The write is atomic.

    Returns:
        The path of ``model.pt``.

    Raises:
        FileNotFoundError: when ``ckpt_dir`` holds no ``*.pt``/``*.pth`` file.
        ValueError: when the checkpoint has no weights or they do not fit the inference network.
    """
    ckpt_dir, bundle_dir = Path(ckpt_dir), Path(bundle_dir)
    files = [p for ext in ("*.pt", "*.pth") for p in ckpt_dir.rglob(ext) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"training wrote no checkpoint (*.pt, *.pth) under '{ckpt_dir}'.")
    newest = max(files, key=lambda p: p.stat().st_mtime_ns)
    sd = extract_state_dict(load_checkpoint(newest), source=f"'{newest}'")
    net = _inference_network(bundle_dir)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint '{newest}' does not fit network_def of '{bundle_dir}': {e}") from e
    target = save_checkpoint({"model": net.state_dict()}, bundle_dir / "models" / MODEL_FILE)
    (bundle_dir / "models" / UNTRAINED_MARKER).unlink(missing_ok=True)
    return target


def write_datalist(items: Sequence[Mapping[str, str]], out_dir: str | os.PathLike, val_fraction: float = 0.2) -> Path:
    """Write MONAI Label's labelled images as a Decathlon-style ``dataset.json`` that our bundles read.

    The last ``round(val_fraction * n)`` items (at least one when ``val_fraction > 0``) form ``validation`` (and
    ``test``, which some bundles evaluate on). Bundles need a non-empty validation set, so when nothing is held out
    (``val_fraction == 0``, or a single labelled image) the training images serve in every section.

    Args:
        items: ``{"image": path, "label": path}`` pairs (absolute paths).
        out_dir: folder for ``dataset.json``; created when missing.
        val_fraction: share of images held out, in ``[0, 1)``.

    Returns:
        The path of ``dataset.json``.

    Raises:
        ValueError: when ``items`` is empty, an item lacks ``image``/``label``, or ``val_fraction`` is out of range.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if not items:
        raise ValueError("no labelled images to train on: save at least one final label first.")
    rows = []
    for i, it in enumerate(items):
        if not it.get("image") or not it.get("label"):
            raise ValueError(f"datalist item {i} needs 'image' and 'label', got {dict(it)}.")
        rows.append({"image": str(it["image"]), "label": str(it["label"])})
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * len(rows)))
    if n_val >= len(rows):
        train, val = rows, rows
    else:
        train, val = rows[: len(rows) - n_val], rows[len(rows) - n_val :] or rows
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dataset.json"
    with open(path, "w") as f:
        json.dump({"name": "monailabel", "training": train, "validation": val, "test": val}, f, indent=2)
    return path


def parse_train_request(request: Mapping[str, Any], train_config: str | os.PathLike) -> dict[str, Any]:
    """Check the options of a MONAI Label train request for a bundle whose training config is ``train_config``.

    Args:
        request: the request; used keys: ``max_epochs`` (int >= 1, default 1), ``val_split`` (number in [0, 1),
            default 0.2), ``bundle_overrides`` (JSON object of other top-level ids of ``train.json``, default none).
        train_config: the bundle's ``configs/train.json``.

    Returns:
        ``{"max_epochs": int, "val_split": float, "bundle_overrides": dict}``.

    Raises:
        ValueError: naming the bad option and what was expected: a non-integer or < 1 ``max_epochs``, a
            ``val_split`` outside [0, 1), ``bundle_overrides`` that is not an object, sets a contract id
            (:data:`CONTRACT_IDS`), or names an id ``train.json`` does not have.
    """
    max_epochs = request.get("max_epochs", 1)
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}.")
    val_split = request.get("val_split", 0.2)
    if isinstance(val_split, bool) or not isinstance(val_split, int | float) or not 0 <= val_split < 1:
        raise ValueError(f"val_split must be a number in [0, 1), got {val_split!r}.")
    extra = request.get("bundle_overrides") or {}
    if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
        raise ValueError(f"bundle_overrides must be a JSON object of config ids to values, got {extra!r}.")
    reserved = sorted(set(extra) & set(CONTRACT_IDS))
    if reserved:
        raise ValueError(f"bundle_overrides must not set {reserved}: the train task sets them (use max_epochs).")
    if extra:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(train_config))
        unknown = sorted(k for k in extra if k not in parser)
        if unknown:
            raise ValueError(f"bundle_overrides names ids {unknown} that '{train_config}' does not have.")
    return {"max_epochs": int(max_epochs), "val_split": float(val_split), "bundle_overrides": dict(extra)}
