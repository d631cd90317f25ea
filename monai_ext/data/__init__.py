"""Data: datalist handling and the seeded synthetic generators that are each study's embedded default data."""

from __future__ import annotations

from .datalist import DATALIST_NAME, check_output_names, load_datalist, output_name, resolve_datalist
from .samplers import PositiveBatchSampler
from .validation import read_image, validate_distribution, validate_image, validate_label_map

__all__ = [
    "DATALIST_NAME",
    "PositiveBatchSampler",
    "check_output_names",
    "load_datalist",
    "output_name",
    "read_image",
    "resolve_datalist",
    "validate_distribution",
    "validate_image",
    "validate_label_map",
]
