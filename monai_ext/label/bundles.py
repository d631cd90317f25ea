"""Bundle plumbing for the MONAI Label app: pick, copy and initialise the bundles it serves.

Nothing here imports ``monailabel``, so these helpers run (and are tested) in the main environment too. The app in
:mod:`monai_ext.label.main` calls them; see ``docs/monailabel.md`` for how a lab starts the server.

The app never serves a bundle from the repository folder itself: each selected bundle is copied into a model folder
(``--conf model_dir``) so that training (MONAI Label's stock ``BundleTrainTask``, which runs the bundle's
``train.json`` with ``bundle_root`` set to the copy) writes its checkpoints, logs and ``models/model.pt`` there and
leaves the source tree clean. Weights are bare ``state_dict`` files (the model zoo's format), as the bundles' own
``CheckpointSaver`` writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_ext.utils import save_checkpoint

__all__ = [
    "MODEL_FILE",
    "UNTRAINED_MARKER",
    "default_bundles_dir",
    "bundle_kind",
    "list_label_bundles",
    "select_bundles",
    "prepare_bundle",
    "ensure_initial_weights",
    "is_untrained",
    "extract_state_dict",
]

MODEL_FILE = "model.pt"
"""Weights file (a bare ``state_dict``) MONAI Label's bundle tasks read from and train into ``<bundle>/models/``."""

UNTRAINED_MARKER = ".untrained"
"""File next to ``model.pt`` recording the SHA-256 of the seeded initial weights (:func:`ensure_initial_weights`)."""

_COPIED = ("configs", "docs", "LICENSE")


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


def prepare_bundle(src: str | os.PathLike, dst: str | os.PathLike,
                   model_files: Sequence[str | os.PathLike] | None = None) -> Path:
    """Copy bundle ``src`` into ``dst`` for serving: configs, docs and licence are refreshed, weights are kept.

    Each of ``model_files`` (default: ``<src>/models/model.pt``; for a landmark bundle its checkpoint and priors) is
    copied into ``<dst>/models/`` when the served copy has no such file or when the source file is newer (e.g.
    retrained with the bundle command since the copy was made); weights trained in the served copy (MONAI Label's
    ``/train``) are newer and stay. Missing source files are skipped.

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
    for f in [Path(m) for m in model_files] if model_files is not None else [src / "models" / MODEL_FILE]:
        target = dst / "models" / f.name
        if f.is_file() and (not target.is_file() or f.stat().st_mtime_ns > target.stat().st_mtime_ns):
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(f, target)
    return dst


def _inference_network(bundle_dir: Path) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    if "network_def" not in parser.config:
        raise KeyError(f"'{bundle_dir / 'configs' / 'inference.json'}' has no top-level 'network_def'.")
    return parser.get_parsed_content("network_def", instantiate=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_initial_weights(bundle_dir: str | os.PathLike, seed: int = 0) -> bool:
    """Write seeded initial weights to ``<bundle_dir>/models/model.pt`` when the bundle has none yet.

    MONAI Label ignores a bundle without weights; a fresh lab has none until it trains. The initial network is
    built from ``inference.json``'s ``network_def`` with ``torch.manual_seed(seed)`` and saved as a bare
    ``state_dict``; a marker file (:data:`UNTRAINED_MARKER`) records the file's SHA-256, so that
    :func:`is_untrained` says the weights are meaningless until a training run replaces the file, whoever trains
    (MONAI Label's ``BundleTrainTask``, or the bundle command).

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
    save_checkpoint(net.state_dict(), target)
    marker = {"sha256": _sha256(target), "note": "seeded initial weights; run /train to get a real model"}
    (bundle_dir / "models" / UNTRAINED_MARKER).write_text(json.dumps(marker) + "\n")
    return True


_HASHES: dict[tuple[str, int, int], str] = {}


def is_untrained(bundle_dir: str | os.PathLike) -> bool:
    """Whether ``<bundle_dir>/models/model.pt`` is still the seeded initialisation of :func:`ensure_initial_weights`.

    True while the marker exists and the file's SHA-256 is the one it recorded (a marker of an older app version,
    without a hash, counts as untrained); false once anything replaced the file, or when there is no marker. The
    hash is computed again only when the file's size or modification time changes.
    """
    models = Path(bundle_dir) / "models"
    marker, weights = models / UNTRAINED_MARKER, models / MODEL_FILE
    if not marker.is_file() or not weights.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text()).get("sha256")
    except (ValueError, AttributeError):
        return True
    st = weights.stat()
    key = (str(weights), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = _sha256(weights)
    return _HASHES[key] == recorded


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
