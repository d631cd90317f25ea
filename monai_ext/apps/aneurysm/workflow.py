"""The aneurysm study workflow: landmark pre-training, transfer to aneurysm classification, landmark localisation.

Stages (the ``stages`` argument; all on by default):

``"pretrain"``
    A MiniVGG classifies tri-planar patches into landmark classes ``1..L`` and background ``0`` (random views:
    jitter, rotated/scaled frame, intensity changes, re-drawn every epoch). Validation top-1 (landmark patches at
    the exact landmark, background patches uniform and at 4-8 mm from landmarks, no augmentation) and a confusion
    matrix on the validation cases. Checkpoint ``landmark_net.pt``.
``"transfer"``
    Features (``net.features``) of the aneurysm/normal-vessel candidate patches from (a) the landmark-pretrained
    network, (b) the same architecture randomly initialised and (c) the same architecture pre-trained on natural
    images (:mod:`monai_ext.apps.aneurysm.natural`, checkpoint ``natural_net.pt``) feed scikit-learn's
    ``AdaBoostClassifier``; the ROC AUC after each boosting round (1..``n_estimators``) is measured with
    case-grouped stratified ``n_splits``-fold cross-validation. Optional (``finetune=True``): end-to-end
    fine-tuning of the landmark network with a new 2-class head, same folds.
``"localise"``
    Dense tri-planar classification around each landmark's mean training position predicts its position on the
    test cases; error in mm per landmark, compared with the spread between raters when the datalist has them.

Reference: the study reproduced is Roth et al.'s tri-planar representation (MICCAI 2014) used for landmark
pre-training and transfer to aneurysm detection with AdaBoost (see the bundle README).
"""

from __future__ import annotations

import copy
import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from monai_ext.data import load_datalist
from monai_ext.utils import as_bool, default_device, load_checkpoint, save_results_table

from .data import Case, candidate_patches, landmark_names_of, load_cases, sample_landmark_patches
from .evaluation import adaboost_auc_curve, confusion_matrix, localise_landmarks
from .inference import save_priors
from .natural import load_natural_images, sample_natural_patches
from .plots import plot_auc_curves, plot_confusion_matrix, plot_localisation_errors
from .training import is_main_process, predict, train_classifier, unwrap

__all__ = ["AneurysmWorkflow", "replace_head"]

logger = logging.getLogger(__name__)

_STAGES = ("pretrain", "transfer", "localise")


def replace_head(net: nn.Module, num_classes: int) -> nn.Module:
    """A deep copy of ``net`` (a MiniVGG: ``features`` + ``head``) whose output layer has ``num_classes`` logits."""
    new = copy.deepcopy(unwrap(net))
    hidden = new.head[-1].in_features
    new.head[-1] = nn.Linear(hidden, num_classes).to(next(new.parameters()).device)
    new.num_classes = num_classes
    return new


def _ddp(net: nn.Module, device: torch.device) -> nn.Module:
    if dist.is_available() and dist.is_initialized():
        return nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    return net


