"""The ``sperm_emd`` study: synthetic microscope video -> sperm tracking -> clips -> grade distributions (EMD loss).

The bundle ``bundles/sperm_emd`` calls :class:`SpermEMDWorkflow` (training / evaluation grid) and
:class:`~monai_ext.apps.sperm_emd.stream.SpermStream` (real-time annotated video; not imported here, so that
``python -m monai_ext.apps.sperm_emd.stream`` runs the module once).
"""

from __future__ import annotations

from .data import (
    CROP_MODES,
    SpermClipDataset,
    build_clip_datalist,
    clip_crops,
    crop_at,
    match_track,
    read_video,
    track_positions,
)
from .kinematics import MOTILITY_CLASSES, RunningKinematics, casa_kinematics, motility_class
from .networks import BACKBONES, build_network
from .tracking import SpermDetector, SpermTracker, Track, evaluate_tracking, track_video
from .workflow import LOSSES, SpermEMDWorkflow, distribution_scores

__all__ = [
    "BACKBONES",
    "CROP_MODES",
    "LOSSES",
    "MOTILITY_CLASSES",
    "RunningKinematics",
    "SpermClipDataset",
    "SpermDetector",
    "SpermEMDWorkflow",
    "SpermTracker",
    "Track",
    "build_clip_datalist",
    "build_network",
    "casa_kinematics",
    "clip_crops",
    "crop_at",
    "distribution_scores",
    "evaluate_tracking",
    "match_track",
    "motility_class",
    "read_video",
    "track_positions",
    "track_video",
]
