"""monai_ext.transforms: MONAI-style array and dictionary transforms."""

from __future__ import annotations

from .alignment import AlignToTemplateD, AlignToTemplated, AlignToTemplateDict, register_affine, rotation_angle_deg
from .center_pixel import CenterPixelLabel, CenterPixelLabelD, CenterPixelLabeld, CenterPixelLabelDict
from .intensity import (
    CONTRAST_PRESETS,
    TISSUE_CHANNELS,
    MaskedPercentileNormalize,
    MaskedPercentileNormalizeD,
    MaskedPercentileNormalized,
    MaskedPercentileNormalizeDict,
    RandTissueContrast,
    RandTissueContrastD,
    RandTissueContrastd,
    RandTissueContrastDict,
    foreground_mask,
)
from .region_histogram import (
    RegionHistogram,
    RegionHistogramD,
    RegionHistogramd,
    RegionHistogramDict,
    center_pixel_label,
    region_pmf_to_dense,
)
from .spatial import (
    RandAffineElasticWarpD,
    RandAffineElasticWarpd,
    RandAffineElasticWarpDict,
    apply_matrix,
    resample_to_grid,
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
    "AlignToTemplateD",
    "AlignToTemplateDict",
    "AlignToTemplated",
    "CONTRAST_PRESETS",
    "MaskedPercentileNormalize",
    "MaskedPercentileNormalizeD",
    "MaskedPercentileNormalizeDict",
    "MaskedPercentileNormalized",
    "RandAffineElasticWarpD",
    "RandAffineElasticWarpDict",
    "RandAffineElasticWarpd",
    "RandTissueContrast",
    "RandTissueContrastD",
    "RandTissueContrastDict",
    "RandTissueContrastd",
    "TISSUE_CHANNELS",
    "apply_matrix",
    "foreground_mask",
    "register_affine",
    "resample_to_grid",
    "rotation_angle_deg",
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
