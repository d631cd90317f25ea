"""Label-distribution metrics between predicted and target pmfs (Geng, IEEE TKDE 2016, Table 2) and grade accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.config import NdarrayOrTensor
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor

__all__ = ["DISTRIBUTION_METRICS", "LabelDistributionMetric", "compute_distribution_metrics"]

#: metric name -> True when smaller is better (distances) / False when larger is better (similarities).
DISTRIBUTION_METRICS: dict[str, bool] = {
    "chebyshev": True,
    "clark": True,
    "canberra": True,
    "kl": True,
    "cosine": False,
    "intersection": False,
    "mode_accuracy": False,
}


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0 / 0 = 0`` (both distributions empty at that grade)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def compute_distribution_metrics(
    y_pred: NdarrayOrTensor, y: NdarrayOrTensor, metrics: Sequence[str] | None = None, eps: float = 1e-12
) -> dict[str, torch.Tensor]:
    """Per-sample label-distribution metrics between predicted pmfs ``p`` and target pmfs ``q``, both ``(B, K)``.

    - ``chebyshev``: ``max_k |p_k - q_k|``
    - ``clark``: ``sqrt(sum_k (p_k - q_k)^2 / (p_k + q_k)^2)``
    - ``canberra``: ``sum_k |p_k - q_k| / (p_k + q_k)``
    - ``kl``: ``KL(q || p) = sum_k q_k log(q_k / p_k)`` (``p`` floored at ``eps``)
    - ``cosine``: ``<p, q> / (|p| |q|)``
    - ``intersection``: ``sum_k min(p_k, q_k)``
    - ``mode_accuracy``: 1 when ``argmax p == argmax q`` (the most voted grade is predicted), else 0

    The first six are the measures of Geng, "Label distribution learning", IEEE TKDE 28(7), 2016 (Table 2);
    ``0 / 0`` terms of Clark and Canberra count as 0.

    Args:
        y_pred: ``(B, K)`` predicted pmfs.
        y: ``(B, K)`` target pmfs.
        metrics: names to compute (default: all of :data:`DISTRIBUTION_METRICS`).
        eps: floor of ``p`` inside the KL logarithm.

    Returns:
        dict name -> ``(B,)`` float tensor.

    Raises:
        ValueError: on unknown names or mismatched / non-2D shapes.
    """
    names = list(DISTRIBUTION_METRICS) if metrics is None else list(metrics)
    unknown = [m for m in names if m not in DISTRIBUTION_METRICS]
    if unknown:
        raise ValueError(f"metrics must be among {list(DISTRIBUTION_METRICS)}, got unknown {unknown}.")
    p = convert_to_tensor(y_pred, dtype=torch.float64)
    q = convert_to_tensor(y, dtype=torch.float64, device=p.device)
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"y_pred and y must both be (B, K), got {tuple(p.shape)} and {tuple(q.shape)}.")
    diff = (p - q).abs()
    ssum = p + q
    out: dict[str, torch.Tensor] = {}
    for m in names:
        if m == "chebyshev":
            out[m] = diff.amax(1)
        elif m == "clark":
            out[m] = torch.sqrt(_ratio(diff**2, ssum**2).sum(1))
        elif m == "canberra":
            out[m] = _ratio(diff, ssum).sum(1)
        elif m == "kl":
            out[m] = (torch.xlogy(q, q) - q * torch.log(p.clamp_min(eps))).sum(1)
        elif m == "cosine":
            out[m] = (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1)).clamp_min(eps)
        elif m == "intersection":
            out[m] = torch.minimum(p, q).sum(1)
        else:
            out[m] = (p.argmax(1) == q.argmax(1)).to(torch.float64)
    return out


class LabelDistributionMetric(CumulativeIterationMetric):
    """Accumulates per-sample label-distribution metrics over iterations; ``aggregate()`` gives their means.

    Args:
        metrics: names from :data:`DISTRIBUTION_METRICS` (default: all).
        softmax: apply a softmax over ``K`` to ``y_pred`` first (when the network outputs logits).

    Raises:
        ValueError: on an unknown metric name.

    Example::

        >>> metric = LabelDistributionMetric(metrics=("chebyshev", "mode_accuracy"))
        >>> _ = metric(torch.tensor([[0.2, 0.8]]), torch.tensor([[0.4, 0.6]]))
        >>> round(metric.aggregate()["chebyshev"], 6)  # float32 arithmetic: 0.20000000298...
        0.2
    """

    def __init__(self, metrics: Sequence[str] | None = None, softmax: bool = False) -> None:
        super().__init__()
        self.metrics = tuple(DISTRIBUTION_METRICS) if metrics is None else tuple(metrics)
        unknown = [m for m in self.metrics if m not in DISTRIBUTION_METRICS]
        if unknown:
            raise ValueError(f"metrics must be among {list(DISTRIBUTION_METRICS)}, got unknown {unknown}.")
        self.softmax = bool(softmax)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.ndim == 1:  # a single sample given channel-first through MONAI's list path
            y_pred, y = y_pred[None], y[None]
        p = torch.softmax(y_pred.double(), -1) if self.softmax else y_pred
        vals = compute_distribution_metrics(p, y, self.metrics)
        return torch.stack([vals[m] for m in self.metrics], 1)

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        """Mean of each metric over all samples accumulated since the last ``reset()``."""
        buf = self.get_buffer()
        if not isinstance(buf, torch.Tensor) or buf.numel() == 0:
            raise ValueError("LabelDistributionMetric has no accumulated sample to aggregate.")
        buf = buf.reshape(-1, len(self.metrics))
        return {m: float(buf[:, i].mean()) for i, m in enumerate(self.metrics)}
