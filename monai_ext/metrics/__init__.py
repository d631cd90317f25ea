"""Metrics: PU-corrected AUC and threshold selection, label-distribution metrics, Jaccard with an ignore label."""

from __future__ import annotations

from .distribution import DISTRIBUTION_METRICS, LabelDistributionMetric, compute_distribution_metrics
from .jaccard import JaccardMetric, jaccard_counts
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
    "LabelDistributionMetric",
    "PUCorrectedAUCMetric",
    "ThresholdResult",
    "binary_metrics_at_threshold",
    "compute_auc",
    "compute_distribution_metrics",
    "jaccard_counts",
    "pu_corrected_auc",
    "select_threshold",
]
