"""PU learning on real data: scikit-learn's bundled handwritten digits, even (positive) vs odd (negative).

The setting of Kiryo et al. (NeurIPS 2017, Section 4) at a small scale: from the training split about 100 positives
are labeled, every other training image is unlabeled (a mix of positives and negatives with known positive rate
``prior``), and a small MLP is trained with

- ``PN``: the unlabeled samples taken as negatives (sigmoid loss, labeled +1 vs unlabeled -1);
- ``PN-logistic``: the same with the logistic loss (binary cross-entropy), the usual "U as N" baseline (the
  bounded sigmoid loss saturates on this 100-vs-1158 imbalance: see ``docs/results.md``);
- ``uPU``: :class:`~monai_ext.losses.NNPULoss` with ``nonnegative=False`` (du Plessis et al. 2015);
- ``nnPU``: :class:`~monai_ext.losses.NNPULoss` (Kiryo et al. 2017, beta = 0, gamma = 1);
- ``PU-AUC``: :class:`~monai_ext.losses.AUCNNPULoss` with ``nonnegative=False`` (Sakai et al. 2018);
- ``AUC-nnPU``: :class:`~monai_ext.losses.AUCNNPULoss` (non-negative correction on the AUC risk).

Each epoch it records, on the whole training set, the part of the risk that must be non-negative (``R_u- - pi R_p-``
for the classification risks, the PU-AUC risk ``(R_PU - pi R_PP) / (1 - pi)`` for the ranking risks) and the test
error and AUC. The classification losses predict positive for ``f(x) > 0``; the ranking losses have no calibrated
zero, so their test error uses the threshold that labels the top ``prior`` fraction of the *unlabeled training*
scores positive (known prior, no label used). Batches come from
:class:`~monai_ext.data.PositiveBatchSampler` (at least 4 labeled positives per batch).

Run: ``python benchmarks/pu_digits.py`` (defaults: 3 seeds, 100 epochs; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from monai_ext.data import PositiveBatchSampler
from monai_ext.losses import AUCNNPULoss, NNPULoss, pu_risk_terms
from monai_ext.metrics import compute_auc

METHODS = ("PN", "PN-logistic", "uPU", "nnPU", "PU-AUC", "AUC-nnPU")


def make_data(seed: int, n_labeled: int) -> dict[str, np.ndarray | float]:
    x, digit = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = (digit % 2 == 0).astype(np.int64)  # even digits are the positive class
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    g = np.random.default_rng(seed)
    labeled = g.choice(np.flatnonzero(y_tr == 1), size=n_labeled, replace=False)
    s = np.zeros_like(y_tr)
    s[labeled] = 1  # 1 = labeled positive, 0 = unlabeled
    prior = float(y_tr[s == 0].mean())  # positive rate among the unlabeled, assumed known as in the papers
    return {"x_tr": x_tr, "s_tr": s, "y_tr": y_tr, "x_te": x_te, "y_te": y_te, "prior": prior}


def make_model(seed: int, hidden: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def pn_loss(f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Unlabeled taken as negative: mean sigmoid loss of the margin with y = +1 (labeled) / -1 (unlabeled)."""
    y = 2.0 * s.to(f.dtype) - 1.0
    return torch.sigmoid(-y * f).mean()


