"""Baseline losses between a predicted and a target distribution over ``K`` classes or ordered grades.

These are the comparison losses of the sperm-grading study (label-distribution learning from many raters' grades):
mean squared error of the pmfs, Jensen-Shannon divergence, soft cross-entropy and histogram intersection. The
ordinal-aware loss of that study is :class:`monai_ext.losses.EMDLoss`; :func:`get_distribution_loss` builds any of
them by name so that a bundle config can switch between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = [
    "DISTRIBUTION_LOSSES",
    "DistributionLoss",
    "HistogramIntersectionLoss",
    "JSDLoss",
    "PMFMSELoss",
    "SoftCrossEntropyLoss",
    "check_pmf_pair",
    "check_reduction",
    "get_distribution_loss",
]


def check_pmf_pair(
    input: torch.Tensor, target: torch.Tensor, softmax: bool, atol: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(B, K)`` predictions and target pmfs; return the predicted pmf (softmax if asked) and the target.

    Args:
        input: ``(B, K)`` logits (``softmax=True``) or probabilities.
        target: ``(B, K)`` target distributions (non-negative, each row sums to 1).
        softmax: apply a softmax over the last axis of ``input``.
        atol: tolerance on the row sums of ``target`` (and of ``input`` when ``softmax=False``).

    Raises:
        ValueError: when the shapes differ or are not 2D, or when a row of ``target`` (or of a probability
            ``input``) is negative or does not sum to 1.
    """
    if input.ndim != 2 or target.shape != input.shape:
        raise ValueError(
            f"input and target must both have shape (B, K), got input {tuple(input.shape)} and target "
            f"{tuple(target.shape)}."
        )
    target = target.to(input.dtype)
    for name, t in (("target", target), ("input", input)):
        if name == "input" and softmax:
            continue
        td = t.detach()
        sums = td.sum(-1)
        if bool((td < -atol).any()) or not bool(torch.allclose(sums, torch.ones_like(sums), atol=atol)):
            bad = sums[(sums - 1).abs() > atol][:3].tolist()
            raise ValueError(
                f"{name} rows must be non-negative and sum to 1 (distributions over the last axis), "
                f"found row sums such as {bad or sums[:3].tolist()}."
            )
    p = torch.softmax(input, dim=-1) if softmax else input
    return p, target


def check_reduction(reduction: LossReduction | str) -> str:
    """The value of ``reduction`` as a string; ``ValueError`` naming the argument when it is not a reduction."""
    try:
        return LossReduction(reduction).value
    except ValueError:
        raise ValueError(f'reduction must be one of ["mean", "sum", "none"], got {reduction!r}.') from None


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == LossReduction.MEAN.value:
        return per_sample.mean()
    if reduction == LossReduction.SUM.value:
        return per_sample.sum()
    if reduction == LossReduction.NONE.value:
        return per_sample
    raise ValueError(f'Unsupported reduction: {reduction}, available options are ["mean", "sum", "none"].')


class DistributionLoss(_Loss):
    """Base of the per-sample distribution losses: ``(B, K)`` input vs ``(B, K)`` target pmfs, then ``reduction``.

    Args:
        softmax: treat ``input`` as logits and apply a softmax over ``K`` (``False``: ``input`` is a pmf).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample values of shape ``(B,)``).

    Raises:
        ValueError: when ``reduction`` is not one of the three.
    """

    def __init__(self, softmax: bool = True, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.softmax = bool(softmax)

    def per_sample(self, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ``(B,)`` from the predicted pmf ``p``, target ``q`` and raw ``input``."""
        raise NotImplementedError

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, K)`` logits (or probabilities when ``softmax=False``).
            target: ``(B, K)`` target pmfs.

        Raises:
            ValueError: on bad shapes or a target that is not a distribution.
        """
        p, q = check_pmf_pair(input, target, self.softmax)
        return _reduce(self.per_sample(p, q, input), self.reduction)


class PMFMSELoss(DistributionLoss):
    """Mean over ``K`` of the squared difference of the predicted and target pmfs (after the softmax).

    Example::

        >>> loss = PMFMSELoss()
        >>> loss(torch.zeros(2, 4), torch.full((2, 4), 0.25))
        tensor(0.)
    """

    def per_sample(self, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return ((p - q) ** 2).mean(-1)


class SoftCrossEntropyLoss(DistributionLoss):
    """Cross-entropy with a soft target, ``-sum_k q_k log p_k`` (log-softmax of the logits for stability).

    Example::

        >>> loss = SoftCrossEntropyLoss()
        >>> value = loss(torch.zeros(2, 4), torch.full((2, 4), 0.25))   # log(4)
    """

    def per_sample(self, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, -1) if self.softmax else torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        return -(q * logp).sum(-1)


class JSDLoss(DistributionLoss):
    """Jensen-Shannon divergence ``KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2`` (natural log).

    Bounded by ``log 2``; zero entries are handled with ``0 log 0 = 0``.

    Example::

        >>> loss = JSDLoss(softmax=False)
        >>> value = loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))   # log(2)
    """

    def per_sample(self, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        m = 0.5 * (p + q)
        tiny = torch.finfo(p.dtype).tiny
        logm = torch.log(m.clamp_min(tiny))
        kl_pm = (torch.xlogy(p, p) - p * logm).sum(-1)
        kl_qm = (torch.xlogy(q, q) - q * logm).sum(-1)
        return 0.5 * (kl_pm + kl_qm)


class HistogramIntersectionLoss(DistributionLoss):
    """``1 - sum_k min(p_k, q_k)``: one minus the histogram intersection (Swain & Ballard, IJCV 1991).

    Example::

        >>> loss = HistogramIntersectionLoss(softmax=False)
        >>> value = loss(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))   # 0.5
    """

    def per_sample(self, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.minimum(p, q).sum(-1)


#: name -> loss class, for configs that choose the loss by name (``"emd"`` is added by ``monai_ext.losses``).
DISTRIBUTION_LOSSES: dict[str, type[_Loss]] = {
    "mse": PMFMSELoss,
    "jsd": JSDLoss,
    "ce": SoftCrossEntropyLoss,
    "hi": HistogramIntersectionLoss,
}


def get_distribution_loss(name: str, **kwargs) -> _Loss:
    """Build a distribution loss by name: ``"emd"``, ``"mse"``, ``"jsd"``, ``"ce"`` or ``"hi"``.

    Args:
        name: loss name (case-insensitive).
        kwargs: constructor arguments of that loss (e.g. ``reduction``, ``softmax``, ``r`` for EMD).

    Raises:
        ValueError: when ``name`` is unknown.

    Example::

        >>> loss = get_distribution_loss("emd", r=2)
    """
    from .emd import EMDLoss

    table: dict[str, type[_Loss]] = {"emd": EMDLoss, **DISTRIBUTION_LOSSES}
    key = str(name).lower()
    if key not in table:
        raise ValueError(f"name must be one of {sorted(table)}, got {name!r}.")
    return table[key](**kwargs)
