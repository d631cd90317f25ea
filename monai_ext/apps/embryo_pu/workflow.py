"""Cross-validated comparison of PN and PU learning for live-birth prediction from time-lapse embryo sequences.

The study (see ``bundles/embryo_pu/docs/README.md``): live births are the labeled positives; *all* failures are
unlabeled, because failures contain good-looking embryos that failed for reasons with no visual trace. Methods:

- ``pn``: binary cross-entropy with the failures as negatives (the baseline of the seed study).
- ``upu`` / ``nnpu``: the unbiased / non-negative PU risks (du Plessis et al. ICML 2015; Kiryo et al. NeurIPS 2017),
  :class:`~monai_ext.losses.NNPULoss`.
- ``auc_pu`` / ``auc_nnpu``: the PU estimate of the pairwise AUC risk without / with the non-negative correction
  (Sakai et al. 2018 with the nnPU correction), :class:`~monai_ext.losses.AUCNNPULoss`, plus
  ``classification_weight`` times the (n)nPU risk so that scores stay calibrated for a 0.5 threshold.
- any of them with the suffix ``+infonce``: plus ``infonce_weight`` times :class:`~monai_ext.losses.InfoNCELoss`
  on the frame embeddings, the frames of one sequence being positives of each other (mutual-information metric
  learning).

Training is frame-level (every frame carries its sequence's PU label) on batches of whole sequences; the sequence
score is the temporal pooling of the frame scores. Folds are stratified over *sequences*, so no frame of a test
sequence is ever seen in training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from monai_ext.data import PositiveBatchSampler, load_datalist, resolve_datalist
from monai_ext.data.synthetic.embryo import generate_embryo_dataset
from monai_ext.losses import AUCNNPULoss, InfoNCELoss, NNPULoss, pu_risk_terms
from monai_ext.metrics import binary_metrics_at_threshold, compute_auc, select_threshold
from monai_ext.networks.nets import TimeLapseNet
from monai_ext.utils import (
    as_bool,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    save_results_table,
    set_rng_state,
)
from monai_ext.visualize import frame_saliency, plot_frame_saliency, plot_roc_curves, plot_score_timeline

from .data import load_sequence, normalize_sequence, sequence_folds

__all__ = ["BASE_METHODS", "EmbryoPUWorkflow", "build_criterion", "parse_method"]

BASE_METHODS = ("pn", "upu", "nnpu", "auc_pu", "auc_nnpu")
_METRIC_KEYS = ("auc", "recall@0.5", "precision@0.5", "f1@0.5", "recall@val", "precision@val", "f1@val")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def parse_method(name: str) -> tuple[str, bool]:
    """Split ``"auc_nnpu+infonce"`` into ``("auc_nnpu", True)``.

    Raises:
        ValueError: when the base method is not one of :data:`BASE_METHODS` or the suffix is not ``+infonce``.
    """
    base, _, suffix = str(name).partition("+")
    if base not in BASE_METHODS or suffix not in ("", "infonce"):
        raise ValueError(f"method must be one of {BASE_METHODS}, optionally with '+infonce', got {name!r}.")
    return base, suffix == "infonce"


def build_criterion(method: str, prior: float, beta: float = 0.0, gamma: float = 1.0,
                    classification_weight: float = 0.5) -> torch.nn.Module:
    """The frame-level loss of a base method, called as ``criterion(logits, targets)`` with 0/1 targets.

    Args:
        method: one of :data:`BASE_METHODS` (no ``+infonce`` suffix).
        prior: class prior of the unlabeled data (unused by ``pn``).
        beta: nnPU threshold ``beta``.
        gamma: nnPU correction step scale ``gamma``.
        classification_weight: weight of the (n)nPU classification term added to the AUC risks.

    Raises:
        ValueError: on an unknown method.
    """
    if method == "pn":
        return torch.nn.BCEWithLogitsLoss()
    if method in ("upu", "nnpu"):
        return NNPULoss(prior, beta=beta, gamma=gamma, nonnegative=method == "nnpu")
    if method in ("auc_pu", "auc_nnpu"):
        return AUCNNPULoss(prior, beta=beta, gamma=gamma, nonnegative=method == "auc_nnpu",
                           classification_weight=classification_weight)
    raise ValueError(f"method must be one of {BASE_METHODS}, got {method!r}.")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations per sequence (the same for all its frames)."""
    out = x.clone()
    for i in range(x.shape[0]):
        r = torch.randint(0, 8, (1,), generator=gen).item()
        s = out[i]
        if r & 1:
            s = s.flip(-1)
        s = torch.rot90(s, int(r >> 1), dims=(-2, -1))
        out[i] = s
    return out


