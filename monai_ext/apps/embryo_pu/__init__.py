"""The embryo live-birth study (``embryo_pu`` bundle): PN vs PU learning on time-lapse sequences."""

from __future__ import annotations

from .data import FRAME_SUFFIXES, load_sequence, normalize_sequence, sequence_folds
from .study import BASE_METHODS, EmbryoPUStudy, build_criterion, infonce_weight, parse_method
from .training import FrameOutputs, RandFrameSubsetd, datalist_info, fold_items, labels_of
from .transforms import LoadSequenced, SaveSequenceScored

__all__ = [
    "BASE_METHODS",
    "EmbryoPUStudy",
    "FRAME_SUFFIXES",
    "FrameOutputs",
    "LoadSequenced",
    "RandFrameSubsetd",
    "SaveSequenceScored",
    "build_criterion",
    "datalist_info",
    "fold_items",
    "labels_of",
    "load_sequence",
    "normalize_sequence",
    "infonce_weight",
    "parse_method",
    "sequence_folds",
]
