"""The ``sperm_emd`` study workflow: data -> tracking -> clips -> backbone x loss grid -> metrics table and plots.

For every ``(backbone, loss)`` pair of the grid, a network is trained from scratch on the training clips (AdamW,
linear warm-up then cosine decay, stepped every batch), the epoch with the best validation EMD is kept, and the
test clips are scored with the distribution metrics of the study: MSE and JSD between the predicted and the expert
grade distributions, histogram intersection ("distribution accuracy"), Chebyshev distance, EMD and grade-mode
accuracy (the most voted grade is the predicted one). Each pair is checkpointed every epoch (model, optimiser,
scheduler, epoch, RNG state) and resumes from its last checkpoint when ``resume`` is set.

Reference: the seed study fine-tunes TimeSformer (Bertasius et al., ICML 2021) with the EMD loss (Hou et al. 2016;
Talebi & Milanfar, IEEE TIP 2018) on multi-expert grade distributions of tracked sperm clips.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from monai_ext.data import load_datalist, resolve_datalist
from monai_ext.losses.distribution import JSDLoss, PMFMSELoss, get_distribution_loss
from monai_ext.losses.emd import EMDLoss
from monai_ext.metrics import compute_distribution_metrics
from monai_ext.utils import (
    as_bool,
    default_device,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    save_results_table,
    set_rng_state,
)

from .data import CROP_MODES, SpermClipDataset, build_clip_datalist
from .networks import BACKBONES, build_network

__all__ = ["LOSSES", "SpermEMDWorkflow", "distribution_scores", "per_sperm_scores", "warmup_cosine"]

LOSSES = ("emd", "mse", "jsd", "ce", "hi")
METRIC_COLUMNS = ("mse", "jsd", "intersection", "chebyshev", "emd", "mode_accuracy")
logger = logging.getLogger(__name__)


def distribution_scores(probs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-clip study metrics between predicted pmfs and target pmfs, both ``(B, K)``.

    Returns:
        ``mse`` (mean over grades of the squared difference), ``jsd`` (Jensen-Shannon divergence, natural log),
        ``intersection``, ``chebyshev``, ``emd`` (NIMA's ``r = 2`` EMD) and ``mode_accuracy``, each ``(B,)``.
    """
    p, q = probs.double(), target.double()
    out = {
        "mse": PMFMSELoss(softmax=False, reduction="none")(p, q),
        "jsd": JSDLoss(softmax=False, reduction="none")(p, q),
        "emd": EMDLoss(r=2, softmax=False, reduction="none")(p, q),
    }
    out.update(compute_distribution_metrics(p, q, metrics=("intersection", "chebyshev", "mode_accuracy")))
    return {k: out[k].reshape(-1) for k in METRIC_COLUMNS}


def per_sperm_scores(probs: torch.Tensor, targets: torch.Tensor, items: Sequence[Mapping[str, Any]]
                     ) -> dict[str, float]:
    """Study metrics per sperm rather than per clip: the pmfs of all clips of a sperm are averaged first.

    The seed study grades each sperm once; a sperm followed for long gives many (correlated) clips, so the clip
    mean over-weights it. Clips are grouped by ``(video, sperm_id)`` (by ``image``, i.e. by track, when the items do
    not carry ``sperm_id``).

    Returns:
        ``test_sperm`` (number of sperm) and ``sperm_<metric>`` for ``emd``, ``jsd`` and ``mode_accuracy``
        (means over sperm).
    """
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        key = (it.get("video"), it["sperm_id"]) if "sperm_id" in it else (it.get("image"),)
        groups.setdefault(key, []).append(i)
    if not groups:
        return {"test_sperm": 0, "sperm_emd": float("nan"), "sperm_jsd": float("nan"),
                "sperm_mode_accuracy": float("nan")}
    p = torch.stack([probs[idx].double().mean(0) for idx in groups.values()])
    q = torch.stack([targets[idx].double().mean(0) for idx in groups.values()])
    s = distribution_scores(p, q)
    return {"test_sperm": len(groups), "sperm_emd": float(s["emd"].mean()), "sperm_jsd": float(s["jsd"].mean()),
            "sperm_mode_accuracy": float(s["mode_accuracy"].mean())}


