"""The iPS colony segmentation study (``ips_histogram`` bundle): data, transforms, the method comparison, figures."""

from __future__ import annotations

from .data import load_case, normalize_image, to_grayscale
from .plots import overlay_labels, plot_patch_size_sweep, plot_qualitative, save_overlay_png
from .study import METHODS, IPSComparison
from .transforms import LoadColonyCased, SaveOverlayd, ToGrayscale, ToGrayscaled

__all__ = [
    "METHODS",
    "IPSComparison",
    "LoadColonyCased",
    "SaveOverlayd",
    "ToGrayscale",
    "ToGrayscaled",
    "load_case",
    "normalize_image",
    "overlay_labels",
    "plot_patch_size_sweep",
    "plot_qualitative",
    "save_overlay_png",
    "to_grayscale",
]
