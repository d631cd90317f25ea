"""The iPS colony segmentation study (``ips_histogram`` bundle): data, workflow, evaluation and figures."""

from __future__ import annotations

from .data import PatchSampler, load_case, normalize_image, to_grayscale
from .evaluation import ConfusionAccumulator, jaccard_from_confusion
from .plots import overlay_labels, plot_patch_size_sweep, plot_qualitative, save_overlay_png
from .transforms import SaveOverlayd, ToGrayscale, ToGrayscaled
from .workflow import METHODS, IPSHistogramWorkflow

__all__ = [
    "METHODS",
    "ConfusionAccumulator",
    "IPSHistogramWorkflow",
    "PatchSampler",
    "SaveOverlayd",
    "ToGrayscale",
    "ToGrayscaled",
    "jaccard_from_confusion",
    "load_case",
    "normalize_image",
    "overlay_labels",
    "plot_patch_size_sweep",
    "plot_qualitative",
    "save_overlay_png",
    "to_grayscale",
]
