"""monai_ext.engines: the study-specific training steps MONAI's ``SupervisedTrainer`` cannot express alone."""

from __future__ import annotations

from .pu import FrameLevelPUIteration, negative_risk

__all__ = ["FrameLevelPUIteration", "negative_risk"]
