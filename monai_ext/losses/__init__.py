"""Losses for scarce, partial and soft labels: PU risks, distribution losses, region histograms, InfoNCE."""

from __future__ import annotations

from .distribution import (
    DISTRIBUTION_LOSSES,
    DistributionLoss,
    HistogramIntersectionLoss,
    JSDLoss,
    PMFMSELoss,
    SoftCrossEntropyLoss,
    get_distribution_loss,
)
from .emd import EMDLoss
from .mutual_information import InfoNCELoss
from .pu import SURROGATES, AUCNNPULoss, NNPULoss, get_surrogate, pairwise_surrogate_mean, pu_risk_terms
from .region_histogram import RegionHistogramLoss

__all__ = [
    "AUCNNPULoss",
    "DISTRIBUTION_LOSSES",
    "DistributionLoss",
    "EMDLoss",
    "HistogramIntersectionLoss",
    "InfoNCELoss",
    "JSDLoss",
    "NNPULoss",
    "PMFMSELoss",
    "RegionHistogramLoss",
    "SURROGATES",
    "SoftCrossEntropyLoss",
    "get_distribution_loss",
    "get_surrogate",
    "pairwise_surrogate_mean",
    "pu_risk_terms",
]
