"""monai_ext.visualize: figures for sequence classifiers (score timelines, saliency over frames, ROC curves)."""

from __future__ import annotations

from .timelapse import frame_saliency, plot_frame_saliency, plot_roc_curves, plot_score_timeline

__all__ = ["frame_saliency", "plot_frame_saliency", "plot_roc_curves", "plot_score_timeline"]
