"""PU-corrected AUC and decision-threshold selection on validation data."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "PUCorrectedAUCMetric",
    "ThresholdResult",
    "binary_metrics_at_threshold",
    "compute_auc",
    "pu_corrected_auc",
    "select_threshold",
]

THRESHOLD_METHODS = ("youden", "max_f1", "recall", "prior_quantile")


def _scores_labels(scores: NdarrayOrTensor, labels: NdarrayOrTensor | None) -> tuple[np.ndarray, np.ndarray | None]:
    s = (scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)).astype(np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty (N,) or (N, 1) array, got shape {s.shape}.")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite.")
    if labels is None:
        return s, None
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != s.shape:
        raise ValueError(f"labels must have the shape of scores {s.shape}, got {y.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, found values such as {np.unique(y[~np.isin(y, (0, 1))])[:3]}.")
    return s, y.astype(bool)


def compute_auc(scores: NdarrayOrTensor, labels: NdarrayOrTensor) -> float:
    """ROC AUC, ``P(score of a positive > score of a negative) + P(equal) / 2`` (Mann-Whitney, ties count half).

    Args:
        scores: ``(N,)`` scores, larger means more positive.
        labels: ``(N,)`` 0/1 labels.

    Raises:
        ValueError: when a class is missing or the inputs are malformed.
    """
    s, y = _scores_labels(scores, labels)
    assert y is not None
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels must contain both classes, got {n_pos} positives and {n_neg} negatives.")
    # average ranks handle ties: rank-sum of the positives minus its minimum, over the number of pairs
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pu_corrected_auc(scores: NdarrayOrTensor, labels: NdarrayOrTensor, prior: float) -> float:
    """Estimate of the positive-vs-negative AUC from positive-vs-unlabeled labels.

    With unlabeled data ``p_U = pi p_P + (1 - pi) p_N``, ``AUC_PU = pi / 2 + (1 - pi) AUC_PN`` (a positive vs a
    positive ranks correctly half the time), hence ``AUC_PN = (AUC_PU - pi / 2) / (1 - pi)`` (Sakai, Niu &
    Sugiyama, Machine Learning 2018, Section 3; also Menon et al., ICML 2015).

    Args:
        scores: ``(N,)`` scores.
        labels: ``(N,)``: 1 labeled positive, 0 unlabeled.
        prior: class prior ``pi`` in (0, 1) of the unlabeled data.

    Raises:
        ValueError: when ``prior`` is not in (0, 1) or a group is missing.

    Example::

        >>> pu_corrected_auc([0.9, 0.05, 0.1, 0.7], [1, 1, 0, 0], prior=0.5)
        0.5
    """
    if isinstance(prior, bool) or not 0.0 < float(prior) < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior!r}.")
    return (compute_auc(scores, labels) - prior / 2.0) / (1.0 - prior)


@dataclass(frozen=True)
class ThresholdResult:
    """A decision threshold (predict positive when ``score >= threshold``) and the binary metrics at it.

    Attributes:
        threshold: the threshold.
        method: how it was chosen (``"fixed"`` for :func:`binary_metrics_at_threshold`).
        recall, precision, f1, specificity, accuracy: at the threshold, on the data it was evaluated on
            (precision is 0 when nothing is predicted positive; F1 is 0 when precision + recall is 0).
    """

    threshold: float
    method: str
    recall: float
    precision: float
    f1: float
    specificity: float
    accuracy: float

    def as_dict(self) -> dict[str, float | str]:
        """The fields as a plain dict (for results tables)."""
        return asdict(self)


def _confusion(s: np.ndarray, y: np.ndarray, t: float) -> tuple[int, int, int, int]:
    pred = s >= t
    return int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum()), int((~pred & ~y).sum())


def _result(s: np.ndarray, y: np.ndarray, t: float, method: str) -> ThresholdResult:
    tp, fp, fn, tn = _confusion(s, y, t)
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    spec = tn / (tn + fp) if tn + fp else 0.0
    return ThresholdResult(float(t), method, recall, precision, f1, spec, (tp + tn) / s.size)


def binary_metrics_at_threshold(
    scores: NdarrayOrTensor, labels: NdarrayOrTensor, threshold: float = 0.5
) -> ThresholdResult:
    """Recall, precision, F1, specificity and accuracy when predicting positive for ``score >= threshold``.

    Args:
        scores: ``(N,)`` scores or probabilities.
        labels: ``(N,)`` 0/1 labels.
        threshold: decision threshold.

    Example::

        >>> binary_metrics_at_threshold([0.9, 0.2, 0.6], [1, 0, 0], 0.5).precision
        0.5
    """
    s, y = _scores_labels(scores, labels)
    assert y is not None
    return _result(s, y, float(threshold), "fixed")


def select_threshold(
    scores: NdarrayOrTensor,
    labels: NdarrayOrTensor,
    method: str = "youden",
    target_recall: float = 0.8,
    prior: float | None = None,
) -> ThresholdResult:
    """Choose a decision threshold on validation data and report the binary metrics at it.

    Candidates are the distinct validation scores (predict positive when ``score >= threshold``).

    - ``"youden"``: maximise Youden's J = recall + specificity - 1 (Youden, Cancer 1950).
    - ``"max_f1"``: maximise F1.
    - ``"recall"``: the largest threshold whose recall is at least ``target_recall`` (highest precision among
      those thresholds that keep the recall).
    - ``"prior_quantile"``: predict the top ``prior`` fraction positive: the ``ceil(prior N)``-th largest score.
      It uses no label, which suits PU data where the validation "negatives" are unlabeled.

    Ties between candidates go to the larger threshold. The criteria are compared exactly, as ratios of integer
    counts, so that candidates with equal criteria are ties even where their float values differ in the last bit.

    Args:
        scores: ``(N,)`` validation scores.
        labels: ``(N,)`` validation 0/1 labels (for PU data: 1 labeled positive, 0 unlabeled).
        method: one of ``"youden"``, ``"max_f1"``, ``"recall"``, ``"prior_quantile"``.
        target_recall: recall to keep for ``"recall"``, in (0, 1].
        prior: positive fraction in (0, 1) for ``"prior_quantile"``.

    Returns:
        :class:`ThresholdResult` (metrics computed on the same validation data).

    Raises:
        ValueError: on an unknown ``method``, a missing or out-of-range ``prior`` / ``target_recall``, or
            malformed inputs.

    Example::

        >>> select_threshold([0.1, 0.3, 0.35, 0.8], [0, 0, 1, 1], "youden").threshold
        0.35
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {THRESHOLD_METHODS}, got {method!r}.")
    s, y = _scores_labels(scores, labels)
    assert y is not None
    if method == "prior_quantile":
        if prior is None or isinstance(prior, bool) or not 0.0 < float(prior) < 1.0:
            raise ValueError(f"prior must be in (0, 1) for method='prior_quantile', got {prior!r}.")
        k = max(1, int(np.ceil(float(prior) * s.size)))
        return _result(s, y, float(np.sort(s)[::-1][k - 1]), method)
    if method == "recall" and not 0.0 < float(target_recall) <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}.")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0:
        raise ValueError("labels must contain at least one positive to select a threshold.")
    # sweep thresholds from high to low: counts of predicted positives at each distinct score
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # last index of each run of equal scores
    tp = np.cumsum(yy)[last]
    fp = np.cumsum(~yy)[last]
    thr = ss[last]
    if method == "recall":
        ok = tp / n_pos >= float(target_recall) - 1e-12
        return _result(s, y, float(thr[np.argmax(ok)]), method)
    # the criteria are ratios of integer counts: compare them exactly, so that equal values are ties (which go to
    # the larger threshold, the first candidate) and float rounding cannot pick a smaller threshold
    if method == "youden":
        # J = tp / P + (N - fp) / N - 1 = (tp N - fp P) / (P N); with no negative, specificity is 0: J = tp / P - 1
        if n_neg:
            num, den = tp * n_neg - fp * n_pos, np.full_like(tp, n_pos * n_neg)
        else:
            num, den = tp - n_pos, np.ones_like(tp)
    else:
        # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (tp + fp + P); 0 when nothing positive is found
        num, den = 2 * tp, tp + fp + n_pos
    return _result(s, y, float(thr[_first_exact_argmax(num, den)]), method)


