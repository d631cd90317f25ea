"""Components that prove a config override reached the run: each one fails loudly, or leaves a file, when used.

The bundle tests put this folder on ``PYTHONPATH`` and override bundle components with these from the command line
(``--loss#_target_ override_helpers.ExplodingLoss``). An override that is silently ignored lets the run finish
normally, so the test fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.transforms import MapTransform


class ExplodingLoss(torch.nn.Module):
    """A loss that raises when called (accepts and ignores the replaced loss's arguments)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, *args: Any) -> torch.Tensor:
        raise RuntimeError("ExplodingLoss was called: the loss override reached the trainer")


class ExplodingTransformd(MapTransform):
    """A dictionary transform that raises when called (accepts the replaced transform's arguments)."""

    def __init__(self, keys: Any = "image", **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Any) -> Any:
        raise RuntimeError("ExplodingTransformd was called: the transform override reached the data pipeline")


class MarkerHandler:
    """An ignite handler that writes the number of completed epochs to ``path`` when training completes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        self.path.write_text(str(engine.state.epoch))
