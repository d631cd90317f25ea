"""Data: datalist handling and the seeded synthetic generators that are each study's embedded default data."""

from __future__ import annotations

from .datalist import DATALIST_NAME, load_datalist, resolve_datalist
from .samplers import PositiveBatchSampler

__all__ = ["DATALIST_NAME", "PositiveBatchSampler", "load_datalist", "resolve_datalist"]
