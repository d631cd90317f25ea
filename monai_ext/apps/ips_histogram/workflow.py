"""Training, dense inference and evaluation of the three methods of the iPS colony study.

``histogram``: :py:class:`~monai_ext.networks.nets.HistogramNet` trained with
:py:class:`~monai_ext.losses.RegionHistogramLoss` on multi-level region-histogram targets
(:py:class:`~monai_ext.transforms.RegionHistogram`), dense maps by
:py:class:`~monai_ext.inferers.RegionHistogramInferer`.
``patch_classification``: the same network with a single ``1 x 1`` level trained with cross-entropy on the
centre-pixel class (:py:func:`~monai_ext.transforms.center_pixel_label`), dense maps by
:py:class:`~monai_ext.inferers.CenterPixelInferer`.
``fcn``: MONAI's ``BasicUNet`` trained with cross-entropy ignoring the ignore label on the same patches, dense maps by
MONAI's ``SlidingWindowInferer``.
All three draw their training patches from one :py:class:`~monai_ext.apps.ips_histogram.data.PatchSampler` with
the same seed, so they see the same pixels.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from monai_ext.data import load_datalist, resolve_datalist
from monai_ext.data.synthetic.ips import CLASS_NAMES, IGNORE_LABEL, generate_ips_dataset
from monai_ext.inferers import CenterPixelInferer, RegionHistogramInferer
from monai_ext.utils import (
    as_bool,
    default_device,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    save_results_table,
    set_rng_state,
)

from .data import PatchSampler, load_case
from .evaluation import ConfusionAccumulator
from .plots import plot_patch_size_sweep, plot_qualitative, save_overlay_png

__all__ = ["METHODS", "IPSHistogramWorkflow"]

METHODS = ("histogram", "patch_classification", "fcn")
logger = logging.getLogger(__name__)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _Softmax(torch.nn.Module):
    """Wraps an inferer's logits output into probabilities (used for the FCN)."""

    def __init__(self, inferer: SlidingWindowInferer) -> None:
        super().__init__()
        self.inferer = inferer

    def __call__(self, inputs: torch.Tensor, network: Any) -> torch.Tensor:  # type: ignore[override]
        return torch.softmax(self.inferer(inputs, network).float(), dim=1)


