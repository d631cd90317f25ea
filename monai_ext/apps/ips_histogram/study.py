"""The iPS colony method comparison: the bundle's ``train.json`` per (method, patch size, seed), then its
``evaluate.json`` on the test section, then tables and figures.

Methods are override files next to ``train.json``: ``histogram`` is ``train.json`` itself (FlatHistogramNet +
RegionHistogramLoss on label patches), ``patch_classification`` adds ``method_patch_classification.json``
(one-level net, centre-pixel cross-entropy, ``CenterPixelInferer``), ``fcn`` adds ``method_fcn.json`` (MONAI
``BasicUNet``, cross-entropy ignoring the ignore label, ``SlidingWindowInferer``). Every cell is an ordinary MONAI
bundle run (:func:`~monai_ext.apps.runner.run_config`), so what the study measures is what a user gets from the
bundle. Methods of one seed share that seed's data set, so differences between methods are paired on the seed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from monai_ext.apps.runner import bundle_configs, read_results, run_config, write_study_record
from monai_ext.data import load_datalist, output_name, resolve_datalist
from monai_ext.data.synthetic.ips import generate_ips_dataset
from monai_ext.metrics import boundary_band, jaccard_counts
from monai_ext.utils import save_results_table
from monai_ext.utils.stats import paired_rows, summary_rows

from .data import load_case
from .plots import plot_patch_size_sweep, plot_qualitative

__all__ = ["METHODS", "IPSComparison"]

METHODS = ("histogram", "patch_classification", "fcn")
CLASS_NAMES = ("background", "good", "bad")
IGNORE_LABEL = 255  # train.json's default ignore_label
logger = logging.getLogger(__name__)


class IPSComparison:
    """Train and test each method at each patch size for each seed, then write the comparison tables and figures.

    Outputs under ``output_dir``: one folder per cell ``<method>_p<size>_seed<k>/`` (the bundle run's own outputs:
    ``models/model.pt``, TensorBoard logs, ``train_log.txt``, ``test_results.json``, predictions), ``data_seed<k>/``
    (the seed's synthetic data set when no ``dataset_dir`` is given), ``jaccard_cells.csv`` (one row per cell),
    ``jaccard_table.{csv,md}`` (mean, SD and 95 % interval over seeds per method and patch size),
    ``paired_differences.{csv,md}`` (each method minus the histogram method on the same seeds, mean Jaccard) and
    ``paired_differences_boundary.{csv,md}`` (the same for the boundary-band Jaccard), ``patch_size_sweep.png`` and
    ``qualitative.png``. A cell whose ``test_results.json`` exists is not rerun.

    With ``save_predictions`` every cell also gets ``boundary_jaccard``: the mean Jaccard (%) over the classes
    restricted to the test pixels within ``boundary_width`` pixels of a boundary between two classes of the truth
    (:func:`~monai_ext.metrics.boundary_band`), counts summed over the test images as for the whole-image score;
    it measures the colony outlines, which the whole-image score dilutes with the interiors of large regions.

    Args:
        bundle_root: the ``ips_histogram`` bundle folder.
        output_dir: folder of the study.
        methods: subset of :data:`METHODS`.
        patch_sizes: patch sides to compare.
        seeds: data and initialisation seeds.
        dataset_dir: a real data set (datalist folder or JSON), shared by every seed; ``None`` generates one
            synthetic data set per seed.
        data_kwargs: arguments of :func:`~monai_ext.data.synthetic.ips.generate_ips_dataset` (e.g. ``num_cases``).
        overrides: bundle config overrides applied to every cell (``epochs``, ``device``...).
        save_predictions: write the test predictions (NIfTI and overlay PNG) of every cell.
        boundary_width: half width (pixels) of the boundary band of ``boundary_jaccard``.
        variants: named ``train.json`` override sets, each run for every method, patch size and seed (an ablation,
            e.g. ``{"levels_124": {}, "levels_1": {"grid_sizes": [1]}}``); cells are then
            ``<method>_<variant>_p<size>_seed<k>/``, rows carry ``variant``, and ``variant_differences.{csv,md}``
            pairs each variant with the first one on the same seeds (mean and boundary-band Jaccard). ``None``: one
            unnamed variant, the layout above.
        method_overrides: per-method ``train.json`` overrides applied after ``overrides`` (e.g. a longer training
            budget for the FCN, which needs more epochs to reach its validation plateau:
            ``{"fcn": {"epochs": 60}}``); recorded in ``study.json``.

    Raises:
        ValueError: for an unknown method or empty ``methods`` / ``patch_sizes`` / ``seeds``.
    """

    def __init__(self, bundle_root: str | os.PathLike, output_dir: str | os.PathLike,
                 methods: Sequence[str] = METHODS, patch_sizes: Sequence[int] = (64,), seeds: Sequence[int] = (0,),
                 dataset_dir: str | os.PathLike | None = None, data_kwargs: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Any] | None = None, save_predictions: bool = True,
                 boundary_width: int = 5, variants: Mapping[str, Mapping[str, Any]] | None = None,
                 method_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.methods = [methods] if isinstance(methods, str) else list(methods)
        bad = [m for m in self.methods if m not in METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}.")
        self.patch_sizes = [int(p) for p in ([patch_sizes] if isinstance(patch_sizes, int) else patch_sizes)]
        self.seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
        if not self.patch_sizes or not self.seeds:
            raise ValueError(f"patch_sizes and seeds must be non-empty, got {self.patch_sizes} and {self.seeds}.")
        self.bundle_root = Path(bundle_root)
        self.output_dir = Path(output_dir)
        self.dataset_dir = dataset_dir
        self.data_kwargs = dict(data_kwargs or {})
        self.overrides = dict(overrides or {})
        self.save_predictions = save_predictions
        self.boundary_width = int(boundary_width)
        self.variants = {str(k): dict(v or {}) for k, v in (variants or {}).items()}
        self.method_overrides = {str(k): dict(v or {}) for k, v in (method_overrides or {}).items()}
        unknown = sorted(set(self.method_overrides) - set(self.methods))
        if unknown:
            raise ValueError(f"method_overrides names methods not compared here: {unknown} (methods: {self.methods}).")
        if variants is not None and not self.variants:
            raise ValueError("variants must name at least one override set (or be None).")
        if self.boundary_width < 1:
            raise ValueError(f"boundary_width must be >= 1, got {boundary_width!r}.")

    def configs(self, method: str, *extra: str) -> list[str]:
        files = ["train.json"] + ([] if method == "histogram" else [f"method_{method}.json"]) + list(extra)
        return bundle_configs(self.bundle_root, *files)

    def datalist(self, seed: int) -> Path:
        kwargs = {"seed": seed, **self.data_kwargs}
        return resolve_datalist(self.dataset_dir, self.output_dir / f"data_seed{seed}", generate_ips_dataset, kwargs)

    def run_cell(self, method: str, patch_size: int, seed: int, variant: str | None = None) -> dict[str, Any]:
        """Train and test one cell (or read its finished results); returns its table row."""
        tag = method if variant is None else f"{method}_{variant}"
        cell = self.output_dir / f"{tag}_p{patch_size}_seed{seed}"
        results = cell / "test_results.json"
        extra = {} if variant is None else self.variants[variant]
        common = {**self.overrides, **self.method_overrides.get(method, {}), **extra, "output_dir": str(cell),
                  "ckpt_dir": str(cell / "models"), "dataset_dir": str(self.datalist(seed)), "patch_size": patch_size,
                  "seed": seed}
        if not results.is_file():
            run_config(self.configs(method), **common)
            run_config(self.configs(method, "evaluate.json"), **common, save_predictions=self.save_predictions)
        metrics = read_results(results)["metrics"]
        row: dict[str, Any] = {"method": method, **({} if variant is None else {"variant": variant}),
                               "patch_size": patch_size, "seed": seed,
                               "mean_jaccard": 100 * metrics["val_mean_jaccard"]}
        for c in CLASS_NAMES:
            row[f"jaccard_{c}"] = 100 * metrics[f"val_jaccard_{c}"]
        if self.save_predictions:
            row["boundary_jaccard"] = self.boundary_jaccard(cell, seed)
        logger.info("%s p%d seed %d: mean Jaccard %.2f %%", tag, patch_size, seed, row["mean_jaccard"])
        return row

    def boundary_jaccard(self, cell: Path, seed: int) -> float:
        """Mean Jaccard (%) over the classes within the truth's boundary band, from the cell's saved predictions.

        Raises:
            FileNotFoundError: when a test case has no saved prediction in the cell.
        """
        counts = torch.zeros(len(CLASS_NAMES), 2, dtype=torch.float64)
        ignore = int(self.overrides.get("ignore_label", IGNORE_LABEL))
        for item in load_datalist(self.datalist(seed), "test", ("image", "label")):
            image, truth = load_case(item["image"], item["label"])
            stem = output_name(item["image"])
            f = cell / "predictions" / f"{stem}_seg.nii.gz"
            if not f.is_file():
                raise FileNotFoundError(f"no saved prediction '{f}' for the test case '{item['image']}'.")
            pred = np.asarray(nib.load(str(f)).dataobj).reshape(truth.shape).astype(np.int64)
            band = boundary_band(truth, self.boundary_width, len(CLASS_NAMES), ignore)
            lab = np.where(band, truth, ignore)
            counts += jaccard_counts(torch.from_numpy(pred)[None, None], torch.from_numpy(lab)[None, None],
                                     len(CLASS_NAMES), ignore)[0]
        present = counts[:, 1] > 0
        return float(100 * (counts[present, 0] / counts[present, 1]).mean())

    def run(self) -> list[dict[str, Any]]:
        """Run every cell and write the tables and figures; returns the per-cell rows."""
        variants: list[str | None] = list(self.variants) or [None]
        rows = [self.run_cell(m, p, s, v) for s in self.seeds for p in self.patch_sizes for m in self.methods
                for v in variants]
        self.write_tables(rows)
        write_study_record(self.output_dir, {"study": "ips_histogram comparison", "methods": self.methods,
                                             "patch_sizes": self.patch_sizes, "seeds": self.seeds,
                                             "dataset_dir": self.dataset_dir, "data_kwargs": self.data_kwargs,
                                             "overrides": self.overrides, "variants": self.variants,
                                             "method_overrides": self.method_overrides})
        return rows

    def write_tables(self, rows: list[dict[str, Any]]) -> None:
        metrics = ["mean_jaccard"] + [f"jaccard_{c}" for c in CLASS_NAMES]
        if rows and "boundary_jaccard" in rows[0]:
            metrics.append("boundary_jaccard")
        save_results_table(rows, self.output_dir / "jaccard_cells", precision=2,
                           title="iPS colony segmentation: Jaccard (%) per cell (method, patch size, seed)")
        keys = ["method", "variant", "patch_size"] if self.variants else ["method", "patch_size"]
        summary = summary_rows(rows, keys, metrics)
        save_results_table(summary, self.output_dir / "jaccard_table", precision=2,
                           title=f"Jaccard (%) over non-ignored test pixels: mean, SD and 95 % interval over seeds "
                                 f"{self.seeds}")
        if len(self.variants) > 1:
            first = next(iter(self.variants))
            diffs = [d for m in [x for x in ("mean_jaccard", "boundary_jaccard") if x in metrics]
                     for d in paired_rows(rows, ["method", "patch_size"], "variant", first, m)]
            save_results_table(diffs, self.output_dir / "variant_differences", precision=3,
                               title=f"Jaccard (points): each variant minus '{first}' on the same seeds")
        if "histogram" in self.methods and len(self.methods) > 1 and len(self.variants) <= 1:
            diffs = paired_rows(rows, ["patch_size"], "method", "histogram", "mean_jaccard")
            save_results_table(diffs, self.output_dir / "paired_differences", precision=3,
                               title="Mean Jaccard (points): method minus histogram on the same seeds")
            if "boundary_jaccard" in metrics:
                diffs = paired_rows(rows, ["patch_size"], "method", "histogram", "boundary_jaccard")
                save_results_table(diffs, self.output_dir / "paired_differences_boundary", precision=3,
                                   title=f"Boundary-band Jaccard (points, band of {self.boundary_width} pixels): "
                                         "method minus histogram on the same seeds")
        if self.variants:
            return
        plot_patch_size_sweep([{**r, "mean_jaccard": r["mean_jaccard_mean"]} for r in summary],
                              self.output_dir / "patch_size_sweep.png")
        if self.save_predictions:
            self.plot_first_case(summary)

    def plot_first_case(self, summary: list[dict[str, Any]]) -> None:
        """Input, truth and each method's label map on the first test case of the first seed and patch size."""
        seed, p = self.seeds[0], self.patch_sizes[0]
        item = load_datalist(self.datalist(seed), "test", ("image", "label"))[0]
        image, truth = load_case(item["image"], item["label"])
        stem = output_name(item["image"])
        preds = {}
        for m in self.methods:
            f = self.output_dir / f"{m}_p{p}_seed{seed}" / "predictions" / f"{stem}_seg.nii.gz"
            if f.is_file():
                preds[m] = np.asarray(nib.load(str(f)).dataobj).reshape(image.shape)
        scores = {r["method"]: r["mean_jaccard_mean"] for r in summary if r["patch_size"] == p}
        plot_qualitative(image, truth, preds, self.output_dir / "qualitative.png", scores)
