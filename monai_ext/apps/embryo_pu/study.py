"""The embryo study's cross-validated comparison of PN and PU learning, on top of the bundle's ``train.json``.

Every cell ``(method, prior, fold, seed)`` is an ordinary run of ``train.json`` with overrides (``loss`` built by
:func:`build_criterion`, ``infonce_weight`` for ``+infonce`` methods, ``prior``, ``fold``, ``seed``); the seed's
data set is shared by its cells, so methods are compared on the same folds (paired). Each cell's best model
(validation PU AUC) scores the fold's validation sequences (to choose a threshold) and test sequences.

Methods (see the bundle README): ``pn`` (failures as negatives, the seed study's baseline), ``pn_weighted`` (PN with
the positive class up-weighted to balance the classes: the fair PN baseline), ``upu`` / ``nnpu`` (du Plessis et al.
ICML 2015; Kiryo et al. NeurIPS 2017), ``auc_pu`` / ``auc_nnpu`` (the PU pairwise AUC risk without / with the
non-negative correction), any of them with ``+infonce`` (mutual-information metric learning on frame embeddings;
``+infonce@0.3`` sets its weight, for a sweep).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_ext.apps.runner import bundle_configs, run_config, write_study_record
from monai_ext.data import resolve_datalist
from monai_ext.data.synthetic.embryo import generate_embryo_dataset
from monai_ext.handlers import to_json_value
from monai_ext.losses import AUCNNPULoss, NNPULoss
from monai_ext.metrics import binary_metrics_at_threshold, compute_auc, select_threshold
from monai_ext.utils import provenance, save_results_table
from monai_ext.utils.stats import paired_rows, summary_rows
from monai_ext.visualize import frame_saliency, plot_frame_saliency, plot_roc_curves, plot_score_timeline

from .training import datalist_info, fold_items
from .transforms import LoadSequenced

__all__ = ["BASE_METHODS", "EmbryoPUStudy", "build_criterion", "infonce_weight", "parse_method"]

BASE_METHODS = ("pn", "pn_weighted", "upu", "nnpu", "auc_pu", "auc_nnpu")
METRICS = ("auc", "recall@0.5", "precision@0.5", "f1@0.5", "recall@val", "precision@val", "f1@val")
logger = logging.getLogger(__name__)


def parse_method(name: str) -> tuple[str, bool]:
    """Split ``"auc_nnpu+infonce"`` (or ``"auc_nnpu+infonce@0.3"``, with its InfoNCE weight) into
    ``("auc_nnpu", True)``.

    Raises:
        ValueError: when the base method is not one of :data:`BASE_METHODS`, the suffix is not ``+infonce`` or
            ``+infonce@<weight>``, or the weight is not a positive number.
    """
    base, _, suffix = str(name).partition("+")
    tag, _, weight = suffix.partition("@")
    if base not in BASE_METHODS or tag not in ("", "infonce") or (weight and not tag):
        raise ValueError(f"method must be one of {BASE_METHODS}, optionally with '+infonce' or '+infonce@<weight>', "
                         f"got {name!r}.")
    if weight:
        infonce_weight(name, 0.0)
    return base, tag == "infonce"


def infonce_weight(name: str, default: float) -> float:
    """The InfoNCE weight a method runs with: the ``@<weight>`` of ``"auc_nnpu+infonce@0.3"``, ``default`` for a
    plain ``+infonce`` and 0 without it.

    Raises:
        ValueError: for a weight that is not a positive number.
    """
    _, _, suffix = str(name).partition("+")
    if not suffix:
        return 0.0
    _, _, weight = suffix.partition("@")
    if not weight:
        return float(default)
    try:
        value = float(weight)
    except ValueError as e:
        raise ValueError(f"the InfoNCE weight of method {name!r} must be a number, got {weight!r}.") from e
    if not value > 0:
        raise ValueError(f"the InfoNCE weight of method {name!r} must be positive, got {value}.")
    return value


def build_criterion(method: str, prior: float, beta: float = 0.0, gamma: float = 1.0,
                    classification_weight: float = 0.5, positive_weight: float | None = None) -> torch.nn.Module:
    """The frame-level loss of a base method, called as ``criterion(logits, targets)`` with 0/1 targets.

    Args:
        method: one of :data:`BASE_METHODS` (no ``+infonce`` suffix).
        prior: class prior of the unlabeled data (unused by the PN methods).
        beta: nnPU threshold ``beta``.
        gamma: nnPU correction step scale ``gamma``.
        classification_weight: weight of the (n)nPU classification term added to the AUC risks.
        positive_weight: ``pn_weighted``'s weight of the positive class (``pos_weight`` of
            ``BCEWithLogitsLoss``), e.g. the ratio of negatives to positives in the training data.

    Raises:
        ValueError: on an unknown method, or ``pn_weighted`` without a positive ``positive_weight``.
    """
    if method == "pn":
        return torch.nn.BCEWithLogitsLoss()
    if method == "pn_weighted":
        if positive_weight is None or float(positive_weight) <= 0:
            raise ValueError(f"pn_weighted needs a positive positive_weight, got {positive_weight!r}.")
        return torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(positive_weight)))
    if method in ("upu", "nnpu"):
        return NNPULoss(prior, beta=beta, gamma=gamma, nonnegative=method == "nnpu")
    if method in ("auc_pu", "auc_nnpu"):
        return AUCNNPULoss(prior, beta=beta, gamma=gamma, nonnegative=method == "auc_nnpu",
                           classification_weight=classification_weight)
    raise ValueError(f"method must be one of {BASE_METHODS}, got {method!r}.")


@torch.no_grad()
def predict_sequences(net: torch.nn.Module, items: Sequence[Mapping[str, Any]], load: LoadSequenced,
                      batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Sequence probabilities ``(n,)`` and frame probabilities ``(n, T)`` of datalist items."""
    net.eval()
    seq, frames = [], []
    for i in range(0, len(items), batch_size):
        x = torch.stack([load(dict(it))["image"] for it in items[i : i + batch_size]])
        out = net.forward_all(x)
        seq.append(torch.sigmoid(out.logit))
        frames.append(torch.sigmoid(out.frame_logits))
    return torch.cat(seq).numpy(), torch.cat(frames).numpy()


