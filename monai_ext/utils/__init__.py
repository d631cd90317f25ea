"""Small utilities shared by the study workflows: results tables, atomic checkpoints, datalists, hardware probe."""

from __future__ import annotations

from .bundle import as_bool, default_device, find_bundle_root, rank_zero_handlers
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .hardware import (
    ISA_CAP_ENVIRONMENT,
    PRECISIONS,
    HardwareInfo,
    PrecisionChoice,
    calibrate_precision,
    make_precision_variant,
    probe_hardware,
)
from .provenance import provenance
from .tables import format_markdown_table, save_results_table

__all__ = [
    "HardwareInfo",
    "ISA_CAP_ENVIRONMENT",
    "PRECISIONS",
    "PrecisionChoice",
    "as_bool",
    "calibrate_precision",
    "default_device",
    "find_bundle_root",
    "format_markdown_table",
    "get_rng_state",
    "load_checkpoint",
    "make_precision_variant",
    "probe_hardware",
    "provenance",
    "rank_zero_handlers",
    "save_checkpoint",
    "save_results_table",
    "set_rng_state",
]
