"""The ``sperm_emd`` backbone x loss grid on top of the bundle's ``train.json`` (``grid.json`` runs it).

Every cell ``(backbone, loss, seed)`` is an ordinary run of ``train.json`` with overrides (``backbone``,
``network_kwargs``, ``loss``, ``seed``; the clips of that seed are tracked once and shared by its cells), then its
best model (``models/model.pt``, best validation EMD) is scored on the test clips with the study's metrics, per
clip and per sperm. A training-mean prior row (every test clip predicted as the mean training distribution) is the
trivial baseline of each seed. Tables report the mean, SD and 95 % interval over seeds and the paired difference of
each loss to the EMD loss.

Reference: the seed study fine-tunes TimeSformer (Bertasius et al., ICML 2021) with the EMD loss (Hou et al. 2016;
Talebi & Milanfar, IEEE TIP 2018) on multi-expert grade distributions of tracked sperm clips.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_ext.apps.runner import bundle_configs, run_config, write_study_record
from monai_ext.data import load_datalist
from monai_ext.handlers import to_json_value
from monai_ext.losses.distribution import JSDLoss, PMFMSELoss
from monai_ext.losses.emd import EMDLoss
from monai_ext.metrics import compute_distribution_metrics
from monai_ext.utils import provenance, save_results_table
from monai_ext.utils.stats import paired_rows, summary_rows

from .clips import LoadClipd, prepare_clip_datalist
from .networks import BACKBONES

__all__ = ["LOSSES", "METRIC_COLUMNS", "SpermGrid", "distribution_scores", "per_sperm_scores", "warmup_cosine"]

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
    ``total_steps`` (for :class:`torch.optim.lr_scheduler.LambdaLR`, stepped every iteration)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class SpermGrid:
    """Run ``train.json`` for every (backbone, loss, seed), score each best model on the test clips, tabulate.

    Outputs under ``output_dir``: ``data_seed<k>/`` (the seed's videos and clips when no ``dataset_dir`` is given),
    one folder per cell ``<backbone>_<loss>_seed<k>/`` (the bundle run's outputs, ``models/model.pt`` and
    ``test_metrics.json``), ``results_cells.{csv,md}`` (one row per cell plus a prior row per seed),
    ``results.{csv,md}`` (mean, SD and 95 % interval over seeds), ``loss_differences.{csv,md}`` (each loss minus
    the EMD loss, paired on seeds, per backbone) and ``distributions_<backbone>_<loss>.png`` of the first seed.
    Finished cells (``test_metrics.json`` present) are not rerun.

    A stand-in for pre-training (``pretrain_videos > 0``; no pretrained weights may be downloaded): per backbone and
    seed, ``train.json`` first trains on a larger synthetic corpus of ``pretrain_videos`` other videos (generator
    seed ``10000 + seed``, EMD loss, ``pretrain_epochs``; folder ``pretrain_<backbone>_seed<k>/``), then every loss
    cell is run twice, from scratch (``init`` "scratch") and starting from those weights (``init`` "pretrained",
    folder ``<backbone>_<loss>_pretrained_seed<k>/``), with the same budget. ``init_differences.{csv,md}`` pairs
    pretrained minus scratch on seeds.

    Args:
        bundle_root: the ``sperm_emd`` bundle folder.
        output_dir: folder of the study.
        backbones: backbone names (:data:`~monai_ext.apps.sperm_emd.networks.BACKBONES`).
        losses: loss names among :data:`LOSSES`.
        seeds: data and initialisation seeds.
        dataset_dir: a real video datalist, shared by every seed; ``None`` generates one synthetic set per seed.
        network_kwargs: constructor arguments per backbone, e.g. ``{"timesformer_tiny": {"num_layers": 4}}``.
        overrides: ``train.json`` overrides for every cell (``epochs``, ``device``, generator and clip settings).
        pretrain_videos: videos of the pre-training corpus; 0 turns pre-training off.
        pretrain_epochs: epochs of pre-training (``None``: the cells' ``epochs``).

    Raises:
        ValueError: for an unknown backbone or loss, or empty lists.
    """

    def __init__(self, bundle_root: str | os.PathLike, output_dir: str | os.PathLike,
                 backbones: Sequence[str] = ("timesformer_tiny",), losses: Sequence[str] = ("emd",),
                 seeds: Sequence[int] = (0,), dataset_dir: str | os.PathLike | None = None,
                 network_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                 overrides: Mapping[str, Any] | None = None, pretrain_videos: int = 0,
                 pretrain_epochs: int | None = None) -> None:
        self.backbones, self.losses = list(backbones), list(losses)
        self.seeds = [int(s) for s in seeds]
        bad = [b for b in self.backbones if b not in BACKBONES] + [x for x in self.losses if x not in LOSSES]
        if bad or not (self.backbones and self.losses and self.seeds):
            raise ValueError(f"backbones (among {sorted(BACKBONES)}), losses (among {list(LOSSES)}) and seeds must be "
                             f"non-empty; got unknown {bad}.")
        self.bundle_root, self.output_dir, self.dataset_dir = Path(bundle_root), Path(output_dir), dataset_dir
        self.network_kwargs = {k: dict(v) for k, v in (network_kwargs or {}).items()}
        self.overrides = dict(overrides or {})
        self.pretrain_videos = int(pretrain_videos)
        self.pretrain_epochs = None if pretrain_epochs is None else int(pretrain_epochs)
        if self.pretrain_videos < 0 or (self.pretrain_epochs is not None and self.pretrain_epochs < 1):
            raise ValueError(f"pretrain_videos must be >= 0 and pretrain_epochs >= 1, got {pretrain_videos!r} and "
                             f"{pretrain_epochs!r}.")
        self.parser = ConfigParser()
        self.parser.read_config(bundle_configs(self.bundle_root, "train.json"))
        self.parser.update(self.overrides)

    def clips(self, seed: int, pretrain: bool = False) -> Path:
        """The seed's clip datalist (tracked once, shared by the seed's cells); ``pretrain``: the seed's
        pre-training corpus (``pretrain_videos`` synthetic videos of generator seed ``10000 + seed``)."""
        g = {k: self.parser[k] for k in ("num_videos", "num_frames", "num_sperm")} | {"size": self.parser["video_size"]}
        c = {k: self.parser[k] for k in ("crop_size", "crop_mode", "clip_length", "clip_stride", "detector_kwargs",
                                         "tracker_kwargs")}
        if pretrain:
            g["num_videos"] = self.pretrain_videos
            return prepare_clip_datalist(None, self.output_dir / f"pretrain_data_seed{seed}", 10_000 + seed, g, c)
        return prepare_clip_datalist(self.dataset_dir, self.output_dir / f"data_seed{seed}", seed, g, c)

    def pretrain(self, backbone: str, seed: int) -> Path:
        """Train ``backbone`` on the seed's pre-training corpus (once); returns its ``model.pt``."""
        cell = self.output_dir / f"pretrain_{backbone}_seed{seed}"
        model = cell / "models" / "model.pt"
        done = cell / "pretrained.json"
        if not done.is_file():
            over = {**self.overrides, "output_dir": str(cell), "ckpt_dir": str(cell / "models"), "seed": seed,
                    "datalist": str(self.clips(seed, pretrain=True)), "backbone": backbone,
                    "network_kwargs": self.network_kwargs.get(backbone, {})}
            if self.pretrain_epochs is not None:
                over["epochs"] = self.pretrain_epochs
            run_config(bundle_configs(self.bundle_root, "train.json"), **over)
            done.write_text(json.dumps({"videos": self.pretrain_videos, "generator_seed": 10_000 + seed,
                                        "provenance": provenance()}, indent=2) + "\n")
        return model

    def run_cell(self, backbone: str, loss: str, seed: int, init: str = "scratch") -> dict[str, Any]:
        cell = self.output_dir / (f"{backbone}_{loss}_seed{seed}" if init == "scratch"
                                  else f"{backbone}_{loss}_pretrained_seed{seed}")
        result = cell / "test_metrics.json"
        if not result.is_file():
            over = {**self.overrides, "output_dir": str(cell), "ckpt_dir": str(cell / "models"), "seed": seed,
                    "datalist": str(self.clips(seed)), "backbone": backbone,
                    "network_kwargs": self.network_kwargs.get(backbone, {}),
                    "loss": {"_target_": "monai_ext.losses.get_distribution_loss", "name": loss}}
            if init == "pretrained":
                over["pretrained"] = str(self.pretrain(backbone, seed))
            wf = run_config(bundle_configs(self.bundle_root, "train.json"), **over)
            net = wf.network_def
            net.load_state_dict(torch.load(cell / "models" / "model.pt", map_location="cpu", weights_only=True))
            items = load_datalist(self.clips(seed), "test", ("image", "label"), ("image",))
            probs, targets = predict_clips(net.cpu(), items)
            scores = {k: float(v.mean()) for k, v in distribution_scores(probs, targets).items()}
            row = {"backbone": backbone, "loss": loss, "init": init, "seed": seed,
                   "params": sum(p.numel() for p in net.parameters()),
                   "test_clips": len(items), **scores, **per_sperm_scores(probs, targets, items)}
            record = {"metrics": row, "info": {"cell": cell.name}, "provenance": provenance()}
            result.write_text(json.dumps(to_json_value(record), indent=2) + "\n")
            if seed == self.seeds[0]:
                tag = f"{backbone}_{loss}" + ("" if init == "scratch" else "_pretrained")
                plot_distributions(probs.numpy(), targets.numpy(), tag, self.output_dir / f"distributions_{tag}.png")
        return {"init": init, **json.loads(result.read_text())["metrics"]}

    def prior_row(self, seed: int) -> dict[str, Any]:
        clips = self.clips(seed)
        train = load_datalist(clips, "training", ("image", "label"), ("image",), check_files=False)
        test = load_datalist(clips, "test", ("image", "label"), ("image",), check_files=False)
        prior = torch.tensor([it["label"] for it in train], dtype=torch.float64).mean(0)
        targets = torch.tensor([it["label"] for it in test], dtype=torch.float64).reshape(-1, prior.numel())
        p = prior.expand_as(targets)
        return {"backbone": "training-mean prior", "loss": "-", "init": "-", "seed": seed, "params": 0,
                "test_clips": len(test),
                **{k: float(v.mean()) for k, v in distribution_scores(p, targets).items()},
                **per_sperm_scores(p, targets, test)}

    def run(self) -> list[dict[str, Any]]:
        rows = []
        for seed in self.seeds:
            rows.append(self.prior_row(seed))
            inits = ["scratch"] + (["pretrained"] if self.pretrain_videos else [])
            rows += [self.run_cell(b, x, seed, i) for b in self.backbones for x in self.losses for i in inits]
        metrics = [*METRIC_COLUMNS, "sperm_emd", "sperm_mode_accuracy"]
        save_results_table(rows, self.output_dir / "results_cells", precision=4,
                           title="sperm_emd test metrics per cell (backbone, loss, seed)")
        save_results_table(summary_rows(rows, ["backbone", "loss", "init"], metrics), self.output_dir / "results",
                           precision=4, title=f"sperm_emd test metrics: mean, SD and 95 % interval over seeds "
                                              f"{self.seeds}")
        if "emd" in self.losses and len(self.losses) > 1:
            trained = [r for r in rows if r["loss"] != "-"]
            diffs = [d for m in ("emd", "mode_accuracy")
                     for d in paired_rows(trained, ["backbone", "init"], "loss", "emd", m)]
            save_results_table(diffs, self.output_dir / "loss_differences", precision=4,
                               title="Each loss minus the EMD loss, same backbone, initialisation and seeds "
                                     "(test clips)")
        if self.pretrain_videos:
            diffs = [d for m in ("emd", "mode_accuracy")
                     for d in paired_rows([r for r in rows if r["loss"] != "-"], ["backbone", "loss"], "init",
                                          "scratch", m)]
            save_results_table(diffs, self.output_dir / "init_differences", precision=4,
                               title=f"Pre-trained on {self.pretrain_videos} other synthetic videos minus from "
                                     "scratch, same backbone, loss and seeds (test clips)")
        write_study_record(self.output_dir, {"study": "sperm_emd grid", "backbones": self.backbones,
                                             "losses": self.losses, "seeds": self.seeds,
                                             "dataset_dir": self.dataset_dir, "network_kwargs": self.network_kwargs,
                                             "overrides": self.overrides, "pretrain_videos": self.pretrain_videos,
                                             "pretrain_epochs": self.pretrain_epochs})
        return rows


@torch.no_grad()
def predict_clips(net: torch.nn.Module, items: Sequence[Mapping[str, Any]], batch_size: int = 64
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax pmfs and targets ``(N, K)`` of clip items (read with :class:`LoadClipd`)."""
    net.eval()
    load = LoadClipd()
    probs, targets = [], []
    for i in range(0, len(items), batch_size):
        batch = [load(it) for it in items[i : i + batch_size]]
        x = torch.stack([b["image"] for b in batch])
        probs.append(torch.softmax(net(x).float(), -1))
        targets.append(torch.stack([b["label"] for b in batch]))
    return torch.cat(probs), torch.cat(targets)


def plot_distributions(probs: np.ndarray, targets: np.ndarray, name: str, path: Path) -> None:
    """Expert vs predicted grade distributions of up to 8 test clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.suptitle(f"{name}: expert vs predicted grade distributions (test clips)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
