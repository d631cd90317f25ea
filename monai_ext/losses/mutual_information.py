"""InfoNCE: a contrastive lower bound on mutual information, for metric learning of embeddings."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from .distribution import check_reduction

__all__ = ["InfoNCELoss"]


class InfoNCELoss(_Loss):
    """InfoNCE loss (van den Oord, Li & Vinyals, "Representation learning with contrastive predictive coding",
    arXiv:1807.03748, 2018, Eq. (4)); minimising it maximises a lower bound on the mutual information of the views.

    Two ways to call it:

    - ``loss(z1, z2)`` with two views ``(B, D)``: row ``i`` of ``z1`` and row ``i`` of ``z2`` are the positive pair,
      the other rows of ``z2`` are the negatives; ``-log softmax_j(s(z1_i, z2_j) / T)[i]`` averaged over anchors
      (and over both directions when ``symmetric``).
    - ``loss(z, groups)`` with embeddings ``(B, D)`` and integer group ids ``(B,)``: every pair of distinct samples
      in the same group is positive (e.g. frames of the same embryo sequence); for anchor ``i`` with positives
      ``P(i)``, ``-(1 / |P(i)|) sum_{p in P(i)} log(exp(s_ip / T) / sum_{a != i} exp(s_ia / T))``, the
      supervised-contrastive form of Khosla et al., NeurIPS 2020, Eq. (2). Anchors without a positive are skipped;
      a batch with no positive pair at all gives a zero attached to the graph, with a warning.

    ``s`` is the cosine similarity (``normalize=True``) or the dot product. Logits go through ``logsumexp``, so very
    large similarities or a small temperature do not overflow.

    Args:
        temperature: ``T > 0``.
        normalize: L2-normalise the embeddings first (cosine similarity).
        symmetric: two-view mode only: average the ``z1 -> z2`` and ``z2 -> z1`` losses.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-anchor values; in group mode the anchors with a positive,
            in two-view symmetric mode ``(2B,)``).

    Raises:
        ValueError: when ``temperature <= 0``; in ``forward`` on shapes that match neither form.

    Example::

        >>> import torch
        >>> loss = InfoNCELoss(temperature=0.1)
        >>> z = torch.randn(8, 16, requires_grad=True)
        >>> loss(z, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
    """

    def __init__(
        self,
        temperature: float = 0.1,
        normalize: bool = True,
        symmetric: bool = True,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.normalize = bool(normalize)
        self.symmetric = bool(symmetric)

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduction == LossReduction.MEAN.value:
            return x.mean()
        if self.reduction == LossReduction.SUM.value:
            return x.sum()
        if self.reduction == LossReduction.NONE.value:
            return x
        raise ValueError(f'Unsupported reduction: {self.reduction}, available options are ["mean", "sum", "none"].')

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: embeddings ``(B, D)`` (first view).
            target: second view ``(B, D)``, or integer group ids ``(B,)``.

        Raises:
            ValueError: when ``input`` is not 2D or ``target`` is neither ``(B, D)`` nor ``(B,)`` integer ids.
        """
        if input.ndim != 2:
            raise ValueError(f"input must be embeddings of shape (B, D), got {tuple(input.shape)}.")
        z = F.normalize(input, dim=1) if self.normalize else input
        if target.shape == input.shape and target.dtype.is_floating_point:
            z2 = F.normalize(target, dim=1) if self.normalize else target.to(z.dtype)
            logits = z @ z2.T / self.temperature
            idx = torch.arange(z.shape[0], device=z.device)
            loss = torch.logsumexp(logits, 1) - logits[idx, idx]
            if self.symmetric:
                loss = torch.cat([loss, torch.logsumexp(logits, 0) - logits[idx, idx]])
            return self._reduce(loss)
        if target.ndim != 1 or target.shape[0] != input.shape[0] or target.dtype.is_floating_point:
            raise ValueError(
                f"target must be a second view of shape {tuple(input.shape)} or integer group ids of shape "
                f"({input.shape[0]},), got {tuple(target.shape)} {target.dtype}."
            )
        n = z.shape[0]
        logits = z @ z.T / self.temperature
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(eye, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
        positive = (target[:, None] == target[None, :]) & ~eye
        n_pos = positive.sum(1)
        has = n_pos > 0
        if not bool(has.any()):
            warnings.warn("InfoNCELoss: no two samples share a group id; returning a zero loss.", stacklevel=2)
            return input.sum() * 0.0
        per_anchor = -torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)[has] / n_pos[has]
        return self._reduce(per_anchor)