class AneurysmWorkflow:
    """Run the study's stages (see the module docstring) and write checkpoints, tables and plots.

    Args:
        network: landmark classifier with ``features(x)`` and a ``head`` ending in ``nn.Linear`` (a
            :class:`~monai_ext.networks.nets.MiniVGG` with ``num_classes = len(landmark_names) + 1``).
        datalist: datalist JSON with ``training``/``validation``/``test`` sections and ``landmark_names``.
        output_dir: folder of tables, plots and TensorBoard logs (``tb/``).
        ckpt_dir: folder of the checkpoints.
        device: torch device (``None``: CUDA when available).
        max_epochs: landmark pre-training epochs.
        seed: seed of every random draw.
        train: ``False`` evaluates existing checkpoints without training (``evaluate.json``).
        stages: subset of ``("pretrain", "transfer", "localise")``.
        patch_size: tri-planar plane side.
        extent_mm: physical plane side (``None``: one voxel per pixel).
        samples_per_case: patches drawn per training case and epoch.
        val_samples_per_case: patches per validation case.
        batch_size: mini-batch size.
        lr: learning rate.
        jitter: landmark jitter radius (mm).
        rotate_range: frame rotation range (radians).
        scale_range: in-plane scale range.
        background_prob: fraction of uniform background samples.
        natural_epochs: epochs of the natural-image network (default ``max_epochs``).
        natural_samples_per_epoch: natural-image patches per epoch.
        transfer_copies: patches per training candidate for AdaBoost (1 original + augmented views).
        n_estimators: maximum number of AdaBoost weak learners.
        n_splits: cross-validation folds of the transfer stage.
        report_weak_learners: numbers of weak learners reported in the summary table.
        finetune: also fine-tune the landmark network end to end with a 2-class head.
        finetune_epochs: epochs of that fine-tuning per fold.
        search_radius: half side (voxels) of the localisation search cube.
        search_step: coarse localisation grid step (voxels).
        refine_radius: half side (voxels) of the unit-step refinement cube around the coarse maximum.
        localise_max_cases: localise on at most this many test cases (``None``: all).
        raters_key: datalist key listing per-case rater files (inter-rater spread), e.g. ``"raters"``.
        resume: resume from checkpoints in ``ckpt_dir``.

    Raises:
        ValueError: unknown stage, or a network whose ``num_classes`` does not match the datalist.
    """

    def __init__(
        self,
        network: nn.Module,
        datalist: str | os.PathLike,
        output_dir: str | os.PathLike,
        ckpt_dir: str | os.PathLike,
        device: str | torch.device | None = None,
        max_epochs: int = 8,
        seed: int = 0,
        train: bool = True,
        stages: Sequence[str] = _STAGES,
        patch_size: int = 32,
        extent_mm: float | None = None,
        samples_per_case: int = 128,
        val_samples_per_case: int = 64,
        batch_size: int = 64,
        lr: float = 2e-3,
        jitter: float = 1.5,
        rotate_range: float = 0.15,
        scale_range: float = 0.1,
        background_prob: float = 0.3,
        natural_epochs: int | None = None,
        natural_samples_per_epoch: int = 768,
        transfer_copies: int = 4,
        n_estimators: int = 200,
        n_splits: int = 5,
        report_weak_learners: Sequence[int] = (5, 20, 200),
        finetune: bool = False,
        finetune_epochs: int = 4,
        search_radius: float = 10.0,
        search_step: float = 3.0,
        refine_radius: float = 2.0,
        localise_max_cases: int | None = None,
        raters_key: str | None = None,
        resume: bool = True,
    ) -> None:
        unknown = [s for s in stages if s not in _STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; expected a subset of {_STAGES}.")
        self.device = default_device(device)
        self.network = network.to(self.device)
        self.random_network = copy.deepcopy(unwrap(network))  # (b) random-init features: the untrained copy
        self.datalist = Path(datalist)
        self.output_dir = Path(output_dir)
        self.ckpt_dir = Path(ckpt_dir)
        self.names = landmark_names_of(datalist)
        num_classes = getattr(unwrap(network), "num_classes", None)
        if num_classes is not None and num_classes != len(self.names) + 1:
            raise ValueError(
                f"network num_classes={num_classes} but the datalist has {len(self.names)} landmark names "
                f"(+ background = {len(self.names) + 1}); set --num_classes {len(self.names) + 1}."
            )
        self.epochs, self.seed, self.train, self.stages = int(max_epochs), int(seed), bool(train), tuple(stages)
        self.patch_size, self.extent_mm = int(patch_size), extent_mm
        self.samples_per_case, self.val_samples_per_case = int(samples_per_case), int(val_samples_per_case)
        self.batch_size, self.lr = int(batch_size), float(lr)
        self.aug = {"jitter": jitter, "rotate_range": rotate_range, "scale_range": scale_range,
                    "background_prob": background_prob}
        self.natural_epochs = self.epochs if natural_epochs is None else int(natural_epochs)
        self.natural_samples_per_epoch = int(natural_samples_per_epoch)
        self.transfer_copies, self.n_estimators, self.n_splits = int(transfer_copies), int(n_estimators), int(n_splits)
        self.report_weak_learners = [int(n) for n in report_weak_learners if int(n) <= n_estimators]
        self.finetune, self.finetune_epochs = as_bool(finetune, "finetune"), int(finetune_epochs)
        self.search_radius, self.search_step = float(search_radius), float(search_step)
        self.refine_radius = float(refine_radius)
        self.localise_max_cases, self.raters_key = localise_max_cases, raters_key
        self.resume = as_bool(resume, "resume")
        self.results: dict[str, Any] = {}
        self.summary: list[dict[str, Any]] = []

    @property
    def max_epochs(self) -> int:
        """Landmark pre-training epochs (the bundle property ``train#trainer#max_epochs``)."""
        return self.epochs

    @property
    def train_items(self) -> list[dict[str, Any]]:
        """The datalist's training items (the bundle property ``train#dataset``)."""
        return load_datalist(self.datalist, "training", required_keys=("image", "landmarks"), check_files=False)

    # ------------------------------------------------------------------ helpers
    def _load(self, section: str) -> list[Case]:
        extra = (self.raters_key,) if self.raters_key else ()
        return load_cases(self.datalist, section, self.names, extra_keys=extra,
                          match_by_label=self.raters_key is not None)

    def _writer(self) -> Any:
        if not is_main_process():
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.output_dir / "tb"))

    def _sample(self, cases: Sequence[Case], n: int, seed: int, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_landmark_patches(cases, n, seed, self.patch_size, self.extent_mm, augment=augment, **self.aug)

    def _require_ckpt(self, name: str) -> Path:
        path = self.ckpt_dir / name
        if not self.train and not path.is_file():
            raise FileNotFoundError(f"evaluation needs the checkpoint '{path}'; run train.json first.")
        return path

    # ------------------------------------------------------------------ stages
    def pretrain(self, train_cases: Sequence[Case], val_cases: Sequence[Case], writer: Any) -> None:
        """Landmark pre-training (or loading its checkpoint), then validation top-1 and the confusion matrix."""
        ckpt = self._require_ckpt("landmark_net.pt")
        val_x, val_y = self._sample(val_cases, self.val_samples_per_case, self.seed + 7919, augment=False)

        def validate(net: nn.Module) -> dict[str, float]:
            pred = predict(net, val_x, self.device).argmax(1)
            return {"val_top1": float((pred == val_y).float().mean())}

        net = _ddp(self.network, self.device)
        train_classifier(
            net, lambda e: self._sample(train_cases, self.samples_per_case, self.seed * 1000 + e, augment=True),
            self.epochs if self.train else 0, ckpt, self.device, lr=self.lr, batch_size=self.batch_size,
            val_fn=validate, writer=writer, tag="pretrain", resume=True if not self.train else self.resume,
            seed=self.seed,
        )
        if not self.train:
            unwrap(self.network).load_state_dict(load_checkpoint(ckpt, self.device)["model"])
        if not is_main_process():
            return
        pred = predict(self.network, val_x, self.device).argmax(1).numpy()
        y = val_y.numpy()
        cm = confusion_matrix(y, pred, len(self.names) + 1)
        top1 = float((pred == y).mean())
        lm = y > 0
        self.results.update(val_top1=top1, val_top1_landmarks=float((pred[lm] == y[lm]).mean()),
                            val_top1_background=float((pred[~lm] == y[~lm]).mean()), val_patches=int(len(y)))
        plot_confusion_matrix(cm, ["background", *self.names], self.output_dir / "confusion_matrix.png",
                              title=f"landmark classification, validation top-1 {top1:.3f}")
        rows = [{"class": c, "name": n, "count": int(cm[c].sum()),
                 "recall": float(cm[c, c] / max(cm[c].sum(), 1))} for c, n in enumerate(["background", *self.names])]
        save_results_table(rows, self.output_dir / "pretrain_per_class", title="Validation recall per class")
        self.summary += [{"stage": "pretrain", "metric": "validation top-1 (all patches)", "value": top1},
                         {"stage": "pretrain", "metric": "validation top-1 (landmark patches)",
                          "value": self.results["val_top1_landmarks"]},
                         {"stage": "pretrain", "metric": "validation top-1 (background patches)",
                          "value": self.results["val_top1_background"]}]

    def natural_network(self, writer: Any) -> nn.Module:
        """The same architecture pre-trained on scikit-image natural-image patches (trained or loaded)."""
        images = load_natural_images()
        net = replace_head(self.random_network, len(images)).to(self.device)
        ckpt = self._require_ckpt("natural_net.pt")
        n = self.natural_samples_per_epoch
        val_x, val_y = sample_natural_patches(images, 512, self.seed + 31337, self.patch_size)

        def validate(m: nn.Module) -> dict[str, float]:
            return {"val_top1": float((predict(m, val_x, self.device).argmax(1) == val_y).float().mean())}

        ddp = _ddp(net, self.device)
        hist = train_classifier(
            ddp, lambda e: sample_natural_patches(images, n, self.seed * 1000 + 17 + e, self.patch_size),
            self.natural_epochs if self.train else 0, ckpt, self.device, lr=self.lr, batch_size=self.batch_size,
            val_fn=validate, writer=writer, tag="natural", resume=True if not self.train else self.resume,
            seed=self.seed + 1,
        )
        if not self.train:
            net.load_state_dict(load_checkpoint(ckpt, self.device)["model"])
        if is_main_process() and hist.get("val_top1"):
            self.results["natural_val_top1"] = hist["val_top1"][-1]
            self.summary.append({"stage": "natural-image pre-training", "metric": "validation top-1",
                                 "value": hist["val_top1"][-1]})
        return net

    def transfer(self, cases: Sequence[Case], natural: nn.Module) -> None:
        """AdaBoost ROC AUC vs number of weak learners for each feature source (+ optional fine-tuning)."""
        x, y, groups, original = candidate_patches(cases, self.patch_size, self.extent_mm,
                                                   copies=self.transfer_copies, seed=self.seed)
        sources = {"landmark-pretrained": self.network, "random init": self.random_network,
                   "natural-image pretrained": natural}
        curves = {}
        for name, net in sources.items():
            feats = predict(net.to(self.device), x, self.device, fn="features").numpy()
            curves[name] = adaboost_auc_curve(feats, y.numpy(), groups, original, self.n_estimators, self.n_splits,
                                              self.seed)
            logger.info("transfer %s: AUC@%d %.3f", name, self.n_estimators, curves[name].mean(0)[-1])
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
        rows = []
        for name, c in curves.items():
            row: dict[str, Any] = {"features": name}
            for k in self.report_weak_learners:
                row[f"AUC@{k}"] = float(c[:, k - 1].mean())
                row[f"std@{k}"] = float(c[:, k - 1].std())
            rows.append(row)
            self.results[f"auc_{name}"] = {k: float(c[:, k - 1].mean()) for k in self.report_weak_learners}
        if self.finetune:
            aucs = self._finetune(x, y, groups, original)
            row = {"features": "landmark-pretrained, fine-tuned end to end (no AdaBoost: same AUC in every column)"}
            for k in self.report_weak_learners:
                row[f"AUC@{k}"], row[f"std@{k}"] = float(np.mean(aucs)), float(np.std(aucs))
            rows.append(row)
            self.results["auc_finetuned"] = float(np.mean(aucs))
            if self.train:  # the deployable aneurysm classifier: fine-tuned on every candidate
                net = replace_head(self.network, 2).to(self.device)
                train_classifier(net, lambda e: (x, y), self.finetune_epochs, self.ckpt_dir / "aneurysm_net.pt",
                                 self.device, lr=self.lr / 4, batch_size=self.batch_size, tag="finetune all",
                                 resume=False, seed=self.seed)
        save_results_table(rows, self.output_dir / "transfer_auc",
                           title=f"ROC AUC (mean and std over {self.n_splits} case-grouped folds)")
        for r in rows[: len(curves)]:
            for k in self.report_weak_learners:
                self.summary.append({"stage": "transfer", "metric": f"AUC@{k} {r['features']}", "value": r[f"AUC@{k}"]})
        if self.finetune:
            self.summary.append({"stage": "transfer", "metric": "AUC landmark-pretrained, fine-tuned end to end",
                                 "value": self.results["auc_finetuned"]})

    def _finetune(self, x: torch.Tensor, y: torch.Tensor, groups: np.ndarray, original: np.ndarray) -> list[float]:
        folds = StratifiedGroupKFold(n_splits=self.n_splits, shuffle=True, random_state=self.seed)
        aucs = []
        for f, (tr, te) in enumerate(folds.split(x.numpy(), y.numpy(), groups)):
            te = te[original[te]]
            net = replace_head(self.network, 2).to(self.device)
            train_classifier(net, lambda e, tr=tr: (x[tr], y[tr]), self.finetune_epochs,
                             self.ckpt_dir / f"finetune_fold{f}.pt", self.device, lr=self.lr / 4,
                             batch_size=self.batch_size, tag=f"finetune fold {f}", resume=False, seed=self.seed + f)
            (self.ckpt_dir / f"finetune_fold{f}.pt").unlink(missing_ok=True)  # a cross-validation model, not kept
            prob = torch.softmax(predict(net, x[te], self.device), 1)[:, 1].numpy()
            aucs.append(float(roc_auc_score(y[te].numpy(), prob)))
        return aucs

    def localise(self, train_cases: Sequence[Case], test_cases: Sequence[Case]) -> None:
        """Dense localisation of every landmark on the test cases; error in mm, rater spread when available."""
        labels = np.arange(1, len(self.names) + 1)
        priors = np.zeros((len(labels), 3))
        for k in labels:
            pts = [c.landmarks[c.landmark_labels == k].mean(0) for c in train_cases if (c.landmark_labels == k).any()]
            if not pts:
                raise ValueError(f"no training case has landmark {k} ('{self.names[k - 1]}'); cannot localise it.")
            priors[k - 1] = np.mean(pts, 0)
        cases = list(test_cases)[: self.localise_max_cases]
        errors, prior_err, spread = [], [], []
        for case in cases:
            pred, _ = localise_landmarks(self.network, case.image, priors, labels, self.device, self.search_radius,
                                         self.search_step, self.patch_size, self.extent_mm,
                                         refine_radius=self.refine_radius)
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
                mean = np.nanmean(r, 0)
                spread.append(np.nanmean(np.linalg.norm((r - mean) @ lin.T, axis=-1), 0))
        errors, prior_err = np.array(errors), np.array(prior_err)
        rows = []
        for k, name in enumerate(self.names):
            row: dict[str, Any] = {"landmark": name, "error_mm_mean": float(np.nanmean(errors[:, k])),
                                   "error_mm_median": float(np.nanmedian(errors[:, k])),
                                   "prior_error_mm": float(np.nanmean(prior_err[:, k]))}
            if spread:
                row["inter_rater_spread_mm"] = float(np.nanmean(np.array(spread)[:, k]))
            rows.append(row)
        save_results_table(rows, self.output_dir / "localisation",
                           title=f"Landmark localisation error on {len(cases)} test case(s)")
        plot_localisation_errors(self.names, errors, self.output_dir / "localisation_error.png",
                                 reference=np.nanmean(np.array(spread), 0) if spread else None)
        self.results.update(localisation_error_mm=float(np.nanmean(errors)),
                            localisation_prior_error_mm=float(np.nanmean(prior_err)))
        self.summary += [{"stage": "localise", "metric": "mean localisation error (mm)",
                          "value": float(np.nanmean(errors))},
                         {"stage": "localise", "metric": "mean error of the prior (mean training position, mm)",
                          "value": float(np.nanmean(prior_err))}]
        if spread:
            self.results["inter_rater_spread_mm"] = float(np.nanmean(spread))
            self.summary.append({"stage": "localise", "metric": "mean inter-rater spread (mm)",
                                 "value": float(np.nanmean(spread))})

    # ------------------------------------------------------------------ entry point
    def run(self) -> dict[str, Any]:
        """Run the configured stages; returns the headline numbers (also written to ``results.csv/.md``)."""
        torch.manual_seed(self.seed)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        writer = self._writer()
        train_cases, val_cases, test_cases = self._load("training"), self._load("validation"), self._load("test")
        if not val_cases:
            raise ValueError(f"datalist '{self.datalist}' has no validation case; top-1 needs one.")
        self.pretrain(train_cases, val_cases, writer)
        if is_main_process():
            save_priors(train_cases, self.names, self.ckpt_dir / "landmark_priors.json")
        if "transfer" in self.stages:
            natural = self.natural_network(writer)
            if is_main_process():
                self.transfer([*train_cases, *val_cases, *test_cases], natural)
        if "localise" in self.stages and is_main_process() and test_cases:
            self.localise(train_cases, test_cases)
        if is_main_process():
            save_results_table(self.summary, self.output_dir / "results", title="aneurysm study: headline numbers")
        if writer is not None:
            writer.close()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return self.results
