"""Run a bundle's configs as MONAI runs them, once per cell of a study (method, fold, seed...).

A study (a method comparison, a cross-validation, a sweep) is the bundle's main config run several times with
overrides. :func:`run_config` is that one run: ``monai.bundle.ConfigWorkflow`` over the given config files,
``initialize`` / ``run`` / ``finalize``, exactly what ``python -m monai.bundle run --config_file ... --key value``
does, and it returns the workflow so the caller can read the evaluator's metrics. The study classes of each
``monai_ext.apps.<study>`` module compose cells and write tables and plots; they never own data, model and loss.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

__all__ = ["bundle_configs", "read_results", "run_config", "write_study_record"]

logger = logging.getLogger(__name__)


def bundle_configs(bundle_root: str | os.PathLike, *names: str) -> list[str]:
    """Paths of config files ``names`` (``"train.json"``...) of the bundle at ``bundle_root``.

    Raises:
        FileNotFoundError: naming the missing config file.
    """
    paths = [Path(bundle_root) / "configs" / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"bundle config file(s) not found: {missing}.")
    return [str(p) for p in paths]


def run_config(config_files: Sequence[str | os.PathLike], workflow_type: str = "train",
               meta_file: str | os.PathLike | None = None, **overrides: Any) -> ConfigWorkflow:
    """Run ``config_files`` (merged in order) with ``overrides`` as ``python -m monai.bundle run`` would.

    Args:
        config_files: config files, later ones overriding earlier ones (e.g. ``train.json``, a method file,
            ``evaluate.json``).
        workflow_type: ``"train"`` or ``"infer"`` (which MONAI bundle properties are checked).
        meta_file: the bundle's ``metadata.json`` (default: ``configs/metadata.json`` next to the first file).
        overrides: config ids and values (``epochs=2``, ``"train#dataloader#batch_size"=8`` via ``**{...}``).

    Returns:
        The finished workflow (``wf.evaluator``, ``wf.trainer`` and parsed ids stay readable).

    Raises:
        ValueError: when a required bundle property is missing from the configs.
    """
    files = [str(f) for f in config_files]
    meta = str(meta_file) if meta_file is not None else str(Path(files[0]).parent / "metadata.json")
    wf = ConfigWorkflow(config_file=files, meta_file=meta, workflow_type=workflow_type, **overrides)
    wf.initialize()
    missing = wf.check_properties()
    if missing:
        raise ValueError(f"configs {files} lack the required bundle properties {missing}.")
    logger.info("running %s with %s", [Path(f).name for f in files], overrides)
    wf.run()
    wf.finalize()
    return wf


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """The ``{"metrics", "info", "provenance"}`` record written by :class:`~monai_ext.handlers.ResultsSaver`.

    Raises:
        FileNotFoundError: naming the file, when a cell did not write its results.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file '{path}' not found: the run that should write it did not finish.")
    return json.loads(path.read_text())


def write_study_record(output_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Write ``study.json`` next to a study's tables: its settings (methods, seeds, overrides...) and the provenance
    of the run that wrote them (command, versions, machine, time; :func:`~monai_ext.utils.provenance`)."""
    from monai_ext.handlers.results import to_json_value
    from monai_ext.utils.provenance import provenance

    path = Path(output_dir) / "study.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json_value({"settings": settings, "provenance": provenance()}), indent=2) + "\n")
    return path
