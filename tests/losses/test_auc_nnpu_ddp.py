"""AUCNNPULoss(gather_distributed=True) in two gloo processes equals the single-process global-batch loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ext.losses import AUCNNPULoss


def _batch(seed, n, n_pos):
    g = np.random.default_rng(seed)
    return g.normal(size=n).tolist(), [1] * n_pos + [0] * (n - n_pos)


def _ddp_worker(rank, world, port, scores, target, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x = torch.tensor(scores, dtype=torch.float64)
        t = torch.tensor(target)
        shard = slice(rank, None, world)  # uneven shard sizes on purpose
        local = x[shard].clone().requires_grad_(True)
        value = AUCNNPULoss(0.3, nonnegative=False, gather_distributed=True)(local, t[shard])
        value.backward()
        out.put((rank, float(value.detach()), local.grad.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_distributed_two_processes_use_the_global_batch():
    import socket

    import torch.multiprocessing as tmp

    scores, target = _batch(9, n=11, n_pos=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = tmp.get_context("spawn")
    q = ctx.SimpleQueue()
    tmp.start_processes(_ddp_worker, args=(2, port, scores, target, q), nprocs=2, start_method="spawn")
    results = sorted(q.get() for _ in range(2))
    x = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    # the order of samples does not matter to the risk: the gathered batch is the global batch
    ref = AUCNNPULoss(0.3, nonnegative=False)(x, torch.tensor(target))
    (g,) = torch.autograd.grad(ref, x)
    for rank, value, grad in results:
        assert value == pytest.approx(float(ref.detach()), rel=1e-12)
        np.testing.assert_allclose(grad, g[rank::2].numpy(), rtol=1e-10)  # local part of the global gradient
