"""AUC-nnPU time and peak memory against a full pairwise matrix, as the number of samples grows.

For ``n_p`` labeled positives and ``n_u = 10 n_p`` unlabeled scores (float32), one forward + backward of the PU-AUC
risk ``(R_PU - pi R_PP) / (1 - pi)`` is timed and its peak memory measured for

- ``dense``: the reference everybody writes first, ``l(f_p[:, None] - f_u[None, :]).mean()`` (and the same for the
  ``P x P`` term) with autograd, i.e. a ``P x U`` matrix kept for the backward pass;
- ``AUCNNPULoss`` with ``surrogate="sigmoid"`` (blocked forward and backward), ``"squared"`` (exact O(n) closed
  form) and ``"squared_hinge"`` (exact O(n log n) sort + prefix sums).

Memory: each measurement runs in a fresh Python process (``multiprocessing`` spawn); the figure is the growth of the
process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its resident size just before
the loss is built (inputs already allocated), so it counts every allocation torch makes (``tracemalloc`` would miss
torch's C++ allocations). Time: best of ``--repeats`` runs in that process, 1 thread. Dense runs are skipped when
their ``P x U`` float32 matrix alone would exceed ``--dense-limit-gb``.

Run: ``python benchmarks/bench_losses.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import time


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def _worker(method: str, n_p: int, repeats: int, queue) -> None:
    import torch

    from monai_ext.losses import AUCNNPULoss

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n_u = 10 * n_p
    x = torch.randn(n_p + n_u, generator=g)
    target = torch.cat([torch.ones(n_p, dtype=torch.long), torch.zeros(n_u, dtype=torch.long)])
    prior = 0.3
    before = _rss_kb()

    def dense(xr: torch.Tensor) -> torch.Tensor:
        xp, xu = xr[:n_p], xr[n_p:]
        r_pu = torch.sigmoid(-(xp[:, None] - xu[None, :])).mean()
        m = torch.sigmoid(-(xp[:, None] - xp[None, :]))
        r_pp = (m.sum() - m.diagonal().sum()) / (n_p * (n_p - 1))
        return (r_pu - prior * r_pp) / (1 - prior)

    surrogate = method.split(":")[1] if ":" in method else "sigmoid"
    loss = AUCNNPULoss(prior, nonnegative=False, surrogate=surrogate)
    times = []
    value = float("nan")
    for _ in range(repeats):
        x_req = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = dense(x_req) if method == "dense" else loss(x_req, target)
        out.backward()
        times.append(time.perf_counter() - t0)
        value = float(out.detach())
        del out, x_req
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"time": min(times), "mem_mb": max(0, peak_kb - before) / 1024, "value": value})


def measure(method: str, n_p: int, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(method, n_p, repeats, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000, 10000], help="n_p values (n_u = 10 n_p)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dense-limit-gb", type=float, default=0.5)
    ap.add_argument("--quick", action="store_true", help="sizes 100 300, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.repeats = [100, 300], 1
    import torch

    print(f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print("# memory: growth of peak RSS (ru_maxrss) over RSS before the loss, fresh process per cell\n")
    print("| n_p x n_u | pairs | method | time (s) | peak mem (MB) | time ratio dense/ours | mem ratio dense/ours |")
    print("|---|---|---|---|---|---|---|")
    methods = ["dense", "ours:sigmoid", "ours:squared", "ours:squared_hinge"]
    for n_p in args.sizes:
        n_u = 10 * n_p
        rows = {}
        for m in methods:
            if m == "dense" and n_p * n_u * 4 / 2**30 > args.dense_limit_gb:
                continue
            rows[m] = measure(m, n_p, args.repeats)
        for m, r in rows.items():
            tr = mr = ""
            if m != "dense" and "dense" in rows:
                d = rows["dense"]
                tr = f"{d['time'] / r['time']:.1f}"
                mr = f"{d['mem_mb'] / max(r['mem_mb'], 0.1):.0f}" if r["mem_mb"] >= 0.1 else f">{d['mem_mb'] / 0.1:.0f}"
            label = m if m == "dense" else f"AUCNNPULoss({m.split(':')[1]})"
            print(f"| {n_p} x {n_u} | {n_p * n_u:.1e} | {label} | {r['time']:.4f} | {r['mem_mb']:.1f} | {tr} | {mr} |")
        if "dense" not in rows:
            print(
                f"| {n_p} x {n_u} | {n_p * n_u:.1e} | dense | skipped: P x U matrix alone "
                f"{n_p * n_u * 4 / 2**30:.1f} GB | | | |"
            )


if __name__ == "__main__":
    main()
