"""Positive-unlabeled (PU) losses: uPU / nnPU classification risks and the AUC-nnPU pairwise ranking risk.

Notation (shared by every class here): ``f(x)`` is a real score, larger means "more positive"; a *margin surrogate*
``l(z)`` is a loss of the margin ``z`` (``z = y f(x)`` for classification, ``z = f(x_p) - f(x_n)`` for ranking);
``pi`` is the class prior, the positive rate *of the unlabeled data*, so that the unlabeled density is
``p_U = pi p_P + (1 - pi) p_N``.

References:
    - M. C. du Plessis, G. Niu, M. Sugiyama, "Convex formulation for learning from positive and unlabeled data",
      ICML 2015 (unbiased PU risk, uPU; squared and double-hinge surrogates).
    - R. Kiryo, G. Niu, M. C. du Plessis, M. Sugiyama, "Positive-unlabeled learning with non-negative risk
      estimator", NeurIPS 2017 (nnPU; Eq. (5)-(6) and Algorithm 1).
    - T. Sakai, G. Niu, M. Sugiyama, "Semi-supervised AUC optimization based on positive-unlabeled learning",
      Machine Learning 107, 2018 (PU-AUC risk, Section 3).
    - E. Eban, M. Schain, A. Mackey, A. Gordon, R. A. Saurous, G. Elidan, "Scalable learning of non-decomposable
      objectives", AISTATS 2017 (pairwise surrogates of ranking objectives).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = [
    "SURROGATES",
    "AUCNNPULoss",
    "NNPULoss",
    "get_surrogate",
    "pairwise_surrogate_mean",
    "pu_risk_terms",
]


# ---------------------------------------------------------------------------------------------------------------------
# margin surrogates l(z): value and derivative (the derivative is needed by the chunked pairwise backward)
# ---------------------------------------------------------------------------------------------------------------------


def _sigmoid(z: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(-z)


def _d_sigmoid(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return -s * (1.0 - s)


def _logistic(z: torch.Tensor) -> torch.Tensor:
    return F.softplus(-z)


def _d_logistic(z: torch.Tensor) -> torch.Tensor:
    return -torch.sigmoid(-z)


def _squared(z: torch.Tensor) -> torch.Tensor:
    return 0.25 * (z - 1.0) ** 2


def _d_squared(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (z - 1.0)


def _squared_hinge(z: torch.Tensor) -> torch.Tensor:
    return 0.25 * torch.clamp(1.0 - z, min=0.0) ** 2


def _d_squared_hinge(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.clamp(1.0 - z, min=0.0)


def _double_hinge(z: torch.Tensor) -> torch.Tensor:
    return torch.maximum(-z, torch.clamp(0.5 - 0.5 * z, min=0.0))


def _d_double_hinge(z: torch.Tensor) -> torch.Tensor:
    # pieces: -z for z < -1, (1 - z) / 2 for -1 <= z < 1, 0 for z >= 1
    return torch.where(
        z < -1.0, -torch.ones_like(z), torch.where(z < 1.0, -0.5 * torch.ones_like(z), torch.zeros_like(z))
    )


#: name -> (l, dl/dz, symmetric) where symmetric means l(z) + l(-z) == 1 for every z.
SURROGATES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor], bool]] = {
    "sigmoid": (_sigmoid, _d_sigmoid, True),
    "logistic": (_logistic, _d_logistic, False),
    "squared": (_squared, _d_squared, False),
    "squared_hinge": (_squared_hinge, _d_squared_hinge, False),
    "double_hinge": (_double_hinge, _d_double_hinge, False),
}


def get_surrogate(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the margin surrogate ``l(z)`` called ``name``.

    The surrogates (``z`` is the margin, larger is better):

    - ``"sigmoid"``: ``sigmoid(-z)``, bounded and symmetric (``l(z) + l(-z) = 1``); the loss of Kiryo et al. 2017.
    - ``"logistic"``: ``log(1 + exp(-z))``.
    - ``"squared"``: ``(z - 1)^2 / 4`` (du Plessis et al. 2015).
    - ``"squared_hinge"``: ``max(0, 1 - z)^2 / 4``.
    - ``"double_hinge"``: ``max(-z, max(0, (1 - z) / 2))`` (du Plessis et al. 2015).

    Args:
        name: one of the keys of :data:`SURROGATES`.

    Raises:
        ValueError: when ``name`` is not a known surrogate.
    """
    if name not in SURROGATES:
        raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {name!r}.")
    return SURROGATES[name][0]


