"""The embryo live-birth study (``embryo_pu`` bundle): PN vs PU learning on time-lapse sequences."""

from __future__ import annotations

from .data import FRAME_SUFFIXES, load_sequence, normalize_sequence, sequence_folds
from .transforms import LoadSequenced, SaveSequenceScored
from .workflow import BASE_METHODS, EmbryoPUWorkflow, build_criterion, parse_method

__all__ = [
    "BASE_METHODS",
    "EmbryoPUWorkflow",
    "FRAME_SUFFIXES",
    "LoadSequenced",
    "SaveSequenceScored",
    "build_criterion",
    "load_sequence",
    "normalize_sequence",
    "parse_method",
    "sequence_folds",
]
