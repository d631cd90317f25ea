"""The aneurysm study: landmark pre-training on tri-planar patches and transfer to aneurysm classification."""

from __future__ import annotations

from .afids import afids_names, generate_afids_mni152_dataset, load_afids, load_mni152
from .data import (
    Case,
    candidate_patches,
    label_volume_landmarks,
    landmark_names_of,
    load_case,
    load_cases,
    normalize_intensity,
    resolve_aneurysm_datalist,
    sample_case_patches,
    sample_landmark_patches,
)
from .evaluation import adaboost_auc_curve, confusion_matrix, localise_landmarks
from .inference import (
    AneurysmInference,
    LandmarkPriorsWriter,
    TriPlanarPointInferer,
    load_priors,
    save_priors,
    write_landmark_priors,
)
from .landmarks import PointSet, points_to_voxels, read_points, write_points_json
from .natural import NATURAL_IMAGE_NAMES, load_natural_images, sample_natural_patches
from .study import (
    AneurysmSeedStudy,
    LocalisationStudy,
    TransferStudy,
    ValidationReport,
    load_weights,
    replace_head,
    write_summary,
)
from .training import fit_classifier, predict
from .transforms import LandmarkPatchesd, LoadLandmarkCased, RandLandmarkPatchesd

__all__ = [
    "AneurysmInference",
    "AneurysmSeedStudy",
    "LandmarkPatchesd",
    "LandmarkPriorsWriter",
    "LoadLandmarkCased",
    "RandLandmarkPatchesd",
    "LocalisationStudy",
    "TransferStudy",
    "ValidationReport",
    "TriPlanarPointInferer",
    "afids_names",
    "generate_afids_mni152_dataset",
    "load_afids",
    "load_mni152",
    "load_priors",
    "resolve_aneurysm_datalist",
    "save_priors",
    "Case",
    "NATURAL_IMAGE_NAMES",
    "PointSet",
    "adaboost_auc_curve",
    "candidate_patches",
    "confusion_matrix",
    "label_volume_landmarks",
    "landmark_names_of",
    "load_case",
    "load_cases",
    "load_natural_images",
    "localise_landmarks",
    "normalize_intensity",
    "points_to_voxels",
    "predict",
    "read_points",
    "replace_head",
    "sample_case_patches",
    "sample_landmark_patches",
    "sample_natural_patches",
    "fit_classifier",
    "load_weights",
    "write_summary",
    "write_landmark_priors",
    "write_points_json",
]
