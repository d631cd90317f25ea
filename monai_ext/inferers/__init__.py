"""monai_ext.inferers: dense inference from patch predictions (region-histogram pmfs, centre-pixel classifiers)."""

from __future__ import annotations

from .region_histogram import CenterPixelInferer, RegionHistogramInferer

__all__ = ["CenterPixelInferer", "RegionHistogramInferer"]
