"""monai_ext: MONAI components and bundles for medical imaging with scarce, noisy or partial labels.

Subpackages follow MONAI's layout: :mod:`monai_ext.transforms`, :mod:`monai_ext.losses`,
:mod:`monai_ext.networks`, :mod:`monai_ext.metrics`, :mod:`monai_ext.inferers`, :mod:`monai_ext.data`,
:mod:`monai_ext.visualize`, and :mod:`monai_ext.apps` (the study workflows that the bundles under ``bundles/`` call).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
