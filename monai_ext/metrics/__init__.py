"""Metrics: PU-corrected AUC and threshold selection, label-distribution metrics, Jaccard with an ignore label,
sperm kinematics (CASA VCL/VSL/LIN and WHO motility classes)."""

from __future__ import annotations

from .accuracy import TopKAccuracyMetric
from .distribution import DISTRIBUTION_METRICS, LabelDistributionMetric, compute_distribution_metrics
from .jaccard import JaccardMetric, boundary_band, jaccard_counts
from .kinematics import MOTILITY_CLASSES, RunningKinematics, casa_kinematics, motility_class
from .pu import (
    PUCorrectedAUCMetric,
    ThresholdResult,
    binary_metrics_at_threshold,
    compute_auc,
    pu_corrected_auc,
    select_threshold,
)

__all__ = [
    "DISTRIBUTION_METRICS",
    "JaccardMetric",
    "MOTILITY_CLASSES",
    "RunningKinematics",
    "LabelDistributionMetric",
    "PUCorrectedAUCMetric",
    "ThresholdResult",
    "TopKAccuracyMetric",
    "binary_metrics_at_threshold",
    "boundary_band",
    "casa_kinematics",
    "compute_auc",
    "compute_distribution_metrics",
    "jaccard_counts",
    "motility_class",
    "pu_corrected_auc",
    "select_threshold",
]