class EmbryoPUStudy:
    """Run ``train.json`` per (method, prior, fold, seed), score each best model, write tables and figures.

    Outputs under ``output_dir``: ``data_seed<k>/`` (synthetic data per seed), one folder per cell
    ``<method>_pi<prior>_fold<f>_seed<k>/`` (the bundle run's outputs and ``scores.json``),
    ``<table_name>_folds.{csv,md}`` (one row per cell), ``<table_name>.{csv,md}`` (mean, SD and 95 % interval per
    method and prior over folds and seeds), ``<table_name>_vs_<reference>.{csv,md}`` (each method minus the reference
    method on the same folds and seeds), ``roc[_pi<p>].png`` (test scores pooled over folds, first seed) and, for
    ``figure_method``, per-frame score timelines and saliency maps of two test sequences (``figures/``).

    Args:
        bundle_root: the ``embryo_pu`` bundle folder.
        output_dir: folder of the study.
        methods: method names (:func:`parse_method`).
        priors: class priors ``pi`` to run every PU method at (PN methods ignore it but run at each prior too, so
            every prior has its baseline row).
        seeds: data and initialisation seeds.
        dataset_dir: a real datalist shared by every seed; ``None`` generates one synthetic set per seed.
        overrides: ``train.json`` overrides for every cell (``epochs``, ``num_folds``, ``device``, generator...).
        reference: the method the paired differences are taken against.
        figure_method: method whose fold-0 model draws the decision-basis figures (``None``: none).
        table_name: stem of the results files.

    Raises:
        ValueError: for an unknown method, an empty list, or a prior outside (0, 1).
    """

    def __init__(self, bundle_root: str | os.PathLike, output_dir: str | os.PathLike,
                 methods: Sequence[str] = ("pn", "auc_nnpu"), priors: Sequence[float] = (0.24,),
                 seeds: Sequence[int] = (0,), dataset_dir: str | os.PathLike | None = None,
                 overrides: Mapping[str, Any] | None = None, reference: str = "pn",
                 figure_method: str | None = "auc_nnpu", table_name: str = "results") -> None:
        self.methods = [methods] if isinstance(methods, str) else list(methods)
        for m in self.methods:
            parse_method(m)
        self.priors = []
        for p in priors:
            try:
                value = float(p)
            except (TypeError, ValueError) as e:
                raise ValueError(f"prior must be a number in (0, 1), got {p!r}.") from e
            if not 0.0 < value < 1.0:
                raise ValueError(f"prior must be in (0, 1), got {value!r}.")
            self.priors.append(value)
        self.seeds = [int(s) for s in seeds]
        if not (self.methods and self.priors and self.seeds):
            raise ValueError("methods, priors and seeds must be non-empty.")
        self.bundle_root, self.output_dir, self.dataset_dir = Path(bundle_root), Path(output_dir), dataset_dir
        self.overrides = dict(overrides or {})
        self.reference, self.figure_method, self.table_name = reference, figure_method, table_name
        self.num_folds = int(self.overrides.get("num_folds", 5))
        from monai.bundle import ConfigParser

        self.parser = ConfigParser()
        self.parser.read_config(bundle_configs(self.bundle_root, "train.json"))
        self.parser.update(self.overrides)

    def datalist(self, seed: int) -> Path:
        keys = ("num_cases", "num_frames", "image_size", "abnormal_visibility")
        kwargs = {"seed": seed, **{k: self.parser[k] for k in keys}}
        return resolve_datalist(self.dataset_dir, self.output_dir / f"data_seed{seed}", generate_embryo_dataset,
                                kwargs)

    def loader(self) -> LoadSequenced:
        return LoadSequenced("image", self.parser["num_frames"], self.parser["image_size"], cache=True)

    def run_cell(self, method: str, prior: float, fold: int, seed: int) -> dict[str, Any]:
        cell = self.output_dir / f"{method.replace('+', '_')}_pi{prior:g}_fold{fold}_seed{seed}"
        scores_file = cell / "scores.json"
        if scores_file.is_file():
            return json.loads(scores_file.read_text())["metrics"]
        base, _ = parse_method(method)
        datalist = self.datalist(seed)
        split = fold_items(datalist, fold, self.num_folds, self.parser["val_fraction"], seed)
        n_pos = sum(it["label"] for it in split["train"])
        loss = {"_target_": "monai_ext.apps.embryo_pu.build_criterion", "method": base, "prior": prior,
                "beta": "@beta", "gamma": "@gamma", "classification_weight": "@classification_weight",
                "positive_weight": (len(split["train"]) - n_pos) / max(n_pos, 1)}
        over = {**self.overrides, "output_dir": str(cell), "ckpt_dir": str(cell / "models"), "seed": seed,
                "fold": fold, "prior": prior, "dataset_dir": str(datalist), "loss": loss,
                "infonce_weight": infonce_weight(method, self.overrides.get("infonce_weight", 0.1))}
        wf = run_config(bundle_configs(self.bundle_root, "train.json"), **over)
        net = wf.network_def
        net.load_state_dict(torch.load(cell / "models" / "model.pt", map_location="cpu", weights_only=True))
        net = net.cpu()
        load = self.loader()
        p_val, _ = predict_sequences(net, split["val"], load)
        p_test, _ = predict_sequences(net, split["test"], load)
        y_val = np.array([it["label"] for it in split["val"]])
        y_test = np.array([it["label"] for it in split["test"]])
        thr = select_threshold(p_val, y_val, self.parser["threshold_method"] if "threshold_method" in self.parser
                               else "youden", prior=prior)
        half, at_val = binary_metrics_at_threshold(p_test, y_test, 0.5), binary_metrics_at_threshold(p_test, y_test,
                                                                                                       thr.threshold)
        row = {"method": method, "prior": prior, "fold": fold, "seed": seed, "auc": compute_auc(p_test, y_test),
               "recall@0.5": half.recall, "precision@0.5": half.precision, "f1@0.5": half.f1,
               "accuracy@0.5": half.accuracy, "threshold@val": thr.threshold, "recall@val": at_val.recall,
               "precision@val": at_val.precision, "f1@val": at_val.f1,
               "negative_risk_fraction": float(wf.trainer.state.metrics.get("train_negative_risk_fraction", np.nan)),
               "test_index": [str(it["image"]) for it in split["test"]], "test_labels": y_test.tolist(),
               "test_scores": p_test.tolist()}
        record = {"metrics": row, "info": {"cell": cell.name, "datalist": str(datalist)}, "provenance": provenance()}
        scores_file.write_text(json.dumps(to_json_value(record), indent=2) + "\n")
        return row

    def viability_auc(self, row: Mapping[str, Any]) -> float:
        """AUC of a cell's test scores against the hidden ``viable`` flag of the synthetic data (the PU positive
        class; live births are viable embryos without the hidden abnormality), or NaN when the datalist has no such
        flag for every test item (real data) or the test set lacks one of the two classes."""
        split = fold_items(self.datalist(int(row["seed"])), int(row["fold"]), self.num_folds,
                           self.parser["val_fraction"], int(row["seed"]))
        test = split["test"]
        if [str(it["image"]) for it in test] != list(row["test_index"]) or any("viable" not in it for it in test):
            return float("nan")
        viable = np.array([int(it["viable"]) for it in test])
        if viable.min() == viable.max():
            return float("nan")
        return compute_auc(np.asarray(row["test_scores"]), viable)

    def run(self) -> list[dict[str, Any]]:
        rows = [self.run_cell(m, p, f, s) for s in self.seeds for p in self.priors for m in self.methods
                for f in range(self.num_folds)]
        for r in rows:
            r["auc_viable"] = self.viability_auc(r)
        self.write_outputs(rows)
        write_study_record(self.output_dir, {"study": "embryo_pu cross-validation", "methods": self.methods,
                                             "priors": self.priors, "seeds": self.seeds, "folds": self.num_folds,
                                             "dataset_dir": self.dataset_dir, "overrides": self.overrides})
        return rows

    def write_outputs(self, rows: list[dict[str, Any]]) -> None:
        info = datalist_info(self.datalist(self.seeds[0]))
        note = f"; true prior of the synthetic data: {info['prior_true']:.3f}" if "prior_true" in info else ""
        title = (f"embryo_pu: {self.num_folds}-fold CV x seeds {self.seeds}, {self.parser['epochs']} epochs{note}")
        metrics = [*METRICS, *(["auc_viable"] if rows and all(np.isfinite(r.get("auc_viable", np.nan))
                                                               for r in rows) else [])]
        cols = ["method", "prior", "fold", "seed", *metrics, "accuracy@0.5", "threshold@val", "negative_risk_fraction"]
        save_results_table(rows, self.output_dir / f"{self.table_name}_folds", columns=cols, precision=3, title=title)
        # per seed: mean over folds; the interval is over seeds (folds of one seed are not independent samples)
        per_seed = []
        for key in {(r["method"], r["prior"], r["seed"]) for r in rows}:
            sel = [r for r in rows if (r["method"], r["prior"], r["seed"]) == key]
            per_seed.append({"method": key[0], "prior": key[1], "seed": key[2],
                             **{m: float(np.mean([r[m] for r in sel])) for m in metrics}})
        per_seed.sort(key=lambda r: (self.priors.index(r["prior"]), self.methods.index(r["method"]), r["seed"]))
        save_results_table(summary_rows(per_seed, ["method", "prior"], metrics), self.output_dir / self.table_name,
                           precision=3, title=title + " (mean over folds per seed; SD and interval over seeds)")
        if self.reference in self.methods and len(self.methods) > 1 and len(self.seeds) > 1:
            diffs = [d for m in ("auc", "f1@val", "recall@0.5", *metrics[len(METRICS):])
                     for d in paired_rows(per_seed, ["prior"], "method", self.reference, m)]
            save_results_table(diffs, self.output_dir / f"{self.table_name}_vs_{self.reference}", precision=3,
                               title=f"Each method minus {self.reference}, paired on seeds (fold means)")
        seed = self.seeds[0]
        for prior in self.priors:
            curves = {}
            for m in self.methods:
                sel = [r for r in rows if r["method"] == m and r["prior"] == prior and r["seed"] == seed]
                curves[m] = (np.concatenate([r["test_labels"] for r in sel]),
                             np.concatenate([r["test_scores"] for r in sel]))
            suffix = "" if len(self.priors) == 1 else f"_pi{prior:g}"
            plot_roc_curves(curves, self.output_dir / f"roc{suffix}.png",
                            title=f"pooled test scores over {self.num_folds} folds, prior {prior:g}, seed {seed}")
        if self.figure_method in self.methods:
            self.decision_figures(self.figure_method, self.priors[0], seed)

    def decision_figures(self, method: str, prior: float, seed: int, fold: int = 0) -> list[Path]:
        """Per-frame score timelines and saliency overlays for the highest-scored live birth and failure of a fold.

        A good-looking failure is exactly the case the study is about; the synthetic data marks which failures are
        viable-looking with a hidden abnormality.
        """
        cell = self.output_dir / f"{method.replace('+', '_')}_pi{prior:g}_fold{fold}_seed{seed}"
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(bundle_configs(self.bundle_root, "train.json"))
        parser.update(self.overrides)
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(cell / "models" / "model.pt", map_location="cpu", weights_only=True))
        split = fold_items(self.datalist(seed), fold, self.num_folds, self.parser["val_fraction"], seed)
        load = self.loader()
        p_seq, p_frames = predict_sequences(net, split["test"], load)
        y = np.array([it["label"] for it in split["test"]])
        order = np.argsort(-p_seq)
        picks = [int(order[y[order] == c][0]) for c in (1, 0) if (y == c).any()]
        layer = f"net.encoder.stage{len(self.parser['channels']) - 1}"
        paths = []
        for i in picks:
            item = split["test"][i]
            name = str(item.get("sequence", Path(str(item["image"])).name))
            kind = "live birth" if y[i] else "failure"
            if not y[i] and item.get("viable") and item.get("abnormal"):
                kind += ", viable-looking with hidden abnormality"
            fig_dir = self.output_dir / "figures"
            paths.append(plot_score_timeline(p_frames[i], fig_dir / f"timeline_{name}.png", sequence_score=p_seq[i],
                                             title=f"{name} ({kind}) {method}: per-frame live-birth probability"))
            frames = load(dict(item))["image"][0]
            with torch.enable_grad():
                sal = frame_saliency(net.frame_scorer(), frames[:, None], "gradcam", target_layers=layer)
            paths.append(plot_frame_saliency(frames.numpy(), sal, fig_dir / f"saliency_{name}.png", p_frames[i],
                                             title=f"{name} ({kind}), gradcam, score {p_seq[i]:.3f}"))
        return paths
