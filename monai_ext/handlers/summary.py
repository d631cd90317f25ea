"""One readable line per epoch: training and validation metrics, learning rate, time (for logs and schedulers).

MONAI's ``StatsHandler`` logs several lines per epoch from two engines (training metrics, validation metrics, best
metric, learning rate, engine timings), and a progress bar redrawn on every iteration turns a redirected log into
one long line. :class:`EpochSummaryHandler` writes exactly one line per epoch, e.g.::

    epoch 3/20  train_loss 0.5120  val_mean_jaccard 0.8013 (best 0.8013 at 3)  lr 8.1e-04  12.3 s

to the ``monai_ext.progress`` logger and, when ``filepath`` is given, appends it to that file (``epochs.log``), plus
the same values as a CSV row (``epochs.csv``) that plots and reports can read.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["EpochSummaryHandler"]


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class EpochSummaryHandler:
    """Log one line per training epoch with the trainer's and the validator's scalar metrics.

    Attach it to the trainer *after* the ``ValidationHandler`` so that the epoch's validation metrics are known.

    Args:
        validator: the evaluator run by ``ValidationHandler`` (its ``state.metrics``, ``best_metric`` and
            ``best_metric_epoch`` are reported), or ``None``.
        optimizer: the optimiser whose first parameter group's learning rate is reported, or ``None``.
        filepath: a text file that receives the lines (appended; a CSV with the same values is written next to
            it with the ``.csv`` suffix); ``None`` logs only.
        name: logger name.
    """

    def __init__(self, validator: Engine | None = None, optimizer: torch.optim.Optimizer | None = None,
                 filepath: str | os.PathLike | None = None, name: str = "monai_ext.progress") -> None:
        self.validator, self.optimizer = validator, optimizer
        self.filepath = Path(filepath) if filepath is not None else None
        self.logger = logging.getLogger(name)
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _epoch_started(self, engine: Engine) -> None:
        self._start = time.perf_counter()

    def values(self, engine: Engine) -> dict[str, Any]:
        """The epoch's row: epoch, the scalar metrics of both engines, the learning rate and the seconds."""
        row: dict[str, Any] = {"epoch": engine.state.epoch}
        for source in (engine, self.validator):
            if source is None:
                continue
            for k, v in source.state.metrics.items():
                x = _scalar(v)
                if x is not None:
                    row[k] = x
        if self.optimizer is not None:
            row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - self._start
        return row

    def __call__(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        row = self.values(engine)
        parts = [f"epoch {row['epoch']}/{engine.state.max_epochs}"]
        key = getattr(self.validator.state, "key_metric_name", None) if self.validator is not None else None
        for k, v in row.items():
            if k in ("epoch", "lr", "seconds"):
                continue
            text = f"{k} {v:.4f}" if math.isfinite(v) else f"{k} {v}"
            if k == key and self.validator.state.best_metric_epoch > 0:
                text += f" (best {self.validator.state.best_metric:.4f} at {self.validator.state.best_metric_epoch})"
            parts.append(text)
        if "lr" in row:
            parts.append(f"lr {row['lr']:.2e}")
        parts.append(f"{row['seconds']:.1f} s")
        line = "  ".join(parts)
        self.logger.info(line)
        if self.filepath is not None:
            self.filepath.parent.mkdir(parents=True, exist_ok=True)
            with open(self.filepath, "a") as f:
                f.write(line + "\n")
            table = self.filepath.with_suffix(".csv")
            new = not table.is_file()
            with open(table, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
