"""The aneurysm study on top of the trained landmark classifier (``study.json`` runs these after ``train.json``).

- :class:`ValidationReport`: confusion matrix and per-class recall of ``models/model.pt`` on the validation patches.
- :class:`TransferStudy`: features (``net.features``) of the aneurysm / normal-vessel candidate patches from the
  landmark-pretrained network, the same architecture randomly initialised and the same architecture pre-trained on
  natural images (:mod:`monai_ext.apps.aneurysm.natural`) feed scikit-learn's ``AdaBoostClassifier``; ROC AUC after
  each boosting round with case-grouped cross-validation; optionally end-to-end fine-tuning with a 2-class head.
- :class:`LocalisationStudy`: every landmark localised on the test cases by dense tri-planar classification around
  its mean training position; error in mm next to that trivial prior and the inter-rater spread when available.
- :class:`LandmarkEvaluation`: the same numbers per test set for a trained model through ``inference.json``'s own
  path (model description, ITK alignment of brains), for ``brain_evaluate.json``.
- :class:`AlignmentEvaluation`: the ITK pre-alignment alone (no model) per image and per alignment setting, the
  trivial baseline's error and the start kept, for ``brain_alignment.json``.

Each writes its tables and plots under ``output_dir`` and returns summary rows; :func:`write_summary` gathers them in
``results.{csv,md,json}`` (the JSON with the run's provenance). Reference: Roth et al.'s tri-planar representation
(MICCAI 2014), used for landmark pre-training and transfer to aneurysm detection with AdaBoost (see the bundle README).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from monai_ext.handlers import to_json_value
from monai_ext.utils import default_device, provenance, save_results_table

from .data import candidate_patches, landmark_names_of, load_cases, sample_landmark_patches
from .evaluation import adaboost_auc_curve, confusion_matrix, localise_landmarks
from .natural import load_natural_images, sample_natural_patches
from .plots import plot_auc_curves, plot_confusion_matrix, plot_localisation_errors
from .training import fit_classifier, predict

__all__ = [
    "AlignmentEvaluation",
    "AneurysmSeedStudy",
    "LandmarkEvaluation",
    "LocalisationStudy",
    "TransferStudy",
    "ValidationReport",
    "load_weights",
    "replace_head",
    "write_summary",
]

logger = logging.getLogger(__name__)


def load_weights(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a bare ``state_dict`` (``models/model.pt``) into ``network``; returns it.

    Raises:
        FileNotFoundError: naming the file, when training did not write it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trained weights '{path}' not found: run train.json first.")
    device = next(network.parameters()).device
    network.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return network


def replace_head(net: nn.Module, num_classes: int) -> nn.Module:
    """A deep copy of ``net`` (a MiniVGG: ``features`` + ``head``) whose output layer has ``num_classes`` logits."""
    new = copy.deepcopy(net)
    hidden = new.head[-1].in_features
    new.head[-1] = nn.Linear(hidden, num_classes).to(next(new.parameters()).device)
    new.num_classes = num_classes
    return new


def _reinitialised(net: nn.Module, seed: int) -> nn.Module:
    """A copy of ``net`` with freshly initialised parameters (the 'random init' feature source)."""
    new = copy.deepcopy(net)
    torch.manual_seed(seed)
    for m in new.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return new


class ValidationReport:
    """Top-1 (all, landmark and background patches), per-class recall and the confusion matrix of the network on
    the validation cases' fixed patches (the patches ``train.json`` validates on).

    Args:
        network: the trained landmark classifier.
        datalist: the bundle's datalist.
        output_dir: folder of ``pretrain_per_class.{csv,md}`` and ``confusion_matrix.png``.
        patch_args: tri-planar sampling arguments (``patch_size``, ``extent_mm``, ``background_prob``...).
        samples_per_case: patches per validation case.
        seed: the bundle's seed.
        device: torch device.
    """

    def __init__(self, network: nn.Module, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                 patch_args: dict[str, Any] | None = None, samples_per_case: int = 64, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        self.network, self.datalist, self.output_dir = network, Path(datalist), Path(output_dir)
        self.patch_args = {k: v for k, v in (patch_args or {}).items()
                           if k in ("patch_size", "extent_mm", "background_prob")}
        self.samples_per_case, self.seed, self.device = int(samples_per_case), int(seed), default_device(device)

    def run(self) -> list[dict[str, Any]]:
        names = landmark_names_of(self.datalist)
        cases = load_cases(self.datalist, "validation", names)
        x, y = sample_landmark_patches(cases, self.samples_per_case, self.seed + 7919, augment=False,
                                       **self.patch_args)
        pred = predict(self.network, x, self.device).argmax(1).numpy()
        y = y.numpy()
        cm = confusion_matrix(y, pred, len(names) + 1)
        top1 = float((pred == y).mean())
        lm = y > 0
        plot_confusion_matrix(cm, ["background", *names], self.output_dir / "confusion_matrix.png",
                              title=f"landmark classification, validation top-1 {top1:.3f}")
        rows = [{"class": c, "name": n, "count": int(cm[c].sum()), "recall": float(cm[c, c] / max(cm[c].sum(), 1))}
                for c, n in enumerate(["background", *names])]
        save_results_table(rows, self.output_dir / "pretrain_per_class", title="Validation recall per class")
        return [{"stage": "pretrain", "metric": "validation top-1 (all patches)", "value": top1},
                {"stage": "pretrain", "metric": "validation top-1 (landmark patches)",
                 "value": float((pred[lm] == y[lm]).mean())},
                {"stage": "pretrain", "metric": "validation top-1 (background patches)",
                 "value": float((pred[~lm] == y[~lm]).mean())}]


class TransferStudy:
    """AdaBoost ROC AUC against the number of weak learners for three feature sources (+ optional fine-tuning).

    Args:
        network: the trained landmark classifier (``features`` + ``head``).
        datalist: the bundle's datalist (every section's candidates are used, grouped by case).
        output_dir: folder of ``transfer_auc.{csv,md}``, ``transfer_auc_curve.csv`` and the AUC plot.
        ckpt_dir: folder of ``natural_net.pt`` and the fine-tuned ``aneurysm_net.pt`` (bare state_dicts).
        adaboost: ``{"n_estimators", "n_splits", "report_weak_learners", "transfer_copies"}``.
        baselines: ``{"natural_epochs", "natural_samples_per_epoch", "finetune", "finetune_epochs", "lr",
            "batch_size"}``.
        patch_args: ``{"patch_size", "extent_mm"}``.
        seed: the bundle's seed.
        device: torch device.
    """

    def __init__(self, network: nn.Module, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                 ckpt_dir: str | os.PathLike, adaboost: dict[str, Any] | None = None,
                 baselines: dict[str, Any] | None = None, patch_args: dict[str, Any] | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        self.network, self.datalist = network, Path(datalist)
        self.output_dir, self.ckpt_dir = Path(output_dir), Path(ckpt_dir)
        a = {"n_estimators": 200, "n_splits": 5, "report_weak_learners": (5, 20, 200), "transfer_copies": 4,
             **(adaboost or {})}
        self.n_estimators, self.n_splits = int(a["n_estimators"]), int(a["n_splits"])
        self.copies = int(a["transfer_copies"])
        self.report = [int(n) for n in a["report_weak_learners"] if int(n) <= self.n_estimators]
        self.baselines = {"natural_epochs": 4, "natural_samples_per_epoch": 768, "finetune": True,
                          "finetune_epochs": 2, "lr": 2e-3, "batch_size": 64, **(baselines or {})}
        self.patch_size = int((patch_args or {}).get("patch_size", 32))
        self.extent_mm = (patch_args or {}).get("extent_mm")
        self.seed, self.device = int(seed), default_device(device)

    def natural_network(self) -> nn.Module:
        """The same architecture pre-trained on scikit-image natural-image patches (saved as ``natural_net.pt``)."""
        images = load_natural_images()
        net = replace_head(_reinitialised(self.network, self.seed + 1), len(images)).to(self.device)
        b = self.baselines
        n = int(b["natural_samples_per_epoch"])
        fit_classifier(net, lambda e: sample_natural_patches(images, n, self.seed * 1000 + 17 + e, self.patch_size),
                       int(b["natural_epochs"]), self.device, lr=float(b["lr"]), batch_size=int(b["batch_size"]),
                       seed=self.seed + 1)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), self.ckpt_dir / "natural_net.pt")
        return net

    def run(self) -> list[dict[str, Any]]:
        names = landmark_names_of(self.datalist)
        cases = [c for s in ("training", "validation", "test") for c in load_cases(self.datalist, s, names)]
        x, y, groups, original = candidate_patches(cases, self.patch_size, self.extent_mm, copies=self.copies,
                                                   seed=self.seed)
        sources = {"landmark-pretrained": self.network, "random init": _reinitialised(self.network, self.seed),
                   "natural-image pretrained": self.natural_network()}
        curves = {}
        for name, net in sources.items():
            feats = predict(net.to(self.device), x, self.device, fn="features").numpy()
            curves[name] = adaboost_auc_curve(feats, y.numpy(), groups, original, self.n_estimators, self.n_splits,
                                              self.seed)
            logger.info("transfer %s: AUC@%d %.3f", name, self.n_estimators, curves[name].mean(0)[-1])
        self._write_curves(curves, y, groups, original)
        rows, summary = [], []
        for name, c in curves.items():
            row: dict[str, Any] = {"features": name}
            for k in self.report:
                row[f"AUC@{k}"], row[f"std@{k}"] = float(c[:, k - 1].mean()), float(c[:, k - 1].std())
                summary.append({"stage": "transfer", "metric": f"AUC@{k} {name}", "value": row[f"AUC@{k}"]})
            rows.append(row)
        if self.baselines["finetune"]:
            aucs = self._finetune(x, y, groups, original)
            row = {"features": "landmark-pretrained, fine-tuned end to end (no AdaBoost: same AUC in every column)"}
            for k in self.report:
                row[f"AUC@{k}"], row[f"std@{k}"] = float(np.mean(aucs)), float(np.std(aucs))
            rows.append(row)
            summary.append({"stage": "transfer", "metric": "AUC landmark-pretrained, fine-tuned end to end",
                            "value": float(np.mean(aucs))})
        save_results_table(rows, self.output_dir / "transfer_auc",
                           title=f"ROC AUC (mean and std over {self.n_splits} case-grouped folds)")
        return summary

    def _write_curves(self, curves: dict[str, np.ndarray], y: torch.Tensor, groups: np.ndarray,
                      original: np.ndarray) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "transfer_auc_curve.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["weak_learners", *[f"{n} mean" for n in curves], *[f"{n} std" for n in curves]])
            for k in range(self.n_estimators):
                w.writerow([k + 1, *[c[:, k].mean() for c in curves.values()],
                            *[c[:, k].std() for c in curves.values()]])
        n_pos, n_case = int(y[original].sum()), len(np.unique(groups))
        plot_auc_curves(curves, self.output_dir / "transfer_auc_vs_weak_learners.png",
                        title=f"aneurysm vs normal vessel, {n_case} cases, {int(original.sum())} candidates "
                              f"({n_pos} aneurysms), {self.n_splits}-fold CV")

    def _finetune(self, x: torch.Tensor, y: torch.Tensor, groups: np.ndarray, original: np.ndarray) -> list[float]:
        b = self.baselines
        fit = {"lr": float(b["lr"]) / 4, "batch_size": int(b["batch_size"])}
        folds = StratifiedGroupKFold(n_splits=self.n_splits, shuffle=True, random_state=self.seed)
        aucs = []
        for f, (tr, te) in enumerate(folds.split(x.numpy(), y.numpy(), groups)):
            te = te[original[te]]
            net = replace_head(self.network, 2).to(self.device)
            fit_classifier(net, lambda e, tr=tr: (x[tr], y[tr]), int(b["finetune_epochs"]), self.device,
                           seed=self.seed + f, **fit)
            prob = torch.softmax(predict(net, x[te], self.device), 1)[:, 1].numpy()
            aucs.append(float(roc_auc_score(y[te].numpy(), prob)))
        # the deployable aneurysm classifier: fine-tuned on every candidate
        net = replace_head(self.network, 2).to(self.device)
        fit_classifier(net, lambda e: (x, y), int(b["finetune_epochs"]), self.device, seed=self.seed, **fit)
        torch.save(net.state_dict(), self.ckpt_dir / "aneurysm_net.pt")
        return aucs


class LocalisationStudy:
    """Localise every landmark on the test cases; error in mm against the prior (mean training position) and the
    inter-rater spread (datalist key ``raters_key``, e.g. AFIDs' four raters).

    Args:
        network: the trained landmark classifier.
        datalist: the bundle's datalist.
        output_dir: folder of ``localisation.{csv,md}`` and ``localisation_error.png``.
        search: ``{"search_radius", "search_step", "refine_radius"}`` (voxels).
        patch_args: ``{"patch_size", "extent_mm"}``.
        max_cases: localise at most this many test cases (``None``: all).
        raters_key: datalist key of per-case rater files, or ``None``.
        device: torch device.
    """

    def __init__(self, network: nn.Module, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                 search: dict[str, float] | None = None, patch_args: dict[str, Any] | None = None,
                 max_cases: int | None = None, raters_key: str | None = None,
                 device: str | torch.device | None = None) -> None:
        self.network, self.datalist, self.output_dir = network, Path(datalist), Path(output_dir)
        s = {"search_radius": 10.0, "search_step": 3.0, "refine_radius": 2.0, **(search or {})}
        self.search = {k: float(v) for k, v in s.items()}
        self.patch_size = int((patch_args or {}).get("patch_size", 32))
        self.extent_mm = (patch_args or {}).get("extent_mm")
        self.max_cases, self.raters_key, self.device = max_cases, raters_key, default_device(device)

    def run(self) -> list[dict[str, Any]]:
        names = landmark_names_of(self.datalist)
        extra = (self.raters_key,) if self.raters_key else ()
        load = {"extra_keys": extra, "match_by_label": self.raters_key is not None}
        train_cases = load_cases(self.datalist, "training", names, **load)
        cases = load_cases(self.datalist, "test", names, **load)[: self.max_cases]
        if not cases:
            return []
        labels = np.arange(1, len(names) + 1)
        priors = np.zeros((len(labels), 3))
        for k in labels:
            pts = [c.landmarks[c.landmark_labels == k].mean(0) for c in train_cases if (c.landmark_labels == k).any()]
            if not pts:
                raise ValueError(f"no training case has landmark {k} ('{names[k - 1]}'); cannot localise it.")
            priors[k - 1] = np.mean(pts, 0)
        errors, prior_err, spread = [], [], []
        for case in cases:
            pred, _ = localise_landmarks(self.network, case.image, priors, labels, self.device,
                                         self.search["search_radius"], self.search["search_step"], self.patch_size,
                                         self.extent_mm, refine_radius=self.search["refine_radius"])
            truth = np.full((len(labels), 3), np.nan)
            truth[case.landmark_labels - 1] = case.landmarks
            lin = case.affine[:3, :3]
            errors.append(np.linalg.norm((pred - truth) @ lin.T, axis=1))
            prior_err.append(np.linalg.norm((priors - truth) @ lin.T, axis=1))
            raters = [v for k, v in case.extra_points.items() if k.startswith(str(self.raters_key))]
            if raters:
                r = np.full((len(raters), len(labels), 3), np.nan)
                for i, (pts, lab) in enumerate(raters):
                    r[i, lab - 1] = pts
                spread.append(np.nanmean(np.linalg.norm((r - np.nanmean(r, 0)) @ lin.T, axis=-1), 0))
        errors, prior_err = np.array(errors), np.array(prior_err)
        rows = []
        for k, name in enumerate(names):
            row: dict[str, Any] = {"landmark": name, "error_mm_mean": float(np.nanmean(errors[:, k])),
                                   "error_mm_median": float(np.nanmedian(errors[:, k])),
                                   "prior_error_mm": float(np.nanmean(prior_err[:, k]))}
            if spread:
                row["inter_rater_spread_mm"] = float(np.nanmean(np.array(spread)[:, k]))
            rows.append(row)
        save_results_table(rows, self.output_dir / "localisation",
                           title=f"Landmark localisation error on {len(cases)} test case(s)")
        plot_localisation_errors(names, errors, self.output_dir / "localisation_error.png",
                                 reference=np.nanmean(np.array(spread), 0) if spread else None)
        summary = [{"stage": "localise", "metric": "mean localisation error (mm)", "value": float(np.nanmean(errors))},
                   {"stage": "localise", "metric": "mean error of the prior (mean training position, mm)",
                    "value": float(np.nanmean(prior_err))}]
        if spread:
            summary.append({"stage": "localise", "metric": "mean inter-rater spread (mm)",
                            "value": float(np.nanmean(spread))})
        return summary


def write_summary(output_dir: str | os.PathLike, parts: Sequence[Sequence[dict[str, Any]]],
                  info: dict[str, Any] | None = None) -> Path:
    """Gather the summary rows of the study's parts into ``results.{csv,md}`` and ``results.json`` (with the
    run's provenance); returns the JSON path."""
    rows = [r for part in parts for r in (part or [])]
    out = Path(output_dir)
    save_results_table(rows, out / "results", title="aneurysm study: headline numbers")
    record = {"metrics": {f"{r['stage']}: {r['metric']}": r["value"] for r in rows}, "info": info or {},
              "provenance": provenance()}
    (out / "results.json").write_text(json.dumps(to_json_value(record), indent=2) + "\n")
    return out / "results.json"


def _checked_rows(rows: Sequence[Mapping[str, Any]], what: str) -> list[dict[str, Any]]:
    """Copies of the table rows ``{"name", "datalist", "section", ...}``, the datalist as a string path.

    Raises:
        ValueError: for a row without ``name``, ``datalist`` or ``section``, naming ``what`` and the row.
    """
    out = []
    for row in rows:
        r = dict(row)
        missing = [k for k in ("name", "datalist", "section") if not r.get(k)]
        if missing:
            raise ValueError(f"{what} row {r} lacks {missing}.")
        r["datalist"] = str(r["datalist"])
        out.append(r)
    return out


def add_spikes(img: torch.Tensor, count: int, times_max: float, seed: int = 0) -> torch.Tensor:
    """A copy of ``img`` (``(1, X, Y, Z)``, meta kept) with ``count`` voxels set to ``times_max`` times its maximum,
    drawn (``seed``) among the voxels above its median intensity (inside the head): isolated spikes such as a
    reconstruction glitch or a mis-scaled voxel leaves, to test what the alignment makes of them.

    Raises:
        ValueError: for a ``count`` that is not positive or above the voxels to draw from, or ``times_max`` <= 1.
    """
    vol = img[0]
    candidates = torch.nonzero(vol > vol.median())
    if not 0 < int(count) <= len(candidates) or not float(times_max) > 1:
        raise ValueError(f"spikes: count must be in [1, {len(candidates)}] and times_max > 1, got {count!r} and "
                         f"{times_max!r}.")
    pick = candidates[np.random.default_rng(seed).choice(len(candidates), int(count), replace=False)]
    out = img.clone()
    out[0][tuple(pick.T)] = float(vol.max()) * float(times_max)
    return out


def _points_in_class_order(path: str | os.PathLike, names: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """``(L, 3)`` RAS mm positions of a landmark file in the order of ``labels`` (NaN where the file has none)."""
    from .landmarks import read_points

    pts = read_points(path, names=names).to_ras()
    out = np.full((len(labels), 3), np.nan)
    index = {int(k): i for i, k in enumerate(labels)}
    for k, p in zip(pts.labels, pts.positions, strict=True):
        if int(k) in index:
            out[index[int(k)]] = p
    return out


class LandmarkEvaluation:
    """Localisation error of a trained landmark model per test set, through the bundle's own inference path, next to
    the trivial baseline and the inter-rater spread (``brain_evaluate.json``; issue 16's evidence table).

    Every image of every row goes through ``inference`` (the :class:`~monai_ext.apps.aneurysm.AneurysmInference`
    of ``inference.json``: the checkpoint's ``model_meta.json``, ITK alignment to the template for a brain model,
    normalisation, coarse-to-fine search, points back to the input's RAS mm). Per row:

    - ``model_mm``: mean distance (mm, input RAS) between the found and the true landmarks;
    - ``baseline_mm``: the same for the trivial baseline, each landmark at its search prior (mean training position,
      template space) mapped through the same alignment;
    - ``inter_rater_mm``: the spread of the raters' annotations (mean distance of each rater's point from the
      raters' mean point, datalist key ``raters_key``), the scale of "as good as a human";
    - ``top1``: fiducial top-1, the network's class at the true landmark (on the search grid) is that landmark;
    - ``within_2x_rater``: fraction of landmarks found within twice the rater spread;
    - 95 % Student-t intervals over the row's images (each image its mean over the landmarks): ``model_mm_ci_*``,
      the paired difference ``model_minus_baseline_mm`` with ``model_minus_baseline_ci_*`` (the model beats the
      baseline when the whole interval is below 0), and ``model_over_rater_ci_*`` (per-image ratios);
    - ``mean_probability``, ``low_confidence_fraction`` and ``ood_flagged`` (images the inference judged out of
      distribution), seconds per image;
    - ``unprocessed``: images the model's preprocessing could not take (e.g. an alignment that failed), reported
      out of distribution by the inference and left out of the errors above (so a row reads "n of N images").

    A row with ``"expect": "out_of_distribution"`` (e.g. the brain model on the synthetic vessel volumes) only
    counts the verdicts: such images should all be flagged. Writes ``<output_dir>/localisation_by_row.{csv,md}``,
    ``localisation_by_landmark.csv``, ``localisation_by_image.{csv,md}`` (per image: its mean error and baseline
    over the fiducials, top-1, low-confidence points, the verdict, the alignment start kept and its overlap where
    the model aligns, whether the search ran twice (``recentred``), seconds), ``results.json`` (the rows as
    metrics, with provenance) and ``study.json`` (settings and provenance,
    :func:`~monai_ext.apps.runner.write_study_record`).

    Args:
        inference: the bundle's inference evaluator (``@evaluator`` of ``inference.json``).
        rows: ``[{"name", "datalist", "section"[, "expect"]}]``.
        output_dir: folder of the tables.
        raters_key: datalist key of per-image rater files.
        max_cases: images per row (``None``: all).
        info: settings recorded in ``study.json`` (command-line overrides, checkpoint folder...).
        truth: ``"tissue"`` (default): the true positions are the datalist's (for the synthetic brains, the
            template's fiducials carried by the deformation, with the tissue); ``"protocol"``: the fiducials that
            the AFIDs protocol defines in the coronal plane of another one
            (:data:`~monai_ext.apps.aneurysm.afids.PROTOCOL_PLANES`) are first moved into that plane of the true
            points (:func:`~monai_ext.apps.aneurysm.afids.place_on_protocol_planes`, at the template ground truth's
            offsets), where a rater following the protocol puts them on a deformed brain; the raters' points move
            by the same vector, so their spread is unchanged. A no-op for landmarks without AC and PC.

    Raises:
        ValueError: for a row without ``name`` / ``datalist`` / ``section``, an unknown ``expect`` or ``truth``.
    """

    _EXPECT = ("landmarks", "out_of_distribution")
    _TRUTH = ("tissue", "protocol")

    def __init__(self, inference: Any, rows: Sequence[dict[str, Any]], output_dir: str | os.PathLike,
                 raters_key: str | None = "raters", max_cases: int | None = None,
                 info: dict[str, Any] | None = None, truth: str = "tissue") -> None:
        if truth not in self._TRUTH:
            raise ValueError(f"truth must be one of {self._TRUTH}, got {truth!r} (brain_evaluate.json: "
                             "--evaluation_truth).")
        self.truth = truth
        self._protocol_offsets: dict[str, float] | None = None  # the template's, read at the first image
        self.inference, self.output_dir = inference, Path(output_dir)
        self.rows = _checked_rows(rows, "evaluation")
        for r in self.rows:
            if r.setdefault("expect", "landmarks") not in self._EXPECT:
                raise ValueError(f"row '{r['name']}': expect must be one of {self._EXPECT}, got {r['expect']!r}.")
        self.raters_key, self.max_cases, self.info = raters_key, max_cases, dict(info or {})

    def _truth(self, item: dict[str, Any], names: Sequence[str], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(L, 3)`` true positions and ``(R, L, 3)`` rater positions (RAS mm, NaN where absent) in class order."""

        def table(path: str) -> np.ndarray:
            return _points_in_class_order(path, names, labels)

        raters = item.get(self.raters_key, []) if self.raters_key else []
        raters = raters if isinstance(raters, list) else [raters]
        r = np.stack([table(f) for f in raters]) if raters else np.full((0, len(labels), 3), np.nan)
        truth = table(item["landmarks"])
        if self.truth == "protocol":
            from .afids import load_afids, place_on_protocol_planes, protocol_plane_offsets

            if self._protocol_offsets is None:
                template = load_afids()
                self._protocol_offsets = protocol_plane_offsets(template.positions, template.names)
            moved, _ = place_on_protocol_planes(truth, names, self._protocol_offsets)
            r = r + np.where(np.isfinite(moved - truth), moved - truth, 0.0)[None]  # the raters move along
            truth = moved
        return truth, r

    @torch.no_grad()
    def _top1(self, details: dict[str, Any], truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
        from monai_ext.transforms import TriPlanarPatch, apply_matrix

        image = details["data"]["image"]
        world = truth if details["template_to_image"] is None else apply_matrix(
            np.linalg.inv(details["template_to_image"]), truth)
        vox = apply_matrix(np.linalg.inv(details["grid_affine"]), world)
        ok = np.isfinite(vox).all(1) & np.all((vox >= 0) & (vox <= np.asarray(image.shape[1:]) - 1), axis=1)
        hit = np.full(len(labels), np.nan)
        if ok.any():
            inf = self.inference
            x = torch.as_tensor(TriPlanarPatch(inf.inferer.patch_size, inf.inferer.extent_mm)(image, vox[ok]))
            pred = inf.network(x.float().to(inf.device)).argmax(1).cpu().numpy()
            hit[ok] = (pred == labels[ok]).astype(float)
        return hit

    def _row(self, spec: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray], list[dict[str, Any]]]:
        import time

        from monai_ext.data import load_datalist
        from monai_ext.transforms import apply_matrix

        inf = self.inference
        inf.prepare()
        priors = inf.priors
        names = list(inf.class_names[1:]) if inf.class_names else list(priors.names)
        labels = np.asarray(priors.labels)
        keys = ("image", "landmarks") if spec["expect"] == "landmarks" else ("image",)
        path_keys = (*keys, self.raters_key) if self.raters_key else keys
        items = load_datalist(spec["datalist"], spec["section"], required_keys=keys, path_keys=path_keys)
        items = items[: self.max_cases]
        if not items:
            raise ValueError(f"row '{spec['name']}': section '{spec['section']}' of '{spec['datalist']}' is empty.")
        err, base, spread, top1, probs, flagged, seconds = [], [], [], [], [], [], []
        unprocessed: list[str] = []
        images: list[dict[str, Any]] = []  # one record per image (localisation_by_image)
        for item in items:
            t0 = time.perf_counter()
            content, details = inf.process({"image": item["image"]})
            seconds.append(time.perf_counter() - t0)
            flagged.append(bool(content["out_of_distribution"]["flagged"]))
            probs.extend(p["probability"] for p in content["landmarks"])
            alignment = content.get("alignment") or {}
            image = {"row": spec["name"], "image": Path(item["image"]).name,
                     "processed": int(details["data"] is not None), "model_mm": float("nan"),
                     "baseline_mm": float("nan"), "top1": float("nan"),
                     "num_low_confidence": int(content.get("num_low_confidence", 0)), "ood_flagged": int(flagged[-1]),
                     "alignment_start": alignment.get("start", ""),
                     "alignment_overlap": float(alignment.get("overlap", float("nan"))),
                     "recentred": int(bool(content.get("recentred", False))), "seconds": seconds[-1]}
            images.append(image)
            if spec["expect"] != "landmarks":
                continue
            if details["data"] is None:  # the model's preprocessing could not take it: counted, not scored
                unprocessed.append(Path(item["image"]).name)
                logger.warning("row '%s': %s not scored (%s)", spec["name"], item["image"],
                               content["out_of_distribution"]["reasons"][0])
                continue
            found = np.array([p["position"] for p in content["landmarks"]])
            truth, raters = self._truth(item, names, labels)
            prior_world = priors.positions if details["template_to_image"] is None else apply_matrix(
                details["template_to_image"], priors.positions)
            err.append(np.linalg.norm(found - truth, axis=1))
            base.append(np.linalg.norm(prior_world - truth, axis=1))
            if len(raters):
                spread.append(np.nanmean(np.linalg.norm(raters - np.nanmean(raters, 0), axis=-1), 0))
            top1.append(self._top1(details, truth, labels))
            image.update(model_mm=float(np.nanmean(err[-1])), baseline_mm=float(np.nanmean(base[-1])),
                         top1=float(np.nanmean(top1[-1])))
        p = np.asarray(probs, dtype=np.float64)
        row: dict[str, Any] = {"row": spec["name"], "section": spec["section"], "images": len(items),
                               "unprocessed": len(unprocessed)}
        if spec["expect"] == "landmarks" and err:
            e, s = np.asarray(err), np.asarray(spread) if spread else np.full_like(np.asarray(err), np.nan)
            row.update(model_mm=float(np.nanmean(e)), model_median_mm=float(np.nanmedian(e)),
                       baseline_mm=float(np.nanmean(base)), inter_rater_mm=float(np.nanmean(s)),
                       model_over_rater=float(np.nanmean(e) / np.nanmean(s)) if spread else float("nan"),
                       top1=float(np.nanmean(top1)),
                       within_2x_rater=float(np.nanmean(e <= 2 * s)) if spread else float("nan"))
            row.update(_image_intervals(e, np.asarray(base), s if spread else None))
        row.update(mean_probability=float(p.mean()) if p.size else float("nan"),
                   low_confidence_fraction=float((p < inf.confidence_threshold).mean()) if p.size else float("nan"),
                   ood_flagged=int(sum(flagged)),
            seconds_per_image=float(np.mean(seconds)))
        return row, ([np.asarray(err), np.asarray(base)] if err else []), images

    def run(self) -> list[dict[str, Any]]:
        """Evaluate every row; returns the table rows (also written, see the class docstring)."""
        from monai_ext.apps.runner import write_study_record

        table, per_landmark, images = [], {}, []
        for spec in self.rows:
            row, arrays, row_images = self._row(spec)
            images.extend(row_images)
            logger.info("%s: %s", spec["name"], row)
            table.append(row)
            if arrays:
                per_landmark[spec["name"]] = arrays
        self.output_dir.mkdir(parents=True, exist_ok=True)
        columns = ["row", "section", "images", "unprocessed", "model_mm", "model_mm_ci_low", "model_mm_ci_high",
                   "model_median_mm", "baseline_mm", "model_minus_baseline_mm", "model_minus_baseline_ci_low",
                   "model_minus_baseline_ci_high", "inter_rater_mm", "model_over_rater", "model_over_rater_ci_low",
                   "model_over_rater_ci_high", "top1", "within_2x_rater", "mean_probability",
                   "low_confidence_fraction", "ood_flagged", "seconds_per_image"]
        full = [{c: r.get(c, float("nan")) for c in columns} for r in table]
        save_results_table(full, self.output_dir / "localisation_by_row", columns=columns, precision=3,
                           title="Landmark localisation per test set (model vs trivial baseline vs inter-rater, mm)")
        inf = self.inference
        names = list(inf.class_names[1:]) if inf.class_names else list(inf.priors.names)
        lm_rows = [{"row": name, "landmark": names[k], "model_mm": float(np.nanmean(e[:, k])),
                    "baseline_mm": float(np.nanmean(b[:, k]))}
                   for name, (e, b) in per_landmark.items() for k in range(e.shape[1])]
        if lm_rows:
            save_results_table(lm_rows, self.output_dir / "localisation_by_landmark", precision=3)
        save_results_table(images, self.output_dir / "localisation_by_image", precision=3,
                           title="Landmark localisation per image (mean over its fiducials, mm; the alignment kept)")
        metrics = {f"{r['row']}: {k}": v for r in table for k, v in r.items() if k not in ("row", "section")}
        record = {"metrics": metrics, "rows": table,
                  "info": {**self.info, "truth": self.truth, "model": inf._model_info(),
                           "confidence_threshold": inf.confidence_threshold},
                  "provenance": provenance()}
        (self.output_dir / "results.json").write_text(json.dumps(to_json_value(record), indent=2) + "\n")
        write_study_record(self.output_dir, {**self.info, "rows": self.rows, "max_cases": self.max_cases,
                                             "truth": self.truth})
        write_prior_selection(self.info.get("search"), self.output_dir)
        print(f"landmark evaluation ({len(table)} rows) written to {self.output_dir.resolve()}")
        return table


class AlignmentEvaluation:
    """How close the ITK pre-alignment alone brings the template's fiducials to the truth, per image and per setting
    of the alignment (``brain_alignment.json``): the trivial baseline of :class:`LandmarkEvaluation` without a model,
    to design and check the alignment on development brains before the test rows are run.

    Every image of every row is read and checked as the inference reads it (``LoadImage`` channel-first, then
    :class:`~monai_ext.transforms.ValidateImaged`) and registered to the template once per variant
    (``space.aligner(**variant)``, :meth:`~monai_ext.transforms.AlignToTemplated.register`). Per image and variant
    (``alignment_by_image``):

    - ``baseline_mm`` / ``max_mm``: mean / largest distance (input RAS mm) between the fiducials' template positions
      (``space.priors()``) mapped through the alignment and the true ones (datalist key ``landmarks``);
    - ``shift_mm``: mean distance between those mapped positions and the ones the *first* variant gives (0 for
      it): how far this setting moves the alignment of the image;
    - ``spikes_clipped``: voxels the alignment read clipped (:func:`~monai_ext.transforms.clip_spikes`);
    - ``start``, ``metric``, ``overlap``: the start kept, its Mattes value and the fraction of the template's brain
      mask inside the scan (:class:`~monai_ext.transforms.AlignToTemplated`), ``seconds`` of the registration (wall
      time of ``register``; ITK's one-off loading is done before, untimed, on the registration template), and
      ``starts``: every start tried as ``name:metric/overlap``.

    Per row and variant (``alignment_by_row``): images, the mean / median / largest ``baseline_mm``, the images
    aligned more than ``far_mm`` off (``far_images``), the images the variant moved by more than ``moved_mm``
    from the first variant (``moved_images``) and the largest such move, how often each start was kept, and the mean
    seconds. Writes ``<output_dir>/alignment_by_image.{csv,md}``, ``alignment_by_row.{csv,md}``, ``results.json``
    (the rows as metrics, with provenance) and ``study.json``.

    Args:
        space: the :class:`~monai_ext.apps.aneurysm.brain.BrainTemplateSpace` (template, mask, fiducial priors).
        rows: ``[{"name", "datalist", "section"}]``; with ``"spikes": {"count", "times_max"[, "seed"]}`` each image
            of the row is aligned with intensity spikes added (:func:`add_spikes`, seed ``seed`` + its index).
        output_dir: folder of the tables.
        variants: ``{name: AlignToTemplated keyword arguments}`` (default ``{"default": {}}``); the first is the
            reference of ``shift_mm``.
        max_cases: images per row (``None``: all).
        far_mm: threshold (mm) of ``far_images``.
        moved_mm: threshold (mm) of ``moved_images``.
        info: settings recorded in ``study.json`` and ``results.json``.

    Raises:
        ValueError: for a row without ``name`` / ``datalist`` / ``section`` or with ``spikes`` of other keys, no
            variant, a variant that is not a mapping, or thresholds that are not positive; at run time for an empty
            section.
    """

    def __init__(self, space: Any, rows: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike,
                 variants: Mapping[str, Mapping[str, Any] | None] | None = None, max_cases: int | None = None,
                 far_mm: float = 10.0, moved_mm: float = 0.1, info: Mapping[str, Any] | None = None) -> None:
        self.space, self.output_dir = space, Path(output_dir)
        self.rows = _checked_rows(rows, "alignment")
        for r in self.rows:
            spikes = r.get("spikes")
            if spikes and (not isinstance(spikes, Mapping) or not {"count", "times_max"} <= set(spikes)
                           or not set(spikes) <= {"count", "times_max", "seed"}):
                raise ValueError(f"alignment row '{r['name']}': spikes must be {{'count', 'times_max'[, 'seed']}}, "
                                 f"got {spikes!r}.")
        variants = {"default": {}} if variants is None else variants
        if not isinstance(variants, Mapping) or not variants:
            raise ValueError(f"variants must be a non-empty mapping {{name: aligner arguments}}, got {variants!r}.")
        for name, kw in variants.items():
            if kw is not None and not isinstance(kw, Mapping):
                raise ValueError(f"variant '{name}': aligner arguments must be a mapping or null, got {kw!r}.")
        self.variants = {str(k): dict(v or {}) for k, v in variants.items()}
        if not (far_mm > 0 and moved_mm > 0):
            raise ValueError(f"far_mm and moved_mm must be positive, got {far_mm!r}, {moved_mm!r}.")
        self.max_cases, self.far_mm, self.moved_mm = max_cases, float(far_mm), float(moved_mm)
        self.info = dict(info or {})

    def _image(self, spec: Mapping[str, Any], item: Mapping[str, Any], aligners: Mapping[str, Any],
               load: Any, index: int = 0) -> list[dict[str, Any]]:
        import time

        from monai_ext.transforms import apply_matrix

        priors = self.space.priors()
        img = load({"image": item["image"]})["image"]
        affine = np.asarray(img.affine, dtype=np.float64)
        truth = _points_in_class_order(item["landmarks"], list(priors.names), np.asarray(priors.labels))
        spikes = spec.get("spikes")
        if spikes:
            img = add_spikes(img, spikes["count"], spikes["times_max"], seed=int(spikes.get("seed", 0)) + index)
        records, reference = [], None
        for name, aligner in aligners.items():
            t0 = time.perf_counter()
            matrix, info = aligner.register(img, affine, return_info=True)
            seconds = time.perf_counter() - t0
            placed = apply_matrix(matrix, np.asarray(priors.positions, dtype=np.float64))
            reference = placed if reference is None else reference
            dist = np.linalg.norm(placed - truth, axis=1)
            records.append({
                "row": spec["name"], "image": Path(item["image"]).name, "variant": name,
                "baseline_mm": float(np.nanmean(dist)), "max_mm": float(np.nanmax(dist)),
                "shift_mm": float(np.linalg.norm(placed - reference, axis=1).mean()),
                "spikes_clipped": int(info.get("spikes_clipped", 0)), "start": info.get("start", ""),
                "metric": float(info.get("metric", float("nan"))),
                "overlap": float(info.get("overlap", float("nan"))), "seconds": seconds,
                "starts": " ".join(f"{r['start']}:{r['metric']:.3f}/{r['overlap']:.2f}"
                                   for r in info.get("starts", []))})
            r = records[-1]
            logger.info("%s [%s]: %.2f mm (start %s, overlap %.2f, %.1f s)", r["image"], name, r["baseline_mm"],
                        r["start"], r["overlap"], seconds)
        return records

    def _summary(self, spec: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for name in self.variants:
            mine = [r for r in records if r["variant"] == name]
            base = np.array([r["baseline_mm"] for r in mine])
            shift = np.array([r["shift_mm"] for r in mine])
            kept: dict[str, int] = {}
            for r in mine:
                kept[r["start"]] = kept.get(r["start"], 0) + 1
            out.append({"row": spec["name"], "section": spec["section"], "variant": name, "images": len(mine),
                        "baseline_mm": float(base.mean()), "baseline_median_mm": float(np.median(base)),
                        "baseline_max_mm": float(base.max()), "far_images": int((base > self.far_mm).sum()),
                        "moved_images": int((shift > self.moved_mm).sum()), "max_shift_mm": float(shift.max()),
                        "starts_kept": " ".join(f"{k}:{v}" for k, v in sorted(kept.items())),
                        "seconds_per_image": float(np.mean([r["seconds"] for r in mine]))})
        return out

    def run(self) -> list[dict[str, Any]]:
        """Align every image of every row with every variant; returns the per-row table (also written)."""
        from monai.transforms import Compose, LoadImaged

        from monai_ext.apps.runner import write_study_record
        from monai_ext.data import load_datalist
        from monai_ext.transforms import ValidateImaged

        load = Compose([LoadImaged("image", image_only=True, ensure_channel_first=True),
                        ValidateImaged("image", ndim=4, channels=1,
                                       layout="a single-channel 3D volume, read channel-first as (1, X, Y, Z)")])
        aligners = {name: self.space.aligner("image", **kw) for name, kw in self.variants.items()}
        warm = self.space.registration_template.image("t1")  # ITK loads its modules on first use: not timed
        next(iter(aligners.values())).register(warm, np.asarray(warm.affine, dtype=np.float64))
        images: list[dict[str, Any]] = []
        table: list[dict[str, Any]] = []
        for spec in self.rows:
            items = load_datalist(spec["datalist"], spec["section"], required_keys=("image", "landmarks"),
                                  path_keys=("image", "landmarks"))[: self.max_cases]
            if not items:
                raise ValueError(f"row '{spec['name']}': section '{spec['section']}' of '{spec['datalist']}' is "
                                 "empty.")
            records = [r for i, item in enumerate(items) for r in self._image(spec, item, aligners, load, i)]
            images.extend(records)
            table.extend(self._summary(spec, records))
            for r in table[-len(self.variants):]:
                logger.info("%s [%s]: baseline %.2f mm (max %.2f), %d far, %d moved", spec["name"], r["variant"],
                            r["baseline_mm"], r["baseline_max_mm"], r["far_images"], r["moved_images"])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_results_table(images, self.output_dir / "alignment_by_image", precision=3,
                           title="ITK alignment per image: the template's fiducials mapped onto the input (mm)")
        save_results_table(table, self.output_dir / "alignment_by_row", precision=3,
                           title="ITK alignment per row and setting: the trivial baseline without a model (mm)")
        metrics = {f"{r['row']} [{r['variant']}]: {k}": v for r in table for k, v in r.items()
                   if k not in ("row", "section", "variant")}
        settings = {**self.info, "space": repr(self.space), "variants": self.variants, "rows": self.rows,
                    "max_cases": self.max_cases, "far_mm": self.far_mm, "moved_mm": self.moved_mm}
        record = {"metrics": metrics, "rows": table, "info": settings, "provenance": provenance()}
        (self.output_dir / "results.json").write_text(json.dumps(to_json_value(record), indent=2) + "\n")
        write_study_record(self.output_dir, settings)
        print(f"alignment evaluation ({len(table)} rows) written to {self.output_dir.resolve()}")
        return table


def _image_intervals(err: np.ndarray, base: np.ndarray, spread: np.ndarray | None) -> dict[str, float]:
    """95 % Student-t intervals over the images of a row (each image one sample: its mean over the landmarks).

    ``model_mm_ci_*``: the model's mean error; ``model_minus_baseline_*``: the paired difference model - baseline
    (below 0: the model beats the baseline); ``model_over_rater_ci_*``: the per-image ratio of the model's error to
    the rater spread (whose mean is close to, not equal to, the row's ``model_over_rater``, a ratio of means). NaN
    with one image.
    """
    from monai_ext.utils.stats import paired_difference, summarise

    model, baseline = np.nanmean(err, 1), np.nanmean(base, 1)
    m, d = summarise(model), paired_difference(model, baseline)
    out = {"model_mm_ci_low": m["ci_low"], "model_mm_ci_high": m["ci_high"], "model_minus_baseline_mm": d["mean"],
           "model_minus_baseline_ci_low": d["ci_low"], "model_minus_baseline_ci_high": d["ci_high"]}
    ratio = summarise(model / np.nanmean(spread, 1)) if spread is not None else None
    out.update(model_over_rater_ci_low=ratio["ci_low"] if ratio else float("nan"),
               model_over_rater_ci_high=ratio["ci_high"] if ratio else float("nan"))
    return out


def compare_evaluations(evaluations: Mapping[str, str | os.PathLike], output_dir: str | os.PathLike,
                        goal_over_rater: float = 2.0, goal_top1: float = 0.90) -> list[dict[str, Any]]:
    """Put several runs of :class:`LandmarkEvaluation` side by side, row by row (e.g. models trained with different
    seeds, evaluated on the same test brains): the variation between runs that one table's intervals over images
    do not show.

    Writes ``<output_dir>/localisation_by_row_runs.{csv,md}`` and ``study.json``. Per row of the first run's table,
    and per run ``<label>``: ``model_mm_<label>``, ``model_over_rater_<label>``, ``top1_<label>`` and
    ``beats_baseline_<label>`` (1 when the 95 % interval of model - baseline lies below 0); then, over the runs,
    ``model_over_rater_mean``, ``model_over_rater_max``, ``top1_min`` and ``meets_goals_every_run`` (1 when every
    run is at most ``goal_over_rater`` times the rater spread with top-1 at least ``goal_top1``; issue 16's goals).
    A row without landmarks (the out-of-distribution row) has NaN everywhere.

    When the first run and a later run ``<label>`` both hold ``localisation_by_image.csv`` (the same test images):
    the paired comparison over the row's images that both processed, ``<label>`` minus the first run, mean error in
    mm: ``paired_mm_<label>`` with its 95 % t interval ``paired_ci_low_<label>`` / ``paired_ci_high_<label>``,
    ``images_closer_<label>`` (images with a lower error than in the first run) and ``paired_images_<label>``; NaN
    where either table is missing or a row has no such images. Runs on different models differ in more than the
    images, so for them this is the first run's image-to-image spread, not a test of a method.

    When every run holds ``localisation_by_landmark.csv``, also ``<output_dir>/localisation_by_landmark_runs.{csv,md}``:
    per fiducial (in the first run's order), ``model_mm_<label>``, its mean error over the rows every run scored
    (``rows``: how many), and ``baseline_mm_<label>``: which fiducials a change of search or of truth moves.

    Args:
        evaluations: ``{label: evaluation folder}`` (each holding ``localisation_by_row.csv``); labels are column
            suffixes (letters, digits, ``_``).
        output_dir: folder of the comparison.
        goal_over_rater: the goal on the model / rater ratio.
        goal_top1: the goal on fiducial top-1.

    Raises:
        ValueError: for fewer than two runs, or a label that is not a column suffix.
        FileNotFoundError: naming a folder without ``localisation_by_row.csv``.
        ValueError: when a ``localisation_by_image.csv`` lists an image twice in a row.
    """
    import re

    from monai_ext.apps.runner import write_study_record

    if len(evaluations) < 2:
        raise ValueError(f"compare_evaluations needs at least two evaluations, got {len(evaluations)}.")
    tables: dict[str, dict[str, dict[str, str]]] = {}
    order: list[str] = []
    for label, folder in evaluations.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(label)):
            raise ValueError(f"evaluation label {label!r} must be letters, digits and '_' (a column suffix).")
        path = Path(folder) / "localisation_by_row.csv"
        if not path.is_file():
            raise FileNotFoundError(f"evaluation '{label}': no localisation_by_row.csv in '{folder}'.")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        tables[str(label)] = {r["row"]: r for r in rows}
        order = order or [r["row"] for r in rows]
    per_image = {str(label): _errors_by_image(Path(folder) / "localisation_by_image.csv", str(label))
                 for label, folder in evaluations.items()}
    first = next(iter(tables))

    def number(row: Mapping[str, str] | None, key: str) -> float:
        value = (row or {}).get(key, "")
        return float(value) if value not in ("", None) else float("nan")

    out = []
    for name in order:
        rec: dict[str, Any] = {"row": name}
        ratios, top1s = [], []
        for label, table in tables.items():
            r = table.get(name)
            rec[f"model_mm_{label}"] = number(r, "model_mm")
            rec[f"model_over_rater_{label}"] = number(r, "model_over_rater")
            rec[f"top1_{label}"] = number(r, "top1")
            high = number(r, "model_minus_baseline_ci_high")
            rec[f"beats_baseline_{label}"] = float(high < 0) if np.isfinite(high) else float("nan")
            ratios.append(rec[f"model_over_rater_{label}"])
            top1s.append(rec[f"top1_{label}"])
        ratio, top1 = np.asarray(ratios), np.asarray(top1s)
        complete = bool(np.isfinite(ratio).all() and np.isfinite(top1).all())
        rec["model_over_rater_mean"] = float(ratio.mean()) if complete else float("nan")
        rec["model_over_rater_max"] = float(ratio.max()) if complete else float("nan")
        rec["top1_min"] = float(top1.min()) if complete else float("nan")
        rec["meets_goals_every_run"] = (float(ratio.max() <= goal_over_rater and top1.min() >= goal_top1)
                                        if complete else float("nan"))
        for label in list(tables)[1:]:
            rec.update(_paired_row((per_image[first] or {}).get(name), (per_image[label] or {}).get(name), label))
        out.append(rec)
    save_results_table(out, Path(output_dir) / "localisation_by_row_runs", precision=3,
                       title=f"brain evaluation rows over runs {list(tables)}")
    by_landmark = _landmarks_over_runs(evaluations)
    if by_landmark:
        save_results_table(by_landmark, Path(output_dir) / "localisation_by_landmark_runs", precision=3,
                           title=f"mean error per fiducial over the rows every run scored, runs {list(tables)}")
    write_study_record(output_dir, {"study": "brain evaluations side by side",
                                    "evaluations": {k: str(v) for k, v in evaluations.items()},
                                    "goal_over_rater": goal_over_rater, "goal_top1": goal_top1})
    return out


def _landmarks_over_runs(evaluations: Mapping[str, str | os.PathLike]) -> list[dict[str, Any]]:
    """Per fiducial, each run's mean ``model_mm`` / ``baseline_mm`` over the rows that every run's
    ``localisation_by_landmark.csv`` holds as numbers; ``[]`` when a run lacks that file."""
    tables: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
    order: list[str] = []
    for label, folder in evaluations.items():
        path = Path(folder) / "localisation_by_landmark.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        tables[str(label)] = {(r["row"], r["landmark"]): r for r in rows}
        order = order or list(dict.fromkeys(r["landmark"] for r in rows))

    def scored(table: Mapping[tuple[str, str], Mapping[str, str]]) -> set[str]:
        return {row for (row, _), r in table.items() if r.get("model_mm", "") not in ("", "nan")}

    common = set.intersection(*(scored(t) for t in tables.values()))
    out = []
    for landmark in order:
        rec: dict[str, Any] = {"landmark": landmark, "rows": len(common)}
        for label, table in tables.items():
            for key in ("model_mm", "baseline_mm"):
                values = [float(table[(row, landmark)][key]) for row in sorted(common) if (row, landmark) in table]
                rec[f"{key}_{label}"] = float(np.mean(values)) if values else float("nan")
        out.append(rec)
    return out


def _errors_by_image(path: Path, label: str) -> dict[str, dict[str, float]] | None:
    """``{row: {image: model_mm}}`` of an evaluation's ``localisation_by_image.csv`` (processed images only);
    ``None`` without that file."""
    if not path.is_file():
        return None
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("processed", "1") in ("0", "0.0", "") or r.get("model_mm", "") in ("", "nan"):
                continue
            row = out.setdefault(r["row"], {})
            if r["image"] in row:
                raise ValueError(f"evaluation '{label}': image {r['image']!r} listed twice in row {r['row']!r} of "
                                 f"'{path}'.")
            row[r["image"]] = float(r["model_mm"])
    return out


def _paired_row(base: Mapping[str, float] | None, other: Mapping[str, float] | None,
                label: str) -> dict[str, float]:
    """Paired per-image comparison of one row (``other`` minus ``base``) for :func:`compare_evaluations`."""
    from monai_ext.utils.stats import paired_difference

    keys = sorted(set(base or {}) & set(other or {}))
    rec = {f"paired_mm_{label}": float("nan"), f"paired_ci_low_{label}": float("nan"),
           f"paired_ci_high_{label}": float("nan"), f"images_closer_{label}": float("nan"),
           f"paired_images_{label}": float(len(keys))}
    if keys:
        diff = np.array([other[k] - base[k] for k in keys])
        s = paired_difference([other[k] for k in keys], [base[k] for k in keys])
        rec.update({f"paired_mm_{label}": s["mean"], f"paired_ci_low_{label}": s["ci_low"],
                    f"paired_ci_high_{label}": s["ci_high"], f"images_closer_{label}": float((diff < 0).sum())})
    return rec


def write_prior_selection(search: Mapping[str, Any] | None, output_dir: str | os.PathLike) -> Path | None:
    """Write ``prior_sigma_selection.{csv,md}`` (one row per candidate position prior: its median localisation error
    on the validation brains, and which one training chose) from a model description's ``search`` settings; nothing
    when the model has no such choice (:class:`~monai_ext.apps.aneurysm.ModelMetaWriter`). With the mirror averaging
    choice (``search.mirror_selection``) also ``mirror_selection.{csv,md}``: the median and mean validation error
    of each candidate (without, from the refinement, everywhere; a description written before the refinement-only
    candidate existed has ``False`` / ``True``: without / with), and which one training kept."""
    mirror = (search or {}).get("mirror_selection")
    if mirror:
        def label(c: Any) -> str:
            return c if isinstance(c, str) else ("with" if c else "without")

        rows = [{"mirror_averaging": label(c), "median_validation_error_mm": med,
                 "mean_validation_error_mm": mean, "chosen": int(c == mirror["chosen"]),
                 "validation_images": mirror["images"]}
                for c, med, mean in zip(mirror["candidates"], mirror["median_error_mm"], mirror["mean_error_mm"],
                                        strict=True)]
        save_results_table(rows, Path(output_dir) / "mirror_selection", precision=3,
                           title="Mirror averaging of the search, chosen on the validation brains (position prior "
                                 f"{mirror.get('prior_sigma_mm')} mm)")
    selection = (search or {}).get("prior_sigma_selection")
    if not selection:
        return None
    rows = [{"prior_sigma_mm": "none" if c is None else c, "median_validation_error_mm": e,
             "chosen": int(c == selection["chosen"]), "validation_images": selection["images"]}
            for c, e in zip(selection["candidates"], selection["median_error_mm"], strict=True)]
    path = Path(output_dir) / "prior_sigma_selection"
    save_results_table(rows, path, precision=3, title="Position prior of the search, chosen on the validation brains "
                                                      f"(landmark spread {selection.get('landmark_spread_mm')} mm)")
    return path.with_suffix(".csv")


class AneurysmSeedStudy:
    """The aneurysm study (``train.json`` + ``study.json``) over several seeds, with intervals and paired differences.

    Each seed regenerates the synthetic data and re-initialises the networks; every seed is one ordinary bundle run
    into ``<output_dir>/seed<k>/`` (skipped when its ``results.json`` exists). Writes ``transfer_seeds.{csv,md}``
    (ROC AUC of each feature source at each reported number of weak learners: mean, SD and 95 % interval over seeds),
    ``transfer_differences.{csv,md}`` (landmark-pretrained minus each other source, paired on seeds),
    ``headline_seeds.{csv,md}`` (every headline number of ``results.json`` over seeds) and ``study.json``.

    Args:
        bundle_root: the ``aneurysm`` bundle folder.
        output_dir: folder of the study.
        seeds: data and initialisation seeds.
        overrides: overrides of ``train.json`` + ``study.json`` for every seed (e.g. ``aneurysm_at_landmarks``).

    Raises:
        ValueError: for an empty ``seeds``.
    """

    def __init__(self, bundle_root: str | os.PathLike, output_dir: str | os.PathLike, seeds: Sequence[int] = (0,),
                 overrides: dict[str, Any] | None = None) -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("seeds must be non-empty.")
        self.bundle_root, self.output_dir = Path(bundle_root), Path(output_dir)
        self.overrides = dict(overrides or {})

    def run_seed(self, seed: int) -> dict[str, float]:
        from monai_ext.apps.runner import bundle_configs, read_results, run_config

        out = self.output_dir / f"seed{seed}"
        if not (out / "results.json").is_file():
            run_config(bundle_configs(self.bundle_root, "train.json", "study.json"), **self.overrides, seed=seed,
                       output_dir=str(out), ckpt_dir=str(out / "models"))
        return read_results(out / "results.json")["metrics"]

    def run(self) -> list[dict[str, Any]]:
        from monai_ext.apps.runner import write_study_record
        from monai_ext.utils.stats import paired_rows, summary_rows

        per_seed = {s: self.run_seed(s) for s in self.seeds}
        rows = [{"seed": s, "metric": k, "value": v} for s, m in per_seed.items() for k, v in m.items()]
        save_results_table(summary_rows(rows, ["metric"], ["value"]), self.output_dir / "headline_seeds",
                           precision=4, title=f"aneurysm study headline numbers over seeds {self.seeds}")
        auc = []
        for s, m in per_seed.items():
            for key, value in m.items():
                name = key.removeprefix("transfer: ")
                if key.startswith("transfer: AUC@"):
                    k, _, source = name.removeprefix("AUC@").partition(" ")
                    auc.append({"seed": s, "weak_learners": int(k), "features": source, "auc": value})
        if auc:
            save_results_table(summary_rows(auc, ["features", "weak_learners"], ["auc"]),
                               self.output_dir / "transfer_seeds", precision=4,
                               title=f"ROC AUC of AdaBoost on each feature source, over seeds {self.seeds}")
            diffs = [{**d, "difference": f"{d['features']} - landmark-pretrained"}
                     for d in paired_rows(auc, ["weak_learners"], "features", "landmark-pretrained", "auc")]
            save_results_table(diffs, self.output_dir / "transfer_differences", precision=4,
                               title="ROC AUC: each feature source minus landmark-pretrained, paired on seeds")
        write_study_record(self.output_dir, {"study": "aneurysm seeds", "seeds": self.seeds,
                                             "overrides": self.overrides})
        return rows