class EmbryoPUWorkflow:
    """Run every (method, prior, fold) job, evaluate on the held-out sequences and write tables and figures.

    Args:
        dataset_dir: folder holding ``dataset.json`` or a datalist JSON path; ``None`` generates the embedded
            synthetic data under ``output_dir``. The ``"training"`` section lists ``{"image": <folder of frames
            or 2D+t image>, "label": 0/1}`` per sequence (1 = live birth).
        output_dir: tables, figures, TensorBoard logs.
        ckpt_dir: per-job checkpoints (``<method>_pi<prior>/fold<k>.pt``) and ``model.pt`` for inference.
        methods: method names (see :func:`parse_method`).
        prior: class prior ``pi`` of the unlabeled data (positive rate among the failures).
        priors: optional sweep: run every method at each of these priors (overrides ``prior``).
        num_folds: cross-validation folds.
        val_fraction: fraction of each fold's training sequences held out to choose the threshold.
        threshold_method: ``select_threshold`` method on the validation split (``youden``, ``max_f1``, ...).
        max_epochs: epochs per job.
        batch_size: sequences per batch.
        min_positives: labeled positive sequences per batch at least.
        learning_rate: Adam learning rate.
        weight_decay: Adam weight decay.
        channels: encoder widths of :class:`TimeLapseNet`.
        pooling: temporal pooling (``mean`` or ``attention``).
        beta: nnPU ``beta``.
        gamma: nnPU ``gamma``.
        classification_weight: weight of the classification term of the AUC methods.
        infonce_weight: weight of the InfoNCE term for ``+infonce`` methods.
        temperature: InfoNCE temperature.
        augment: random flips / rotations of the training sequences.
        train_frames: frames drawn at random from each training sequence per batch (``None``: all); evaluation
            always scores every frame.
        num_cases: synthetic sequences (embedded data only).
        num_frames: frames per sequence (real data is resampled to this many).
        image_size: frame size (real data is resized).
        figure_method: method (at the first prior) whose fold-0 model draws the timeline and saliency figures and is
            saved as ``model.pt``; ``None`` for the last method.
        saliency_method: ``gradcam`` or ``occlusion``.
        save_figures: draw the decision-basis figures and save ``model.pt`` (off for a prior sweep, so that the main
            run's ``model.pt`` is kept).
        table_name: stem of the results files.
        device: torch device.
        seed: seed of the folds, network initialisation and sampling.
        resume: continue from the checkpoints in ``ckpt_dir`` (finished jobs are not retrained).

    Raises:
        ValueError: on an unknown method, a prior outside (0, 1) or an empty method list.
    """

    def __init__(self, dataset_dir: str | None, output_dir: str, ckpt_dir: str,
                 methods: Sequence[str] = BASE_METHODS, prior: float = 0.24, priors: Sequence[float] | None = None,
                 num_folds: int = 5, val_fraction: float = 0.2, threshold_method: str = "youden",
                 max_epochs: int = 15, batch_size: int = 16, min_positives: int = 2, learning_rate: float = 2e-3,
                 weight_decay: float = 1e-4, channels: Sequence[int] = (8, 16, 32), pooling: str = "mean",
                 beta: float = 0.0, gamma: float = 1.0, classification_weight: float = 0.5,
                 infonce_weight: float = 0.1, temperature: float = 0.1, augment: bool = True,
                 train_frames: int | None = 4,
                 num_cases: int = 200, num_frames: int = 8, image_size: int = 64, figure_method: str | None = None,
                 saliency_method: str = "gradcam", save_figures: bool = True, table_name: str = "results",
                 device: str | torch.device = "cpu",
                 seed: int = 0, resume: bool = True) -> None:
        methods = list(methods)
        if not methods:
            raise ValueError("methods must name at least one method.")
        for m in methods:
            parse_method(m)
        self.priors = []
        for p in priors if priors else [prior]:
            try:  # a CLI override arrives as a string
                value = float(p)
            except (TypeError, ValueError) as e:
                raise ValueError(f"prior must be a number in (0, 1), got {p!r}.") from e
            if not 0.0 < value < 1.0:
                raise ValueError(f"prior must be in (0, 1), got {value!r}.")
            self.priors.append(value)
        self.methods = methods
        self.dataset_dir = dataset_dir
        self.output_dir = Path(output_dir)
        self.ckpt_dir = Path(ckpt_dir)
        self.num_folds = int(num_folds)
        self.val_fraction = float(val_fraction)
        self.threshold_method = threshold_method
        self.max_epochs = int(max_epochs)
        self.batch_size = int(batch_size)
        self.min_positives = int(min_positives)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.channels = tuple(int(c) for c in channels)
        self.pooling = pooling
        self.beta, self.gamma = float(beta), float(gamma)
        self.classification_weight = float(classification_weight)
        self.infonce_weight = float(infonce_weight)
        self.temperature = float(temperature)
        self.augment = as_bool(augment, "augment")
        self.train_frames = int(train_frames) if train_frames else None
        self.num_cases, self.num_frames, self.image_size = int(num_cases), int(num_frames), int(image_size)
        self.figure_method = figure_method if figure_method is not None else methods[-1]
        parse_method(self.figure_method)
        self.saliency_method = saliency_method
        self.save_figures = as_bool(save_figures, "save_figures")
        self.table_name = table_name
        self.device = torch.device(device)
        self.seed = int(seed)
        self.resume = as_bool(resume, "resume")
        self._data: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []
        #: per job, the number of training batches whose unbiased PU estimate was below ``-beta``
        self.negative_risk_batches: dict[tuple[str, float, int], int] = {}

    # ------------------------------------------------------------------------------------------------- data
    @property
    def datalist_path(self) -> Path:
        """The datalist JSON (the synthetic one is generated once, by rank 0 under DDP)."""
        kwargs = {"seed": self.seed, "num_cases": self.num_cases, "num_frames": self.num_frames,
                  "image_size": self.image_size}
        if _rank() == 0:
            path = resolve_datalist(self.dataset_dir, self.output_dir, generate_embryo_dataset, kwargs)
        if _world() > 1:
            dist.barrier()
        if _rank() != 0:
            path = resolve_datalist(self.dataset_dir, self.output_dir, generate_embryo_dataset, kwargs)
        return path

    @property
    def data(self) -> dict[str, Any]:
        """``{"x": (N, 1, T, H, W) tensor, "y": (N,) labels, "names": [...], "items": [...], "info": {...}}``."""
        if self._data is None:
            path = self.datalist_path
            items = load_datalist(path, "training", ("image", "label"), path_keys=("image",))
            labels = []
            for i, it in enumerate(items):
                if it["label"] not in (0, 1, True, False):
                    raise ValueError(f"datalist '{path}' item {i} key 'label' must be 0 or 1, got {it['label']!r}.")
                labels.append(int(it["label"]))
            seqs = [normalize_sequence(load_sequence(it["image"], self.num_frames, self.image_size)) for it in items]
            with open(path) as f:
                info = {k: v for k, v in json.load(f).items() if k not in ("training", "validation", "test")}
            self._data = {
                "x": torch.from_numpy(np.stack(seqs))[:, None],
                "y": np.asarray(labels, dtype=int),
                "names": [str(it.get("sequence", Path(str(it["image"])).name)) for it in items],
                "items": items,
                "info": info,
            }
        return self._data

    @property
    def folds(self) -> list[dict[str, np.ndarray]]:
        return sequence_folds(self.data["y"], self.num_folds, self.val_fraction, self.seed)

    def build_network(self) -> TimeLapseNet:
        return TimeLapseNet(spatial_dims=2, in_channels=1, channels=self.channels, pooling=self.pooling)

    # ------------------------------------------------------------------------------------------------- jobs
    @staticmethod
    def job_tag(method: str, prior: float) -> str:
        return f"{method.replace('+', '_')}_pi{prior:g}"

    def jobs(self) -> list[tuple[str, float, int]]:
        return [(m, p, k) for p in self.priors for m in self.methods for k in range(self.num_folds)]

    def _ckpt_path(self, method: str, prior: float, fold: int) -> Path:
        return self.ckpt_dir / self.job_tag(method, prior) / f"fold{fold}.pt"

    def train_job(self, method: str, prior: float, fold: int) -> TimeLapseNet:
        """Train (or resume, or reload when finished) one method on one fold; returns the network in eval mode."""
        base, use_infonce = parse_method(method)
        torch.manual_seed(self.seed * 1000 + fold)
        net = self.build_network().to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        path = self._ckpt_path(method, prior, fold)
        start, gen_state = 0, None
        if self.resume and path.is_file():
            ckpt = load_checkpoint(path, map_location=self.device)
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start = int(ckpt["epoch"])
            # -1: unknown (a checkpoint written before this count was kept)
            self.negative_risk_batches[(method, prior, fold)] = int(ckpt.get("negative_risk_batches", -1))
            if start < self.max_epochs:
                set_rng_state(ckpt["rng"])
                gen_state = ckpt.get("generator")
        else:
            self.negative_risk_batches[(method, prior, fold)] = 0
        if start >= self.max_epochs:
            return net.eval()
        criterion = build_criterion(base, prior, self.beta, self.gamma, self.classification_weight)
        infonce = InfoNCELoss(self.temperature) if use_infonce else None
        data = self.data
        train_idx = self.folds[fold]["train"]
        n_pos = int(data["y"][train_idx].sum())
        if n_pos == 0 or n_pos == train_idx.size:
            raise ValueError(f"fold {fold} training split has {n_pos} live births among {train_idx.size} sequences; "
                             "both classes are needed (use more sequences or fewer folds).")
        sampler = PositiveBatchSampler(data["y"][train_idx], self.batch_size, self.min_positives,
                                       seed=self.seed + fold, drop_last=False)
        gen = torch.Generator().manual_seed(self.seed * 7919 + fold)
        if gen_state is not None:  # frame subsets and augmentation continue where the killed run stopped
            gen.set_state(gen_state)
        from torch.utils.tensorboard import SummaryWriter

        # each job is trained by exactly one rank, which logs it
        writer = SummaryWriter(str(self.output_dir / "tensorboard" / self.job_tag(method, prior) / f"fold{fold}"))
        try:
            from tqdm.auto import tqdm

            epochs = tqdm(range(start, self.max_epochs), desc=f"{method} pi={prior:g} fold {fold}", leave=False,
                          initial=start, total=self.max_epochs)
        except ImportError:  # pragma: no cover - tqdm is a MONAI optional dependency
            epochs = range(start, self.max_epochs)
        for epoch in epochs:
            net.train()
            sampler.set_epoch(epoch)
            total, n, below = 0.0, 0, 0
            for batch in sampler:
                idx = train_idx[np.asarray(batch)]
                x = data["x"][idx]
                if self.train_frames and self.train_frames < x.shape[2]:
                    # frame-level training: a random subset of each sequence's frames (sorted, same for the batch)
                    keep = torch.randperm(x.shape[2], generator=gen)[: self.train_frames].sort().values
                    x = x[:, :, keep]
                if self.augment:
                    x = _augment(x, gen)
                x = x.to(self.device)
                frames_per_seq = x.shape[2]
                target = torch.as_tensor(data["y"][idx], dtype=torch.float32, device=self.device)
                out = net.forward_all(x)
                frame_logits = out.frame_logits.reshape(-1)
                frame_target = target.repeat_interleave(frames_per_seq)
                loss = criterion(frame_logits, frame_target)
                negative_risk = self._negative_risk(base, criterion, frame_logits.detach(), frame_target, prior)
                if negative_risk is not None:
                    below += int(negative_risk < -self.beta)
                if infonce is not None:
                    groups = torch.arange(x.shape[0], device=self.device).repeat_interleave(frames_per_seq)
                    loss = loss + self.infonce_weight * infonce(out.embedding.reshape(-1, out.embedding.shape[-1]),
                                                                groups)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
                n += 1
            sched.step()
            writer.add_scalar("train/loss", total / max(n, 1), epoch + 1)
            # how often the unbiased estimate went below -beta (where nnPU / AUC-nnPU take the correction step)
            writer.add_scalar("train/fraction_negative_risk", below / max(n, 1), epoch + 1)
            if self.negative_risk_batches[(method, prior, fold)] >= 0:
                self.negative_risk_batches[(method, prior, fold)] += below
            save_checkpoint({"model": net.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": get_rng_state(),
                             "generator": gen.get_state(),
                             "negative_risk_batches": self.negative_risk_batches[(method, prior, fold)],
                             "method": method, "prior": prior, "fold": fold}, path)
        writer.close()
        return net.eval()

    @staticmethod
    @torch.no_grad()
    def _negative_risk(base: str, criterion: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor,
                       prior: float) -> float | None:
        """The unbiased negative-class risk (uPU bracket) or the unbiased PU-AUC risk of a batch; ``None`` for PN."""
        pos = target > 0.5
        if base == "pn" or not bool(pos.any()) or bool(pos.all()):
            return None
        if base in ("upu", "nnpu"):
            _, rp_minus, ru_minus = pu_risk_terms(logits, pos.to(logits.dtype), criterion.surrogate)
            return float(ru_minus - prior * rp_minus)
        return float(criterion.auc_risk(logits, target))

    @torch.no_grad()
    def predict(self, net: torch.nn.Module, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sequence probabilities ``(n,)`` and frame probabilities ``(n, T)`` of the sequences ``idx``."""
        net.eval()
        seq, frames = [], []
        for start in range(0, len(idx), 32):
            out = net.forward_all(self.data["x"][idx[start:start + 32]].to(self.device))
            seq.append(torch.sigmoid(out.logit).cpu())
            frames.append(torch.sigmoid(out.frame_logits).cpu())
        return torch.cat(seq).numpy(), torch.cat(frames).numpy()

    def evaluate_job(self, net: torch.nn.Module, method: str, prior: float, fold: int) -> dict[str, Any]:
        """AUC and recall/precision/F1 on the fold's test sequences at 0.5 and at the validation threshold."""
        f = self.folds[fold]
        y = self.data["y"]
        p_val, _ = self.predict(net, f["val"])
        p_test, _ = self.predict(net, f["test"])
        thr = select_threshold(p_val, y[f["val"]], self.threshold_method, prior=prior)
        at_half = binary_metrics_at_threshold(p_test, y[f["test"]], 0.5)
        at_val = binary_metrics_at_threshold(p_test, y[f["test"]], thr.threshold)
        return {
            "method": method, "prior": prior, "fold": fold, "auc": compute_auc(p_test, y[f["test"]]),
            "recall@0.5": at_half.recall, "precision@0.5": at_half.precision, "f1@0.5": at_half.f1,
            "accuracy@0.5": at_half.accuracy, "threshold@val": thr.threshold, "recall@val": at_val.recall,
            "precision@val": at_val.precision, "f1@val": at_val.f1,
            "batches_below_beta": self.negative_risk_batches.get((method, prior, fold), 0),
            "test_index": f["test"].tolist(), "test_scores": p_test.tolist(),
        }

    # ------------------------------------------------------------------------------------------------- run
    def run(self) -> list[dict[str, Any]]:
        """Train and evaluate every job (this rank's share under DDP), then write tables and figures on rank 0."""
        return self._run(train=True)

    def evaluate(self) -> list[dict[str, Any]]:
        """Evaluate the finished checkpoints (no training) and rewrite tables and figures.

        Raises:
            FileNotFoundError: when a job has no finished checkpoint in ``ckpt_dir``.
        """
        for method, prior, fold in self.jobs():
            path = self._ckpt_path(method, prior, fold)
            if not path.is_file() or int(load_checkpoint(path)["epoch"]) < self.max_epochs:
                raise FileNotFoundError(f"no finished checkpoint for {method} prior={prior} fold={fold}: '{path}'.")
        return self._run(train=False)

    def _run(self, train: bool) -> list[dict[str, Any]]:
        _ = self.data  # load (and generate) once before the jobs
        rows = []
        jobs = self.jobs()
        for j, (method, prior, fold) in enumerate(jobs):
            if j % _world() != _rank():
                continue
            resume = self.resume
            if not train:
                self.resume = True
            net = self.train_job(method, prior, fold)
            self.resume = resume
            rows.append(self.evaluate_job(net, method, prior, fold))
        if _world() > 1:
            gathered: list[Any] = [None] * _world()
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        rows.sort(key=lambda r: (self.priors.index(r["prior"]), self.methods.index(r["method"]), r["fold"]))
        self.rows = rows
        if _rank() == 0:
            self.write_outputs(rows)
        if _world() > 1:
            dist.barrier()
        return rows

    def summary_rows(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One row per (method, prior): ``mean ± std`` over folds of every metric."""
        out = []
        for prior in self.priors:
            for method in self.methods:
                sel = [r for r in rows if r["method"] == method and r["prior"] == prior]
                if not sel:
                    continue
                row: dict[str, Any] = {"method": method, "prior": prior, "folds": len(sel)}
                for k in _METRIC_KEYS:
                    v = np.asarray([r[k] for r in sel], dtype=np.float64)
                    row[k] = f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"
                counts = [int(r.get("batches_below_beta", -1)) for r in sel]
                row["batches_below_beta"] = -1 if min(counts) < 0 else sum(counts)
                out.append(row)
        return out

    def write_outputs(self, rows: Sequence[dict[str, Any]]) -> None:
        """Results tables (per fold and mean ± std), ROC curves, and the decision-basis figures."""
        info = self.data["info"]
        prior_note = f"; true prior of the data: {info['prior_true']:.3f}" if "prior_true" in info else ""
        title = (f"embryo_pu: {self.num_folds}-fold CV, seed {self.seed}, {len(self.data['y'])} sequences, "
                 f"{self.max_epochs} epochs, threshold on validation: {self.threshold_method}{prior_note}")
        fold_cols = ["method", "prior", "fold", "auc", "recall@0.5", "precision@0.5", "f1@0.5", "accuracy@0.5",
                     "threshold@val", "recall@val", "precision@val", "f1@val", "batches_below_beta"]
        save_results_table(rows, self.output_dir / f"{self.table_name}_folds", columns=fold_cols, precision=3,
                           title=title)
        save_results_table(self.summary_rows(rows), self.output_dir / self.table_name, precision=3, title=title)
        y = self.data["y"]
        for prior in self.priors:
            curves = {}
            for method in self.methods:
                sel = [r for r in rows if r["method"] == method and r["prior"] == prior]
                if sel:
                    idx = np.concatenate([r["test_index"] for r in sel]).astype(int)
                    curves[method] = (y[idx], np.concatenate([r["test_scores"] for r in sel]))
            suffix = "" if len(self.priors) == 1 else f"_pi{prior:g}"
            plot_roc_curves(curves, self.output_dir / f"roc{suffix}.png",
                            title=f"pooled test scores over {self.num_folds} folds, prior {prior:g}")
        if self.save_figures and self.figure_method in self.methods:
            self.save_decision_figures(self.figure_method, self.priors[0])

    def save_decision_figures(self, method: str, prior: float, fold: int = 0, num_sequences: int = 2) -> list[Path]:
        """Per-frame score timelines and saliency overlays for test sequences of one fold; saves ``model.pt``.

        The sequences drawn are the highest-scored live birth and the highest-scored failure of the fold's test
        part (a good-looking failure is exactly the case the study is about).
        """
        old = self.resume
        self.resume = True
        net = self.train_job(method, prior, fold)
        self.resume = old
        save_checkpoint({"model": net.state_dict(), "method": method, "prior": prior, "fold": fold},
                        self.ckpt_dir / "model.pt")
        test = self.folds[fold]["test"]
        y = self.data["y"]
        p_seq, p_frames = self.predict(net, test)
        order = np.argsort(-p_seq)
        picks = [i for c in (1, 0) for i in order[y[test[order]] == c][: max(1, num_sequences // 2)]]
        paths = []
        fig_dir = self.output_dir / "figures"
        layer = f"net.encoder.stage{len(self.channels) - 1}"
        for i in picks:
            s = int(test[i])
            name = self.data["names"][s]
            kind = "live birth" if y[s] else "failure"
            item = self.data["items"][s]
            if not y[s] and item.get("viable") and item.get("abnormal"):
                kind += ", viable-looking with hidden abnormality"  # known only for the synthetic data
            paths.append(plot_score_timeline(p_frames[i], fig_dir / f"timeline_{name}.png", sequence_score=p_seq[i],
                                             title=f"{name} ({kind}) {method}: per-frame live-birth probability"))
            frames = self.data["x"][s, 0]
            with torch.enable_grad():
                sal = frame_saliency(net.frame_scorer(), frames[:, None].to(self.device), self.saliency_method,
                                     target_layers=layer)
            paths.append(plot_frame_saliency(frames.numpy(), sal, fig_dir / f"saliency_{name}.png", p_frames[i],
                                             title=f"{name} ({kind}), {self.saliency_method}, score {p_seq[i]:.3f}"))
        return paths

