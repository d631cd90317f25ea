"""Data: datalist handling and the seeded synthetic generators that are each study's embedded default data."""

from __future__ import annotations

from .datalist import DATALIST_NAME, load_datalist, resolve_datalist
from .samplers import PositiveBatchSampler
from .validation import read_image, validate_distribution, validate_image, validate_label_map

__all__ = [
    "DATALIST_NAME",
    "PositiveBatchSampler",
    "load_datalist",
    "read_image",
    "resolve_datalist",
    "validate_distribution",
    "validate_image",
    "validate_label_map",
]
