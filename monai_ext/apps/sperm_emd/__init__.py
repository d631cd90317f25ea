"""The ``sperm_emd`` study: synthetic microscope video -> sperm tracking -> clips -> grade distributions (EMD loss).

The bundle ``bundles/sperm_emd`` trains one backbone with one loss in ``train.json`` (MONAI engines; clips from
:func:`prepare_clip_datalist` and :class:`LoadClipd`), runs the backbone x loss grid with :class:`SpermGrid`
(``grid.json``) and
:class:`~monai_ext.apps.sperm_emd.stream.SpermStream` (real-time annotated video; not imported here, so that
``python -m monai_ext.apps.sperm_emd.stream`` runs the module once).
"""

from __future__ import annotations

from monai_ext.metrics.kinematics import MOTILITY_CLASSES, RunningKinematics, casa_kinematics, motility_class

from .clips import LoadClipd, prepare_clip_datalist
from .data import (
    CROP_MODES,
    build_clip_datalist,
    clip_crops,
    crop_at,
    match_track,
    read_video,
    track_positions,
)
from .networks import BACKBONES, build_network
from .study import LOSSES, SpermGrid, distribution_scores, per_sperm_scores, warmup_cosine
from .tracking import SpermDetector, SpermTracker, Track, evaluate_tracking, track_video

__all__ = [
    "BACKBONES",
    "CROP_MODES",
    "LOSSES",
    "MOTILITY_CLASSES",
    "RunningKinematics",
    "LoadClipd",
    "SpermDetector",
    "SpermGrid",
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
    "per_sperm_scores",
    "prepare_clip_datalist",
    "read_video",
    "track_positions",
    "track_video",
    "warmup_cosine",
]
