"""monai_ext.transforms: MONAI-style array and dictionary transforms."""

from __future__ import annotations

from .center_pixel import CenterPixelLabel, CenterPixelLabelD, CenterPixelLabeld, CenterPixelLabelDict
from .region_histogram import (
    RegionHistogram,
    RegionHistogramD,
    RegionHistogramd,
    RegionHistogramDict,
    center_pixel_label,
    region_pmf_to_dense,
)
from .triplanar import (
    PLANE_AXES,
    RandTriPlanarPatchD,
    RandTriPlanarPatchd,
    RandTriPlanarPatchDict,
    TriPlanarPatch,
    TriPlanarPatchD,
    TriPlanarPatchd,
    TriPlanarPatchDict,
    rotation_from_angles,
)
from .validation import ImageValidationError, ValidateImage, ValidateImageD, ValidateImaged, ValidateImageDict

__all__ = [
    "CenterPixelLabel",
    "CenterPixelLabelD",
    "CenterPixelLabelDict",
    "CenterPixelLabeld",
    "ImageValidationError",
    "PLANE_AXES",
    "RandTriPlanarPatchD",
    "RandTriPlanarPatchDict",
    "RandTriPlanarPatchd",
    "RegionHistogram",
    "RegionHistogramD",
    "RegionHistogramDict",
    "RegionHistogramd",
    "TriPlanarPatch",
    "TriPlanarPatchD",
    "TriPlanarPatchDict",
    "TriPlanarPatchd",
    "ValidateImage",
    "ValidateImageD",
    "ValidateImageDict",
    "ValidateImaged",
    "center_pixel_label",
    "region_pmf_to_dense",
    "rotation_from_angles",
]
