"""The training step of the embryo study, for MONAI's ``SupervisedTrainer(iteration_update=...)``.

MONAI's default step computes ``loss_function(network(image), label)``. The embryo study trains at *frame* level:
every frame of a sequence carries the sequence's PU label (live birth = labeled positive, failure = unlabeled),
the PU loss (:class:`~monai_ext.losses.NNPULoss`, :class:`~monai_ext.losses.AUCNNPULoss`, with the class prior
``pi`` they were built with) sees one score per frame, and an optional InfoNCE term pulls together the embeddings of
the frames of one sequence (mutual-information metric learning). That needs the network's frame logits and frame
embeddings, not only its sequence logit, which is why this study has its own iteration. Everything else (data,
optimiser, handlers, validation, checkpoints, DDP) is MONAI's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents

from monai_ext.losses import InfoNCELoss, pu_risk_terms

if TYPE_CHECKING:
    from monai.engines import SupervisedTrainer

__all__ = ["FrameLevelPUIteration", "negative_risk"]


@torch.no_grad()
def negative_risk(criterion: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor) -> float | None:
    """The unbiased negative-class risk (nnPU's bracket) or the unbiased PU-AUC risk of a batch; ``None`` for a loss
    without one (PN cross-entropy) or a batch without both classes.

    nnPU / AUC-nnPU take their non-negative correction step exactly when this is below ``-beta``.
    """
    pos = target > 0.5
    if not bool(pos.any()) or bool(pos.all()):
        return None
    if hasattr(criterion, "auc_risk"):
        return float(criterion.auc_risk(logits, target))
    if hasattr(criterion, "surrogate") and hasattr(criterion, "prior"):
        _, rp_minus, ru_minus = pu_risk_terms(logits, pos.to(logits.dtype), criterion.surrogate)
        return float(ru_minus - criterion.prior * rp_minus)
    return None


class FrameLevelPUIteration:
    """One frame-level PU training step (``SupervisedTrainer(iteration_update=FrameLevelPUIteration(...))``).

    The trainer's ``network`` returns ``(sequence logit, frame logits (B, T), attention, embeddings (B, T, E))`` for
    a ``(B, C, T, H, W)`` batch (e.g. :class:`~monai_ext.apps.embryo_pu.FrameOutputs` around a
    :class:`~monai_ext.networks.nets.TimeLapseNet`, so that ``DistributedDataParallel`` sees a plain ``forward``).
    The loss is ``loss_function(frame_logits, frame_targets)`` (each frame gets its sequence's 0/1 label) plus
    ``infonce_weight * InfoNCE(embeddings, sequence ids)`` when ``infonce_weight > 0``.

    The output holds ``image``, ``label``, ``pred`` (sequence logits), ``loss`` and ``negative_risk``
    (:func:`negative_risk`; NaN when undefined), so that a handler or metric can count the batches where the
    non-negative correction acted; the step fires MONAI's iteration events like ``SupervisedTrainer``'s own step,
    so decollation, postprocessing and metrics behave the same.

    Args:
        infonce_weight: weight of the InfoNCE term (0: none).
        temperature: InfoNCE temperature.
    """

    def __init__(self, infonce_weight: float = 0.0, temperature: float = 0.1) -> None:
        if float(infonce_weight) < 0:
            raise ValueError(f"infonce_weight must be >= 0, got {infonce_weight}.")
        self.infonce_weight = float(infonce_weight)
        self.infonce = InfoNCELoss(temperature) if self.infonce_weight > 0 else None

    def __call__(self, engine: SupervisedTrainer, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        x, y = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        engine.network.train()
        engine.state.output = {"image": x, "label": y}
        logit, frame_logits, _, embedding = engine.network(x)
        engine.state.output["pred"] = logit
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        frames = frame_logits.shape[1]
        frame_logits = frame_logits.reshape(-1)
        frame_target = y.float().reshape(-1).repeat_interleave(frames)
        loss = engine.loss_function(frame_logits, frame_target)
        if self.infonce is not None:
            groups = torch.arange(x.shape[0], device=x.device).repeat_interleave(frames)
            loss = loss + self.infonce_weight * self.infonce(embedding.reshape(-1, embedding.shape[-1]), groups)
        engine.state.output["loss"] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        risk = negative_risk(engine.loss_function, frame_logits.detach(), frame_target)
        engine.state.output["negative_risk"] = torch.tensor(float("nan") if risk is None else risk)
        # MONAI's handlers (decollation, postprocessing, metrics) run on these events, as after its own step
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
