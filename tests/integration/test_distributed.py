"""``multi_gpu_train.json`` under ``torchrun --nproc_per_node=2`` (gloo, CPU) against the single-process run
(issue 10, part 4).

How each bundle distributes, and therefore how close 2 processes come to 1 process with the same seed:

- **embryo_pu** distributes *jobs* (method x prior x fold): rank ``r`` trains jobs ``r, r + W, ...`` end to end, and
  every job seeds its own network, sampler and generator. Each mini-batch, and so every batch statistic of the PU
  losses (the class-conditional risks and the nnPU / AUC-nnPU non-negative correction), lives on one process: nothing
  needs an all-reduce, and the result must be *bit-identical* to the single-process run. (Data-parallel use of the
  losses, where a batch is split across processes, is what ``AUCNNPULoss(gather_distributed=True)`` is for; that
  path is tested in tests/losses/test_auc_nnpu_ddp.py.)
- **aneurysm, ips_histogram, sperm_emd** are data-parallel (``DistributedDataParallel``): each rank trains on its
  shard with the per-rank ``batch_size``, and DDP all-reduces (averages) the gradients, so the losses (per-sample
  means) see the global batch. The result is *not* identical to one process, by design: the global batch is twice as
  large (half as many optimiser steps per epoch), the shards come from ``DistributedSampler``/strided splits instead
  of the single-process shuffle, BatchNorm statistics are per rank, and sperm_emd draws augmentations per rank. The
  headline test metric must stay within a tolerance: the range of that metric over four seeds of the same tiny
  1-process configuration (``HEADLINE``), i.e. 2 processes are no further from 1 process than a change of seed.
"""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from reliability_runs import BUNDLES, assert_same_outcome, config_paths, outcome, reference_run, train

pytestmark = pytest.mark.slow

MULTI = ("train.json", "multi_gpu_train.json")
# (table, row filter, column, tolerance, where the tolerance comes from). Tolerance = the range of the metric over
# four seeds of the same tiny 1-process configuration (rounded up). The tiny runs are barely trained, so this bound
# catches a grossly broken distributed run (diverging or NaN weights, a run that does not learn its task, tables
# written from a partial evaluation) rather than small differences; the bit-exact checks are those of embryo_pu.
HEADLINE = {
    "aneurysm": ("results.csv", {"metric": "validation top-1 (all patches)"}, "value", 0.07,
                 "validation top-1 0.016 .. 0.078 over seeds 0, 3, 4, 5; 2 processes gave 0.016 (seed 0: 0.016)"),
    # MONAI engines: the best validation mean Jaccard kept by the best-model saver, on a configuration that learns
    # (LEARNING below); tolerance = its range over seeds 0-3
    "ips_histogram": ("best_model", None, 0, 0.13,
                      "best validation mean Jaccard 0.424 .. 0.547 over seeds 0-3; 2 processes gave 0.515 (seed 0: "
                      "0.511)"),
    "sperm_emd": ("results.csv", {"backbone": "timesformer_tiny"}, "emd", 0.075,
                  "test EMD 0.353 .. 0.425 over seeds 0-3; 2 processes gave 0.375 (seed 0: 0.400)"),
}


# bundles whose tiny reliability configuration does not learn its task get one that does for this comparison
# (ips_histogram: 10 images of 128 px, two validation images so that each process gets one)
LEARNING = {
    "ips_histogram": {"num_cases": 10, "image_size": 128, "epochs": 6, "patches_per_image": 32,
                      "channels": [8, 16, 32], "learning_rate": 0.003},
}


def _trivial_ips_jaccard(root) -> float:
    """Mean Jaccard of predicting background everywhere on the run's validation images (the trivial baseline)."""
    from monai_ext.apps.ips_histogram import LoadColonyCased
    from monai_ext.data import load_datalist
    from monai_ext.metrics import JaccardMetric

    metric = JaccardMetric(num_classes=3, ignore_index=255)
    for item in load_datalist(root / "out" / "synthetic_data" / "dataset.json", "validation", ("image", "label")):
        label = LoadColonyCased()(item)["label"][None]
        metric(torch.zeros_like(label), label)
    return float(metric.aggregate())


def _headline(name: str, out: dict) -> float:
    table, match, column, _, _ = HEADLINE[name]
    if match is None:  # a list of rows: the best-model saver's [metric, file]
        return float(out["tables"][table][0][column])
    rows = [r for r in out["tables"][table] if all(r[k] == v for k, v in match.items())]
    assert len(rows) == 1, f"{name}: no single row {match} in {table}"
    return float(rows[0][column])


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize(
    "device, cuda_available, backend",
    [("cpu", False, "gloo"), ("cpu", True, "gloo"), ("cuda", True, "nccl"), ("auto", True, "nccl")],
)
def test_backend_follows_the_device(name, device, cuda_available, backend, monkeypatch):
    """multi_gpu_train.json initialises nccl exactly when the run's device is a GPU (also on a GPU node with
    ``--device cpu``), and only then selects the GPU; nothing is started (init_process_group is recorded)."""
    calls: dict[str, object] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", str(d)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend=None, **kwargs: calls.setdefault("backend", backend))
    parser = ConfigParser()
    parser.read_config(config_paths(name, list(MULTI)))
    if device != "auto":
        parser["device"] = device
    parser.get_parsed_content("initialize")
    assert calls["backend"] == backend
    assert ("set_device" in calls) == (backend == "nccl"), calls
    if backend == "nccl":
        assert calls["set_device"].startswith("cuda")


def test_embryo_pu_two_processes_bit_identical_to_one(tmp_path):
    name = "embryo_pu"
    ref_root, _ = reference_run(name)
    train(name, tmp_path, nproc=2, configs=MULTI)
    # 2 folds on 2 ranks: fold 0 trained by rank 0, fold 1 by rank 1, gathered into one table by rank 0
    assert_same_outcome(name, outcome(name, ref_root), outcome(name, tmp_path), "2 processes vs 1")


@pytest.mark.parametrize("name", sorted(HEADLINE))
def test_data_parallel_two_processes_within_seed_spread(name, tmp_path):
    if name in LEARNING:
        ref_root, _ = train(name, tmp_path / "one", **LEARNING[name])
        train(name, tmp_path / "two", nproc=2, configs=MULTI, **LEARNING[name])
        one, two = outcome(name, ref_root), outcome(name, tmp_path / "two")
        trivial = _trivial_ips_jaccard(ref_root)
        assert _headline(name, one) >= trivial + 0.1, f"{name}: the reference does not learn (trivial {trivial:.3f})"
    else:
        ref_root, _ = reference_run(name)
        train(name, tmp_path, nproc=2, configs=MULTI)
        one, two = outcome(name, ref_root), outcome(name, tmp_path)
    # rank 0 wrote every table and checkpoint of the 1-process run, with the same parameter names (no DDP prefix)
    assert one["tables"].keys() == two["tables"].keys()
    for m, state in one["models"].items():
        assert state.keys() == two["models"][m].keys(), m
        assert all(torch.isfinite(v).all() for v in two["models"][m].values() if v.is_floating_point()), m
    a, b = _headline(name, one), _headline(name, two)
    tol, spread = HEADLINE[name][3], HEADLINE[name][4]
    assert abs(a - b) <= tol, f"{name}: 1 process {a:.4f}, 2 processes {b:.4f}; tolerance {tol} ({spread})"