def warmup_cosine(warmup_steps: float, total_steps: float) -> Callable[[int], float]:
    """Learning-rate factor of step ``i``: linear warm-up over ``warmup_steps`` then cosine decay to 0 at
    ``total_steps`` (for :class:`torch.optim.lr_scheduler.LambdaLR`)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class SpermEMDWorkflow:
    """Train and evaluate the grid of backbones x losses on tracked sperm clips (see the module docstring).

    Args:
        dataset_dir: folder or JSON of a video datalist; ``None`` uses the embedded synthetic data.
        output_dir: outputs (synthetic data, clips, tables, plots, TensorBoard logs under ``runs/``).
        ckpt_dir: checkpoints, one sub-folder per ``<backbone>_<loss>``.
        backbones: backbone names (:data:`monai_ext.apps.sperm_emd.networks.BACKBONES`).
        losses: loss names among :data:`LOSSES`.
        device: torch device (string or device; ``None``: CUDA when available).
        max_epochs: training epochs per grid cell.
        seed: seed of weights, data order and augmentation.
        batch_size: clips per batch.
        lr: AdamW peak learning rate.
        warmup_epochs: epochs of linear learning-rate warm-up (then cosine decay to zero at ``max_epochs``); the
            warm-up lets the transformers train from scratch at the same peak rate as the CNNs.
        weight_decay: AdamW weight decay.
        crop_size: crop side in pixels.
        crop_mode: ``"clip"`` (one window per clip at the mean head position: the sperm moves inside it) or
            ``"head"`` (head-centred crop in every frame); see :mod:`monai_ext.apps.sperm_emd.data`.
        clip_length: frames per clip.
        clip_stride: frames between clip starts along a track.
        patch_size: TimeSformer patch side.
        network_kwargs: extra constructor arguments per backbone name, e.g.
            ``{"timesformer_tiny": {"num_layers": 4}}``.
        generator_kwargs: arguments of the synthetic generator (``num_videos``, ``num_frames``, ``num_sperm``...).
        detector_kwargs: arguments of :class:`~monai_ext.apps.sperm_emd.tracking.SpermDetector`.
        tracker_kwargs: arguments of :class:`~monai_ext.apps.sperm_emd.tracking.SpermTracker`.
        resume: continue each grid cell from its last checkpoint.
        mode: ``"train"`` (train then test) or ``"evaluate"`` (test the saved best models only).
        num_workers: data loader workers.

    Raises:
        ValueError: for an unknown backbone, loss, mode or crop mode, or ``max_epochs < 1``.
    """

    def __init__(self, dataset_dir: str | None, output_dir: str, ckpt_dir: str,
                 backbones: Sequence[str] = ("timesformer_tiny",), losses: Sequence[str] = ("emd",),
                 device: str | torch.device | None = None, max_epochs: int = 8, seed: int = 0, batch_size: int = 16,
                 lr: float = 3e-4, weight_decay: float = 0.05, crop_size: int = 48, clip_length: int = 8,
                 clip_stride: int = 4, patch_size: int = 8,
                 network_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                 generator_kwargs: Mapping[str, Any] | None = None, detector_kwargs: Mapping[str, Any] | None = None,
                 tracker_kwargs: Mapping[str, Any] | None = None, resume: bool = True, mode: str = "train",
                 num_workers: int = 0, crop_mode: str = "clip", warmup_epochs: float = 1.0) -> None:
        bad = [b for b in backbones if b not in BACKBONES]
        if bad:
            raise ValueError(f"backbones must be among {sorted(BACKBONES)}, got unknown {bad}.")
        bad = [x for x in losses if x not in LOSSES]
        if bad:
            raise ValueError(f"losses must be among {list(LOSSES)}, got unknown {bad}.")
        if mode not in ("train", "evaluate"):
            raise ValueError(f"mode must be 'train' or 'evaluate', got {mode!r}.")
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        if not 0 <= float(warmup_epochs) <= int(max_epochs):
            raise ValueError(f"warmup_epochs must be in [0, max_epochs={max_epochs}], got {warmup_epochs}.")
        self.dataset_dir, self.output_dir, self.ckpt_dir = dataset_dir, Path(output_dir), Path(ckpt_dir)
        self.backbones, self.losses = list(backbones), list(losses)
        self.device = default_device(device)
        self.max_epochs, self.seed, self.batch_size = int(max_epochs), int(seed), int(batch_size)
        self.lr, self.weight_decay, self.warmup_epochs = float(lr), float(weight_decay), float(warmup_epochs)
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}.")
        self.crop_size, self.clip_length, self.clip_stride = int(crop_size), int(clip_length), int(clip_stride)
        self.crop_mode = crop_mode
        self.patch_size = int(patch_size)
        self.network_kwargs = {k: dict(v) for k, v in (network_kwargs or {}).items()}
        self.generator_kwargs = dict(generator_kwargs or {})
        self.detector_kwargs, self.tracker_kwargs = dict(detector_kwargs or {}), dict(tracker_kwargs or {})
        self.resume, self.mode, self.num_workers = as_bool(resume, "resume"), mode, int(num_workers)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.clip_datalist = str(self.output_dir / "clips" / "clips.json")
        self.results: list[dict[str, Any]] = []
        self.tracking_rows: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- data
    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def prepare_data(self) -> dict[str, list[dict[str, Any]]]:
        """Resolve the video datalist, track the videos once (cached) and return the clip datalist sections."""
        clip_dir = self.output_dir / "clips"
        signature = json.dumps({"dataset": str(self.dataset_dir), "gen": self.generator_kwargs,
                                "crop": self.crop_size, "mode": self.crop_mode, "T": self.clip_length,
                                "stride": self.clip_stride, "det": self.detector_kwargs, "trk": self.tracker_kwargs},
                               sort_keys=True, default=str)
        stamp = clip_dir / ".signature.json"
        if self.rank == 0:
            # imported here: the generator imports this package's kinematics module
            from monai_ext.data.synthetic.sperm import generate_sperm_dataset

            datalist = resolve_datalist(self.dataset_dir, self.output_dir, generate_sperm_dataset,
                                        {"seed": self.seed, **self.generator_kwargs})
            if not (stamp.is_file() and stamp.read_text() == signature and (clip_dir / "clips.json").is_file()):
                logger.info("tracking the videos of %s", datalist)
                _, rows = build_clip_datalist(datalist, clip_dir, self.crop_size, self.clip_length, self.clip_stride,
                                              detector_kwargs=self.detector_kwargs,
                                              tracker_kwargs=self.tracker_kwargs, crop_mode=self.crop_mode)
                save_results_table(rows, self.output_dir / "tracking_quality",
                                   title="Tracking quality against the annotated head tracks (motmetrics)")
                with open(clip_dir / "tracking_rows.json", "w") as f:
                    json.dump(rows, f)
                stamp.write_text(signature)
        self._barrier()
        with open(clip_dir / "tracking_rows.json") as f:
            self.tracking_rows = json.load(f)
        sections = {}
        for key in ("training", "validation", "test"):
            try:
                sections[key] = load_datalist(clip_dir / "clips.json", key, required_keys=("image", "label"),
                                              path_keys=("image",))
            except ValueError:
                sections[key] = []
        if not sections["training"]:
            raise ValueError(f"no labelled training clip was extracted into '{clip_dir}'; check the annotations, "
                             "clip_length and the detector threshold.")
        return sections

    # ---------------------------------------------------------------- model
    def build(self, backbone: str) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        return build_network(backbone, num_classes=5, img_size=self.crop_size, num_frames=self.clip_length,
                             patch_size=self.patch_size, **self.network_kwargs.get(backbone, {}))

    @torch.no_grad()
    def predict(self, net: torch.nn.Module, items: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted pmfs and targets ``(N, K)`` of the clip items."""
        net.eval()
        loader = DataLoader(SpermClipDataset(items), batch_size=self.batch_size * 2, shuffle=False)
        probs, targets = [], []
        for batch in loader:
            probs.append(torch.softmax(net(batch["image"].to(self.device)).float(), -1).cpu())
            targets.append(batch["label"])
        return torch.cat(probs), torch.cat(targets)

    def train_cell(self, backbone: str, loss_name: str, sections: Mapping[str, list]) -> dict[str, Any]:
        """Train one grid cell (resumable) and return its test metrics row."""
        name = f"{backbone}_{loss_name}"
        cell_dir = self.ckpt_dir / name
        net = self.build(backbone).to(self.device)
        best_path, last_path = cell_dir / "model.pt", cell_dir / "checkpoint_last.pt"
        history: list[dict[str, float]] = []
        if self.mode == "train":
            ddp = net
            if self.distributed:
                ids = [self.device] if self.device.type == "cuda" else None
                ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
            loss_fn = get_distribution_loss(loss_name)
            ds = SpermClipDataset(sections["training"], augment=True, seed=self.seed + self.rank)
            sampler = DistributedSampler(ds, shuffle=True, seed=self.seed) if self.distributed else None
            g = torch.Generator().manual_seed(self.seed)
            loader = DataLoader(ds, batch_size=self.batch_size, shuffle=sampler is None, sampler=sampler,
                                generator=g, num_workers=self.num_workers, drop_last=len(ds) > self.batch_size)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.warmup_epochs * len(loader),
                                                                         self.max_epochs * len(loader)))
            start, best = 0, float("inf")
            if self.resume and last_path.is_file():
                ck = load_checkpoint(last_path, map_location=self.device)
                net.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
                start, best, history = int(ck["epoch"]), float(ck["best"]), json.loads(ck["history"])
                set_rng_state(ck["rng"])
                # the shuffling generator and the augmentation RNG live outside the global RNG state; the saved
                # augmentation stream is rank 0's (other ranks draw from their own seed again)
                if "loader_generator" in ck:
                    g.set_state(ck["loader_generator"])
                    if self.rank == 0:
                        ds.rng.bit_generator.state = json.loads(ck["augment_rng"])
                logger.info("%s: resumed after epoch %d", name, start)
            writer = SummaryWriter(str(self.output_dir / "runs" / name)) if self.rank == 0 else None
            val_items = sections["validation"] or sections["training"]
            for epoch in range(start, self.max_epochs):
                if sampler is not None:
                    sampler.set_epoch(epoch)
                ddp.train()
                total, count = 0.0, 0
                bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{self.max_epochs}", disable=self.rank != 0,
                           leave=False)
                for batch in bar:
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(ddp(batch["image"].to(self.device)), batch["label"].to(self.device))
                    loss.backward()
                    opt.step()
                    sched.step()
                    total, count = total + loss.item() * len(batch["label"]), count + len(batch["label"])
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                probs, targets = self.predict(net, val_items)
                val = {k: float(v.mean()) for k, v in distribution_scores(probs, targets).items()}
                history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), **{f"val_{k}": v for k, v
                                                                                            in val.items()}})
                if self.rank == 0:
                    writer.add_scalar("train/loss", total / max(count, 1), epoch + 1)
                    for k, v in val.items():
                        writer.add_scalar(f"val/{k}", v, epoch + 1)
                    if val["emd"] < best:
                        best = val["emd"]
                        save_checkpoint({"model": net.state_dict(), "epoch": epoch + 1}, best_path)
                    save_checkpoint({"model": net.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "epoch": epoch + 1, "best": best,
                                     "history": json.dumps(history), "rng": get_rng_state(),
                                     "loader_generator": g.get_state(),
                                     "augment_rng": json.dumps(ds.rng.bit_generator.state)}, last_path)
                    logger.info("%s epoch %d: train loss %.4f, val EMD %.4f, val mode acc %.3f", name, epoch + 1,
                                total / max(count, 1), val["emd"], val["mode_accuracy"])
                self._barrier()
            if writer is not None:
                writer.close()
        if not best_path.is_file():
            raise FileNotFoundError(f"no trained model for '{name}' at '{best_path}'; run train.json first.")
        net.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
        test_items = sections["test"] or sections["validation"]
        probs, targets = self.predict(net, test_items)
        scores = distribution_scores(probs, targets)
        row = {"backbone": backbone, "loss": loss_name, "params": sum(p.numel() for p in net.parameters()),
               "test_clips": len(test_items), **{k: float(v.mean()) for k, v in scores.items()},
               **per_sperm_scores(probs, targets, test_items)}
        self._last = {"name": name, "probs": probs.numpy(), "targets": targets.numpy(), "history": history,
                      "items": test_items}
        return row

    def prior_row(self, sections: Mapping[str, list]) -> dict[str, Any]:
        """Reference row: every test clip predicted as the mean training distribution (no network)."""
        prior = torch.tensor([it["label"] for it in sections["training"]], dtype=torch.float64).mean(0)
        test_items = sections["test"] or sections["validation"]
        targets = torch.tensor([it["label"] for it in test_items], dtype=torch.float64).reshape(-1, prior.numel())
        scores = distribution_scores(prior.expand_as(targets), targets)
        return {"backbone": "training-mean prior", "loss": "-", "params": 0, "test_clips": len(test_items),
                **{k: float(v.mean()) for k, v in scores.items()},
                **per_sperm_scores(prior.expand_as(targets), targets, test_items)}

    # ---------------------------------------------------------------- run
    def run(self) -> list[dict[str, Any]]:
        """Prepare the data, run the grid (after a training-mean prior row) and write ``results.{csv,md}``,
        ``tracking_quality.{csv,md}`` and plots."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        sections = self.prepare_data()
        self.results = [self.prior_row(sections)]
        for backbone in self.backbones:
            for loss_name in self.losses:
                row = self.train_cell(backbone, loss_name, sections)
                self.results.append(row)
                if self.rank == 0:
                    self._plots()
        if self.rank == 0:
            stem = "results" if self.mode == "train" else "results_evaluate"
            save_results_table(self.results, self.output_dir / stem,
                               title=f"sperm_emd test metrics (seed {self.seed}, {len(sections['test'])} test clips)")
        return self.results

    def _plots(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        last = self._last
        probs, targets = last["probs"], last["targets"]
        n = min(8, len(probs))
        fig, axes = plt.subplots(2, 4, figsize=(12, 5), sharey=True)
        grades = np.arange(probs.shape[1])
        for i, ax in enumerate(axes.ravel()):
            if i >= n:
                ax.axis("off")
                continue
            j = i * max(len(probs) // n, 1)
            ax.bar(grades - 0.2, targets[j], width=0.4, label="experts")
            ax.bar(grades + 0.2, probs[j], width=0.4, label="predicted")
            ax.set_xticks(grades, list("ABCDE"))
            ax.set_title(f"clip {j}", fontsize=9)
        axes.ravel()[0].legend(fontsize=8)
        fig.suptitle(f"{last['name']}: expert vs predicted grade distributions (test clips)")
        fig.tight_layout()
        fig.savefig(self.output_dir / f"distributions_{last['name']}.png", dpi=100)
        plt.close(fig)
        if last["history"]:
            h = last["history"]
            fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
            ax[0].plot([r["epoch"] for r in h], [r["train_loss"] for r in h])
            ax[0].set_xlabel("epoch")
            ax[0].set_ylabel("training loss")
            ax[1].plot([r["epoch"] for r in h], [r["val_emd"] for r in h], label="val EMD")
            ax[1].plot([r["epoch"] for r in h], [r["val_mode_accuracy"] for r in h], label="val mode accuracy")
            ax[1].set_xlabel("epoch")
            ax[1].legend()
            fig.tight_layout()
            fig.savefig(self.output_dir / f"curves_{last['name']}.png", dpi=100)
            plt.close(fig)
        conf = np.zeros((probs.shape[1], probs.shape[1]), int)
        for p, t in zip(probs.argmax(1), targets.argmax(1), strict=True):
            conf[t, p] += 1
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(conf, cmap="Blues")
        for (r, c), v in np.ndenumerate(conf):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(5), list("ABCDE"))
        ax.set_yticks(range(5), list("ABCDE"))
        ax.set_xlabel("predicted mode grade")
        ax.set_ylabel("expert mode grade")
        fig.tight_layout()
        fig.savefig(self.output_dir / f"confusion_{last['name']}.png", dpi=100)
        plt.close(fig)