def pn_logistic_loss(f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Unlabeled taken as negative with binary cross-entropy on the logits."""
    return nn.functional.binary_cross_entropy_with_logits(f, s.to(f.dtype))


def run(method: str, data: dict, seed: int, epochs: int, lr: float, hidden: int, batch: int) -> dict:
    prior = data["prior"]
    model = make_model(seed, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = {
        "PN": pn_loss,
        "PN-logistic": pn_logistic_loss,
        "uPU": NNPULoss(prior, nonnegative=False),
        "nnPU": NNPULoss(prior),
        "PU-AUC": AUCNNPULoss(prior, nonnegative=False),
        "AUC-nnPU": AUCNNPULoss(prior),
    }[method]
    monitor = AUCNNPULoss(prior, nonnegative=False)
    x_tr, s_tr = torch.from_numpy(data["x_tr"]), torch.from_numpy(data["s_tr"])
    x_te, y_te = torch.from_numpy(data["x_te"]), data["y_te"]
    sampler = PositiveBatchSampler(data["s_tr"], batch_size=batch, min_positives=4, seed=seed)
    curve = []
    for _ in range(epochs):
        model.train()
        for idx in sampler:
            opt.zero_grad()
            loss_fn(model(x_tr[idx])[:, 0], s_tr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            f_tr = model(x_tr)[:, 0]
            _, rp_minus, ru_minus = pu_risk_terms(f_tr, s_tr)
            f_te = model(x_te)[:, 0].numpy()
            if method in ("PU-AUC", "AUC-nnPU"):
                u = f_tr[s_tr == 0].numpy()
                thr = np.sort(u)[::-1][max(1, int(np.ceil(prior * u.size))) - 1]
                pred = f_te >= thr
            else:
                pred = f_te > 0
            curve.append(
                {
                    "neg_risk": float(ru_minus - prior * rp_minus),
                    "auc_risk": float(monitor.auc_risk(f_tr, s_tr)),
                    "err": float((pred != y_te.astype(bool)).mean()),
                    "auc": compute_auc(f_te, y_te),
                }
            )
    return {"curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--labeled", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="1 seed, 10 epochs (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 10
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        data = make_data(seed, args.labeled)
        for m in METHODS:
            results[m].append(run(m, data, seed, args.epochs, args.lr, args.hidden, args.batch))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"# PU digits (even vs odd): {args.seeds} seeds, {args.epochs} epochs, lr {args.lr}, MLP 64-{args.hidden}-"
        f"{args.hidden}-1, batch {args.batch}, {args.labeled} labeled positives, prior of U ~ {data['prior']:.3f}"
    )
    print(
        f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; "
        f"{elapsed:.0f} s wall, {cpu:.0f} s CPU\n"
    )
    print(
        "| method | test error (final) | test AUC (final) | best-epoch test error | min train neg. risk "
        "R_u- - pi R_p- | min train PU-AUC risk |"
    )
    print("|---|---|---|---|---|---|")
    for m in METHODS:
        final_err = [r["curve"][-1]["err"] for r in results[m]]
        final_auc = [r["curve"][-1]["auc"] for r in results[m]]
        best_err = [min(c["err"] for c in r["curve"]) for r in results[m]]
        min_neg = [min(c["neg_risk"] for c in r["curve"]) for r in results[m]]
        min_auc_risk = [min(c["auc_risk"] for c in r["curve"]) for r in results[m]]

        def ms(v: list[float]) -> str:
            return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

        print(f"| {m} | {ms(final_err)} | {ms(final_auc)} | {ms(best_err)} | {ms(min_neg)} | {ms(min_auc_risk)} |")
    print("\nTest error over epochs (mean over seeds; every 10th epoch then the last):")
    marks = sorted(set(list(range(0, args.epochs, max(1, args.epochs // 10))) + [args.epochs - 1]))
    print("| method | " + " | ".join(str(e + 1) for e in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for m in METHODS:
        errs = np.mean([[r["curve"][e]["err"] for e in marks] for r in results[m]], 0)
        print(f"| {m} | " + " | ".join(f"{v:.3f}" for v in errs) + " |")
    print("\nTraining negative risk R_u- - pi R_p- over epochs (mean over seeds):")
    print("| method | " + " | ".join(str(e + 1) for e in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for m in METHODS:
        neg = np.mean([[r["curve"][e]["neg_risk"] for e in marks] for r in results[m]], 0)
        print(f"| {m} | " + " | ".join(f"{v:+.3f}" for v in neg) + " |")
    print("\nTraining PU-AUC risk (R_PU - pi R_PP) / (1 - pi) over epochs (mean over seeds):")
    print("| method | " + " | ".join(str(e + 1) for e in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for m in METHODS:
        ar = np.mean([[r["curve"][e]["auc_risk"] for e in marks] for r in results[m]], 0)
        print(f"| {m} | " + " | ".join(f"{v:+.3f}" for v in ar) + " |")


if __name__ == "__main__":
    main()