def _first_exact_argmax(num: np.ndarray, den: np.ndarray) -> int:
    """Index of the first maximum of ``num / den`` (integer arrays, ``den > 0``), compared exactly.

    Floats narrow the search to the values within a relative 1e-9 of the float maximum (far wider than the rounding
    of one division); Python integers then compare the fractions ``a / b`` and ``c / d`` as ``a d`` and ``c b``.
    """
    approx = num / den
    top = float(approx.max())
    candidates = np.flatnonzero(approx >= top - 1e-9 * max(abs(top), 1.0))
    best = int(candidates[0])
    for i in candidates[1:].tolist():
        if int(num[i]) * int(den[best]) > int(num[best]) * int(den[i]):
            best = i
    return best


class PUCorrectedAUCMetric(CumulativeIterationMetric):
    """Accumulates scores and PU labels over iterations; ``aggregate()`` gives :func:`pu_corrected_auc`.

    Args:
        prior: class prior ``pi`` in (0, 1) of the unlabeled data.

    Raises:
        ValueError: when ``prior`` is not in (0, 1).

    Example::

        >>> import torch
        >>> metric = PUCorrectedAUCMetric(prior=0.3)
        >>> _ = metric(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))  # returns the batch buffers
        >>> _ = metric(torch.tensor([0.7, 0.4]), torch.tensor([0, 1]))
        >>> round(metric.aggregate(), 4)  # AUC 3/4 over both batches: (0.75 - 0.3 / 2) / (1 - 0.3)
        0.8571
    """

    def __init__(self, prior: float) -> None:
        super().__init__()
        if isinstance(prior, bool) or not 0.0 < float(prior) < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior!r}.")
        self.prior = float(prior)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return y_pred.reshape(-1, 1), y.reshape(-1, 1)

    def aggregate(self) -> float:  # type: ignore[override]
        """PU-corrected AUC of everything accumulated since the last ``reset()``."""
        y_pred, y = self.get_buffer()
        return pu_corrected_auc(y_pred.reshape(-1), y.reshape(-1), self.prior)
