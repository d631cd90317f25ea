"""The ``sperm_emd`` study: synthetic microscope video -> sperm tracking -> clips -> grade distributions (EMD loss).

The bundle ``bundles/sperm_emd`` calls :class:`SpermEMDWorkflow` (training / evaluation grid) and
:class:`SpermStream` (real-time annotated video).
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
from .stream import (
    CameraFrames,
    PacedFrames,
    RescoreScheduler,
    SpermStream,
    load_stream_network,
    load_stream_weights,
)
from .tracking import SpermDetector, SpermTracker, Track, evaluate_tracking, track_video
from .workflow import LOSSES, SpermEMDWorkflow, distribution_scores

__all__ = [
    "BACKBONES",
    "CameraFrames",
    "CROP_MODES",
    "LOSSES",
    "MOTILITY_CLASSES",
    "PacedFrames",
    "RescoreScheduler",
    "RunningKinematics",
    "SpermClipDataset",
    "SpermDetector",
    "SpermEMDWorkflow",
    "SpermStream",
    "SpermTracker",
    "Track",
    "build_clip_datalist",
    "build_network",
    "casa_kinematics",
    "clip_crops",
    "crop_at",
    "distribution_scores",
    "evaluate_tracking",
    "load_stream_network",
    "load_stream_weights",
    "match_track",
    "motility_class",
    "read_video",
    "track_positions",
    "track_video",
]
