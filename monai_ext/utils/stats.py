"""Summaries over seeds: mean, standard deviation, 95 % t-interval, and paired differences between methods.

Every comparison table of the studies reports these over several seeds (data and initialisation), and the text
claims a method beats another only when the paired interval of the difference excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["paired_difference", "paired_rows", "summarise", "summary_rows"]


def summarise(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and the two-sided Student-t confidence interval of the mean.

    With one value the SD and interval are NaN (no spread can be estimated).

    Args:
        values: one score per seed (NaN values are an error, not silently dropped).
        confidence: coverage of the interval.

    Raises:
        ValueError: for an empty sequence, NaN values, or a confidence outside (0, 1).

    Example::

        >>> s = summarise([0.70, 0.72, 0.74])
        >>> round(s["mean"], 2), round(s["sd"], 2), round(s["ci_low"], 3), round(s["ci_high"], 3)
        (0.72, 0.02, 0.67, 0.77)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("values is empty: nothing to summarise.")
    if np.isnan(x).any():
        raise ValueError(f"values hold NaN ({int(np.isnan(x).sum())} of {x.size}): a run did not produce a score.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    n, mean = x.size, float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Paired comparison of two methods scored on the same seeds: the summary of ``a - b`` and a paired t-test.

    Returns the keys of :func:`summarise` for the differences plus ``p_value`` (two-sided paired t-test; NaN with
    fewer than two pairs or zero spread) and ``significant`` (1.0 when the interval excludes 0, else 0.0).

    Raises:
        ValueError: when ``a`` and ``b`` differ in length (the pairs must be the same seeds).

    Example::

        >>> d = paired_difference([0.80, 0.82, 0.81], [0.75, 0.78, 0.77])
        >>> round(d["mean"], 3), d["significant"]
        (0.043, 1.0)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same length (one per seed), got {a.size} and {b.size}.")
    diff = a - b
    out = summarise(diff, confidence)
    p = math.nan
    if diff.size > 1 and float(diff.std(ddof=1)) > 0:
        p = float(stats.ttest_rel(a, b).pvalue)
    out["p_value"] = p
    lo, hi = out["ci_low"], out["ci_high"]
    out["significant"] = float(not math.isnan(lo) and (lo > 0 or hi < 0))
    return out


def summary_rows(records: Sequence[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str],
                 confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per group of ``records`` (e.g. per method and patch size) summarising each metric over the seeds.

    Each output row holds the ``by`` keys, ``n`` (records in the group) and, per metric ``m``, ``m_mean``, ``m_sd``,
    ``m_ci_low`` and ``m_ci_high`` (:func:`summarise`). Groups keep the order of their first record.

    Raises:
        ValueError: when a record lacks a ``by`` key or a metric (naming it).

    Example::

        >>> recs = [{"method": "a", "seed": s, "auc": v} for s, v in enumerate([0.7, 0.8])]
        >>> row = summary_rows(recs, ["method"], ["auc"])[0]
        >>> row["n"], round(row["auc_mean"], 2)
        (2, 0.75)
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for i, r in enumerate(records):
        missing = [k for k in (*by, *metrics) if k not in r]
        if missing:
            raise ValueError(f"record {i} lacks {missing}; expected keys {list(by) + list(metrics)}.")
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    rows = []
    for key, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["n"] = len(recs)
        for m in metrics:
            s = summarise([float(r[m]) for r in recs], confidence)
            row.update({f"{m}_mean": s["mean"], f"{m}_sd": s["sd"], f"{m}_ci_low": s["ci_low"],
                        f"{m}_ci_high": s["ci_high"]})
        rows.append(row)
    return rows


def paired_rows(records: Sequence[Mapping[str, Any]], by: Sequence[str], compare_key: str, reference: Any,
                metric: str, pair_key: str = "seed", confidence: float = 0.95) -> list[dict[str, Any]]:
    """Paired differences ``other - reference`` of ``metric`` within each group of ``by`` keys, paired on ``pair_key``.

    E.g. ``paired_rows(records, ["patch_size"], "method", "histogram", "mean_jaccard")``: for each patch size and
    each method other than ``histogram``, the difference to ``histogram`` on the same seeds, with its interval and
    paired t-test (:func:`paired_difference`). Pairs are matched on ``pair_key``; a seed missing on either side is an
    error, not silently dropped.

    Raises:
        ValueError: when the two sides were not scored on the same seeds.
    """
    groups: dict[tuple, dict[Any, dict[Any, float]]] = {}
    for r in records:
        g = groups.setdefault(tuple(r[k] for k in by), {})
        g.setdefault(r[compare_key], {})[r[pair_key]] = float(r[metric])
    rows = []
    for key, per_value in groups.items():
        if reference not in per_value:
            continue
        ref = per_value[reference]
        for other, scores in per_value.items():
            if other == reference:
                continue
            if set(scores) != set(ref):
                raise ValueError(
                    f"{compare_key}={other!r} and {reference!r} were scored on different {pair_key}s "
                    f"({sorted(scores)} vs {sorted(ref)}) in group {dict(zip(by, key, strict=True))}."
                )
            pairs = sorted(ref)
            d = paired_difference([scores[p] for p in pairs], [ref[p] for p in pairs], confidence)
            row: dict[str, Any] = dict(zip(by, key, strict=True))
            row.update({compare_key: other, "reference": reference, "metric": metric})
            row.update({f"diff_{k}": v for k, v in d.items()})
            rows.append(row)
    return rows
