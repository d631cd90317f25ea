"""Top-k classification accuracy as a MONAI cumulative metric (usable through ``IgniteMetricHandler``)."""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric

__all__ = ["TopKAccuracyMetric"]


class TopKAccuracyMetric(CumulativeIterationMetric):
    """Fraction of samples whose true class is among the ``k`` highest scores, over all accumulated samples.

    MONAI has no plain top-k accuracy for class-index labels (``ConfusionMatrixMetric``'s ``accuracy`` is per class
    on one-hot inputs), and ignite's ``Accuracy`` needs whole batches, while MONAI engines decollate their output by
    default. This metric takes either: ``y_pred`` ``(B, C)`` scores (or ``(C,)`` for one decollated sample) and ``y``
    ``(B,)`` / ``(B, 1)`` class indices (or a scalar).

    Args:
        k: the ``k`` of top-k (1: plain accuracy).

    Raises:
        ValueError: for ``k < 1``, or scores and labels whose batch sizes differ.

    Example::

        >>> metric = TopKAccuracyMetric()
        >>> _ = metric(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), torch.tensor([1, 1, 1]))
        >>> round(float(metric.aggregate()), 4)
        0.6667
    """

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k!r}.")
        self.k = int(k)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        scores = y_pred if y_pred.ndim > 1 else y_pred[None]
        labels = y.reshape(-1).long()
        if scores.shape[0] != labels.shape[0]:
            raise ValueError(f"y_pred has {scores.shape[0]} samples but y has {labels.shape[0]}.")
        top = scores.topk(min(self.k, scores.shape[1]), dim=1).indices
        return (top == labels[:, None]).any(1, keepdim=True).float()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Mean accuracy over every accumulated sample.

        Raises:
            ValueError: when nothing was accumulated.
        """
        buf = self.get_buffer()
        if not isinstance(buf, torch.Tensor) or buf.numel() == 0:
            raise ValueError("TopKAccuracyMetric has no accumulated sample to aggregate.")
        return buf.float().mean()
