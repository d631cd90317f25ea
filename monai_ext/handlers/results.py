"""A results file per evaluation run: the metrics, what was evaluated, and where the numbers came from."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import

from monai_ext.utils.provenance import provenance

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["ResultsSaver", "to_json_value"]


def to_json_value(value: Any) -> Any:
    """Tensors, arrays and numpy scalars as plain Python numbers / nested lists; NaN and infinity as ``None``."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return value


class ResultsSaver:
    """Write ``engine.state.metrics`` with a description of the run to a JSON file when the engine completes.

    The file holds ``{"metrics": {...}, "info": {...}, "provenance": {...}}``: the metrics (tensors as lists), the
    caller's ``info`` (what was evaluated: method, seed, data section, checkpoint...) and
    :func:`~monai_ext.utils.provenance.provenance` (command, versions, CPU, load, time). Study runners and
    ``python -m monai_ext.reports`` read these files; no published number is typed by hand. Only rank 0 writes.

    Args:
        filepath: the JSON file (folder created).
        info: JSON-serialisable description of the evaluation.
        class_names: for metrics that are per-class vectors, also store ``<metric>_<class name>`` scalars.

    Example (bundle config, in ``validate#handlers`` of ``evaluate.json``)::

        {"_target_": "monai_ext.handlers.ResultsSaver", "filepath": "$@output_dir + '/test_results.json'",
         "info": {"section": "test", "seed": "@seed"}}
    """

    def __init__(self, filepath: str | os.PathLike, info: Mapping[str, Any] | None = None,
                 class_names: list[str] | None = None) -> None:
        self.filepath = Path(filepath)
        self.info = dict(info or {})
        self.class_names = list(class_names) if class_names else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        metrics: dict[str, Any] = {}
        for name, value in engine.state.metrics.items():
            value = to_json_value(value)
            metrics[name] = value
            if self.class_names and isinstance(value, list) and len(value) == len(self.class_names):
                for c, v in zip(self.class_names, value, strict=True):
                    metrics[f"{name}_{c}"] = v
        record = {"metrics": metrics, "info": to_json_value(self.info),
                  "provenance": provenance(getattr(engine.state, "device", None))}
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.filepath.with_suffix(self.filepath.suffix + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, self.filepath)
