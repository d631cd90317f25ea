"""Resumable (and optionally distributed) training of a patch classifier on freshly sampled patches every epoch."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from monai_ext.utils import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state

__all__ = ["is_main_process", "train_classifier", "unwrap", "predict"]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True outside ``torch.distributed`` or on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``net`` itself)."""
    return net.module if hasattr(net, "module") else net


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512,
            fn: str = "forward") -> torch.Tensor:
    """Batched evaluation of ``net.forward`` (or ``net.features`` with ``fn="features"``) on CPU tensors."""
    net = unwrap(net)
    was_training = net.training
    net.eval()
    call = net.features if fn == "features" else net
    out = [call(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def train_classifier(
    net: nn.Module,
    sample_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    ckpt_path: str | os.PathLike,
    device: torch.device,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    val_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    writer: Any | None = None,
    tag: str = "train",
    resume: bool = True,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train ``net`` with cross-entropy for ``epochs`` epochs, saving a resumable checkpoint after each epoch.

    Each epoch draws a new training set with ``sample_fn(epoch)`` (the same on every rank); under
    ``torch.distributed`` each rank trains on its ``rank::world_size`` share and gradients are averaged by
    ``DistributedDataParallel`` (``net`` must already be wrapped). Only rank 0 validates, logs and writes the
    checkpoint; the others wait at a barrier.

    Args:
        net: the classifier (possibly DDP-wrapped) on ``device``.
        sample_fn: ``epoch -> (patches, labels)`` on CPU.
        epochs: total number of epochs (a resumed run continues up to it).
        ckpt_path: checkpoint file (model, optimizer, scheduler, epoch, RNG state, history), written atomically.
        device: training device.
        lr: Adam learning rate (cosine-annealed over ``epochs``).
        weight_decay: Adam weight decay.
        batch_size: mini-batch size per rank.
        val_fn: optional ``net -> {metric: value}`` computed on rank 0 after every epoch.
        writer: optional TensorBoard ``SummaryWriter``.
        tag: name used in logs and TensorBoard.
        resume: continue from ``ckpt_path`` when it exists.
        seed: seed of the mini-batch order.

    Returns:
        History: ``{"loss": [...], <val metric>: [...]}`` per epoch.

    Raises:
        ValueError: for non-positive ``epochs`` or ``batch_size``.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}.")
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    history: dict[str, list[float]] = {"loss": []}
    start = 0
    ckpt_path = Path(ckpt_path)
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        unwrap(net).load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            set_rng_state(ckpt["rng"])
        start = int(ckpt.get("epoch", 0))
        history = {k: list(v) for k, v in ckpt.get("history", history).items()}
        logger.info("%s: resumed from %s at epoch %d", tag, ckpt_path, start)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(start, epochs):
        x, y = sample_fn(epoch)
        x, y = x[rank::world], y[rank::world]
        gen.manual_seed(seed * 100003 + epoch)
        order = torch.randperm(len(x), generator=gen)
        net.train()
        total, count = 0.0, 0
        batches = range(0, len(order), batch_size)
        bar = tqdm(batches, desc=f"{tag} epoch {epoch + 1}/{epochs}", disable=rank != 0, leave=False, mininterval=2.0)
        for i in bar:
            idx = order[i : i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
        sched.step()
        history["loss"].append(total / max(count, 1))
        if rank == 0:
            metrics = val_fn(net) if val_fn is not None else {}
            for k, v in metrics.items():
                history.setdefault(k, []).append(float(v))
            if writer is not None:
                writer.add_scalar(f"{tag}/loss", history["loss"][-1], epoch + 1)
                for k, v in metrics.items():
                    writer.add_scalar(f"{tag}/{k}", v, epoch + 1)
            logger.info("%s epoch %d/%d loss %.4f %s", tag, epoch + 1, epochs, history["loss"][-1],
                        " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            save_checkpoint({"model": unwrap(net).state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": get_rng_state(),
                             "history": history}, ckpt_path)
        if distributed:
            dist.barrier()
    return history
