"""Datalist handling shared by the bundles: MONAI Decathlon-style JSON, with errors that name the file and key.

Every study reads real data through a datalist JSON like MONAI's Decathlon format::

    {
        "training": [{"image": "imagesTr/case_000.nii.gz", "label": "labelsTr/case_000.nii.gz"}, ...],
        "validation": [...],
        "test": [...]
    }

Relative paths are resolved against the folder holding the JSON (or ``base_dir``). When a bundle is run with no
``dataset_dir``, :func:`resolve_datalist` asks the study's synthetic generator to write such a folder under the
bundle's output folder once, and reuses it on later runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

__all__ = ["DATALIST_NAME", "check_output_names", "load_datalist", "output_name", "resolve_datalist"]

DATALIST_NAME = "dataset.json"


def load_datalist(datalist: str | os.PathLike, data_list_key: str = "training",
                  required_keys: Sequence[str] = ("image",), path_keys: Sequence[str] | None = None,
                  base_dir: str | os.PathLike | None = None, check_files: bool = True) -> list[dict[str, Any]]:
    """Read one section of a datalist JSON and validate it.

    Args:
        datalist: path of the JSON file (or of the folder holding ``dataset.json``).
        data_list_key: section to read (``"training"``, ``"validation"``, ``"test"``...).
        required_keys: keys each item must have.
        path_keys: keys whose values are file paths to resolve against ``base_dir`` and check; defaults to
            ``required_keys``.
        base_dir: folder relative paths are resolved against; defaults to the JSON's folder.
        check_files: check that every path in ``path_keys`` exists.

    Returns:
        The list of items with absolute paths.

    Raises:
        FileNotFoundError: missing JSON or missing referenced file (names the file, the item index and the key).
        ValueError: malformed JSON, missing section, or an item missing a required key (names them).
    """
    path = Path(datalist)
    if path.is_dir():
        path = path / DATALIST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"datalist JSON not found: '{path}'.")
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist '{path}' is not valid JSON: {e}") from e
    if not isinstance(content, dict) or data_list_key not in content:
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"datalist '{path}' has no section '{data_list_key}' (found: {keys}).")
    items = content[data_list_key]
    if not isinstance(items, list):
        raise ValueError(f"datalist '{path}' section '{data_list_key}' must be a list, got {type(items).__name__}.")
    base = Path(base_dir) if base_dir is not None else path.parent
    path_keys = list(required_keys if path_keys is None else path_keys)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            item = {"image": item}
        missing = [k for k in required_keys if k not in item]
        if missing:
            raise ValueError(
                f"datalist '{path}' section '{data_list_key}' item {i} lacks key(s) {missing}; "
                f"expected keys {list(required_keys)}, found {sorted(item)}."
            )
        item = dict(item)
        for k in path_keys:
            if k not in item:
                continue
            values = item[k] if isinstance(item[k], list) else [item[k]]
            resolved = [str(v) if os.path.isabs(str(v)) else str(base / str(v)) for v in values]
            if check_files:
                for v in resolved:
                    if not os.path.exists(v):
                        raise FileNotFoundError(
                            f"datalist '{path}' section '{data_list_key}' item {i} key '{k}': file not found '{v}'."
                        )
            item[k] = resolved if isinstance(item[k], list) else resolved[0]
        out.append(item)
    return out


def output_name(path: str | os.PathLike) -> str:
    """The base name MONAI's ``SaveImage`` / ``SaveImaged`` gives the results of the image at ``path`` (before the
    ``_<postfix>``): the file name without its last extension (both for ``.gz``), by MONAI's own
    :func:`monai.data.utils.create_file_basename`, so that files written by either can be found from the input.

    Example::

        >>> output_name("/data/sub01.T1w.nii.gz"), output_name("colony_3.png"), output_name("a.b.tif")
        ('sub01.T1w', 'colony_3', 'a.b')
    """
    from monai.data.utils import create_file_basename

    return create_file_basename("", str(path), "", separate_folder=False, makedirs=False)


def check_output_names(items: Sequence[dict[str, Any]], key: str = "image") -> Sequence[dict[str, Any]]:
    """Return ``items`` unchanged after checking that no two of them would write results under the same name
    (:func:`output_name` of ``item[key]``; ``SaveImaged(separate_folder=False)`` would silently overwrite the first).

    Raises:
        ValueError: naming each shared result name and the files that share it.
    """
    seen: dict[str, list[str]] = {}
    for i, item in enumerate(items):
        if key not in item:
            raise ValueError(f"datalist item {i} has no key '{key}' (found: {sorted(item)}).")
        seen.setdefault(output_name(item[key]), []).append(str(item[key]))
    clashes = {name: files for name, files in seen.items() if len(files) > 1}
    if clashes:
        listed = "; ".join(f"'{name}' from {files}" for name, files in sorted(clashes.items()))
        raise ValueError(f"{sum(len(f) for f in clashes.values())} images would write their results under the same "
                         f"name, the later ones overwriting the earlier: {listed}. Rename the files or run them in "
                         "separate output folders.")
    return items


def resolve_datalist(dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike,
                     generator: Callable[..., Any], generator_kwargs: dict[str, Any] | None = None,
                     folder_name: str = "synthetic_data") -> Path:
    """Return the datalist JSON to use: the user's, or the embedded synthetic data set (generated once).

    Args:
        dataset_dir: the bundle's ``dataset_dir``; ``None``, ``""`` or ``"synthetic"`` selects the embedded data.
            Otherwise a folder holding ``dataset.json`` or the path of a datalist JSON.
        output_dir: the bundle's output folder; synthetic data goes to ``<output_dir>/<folder_name>``.
        generator: callable ``generator(out_dir, **generator_kwargs)`` that writes the data and ``dataset.json``.
        generator_kwargs: arguments for the generator (seed, sizes...). A change of arguments regenerates the data.
        folder_name: sub-folder name of the synthetic data.

    Under ``torch.distributed`` only rank 0 generates; the other ranks wait for it at a barrier.

    Raises:
        FileNotFoundError: ``dataset_dir`` is given but holds no datalist JSON.
    """
    if dataset_dir not in (None, "", "synthetic"):
        path = Path(dataset_dir)
        if path.is_dir():
            path = path / DATALIST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset_dir '{dataset_dir}' holds no datalist: expected '{path}' (Decathlon-style JSON)."
            )
        return path
    out = Path(output_dir) / folder_name
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # one process generates, the others wait for it (and then find the finished data set)
        if dist.get_rank() != 0:
            dist.barrier()
            return _generate_once(out, generator, generator_kwargs)
        path = _generate_once(out, generator, generator_kwargs)
        dist.barrier()
        return path
    return _generate_once(out, generator, generator_kwargs)


def _generate_once(out: Path, generator: Callable[..., Any], generator_kwargs: dict[str, Any] | None) -> Path:
    kwargs = dict(generator_kwargs or {})
    stamp = out / ".generator.json"
    signature = json.dumps({"generator": getattr(generator, "__qualname__", str(generator)), **kwargs},
                           sort_keys=True, default=str)
    if (out / DATALIST_NAME).is_file() and stamp.is_file() and stamp.read_text() == signature:
        return out / DATALIST_NAME
    out.mkdir(parents=True, exist_ok=True)
    generator(out, **kwargs)
    if not (out / DATALIST_NAME).is_file():
        raise RuntimeError(f"synthetic generator {generator!r} did not write '{out / DATALIST_NAME}'.")
    stamp.write_text(signature)
    return out / DATALIST_NAME
