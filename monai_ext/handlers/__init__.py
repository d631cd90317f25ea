"""monai_ext.handlers: ignite handlers the bundles need and MONAI lacks (exact resume, results files)."""

from __future__ import annotations

from .checkpoint import ResumableCheckpointSaver, TrainingStateLoader, TrainingStateSaver
from .results import ResultsSaver, to_json_value
from .seed import EpochSeedHandler, epoch_seed
from .summary import EpochSummaryHandler

__all__ = [
    "EpochSeedHandler",
    "EpochSummaryHandler",
    "ResultsSaver",
    "ResumableCheckpointSaver",
    "TrainingStateLoader",
    "TrainingStateSaver",
    "epoch_seed",
    "to_json_value",
]