class IPSHistogramWorkflow:
    """Train, infer densely and evaluate one or more methods of the iPS colony study at one or more patch sizes.

    Every ``(method, patch_size)`` pair is trained for ``max_epochs`` epochs of ``num_patches`` class-balanced
    patches (checkpoint with model, optimiser, scheduler, epoch and RNG state after every epoch under
    ``<ckpt_dir>/<method>_p<size>/checkpoint.pt``; a rerun resumes there when ``resume``), then evaluated on the
    ``test`` section by dense inference: Jaccard per class and mean over the non-ignored pixels (pixels pooled over
    all test images). Outputs under ``output_dir``: ``jaccard_table.{csv,md}``; with several patch sizes also
    ``patch_size_sweep.{csv,md,png}``; ``qualitative.png`` (input, truth, one map per method); per case a label
    map and probability maps as NIfTI and an overlay PNG under ``predictions/<method>_p<size>/``; TensorBoard logs
    under ``tensorboard/``. The histogram network of ``export_patch_size`` is also written as
    ``<ckpt_dir>/model.pt`` (``{"model": state_dict}``), the weights ``inference.json`` loads.

    Args:
        dataset_dir: folder with ``dataset.json`` (or its path); ``None`` generates the embedded synthetic data
            under ``<output_dir>/synthetic_data``. Sections ``training`` (required), ``validation`` and ``test``
            (each falls back to the previous one when missing); items ``{"image": ..., "label": ...}``.
        output_dir: folder for tables, figures, predictions and logs.
        ckpt_dir: folder for checkpoints.
        methods: any of ``"histogram"``, ``"patch_classification"``, ``"fcn"``.
        patch_sizes: patch sides; each must be divisible by 16 (FCN) and by every grid size.
        max_epochs: epochs per training.
        grid_sizes: grid levels of the histogram method.
        level_weights: weights of the levels in the loss (default equal).
        num_patches: patches per epoch.
        batch_size: mini-batch size.
        learning_rate: Adam learning rate (cosine-annealed to zero over ``max_epochs``).
        channels: stage widths of ``HistogramNet`` (histogram and patch classification).
        fcn_features: ``BasicUNet`` features.
        hist_stride: window stride of the histogram dense inference (default ``P // 4``).
        patch_stride: centre spacing of the patch-classification dense inference (1 = every pixel).
        fcn_overlap: window overlap of the FCN's sliding-window inference.
        combine: level combination of the histogram dense inference (``"finest"`` or ``"mean"``).
        num_classes: number of classes (background first).
        class_names: class names for the tables.
        ignore_label: label value excluded from training targets and scores.
        device: torch device or name (``None``: CUDA when available).
        seed: seed of the patch sampler and the network initialisation.
        resume: resume each training from its last checkpoint.
        num_cases: synthetic data: number of images.
        image_size: synthetic data: image side.
        save_predictions: write NIfTI/PNG predictions of every test case.
        eval_section: datalist section evaluated.
        export_patch_size: patch size of the histogram network exported as ``<ckpt_dir>/model.pt`` (default: the
            first of ``patch_sizes``); it must match ``inference.json``'s ``patch_size``.

    Raises:
        ValueError: for an unknown method, an empty ``methods`` / ``patch_sizes``, or a patch size not divisible by
            16 or by a grid size.
    """

    def __init__(self, dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike,
                 ckpt_dir: str | os.PathLike, methods: Sequence[str] = ("histogram",),
                 patch_sizes: Sequence[int] = (64,), max_epochs: int = 10, grid_sizes: Sequence[int] = (1, 2, 4),
                 level_weights: Sequence[float] | None = None, num_patches: int = 1024, batch_size: int = 32,
                 learning_rate: float = 1e-3, channels: Sequence[int] = (32, 64, 96),
                 fcn_features: Sequence[int] = (8, 8, 16, 32, 64, 8), hist_stride: int | None = None,
                 patch_stride: int = 4, fcn_overlap: float = 0.5, combine: str = "finest", num_classes: int = 3,
                 class_names: Sequence[str] = CLASS_NAMES, ignore_label: int = IGNORE_LABEL,
                 device: str | torch.device | None = None, seed: int = 0, resume: bool = True,
                 num_cases: int = 16, image_size: int = 256, save_predictions: bool = True,
                 eval_section: str = "test", export_patch_size: int | None = None) -> None:
        methods = [methods] if isinstance(methods, str) else list(methods)
        bad = [m for m in methods if m not in METHODS]
        if not methods or bad:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods}.")
        sizes = [int(patch_sizes)] if isinstance(patch_sizes, int) else [int(p) for p in patch_sizes]
        if not sizes:
            raise ValueError("patch_sizes must hold at least one patch size.")
        for p in sizes:
            if p % 16 or any(p % r for r in grid_sizes):
                raise ValueError(f"patch size {p} must be divisible by 16 (FCN) and by every grid size {grid_sizes}.")
        if len(class_names) != num_classes:
            raise ValueError(f"class_names must name num_classes={num_classes} classes, got {list(class_names)}.")
        self.dataset_dir = dataset_dir
        self.output_dir = Path(output_dir)
        self.ckpt_dir = Path(ckpt_dir)
        self.methods = methods
        self.patch_sizes = sizes
        self.max_epochs = int(max_epochs)
        self.grid_sizes = tuple(int(r) for r in grid_sizes)
        self.level_weights = level_weights
        self.num_patches = int(num_patches)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.channels = tuple(int(c) for c in channels)
        self.fcn_features = tuple(int(c) for c in fcn_features)
        self.hist_stride = hist_stride
        self.patch_stride = int(patch_stride)
        self.fcn_overlap = float(fcn_overlap)
        self.combine = combine
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.ignore_label = int(ignore_label)
        self.device = default_device(device)
        self.seed = int(seed)
        self.resume = as_bool(resume, "resume")
        self.num_cases = int(num_cases)
        self.image_size = int(image_size)
        self.save_predictions = as_bool(save_predictions, "save_predictions")
        self.eval_section = eval_section
        self.export_patch_size = sizes[0] if export_patch_size is None else int(export_patch_size)
        self.rows: list[dict[str, Any]] = []
        self._datalist: Path | None = None

    # ----------------------------------------------------------------------------------------------- data
    @property
    def datalist(self) -> Path:
        """The datalist JSON (the synthetic one is generated once, by rank 0 under DDP)."""
        if self._datalist is None:
            kwargs = {"seed": self.seed, "num_cases": self.num_cases, "image_size": self.image_size}
            if _rank() == 0:
                self._datalist = resolve_datalist(self.dataset_dir, self.output_dir, generate_ips_dataset, kwargs)
            _barrier()
            if self._datalist is None:
                self._datalist = resolve_datalist(self.dataset_dir, self.output_dir, generate_ips_dataset, kwargs)
        return self._datalist

    def items(self, section: str) -> list[dict[str, Any]]:
        """Items of a datalist section; ``test`` falls back to ``validation``, which falls back to ``training``."""
        order = {"training": ["training"], "validation": ["validation", "training"],
                 "test": ["test", "validation", "training"]}.get(section, [section])
        try:
            content = json.loads(Path(self.datalist).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"datalist '{self.datalist}' is not valid JSON: {e}") from e
        present = sorted(content) if isinstance(content, dict) else []
        for name in order:
            if name not in present:  # only an absent section falls back; a malformed one is an error
                continue
            items = load_datalist(self.datalist, name, required_keys=("image", "label"))
            if items:
                return items
        raise ValueError(f"datalist '{self.datalist}' has no non-empty section among {order} (found: {present}).")

    @property
    def train_items(self) -> list[dict[str, Any]]:
        return self.items("training")

    @property
    def test_items(self) -> list[dict[str, Any]]:
        return self.items(self.eval_section)

    def check_data(self) -> None:
        """Read and validate every training and evaluation case once, so that a bad file stops the run before any
        training (:func:`~monai_ext.apps.ips_histogram.data.load_case`: unreadable file, wrong dimensionality,
        NaN / infinite values, label values that are not class ids, empty label map; each error names the file).
        """
        for item in [*self.train_items, *self.test_items]:
            load_case(item["image"], item["label"], self.num_classes, self.ignore_label)

    # ----------------------------------------------------------------------------------------------- models
    def build_network(self, method: str, patch_size: int) -> torch.nn.Module:
        """The untrained network of ``method`` for ``patch_size`` (seeded)."""
        from monai_ext.networks.nets import HistogramNet

        torch.manual_seed(self.seed)
        if method == "histogram":
            return HistogramNet(2, 1, self.num_classes, patch_size, self.grid_sizes, self.channels)
        if method == "patch_classification":
            return HistogramNet(2, 1, self.num_classes, patch_size, (1,), self.channels)
        if method == "fcn":
            return BasicUNet(spatial_dims=2, in_channels=1, out_channels=self.num_classes, features=self.fcn_features)
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")

    def build_inferer(self, method: str, patch_size: int) -> Any:
        """Dense inferer returning class probabilities ``(B, K, H, W)`` for ``method``."""
        if method == "histogram":
            stride = self.hist_stride or max(1, patch_size // 4)
            return RegionHistogramInferer(patch_size, stride, combine=self.combine)
        if method == "patch_classification":
            return CenterPixelInferer(patch_size, self.patch_stride)
        if method == "fcn":
            return _Softmax(SlidingWindowInferer(patch_size, sw_batch_size=16, overlap=self.fcn_overlap,
                                                 mode="gaussian", padding_mode="reflect"))
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")

    def _loss(self, method: str, out: Any, labels: torch.Tensor) -> torch.Tensor:
        from monai_ext.transforms import RegionHistogram, center_pixel_label

        if method == "histogram":
            from monai_ext.losses import RegionHistogramLoss

            targets = RegionHistogram(self.num_classes, self.grid_sizes, self.ignore_label, spatial_dims=2)(labels)
            return RegionHistogramLoss(self.grid_sizes, self.level_weights)(out, list(targets))
        if method == "patch_classification":
            # a quarter turn of an even-sided patch moves the centre by one pixel, which may be an ignore pixel
            target = center_pixel_label(labels, spatial_dims=2)
            return F.cross_entropy(out[0][:, :, 0, 0], target, ignore_index=self.ignore_label)
        return F.cross_entropy(out, labels[:, 0], ignore_index=self.ignore_label)

    @staticmethod
    def tag(method: str, patch_size: int) -> str:
        return f"{method}_p{patch_size}"

    # ----------------------------------------------------------------------------------------------- training
    def train_one(self, method: str, patch_size: int) -> tuple[torch.nn.Module, float]:
        """Train (or resume) one method at one patch size; returns the network and the training seconds."""
        from torch.utils.tensorboard import SummaryWriter

        tag = self.tag(method, patch_size)
        ckpt = self.ckpt_dir / tag / "checkpoint.pt"
        net = self.build_network(method, patch_size).to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        start, elapsed = 0, 0.0
        if self.resume and ckpt.is_file():
            state = load_checkpoint(ckpt, map_location=self.device)
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, elapsed = int(state["epoch"]), float(state.get("train_seconds", 0.0))
            set_rng_state(state["rng"])
            logger.info(f"{tag}: resumed from '{ckpt}' at epoch {start}")
        model = net
        if dist.is_available() and dist.is_initialized():
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        items = self.train_items
        cases = [load_case(it["image"], it["label"], self.num_classes, self.ignore_label) for it in items]
        sampler = PatchSampler([c[0] for c in cases], [c[1] for c in cases], patch_size, self.num_classes,
                               self.ignore_label, seed=self.seed)
        writer = SummaryWriter(str(self.output_dir / "tensorboard" / tag)) if _rank() == 0 else None
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        for epoch in range(start, self.max_epochs):
            t0 = time.perf_counter()
            imgs, labs = sampler.sample(self.num_patches, epoch)
            ds = TensorDataset(imgs, labs)
            dsampler = DistributedSampler(ds, shuffle=True, seed=self.seed) if model is not net else None
            if dsampler is not None:
                dsampler.set_epoch(epoch)
            gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            loader = DataLoader(ds, batch_size=self.batch_size, shuffle=dsampler is None, sampler=dsampler,
                                generator=gen if dsampler is None else None)
            model.train()
            total, count = 0.0, 0
            it = loader if tqdm is None or _rank() else tqdm(loader, desc=f"{tag} epoch {epoch + 1}/{self.max_epochs}")
            for x, y in it:
                x, y = x.to(self.device), y.to(self.device)
                opt.zero_grad(set_to_none=True)
                loss = self._loss(method, model(x), y)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
                count += len(x)
            sched.step()
            elapsed += time.perf_counter() - t0
            if _rank() == 0:
                writer.add_scalar("train/loss", total / max(count, 1), epoch + 1)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], epoch + 1)
                save_checkpoint({"model": net.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": get_rng_state(),
                                 "train_seconds": elapsed}, ckpt)
                logger.info(f"{tag} epoch {epoch + 1}/{self.max_epochs}: loss {total / max(count, 1):.4f}")
        if writer is not None:
            writer.close()
        if _rank() == 0:
            save_checkpoint({"model": net.state_dict()}, self.ckpt_dir / tag / "model.pt")
        _barrier()
        return net, elapsed

    def load_trained(self, method: str, patch_size: int) -> torch.nn.Module:
        """The trained network of ``method`` at ``patch_size`` from ``<ckpt_dir>/<tag>/model.pt``.

        Raises:
            FileNotFoundError: when that method was not trained.
        """
        path = self.ckpt_dir / self.tag(method, patch_size) / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no trained weights for {method} at patch size {patch_size}: '{path}' is missing "
                                    "(run train.json with this method and patch size first).")
        net = self.build_network(method, patch_size).to(self.device)
        net.load_state_dict(load_checkpoint(path, map_location=self.device)["model"])
        return net

    # ----------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, method: str, patch_size: int, net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` of a normalised grey image ``(H, W)``."""
        net.eval()
        x = torch.as_tensor(image, dtype=torch.float32, device=self.device)[None, None]
        return self.build_inferer(method, patch_size)(x, net)[0].cpu().numpy()

    def evaluate_one(self, method: str, patch_size: int, net: torch.nn.Module) -> tuple[dict[str, Any], dict]:
        """Dense inference on every test case; returns the table row and the first case's prediction."""
        tag = self.tag(method, patch_size)
        acc = ConfusionAccumulator(self.num_classes, self.ignore_label)
        first: dict[str, Any] = {}
        seconds, pixels = 0.0, 0
        for i, item in enumerate(self.test_items):
            image, label = load_case(item["image"], item["label"], self.num_classes, self.ignore_label)
            t0 = time.perf_counter()
            prob = self.predict(method, patch_size, net, image)
            seconds += time.perf_counter() - t0
            pixels += image.size
            pred = prob.argmax(0).astype(np.uint8)
            acc.update(pred, label)
            if i == 0:
                first = {"image": image, "label": label, "pred": pred}
            if self.save_predictions and _rank() == 0:
                name = Path(item["image"]).name.split(".")[0]
                out = self.output_dir / "predictions" / tag
                out.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(pred, np.eye(4)), str(out / f"{name}_label.nii.gz"))
                nib.save(nib.Nifti1Image(np.moveaxis(prob, 0, -1).astype(np.float32), np.eye(4)),
                         str(out / f"{name}_prob.nii.gz"))
                save_overlay_png(image, pred, out / f"{name}_overlay.png")
        row: dict[str, Any] = {"method": method, "patch_size": patch_size}
        row.update(acc.summary(self.class_names))
        row["infer_mpix_per_s"] = pixels / 1e6 / seconds if seconds > 0 else float("nan")
        return row, first

    def _write_outputs(self, firsts: dict[str, dict]) -> None:
        if _rank() != 0 or not self.rows:
            return
        cols = ["method", "patch_size"] + [f"jaccard_{n}" for n in self.class_names]
        cols += ["mean_jaccard", "pixel_accuracy", "train_seconds", "infer_mpix_per_s"]
        rows = [{c: r.get(c, float("nan")) for c in cols} for r in self.rows]
        save_results_table(rows, self.output_dir / "jaccard_table", cols, precision=2,
                           title="iPS colony segmentation: Jaccard (%) over non-ignored test pixels")
        if len(self.patch_sizes) > 1:
            sweep = []
            for p in sorted(self.patch_sizes):
                entry: dict[str, Any] = {"patch_size": p}
                for m in self.methods:
                    match = [r["mean_jaccard"] for r in self.rows if r["method"] == m and r["patch_size"] == p]
                    entry[m] = match[0] if match else float("nan")
                sweep.append(entry)
            save_results_table(sweep, self.output_dir / "patch_size_sweep", ["patch_size"] + self.methods,
                               precision=2, title="Mean Jaccard (%) against patch size")
            plot_patch_size_sweep(self.rows, self.output_dir / "patch_size_sweep.png")
        p0 = self.patch_sizes[0]
        shown = {m: firsts[self.tag(m, p0)] for m in self.methods if self.tag(m, p0) in firsts}
        if shown:
            ref = next(iter(shown.values()))
            scores = {r["method"]: r["mean_jaccard"] for r in self.rows if r["patch_size"] == p0}
            plot_qualitative(ref["image"], ref["label"], {m: v["pred"] for m, v in shown.items()},
                             self.output_dir / "qualitative.png", scores)

    def _export_inference_model(self, net: torch.nn.Module) -> None:
        if _rank() == 0:
            save_checkpoint({"model": net.state_dict()}, self.ckpt_dir / "model.pt")

    def run(self) -> list[dict[str, Any]]:
        """Train and evaluate every ``(method, patch_size)``; returns the table rows."""
        self.check_data()
        self.rows, firsts, export = [], {}, None
        for p in self.patch_sizes:
            for m in self.methods:
                net, seconds = self.train_one(m, p)
                row, first = self.evaluate_one(m, p, net)
                row["train_seconds"] = seconds
                self.rows.append(row)
                firsts[self.tag(m, p)] = first
                logger.info(f"{self.tag(m, p)}: mean Jaccard {row['mean_jaccard']:.2f} %")
                if m == "histogram" and p == self.export_patch_size:
                    export = net
                self._write_outputs(firsts)  # after every training, so an interrupted comparison keeps its rows
        if export is not None:
            self._export_inference_model(export)  # last file written: the newest checkpoint is the served model
        return self.rows

    def evaluate(self) -> list[dict[str, Any]]:
        """Evaluate already trained ``(method, patch_size)`` pairs (no training); returns the table rows."""
        self.rows, firsts = [], {}
        for p in self.patch_sizes:
            for m in self.methods:
                row, first = self.evaluate_one(m, p, self.load_trained(m, p))
                self.rows.append(row)
                firsts[self.tag(m, p)] = first
                self._write_outputs(firsts)
        return self.rows