# ---------------------------------------------------------------------------------------------------------------------
# input checks shared by both PU losses
# ---------------------------------------------------------------------------------------------------------------------


def _check_prior_beta_gamma(prior: float, beta: float, gamma: float) -> None:
    if not isinstance(prior, (int, float)) or isinstance(prior, bool) or not 0.0 < float(prior) < 1.0:
        raise ValueError(f"prior (positive rate of the unlabeled data) must be a float in (0, 1), got {prior!r}.")
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0, got {beta!r}.")
    if not gamma > 0.0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}.")


def _flatten_pu(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``(B,)`` and a boolean labeled-positive mask ``(B,)`` from ``(B,)``/``(B, 1)`` input and target."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"input and target must be torch.Tensor, got {type(input).__name__}, {type(target).__name__}.")
    if input.ndim == 2 and input.shape[1] == 1:
        input = input[:, 0]
    if input.ndim != 1:
        raise ValueError(f"input must have shape (B,) or (B, 1), got {tuple(input.shape)}.")
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != input.shape:
        raise ValueError(
            f"target must have the same number of samples as input ((B,) or (B, 1)), got target "
            f"{tuple(target.shape)} for input {tuple(input.shape)}."
        )
    if not input.dtype.is_floating_point:
        raise TypeError(f"input must be a floating-point tensor of scores, got {input.dtype}.")
    t = target.detach()
    bad = (t != 0) & (t != 1)
    if bool(bad.any()):
        raise ValueError(
            f"target must be 1 (labeled positive) or 0 (unlabeled), found values such as {t[bad][:3].tolist()}."
        )
    return input, t == 1


def _zero_loss(input: torch.Tensor, what: str) -> torch.Tensor:
    """A zero that stays attached to the graph (so ``backward()`` and DDP's gradient hooks still run)."""
    warnings.warn(f"{what}; the PU risk is undefined for this batch, returning a zero loss.", stacklevel=3)
    return input.sum() * 0.0


def _straight_through(value: torch.Tensor, grad_expr: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is ``value`` and whose gradient is that of ``grad_expr``."""
    return grad_expr + (value - grad_expr).detach()


def _mean_or_zero(x: torch.Tensor) -> torch.Tensor:
    return x.mean() if x.numel() > 0 else x.sum()


def pu_risk_terms(
    input: torch.Tensor, target: torch.Tensor, surrogate: str = "sigmoid"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three empirical risks the PU classification estimators are built from (Kiryo et al. 2017, Eq. (2)-(4)).

    Args:
        input: scores ``(B,)`` or ``(B, 1)``.
        target: ``1`` for labeled positive, ``0`` for unlabeled, same number of samples.
        surrogate: margin surrogate name (see :func:`get_surrogate`).

    Returns:
        ``(R_p_plus, R_p_minus, R_u_minus)``: mean of ``l(f(x))`` over labeled positives, mean of ``l(-f(x))`` over
        labeled positives, mean of ``l(-f(x))`` over unlabeled samples (0 for an empty group). The uPU risk is
        ``pi R_p_plus + R_u_minus - pi R_p_minus`` and its "negative part" is ``R_u_minus - pi R_p_minus``.
    """
    loss = get_surrogate(surrogate)
    x, pos = _flatten_pu(input, target)
    xp, xu = x[pos], x[~pos]
    return _mean_or_zero(loss(xp)), _mean_or_zero(loss(-xp)), _mean_or_zero(loss(-xu))


def _nonnegative_step(
    positive: torch.Tensor, negative: torch.Tensor, beta: float, gamma: float, nonnegative: bool
) -> torch.Tensor:
    """Kiryo et al. 2017, Algorithm 1, as one differentiable expression.

    ``positive + negative`` is the unbiased risk. When ``nonnegative`` and ``negative < -beta`` the value returned
    is the non-negative estimate ``positive + max(-beta, negative)`` (with ``beta = 0``: Eq. (6)) while the gradient
    is that of ``-gamma * negative`` (gradient ascent on the part that went negative, ignoring ``positive``).
    """
    if nonnegative and bool(negative.detach() < -beta):
        value = (positive - beta).detach()
        return _straight_through(value, -gamma * negative)
    return positive + negative


class NNPULoss(_Loss):
    """Unbiased (uPU) and non-negative (nnPU) risk for learning a binary classifier from positive and unlabeled data.

    With the unlabeled density ``p_U = pi p_P + (1 - pi) p_N`` the negative-class risk ``(1 - pi) E_N[l(-f)]`` equals
    ``E_U[l(-f)] - pi E_P[l(-f)]``, which gives the unbiased PU risk (du Plessis et al., ICML 2015)::

        R_uPU = pi R_p+ + (R_u- - pi R_p-),      R_p+ = mean_P l(f), R_p- = mean_P l(-f), R_u- = mean_U l(-f).

    The bracket estimates a non-negative quantity, but with a flexible model it goes below zero on the training batch
    (over-fitting). nnPU (Kiryo et al., NeurIPS 2017, Eq. (6) and Algorithm 1) uses
    ``R_nnPU = pi R_p+ + max(-beta, R_u- - pi R_p-)`` and, when the bracket is below ``-beta``, takes a gradient
    step on ``-gamma (R_u- - pi R_p-)`` (ascent on the negative part, which pushes it back up) instead of on the
    risk. This loss implements that step with a straight-through expression, so a plain ``loss.backward()`` and
    any optimiser do exactly Algorithm 1:

    - ``bracket >= -beta`` (or ``nonnegative=False``): value and gradient of ``pi R_p+ + R_u- - pi R_p-``.
    - ``bracket < -beta``: value ``pi R_p+ - beta`` (the nnPU risk, as reported by the authors' code), gradient of
      ``-gamma (R_u- - pi R_p-)``; implemented as ``g + (value - g).detach()`` with ``g = -gamma * bracket``.

    The loss is a batch-level (non-decomposable) risk, so it has no per-sample ``reduction``.

    Args:
        prior: class prior ``pi`` in (0, 1): the fraction of positives *in the unlabeled data*.
        beta: threshold ``beta >= 0`` of Algorithm 1 below which the correction step is taken.
        gamma: step scale ``gamma > 0`` of the correction (ascent) step.
        nonnegative: ``True`` for nnPU, ``False`` for the unbiased uPU risk.
        surrogate: margin surrogate (``"sigmoid"``, ``"logistic"``, ``"squared"``, ``"squared_hinge"``,
            ``"double_hinge"``; see :func:`get_surrogate`). Kiryo et al. use ``"sigmoid"``.

    Raises:
        ValueError: when ``prior`` is not in (0, 1), ``beta < 0``, ``gamma <= 0`` or ``surrogate`` is unknown.

    Example::

        >>> import torch
        >>> loss = NNPULoss(prior=0.5)
        >>> scores = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
        >>> target = torch.tensor([1, 0, 0, 0])   # first sample is a labeled positive, the rest are unlabeled
        >>> loss(scores, target).backward()
    """

    def __init__(
        self,
        prior: float,
        beta: float = 0.0,
        gamma: float = 1.0,
        nonnegative: bool = True,
        surrogate: str = "sigmoid",
    ) -> None:
        super().__init__()
        _check_prior_beta_gamma(prior, beta, gamma)
        get_surrogate(surrogate)
        self.prior = float(prior)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.nonnegative = bool(nonnegative)
        self.surrogate = surrogate

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: scores ``(B,)`` or ``(B, 1)`` (logits; larger means more positive).
            target: ``(B,)`` or ``(B, 1)``, ``1`` for a labeled positive, ``0`` for an unlabeled sample.

        Returns:
            scalar risk (see the class docstring for its value and gradient). A batch with no labeled positive or no
            unlabeled sample gives a zero that is attached to the graph, with a warning.

        Raises:
            ValueError: when the shapes differ or ``target`` holds values other than 0 and 1.
        """
        x, pos = _flatten_pu(input, target)
        if not bool(pos.any()):
            return _zero_loss(x, "batch has no labeled positive")
        if bool(pos.all()):
            return _zero_loss(x, "batch has no unlabeled sample")
        rp_plus, rp_minus, ru_minus = pu_risk_terms(x, pos.to(x.dtype), self.surrogate)
        return _nonnegative_step(
            self.prior * rp_plus, ru_minus - self.prior * rp_minus, self.beta, self.gamma, self.nonnegative
        )


# ---------------------------------------------------------------------------------------------------------------------
# pairwise means without a P x U matrix
# ---------------------------------------------------------------------------------------------------------------------


class _ChunkedPairwiseMean(torch.autograd.Function):
    """``mean_{i,j} l(a_i - b_j)`` computed in row blocks, in the forward *and* the backward pass.

    Autograd through a blocked loop would keep every block for the backward pass (``|a| x |b|`` memory in total),
    so the backward recomputes each block and accumulates ``dl`` instead: peak memory is one block.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, name: str, block: int) -> torch.Tensor:  # type: ignore[override]
        fn = SURROGATES[name][0]
        rows = max(1, block // max(1, b.numel()))
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        for s in range(0, a.numel(), rows):
            total += fn(a[s : s + rows, None] - b[None, :]).sum().double()
        ctx.save_for_backward(a, b)
        ctx.name, ctx.block = name, block
        return (total / (a.numel() * b.numel())).to(a.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        a, b = ctx.saved_tensors
        dfn = SURROGATES[ctx.name][1]
        rows = max(1, ctx.block // max(1, b.numel()))
        scale = grad / (a.numel() * b.numel())
        ga = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        gb = torch.zeros_like(b) if ctx.needs_input_grad[1] else None
        for s in range(0, a.numel(), rows):
            d = dfn(a[s : s + rows, None] - b[None, :])
            if ga is not None:
                ga[s : s + rows] = d.sum(1) * scale
            if gb is not None:
                gb -= d.sum(0) * scale
        return ga, gb, None, None


def _squared_pairwise_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact O(n) ``mean_{i,j} (a_i - b_j - 1)^2 / 4`` = ``((mean a - mean b - 1)^2 + var a + var b) / 4``."""
    ma, mb = a.mean(), b.mean()
    return 0.25 * ((ma - mb - 1.0) ** 2 + ((a - ma) ** 2).mean() + ((b - mb) ** 2).mean())


def _squared_hinge_pairwise_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact O(n log n) ``mean_{i,j} max(0, 1 - a_i + b_j)^2 / 4`` by sorting ``b`` and suffix sums.

    For a fixed ``a_i`` only ``b_j > a_i - 1`` contribute ``(c_i + b_j)^2`` with ``c_i = 1 - a_i``, i.e.
    ``n_i c_i^2 + 2 c_i S1_i + S2_i`` with ``n_i, S1_i, S2_i`` the count, sum and sum of squares of those ``b_j``.
    Sums run in float64 so that the suffix differences do not cancel.
    """
    a64, b64 = a.double(), b.double()
    bs, _ = torch.sort(b64)
    zero = bs.new_zeros(1)
    c1 = torch.cat([zero, torch.cumsum(bs, 0)])
    c2 = torch.cat([zero, torch.cumsum(bs * bs, 0)])
    n = bs.numel()
    k = torch.searchsorted(bs.detach(), (a64 - 1.0).detach(), right=True)
    cnt = (n - k).to(a64.dtype)
    s1 = c1[n] - c1[k]
    s2 = c2[n] - c2[k]
    c = 1.0 - a64
    total = (cnt * c * c + 2.0 * c * s1 + s2).sum()
    return (0.25 * total / (a.numel() * n)).to(a.dtype)


def pairwise_surrogate_mean(
    a: torch.Tensor, b: torch.Tensor, surrogate: str = "sigmoid", block: int = 2**18, exclude_diagonal: bool = False
) -> torch.Tensor:
    """Mean of ``l(a_i - b_j)`` over all pairs, without materialising the ``|a| x |b|`` matrix.

    ``"squared"`` uses an exact O(n) closed form, ``"squared_hinge"`` an exact O(n log n) sort with suffix sums;
    the others are computed in blocks of about ``block`` pairs in both the forward and the backward pass.

    Args:
        a: scores ``(n_a,)`` (first element of every pair).
        b: scores ``(n_b,)`` (second element).
        surrogate: margin surrogate name (see :func:`get_surrogate`).
        block: pairs per block for the blocked surrogates (at least one row of ``|b|`` pairs); peak memory is a few
            times ``block`` floats. Small blocks (the default 2^18) are also faster, as each block stays in cache.
        exclude_diagonal: when ``a`` and ``b`` are the same sample set, average over the ``n (n - 1)`` ordered
            pairs ``i != j`` (a U-statistic) instead of all ``n^2`` pairs; with ``n = 1`` this returns ``l(0)``.

    Returns:
        scalar tensor, differentiable with respect to ``a`` and ``b``.

    Raises:
        ValueError: when ``a`` or ``b`` is empty or not 1D, when ``exclude_diagonal`` is given unequal sizes, or
            when ``surrogate`` is unknown.
    """
    fn = get_surrogate(surrogate)
    if a.ndim != 1 or b.ndim != 1 or a.numel() == 0 or b.numel() == 0:
        raise ValueError(f"a and b must be non-empty 1D tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    if surrogate == "squared":
        full = _squared_pairwise_mean(a, b)
    elif surrogate == "squared_hinge":
        full = _squared_hinge_pairwise_mean(a, b)
    else:
        full = _ChunkedPairwiseMean.apply(a, b, surrogate, int(block))
    if not exclude_diagonal:
        return full
    n = a.numel()
    if b.numel() != n:
        raise ValueError(f"exclude_diagonal needs a and b of the same size, got {a.numel()} and {b.numel()}.")
    l0 = float(fn(torch.zeros((), dtype=torch.float64)))
    if n == 1:
        return full * 0.0 + l0
    return (full * n - l0) / (n - 1)


def _gather_with_grad(x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather scores and masks of every rank; the local block keeps its gradient, the others are constants."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([x.numel()], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    m = int(max(int(s) for s in sizes))
    xs = [x.new_zeros(m) for _ in range(world)]
    ps = [torch.zeros(m, dtype=torch.uint8, device=x.device) for _ in range(world)]
    dist.all_gather(xs, torch.cat([x.detach(), x.new_zeros(m - x.numel())]))
    dist.all_gather(ps, torch.cat([pos.to(torch.uint8), pos.new_zeros(m - x.numel(), dtype=torch.uint8)]))
    xs[rank] = torch.cat([x, x.new_zeros(m - x.numel())])
    xall = torch.cat([xs[r][: int(sizes[r])] for r in range(world)])
    pall = torch.cat([ps[r][: int(sizes[r])] for r in range(world)]).bool()
    return xall, pall


class AUCNNPULoss(_Loss):
    """Non-negative PU estimate of the pairwise AUC risk (AUC-nnPU), optionally plus an nnPU classification term.

    The PN AUC risk is ``R_AUC = E_P E_N l(f(x_p) - f(x_n))`` (a pairwise ranking surrogate, Eban et al. 2017).
    Negatives are not observed, but the unlabeled density is ``p_U = pi p_P + (1 - pi) p_N``, so for any ``g``,
    ``E_N g = (E_U g - pi E_P g) / (1 - pi)`` (du Plessis et al. 2015). With ``g(x) = E_P l(f(x_p) - f(x))``
    (Sakai et al., Machine Learning 2018, Section 3)::

        R_AUC = (R_PU - pi R_PP) / (1 - pi),
        R_PU = mean over (labeled positive, unlabeled) pairs of l(f(x_p) - f(x_u)),
        R_PP = mean over ordered pairs of distinct labeled positives of l(f(x_p) - f(x_p')).

    Like the uPU bracket, this estimate of a non-negative risk goes below zero when a flexible model over-fits, and
    the same non-negative correction as nnPU (Kiryo et al., NeurIPS 2017, Algorithm 1) is applied to ``R_AUC``:
    when ``R_AUC < -beta`` the value is ``-beta`` and the gradient is that of ``-gamma R_AUC`` (ascent),
    otherwise value and gradient of ``R_AUC`` (implemented straight-through, so ``loss.backward()`` suffices).

    The symmetric-surrogate trap: for a symmetric surrogate (``l(m) + l(-m) = 1``, e.g. ``"sigmoid"``), pairing
    every ``(p, p')`` with ``(p', p)`` gives ``R_PP = 1/2`` *exactly, for every model*. Then
    ``R_AUC = (R_PU - pi / 2) / (1 - pi)`` and ``R_AUC < 0`` exactly when ``R_PU < pi / 2``: the clip acts at
    ``R_PU = pi / 2``. A port that clips ``R_PU`` at 0 (or ``R_PU - pi R_PP`` computed with a biased ``R_PP``)
    never triggers, since ``R_PU >= 0`` always, and silently reduces to the unclipped, over-fitting estimator.
    Also, ``R_PP`` then carries no gradient, so the unclipped sigmoid PU-AUC risk is a shifted and scaled ``R_PU``:
    treating U as N for ranking is the same *gradient*; only the non-negative correction makes it differ.

    Memory does not grow as ``P x U``: exact O(n) closed form for ``"squared"``, exact O(n log n) sort with prefix
    sums for ``"squared_hinge"``, blocked forward and backward for the other surrogates (see
    :func:`pairwise_surrogate_mean`).

    Args:
        prior: class prior ``pi`` in (0, 1): the fraction of positives *in the unlabeled data*.
        beta: threshold ``beta >= 0`` below which the correction step is taken.
        gamma: step scale ``gamma > 0`` of the correction (ascent) step.
        nonnegative: ``True`` for the non-negative correction, ``False`` for the unbiased (unclipped) PU-AUC risk.
        surrogate: pairwise margin surrogate (see :func:`get_surrogate`).
        classification_weight: ``lambda >= 0``; when positive, ``lambda * NNPULoss(prior, beta, gamma,
            nonnegative, classification_surrogate)`` is added so that scores stay calibrated around 0.
        classification_surrogate: surrogate of the classification term.
        block: pairs per block for the blocked surrogates.
        gather_distributed: when ``torch.distributed`` is initialised with more than one process, all-gather the
            scores of every rank so that the risk and the decision to correct use the global batch (the local
            scores keep their gradient; other ranks' scores are constants, so after DDP's gradient *averaging* the
            update is ``1 / world_size`` of the global-batch gradient; scale the learning rate accordingly).
            Ignored in a single process.

    Raises:
        ValueError: when ``prior`` is not in (0, 1), ``beta < 0``, ``gamma <= 0``, ``classification_weight < 0``,
            ``block < 1`` or a surrogate name is unknown.

    Example::

        >>> import torch
        >>> loss = AUCNNPULoss(prior=0.3, classification_weight=0.1)
        >>> scores = torch.randn(16, 1, requires_grad=True)
        >>> target = torch.tensor([1, 1, 1, 1] + [0] * 12)
        >>> loss(scores, target).backward()
    """

    def __init__(
        self,
        prior: float,
        beta: float = 0.0,
        gamma: float = 1.0,
        nonnegative: bool = True,
        surrogate: str = "sigmoid",
        classification_weight: float = 0.0,
        classification_surrogate: str = "sigmoid",
        block: int = 2**18,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        _check_prior_beta_gamma(prior, beta, gamma)
        get_surrogate(surrogate)
        get_surrogate(classification_surrogate)
        if not classification_weight >= 0.0:
            raise ValueError(f"classification_weight must be >= 0, got {classification_weight!r}.")
        if int(block) < 1:
            raise ValueError(f"block must be a positive number of pairs, got {block!r}.")
        self.prior = float(prior)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.nonnegative = bool(nonnegative)
        self.surrogate = surrogate
        self.classification_weight = float(classification_weight)
        self.block = int(block)
        self.gather_distributed = bool(gather_distributed)
        self.classification = (
            NNPULoss(prior, beta, gamma, nonnegative, classification_surrogate) if classification_weight > 0 else None
        )

    def auc_risk(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The unbiased (unclipped) PU estimate ``(R_PU - pi R_PP) / (1 - pi)`` of the AUC risk, for monitoring.

        Args:
            input: scores ``(B,)`` or ``(B, 1)``.
            target: ``1`` labeled positive, ``0`` unlabeled; the batch must hold both.

        Raises:
            ValueError: when the batch has no labeled positive or no unlabeled sample.
        """
        x, pos = _flatten_pu(input, target)
        if not bool(pos.any()) or bool(pos.all()):
            raise ValueError("target must contain both labeled positives (1) and unlabeled samples (0).")
        return self._auc_risk(x, pos)

    def _auc_risk(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        xp, xu = x[pos], x[~pos]
        r_pu = pairwise_surrogate_mean(xp, xu, self.surrogate, self.block)
        r_pp = pairwise_surrogate_mean(xp, xp, self.surrogate, self.block, exclude_diagonal=True)
        return (r_pu - self.prior * r_pp) / (1.0 - self.prior)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: scores ``(B,)`` or ``(B, 1)`` (larger means more positive).
            target: ``(B,)`` or ``(B, 1)``, ``1`` for a labeled positive, ``0`` for an unlabeled sample.

        Returns:
            scalar loss. A batch with no labeled positive or no unlabeled sample (after gathering, when
            ``gather_distributed``) gives a zero attached to the graph, with a warning.

        Raises:
            ValueError: when the shapes differ or ``target`` holds values other than 0 and 1.
        """
        x, pos = _flatten_pu(input, target)
        if self.gather_distributed:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                x, pos = _gather_with_grad(x, pos)
        if not bool(pos.any()):
            return _zero_loss(x, "batch has no labeled positive")
        if bool(pos.all()):
            return _zero_loss(x, "batch has no unlabeled sample")
        risk = self._auc_risk(x, pos)
        out = _nonnegative_step(risk.new_zeros(()), risk, self.beta, self.gamma, self.nonnegative)
        if self.classification is not None:
            out = out + self.classification_weight * self.classification(x, pos.to(x.dtype))
        return out
