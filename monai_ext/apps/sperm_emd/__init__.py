"""The ``sperm_emd`` study: synthetic microscope video -> sperm tracking -> clips -> grade distributions (EMD loss).

The bundle ``bundles/sperm_emd`` calls :class:`SpermEMDWorkflow` (training / evaluation grid) and
:class:`SpermStream` (real-time annotated video).
"""

from __future__ import annotations

from .data import SpermClipDataset, build_clip_datalist, crop_at, match_track, read_video, track_positions
from .kinematics import MOTILITY_CLASSES, casa_kinematics, motility_class
from .networks import BACKBONES, build_network
from .tracking import SpermDetector, SpermTracker, Track, evaluate_tracking, track_video
from .workflow import LOSSES, SpermEMDWorkflow, distribution_scores

__all__ = [
    "BACKBONES",
    "LOSSES",
    "MOTILITY_CLASSES",
    "SpermClipDataset",
    "SpermDetector",
    "SpermEMDWorkflow",
    "SpermTracker",
    "Track",
    "build_clip_datalist",
    "build_network",
    "casa_kinematics",
    "crop_at",
    "distribution_scores",
    "evaluate_tracking",
    "match_track",
    "motility_class",
    "read_video",
    "track_positions",
    "track_video",
]
