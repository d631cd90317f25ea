"""Small classifier fits of the aneurysm study's baselines (natural-image pre-training, end-to-end fine-tuning),
run by MONAI's ``SupervisedTrainer`` (an ignite engine) on patch tensors.

The bundle's main model (the landmark classifier) is trained by ``train.json`` itself; these helpers train the
*comparison* networks of the transfer study, on tensors the study samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch.utils.data import DataLoader, TensorDataset

from monai_ext.handlers import EpochSeedHandler

__all__ = ["fit_classifier", "is_main_process", "predict", "unwrap"]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True outside ``torch.distributed`` or on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net


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


def fit_classifier(network: nn.Module, data: Callable[[int], tuple[torch.Tensor, torch.Tensor]], epochs: int,
                   device: torch.device, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                   seed: int = 0) -> SupervisedTrainer:
    """Train ``network`` with cross-entropy, Adam and a cosine schedule with MONAI's ``SupervisedTrainer``.

    Args:
        network: the classifier (on ``device``).
        data: ``epoch -> (patches, labels)`` CPU tensors; called at the start of every epoch (1-based), so a
            sampler can draw fresh patches each epoch, or return the same tensors.
        epochs: number of epochs (0 returns the untrained engine without running it).
        device: training device.
        lr, weight_decay, batch_size: optimiser and mini-batch settings.
        seed: seed of the shuffling (per epoch, via :class:`~monai_ext.handlers.EpochSeedHandler`).

    Returns:
        The finished trainer (``trainer.state.metrics["train_loss"]`` is the last epoch's mean loss).

    Raises:
        ValueError: for negative ``epochs`` or a ``batch_size`` < 1.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}.")
    from ignite.metrics import Average

    optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))

    def loader(epoch: int) -> DataLoader:
        return DataLoader(TensorDataset(*data(epoch)), batch_size=batch_size, shuffle=True)

    trainer = SupervisedTrainer(
        device=device, max_epochs=max(epochs, 1), train_data_loader=loader(1), network=network, optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(), decollate=False,
        key_train_metric={"train_loss": Average(output_transform=lambda out: out["loss"])},
        metric_cmp_fn=lambda current, best: best < 0 or current < best,
    )
    EpochSeedHandler(seed).attach(trainer)

    @trainer.on(Events.EPOCH_STARTED)
    def _new_data(engine: SupervisedTrainer) -> None:
        if engine.state.epoch > 1:
            engine.set_data(loader(engine.state.epoch))

    @trainer.on(Events.EPOCH_COMPLETED)
    def _schedule(engine: SupervisedTrainer) -> None:
        scheduler.step()
        logger.info("epoch %d/%d: loss %.4f", engine.state.epoch, epochs, engine.state.metrics["train_loss"])

    if epochs:
        trainer.run()
    return trainer
