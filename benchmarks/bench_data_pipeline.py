"""Does the data pipeline keep up with the network? Samples per second of each bundle's training input pipeline
(its own ``train#dataset`` + ``train#dataloader`` from ``train.json``: load -> transforms -> collate) against the
samples per second of its training step (the same network, loss and optimiser on batches of the same shape), side by
side in one run, for ``num_workers`` 0 and 2. The ratio pipeline / step must be >= 2 (data faster than the network),
else the bottleneck is named.

Both sides are driven from the bundle config, the way a user's run builds them (``ConfigParser`` over
``configs/train.json`` with the benchmark's overrides): the pipeline is timed over full epochs of the bundle's
``DataLoader`` after the ``CacheDataset`` is built (its deterministic prefix cached, random transforms run every
epoch); the step is timed on pre-collated batches (forward, loss, backward, optimiser step).

Run: ``python benchmarks/bench_data_pipeline.py [--bundles aneurysm ips_histogram ...] [--epochs 2]``; prints the
machine (CPU model, flags, threads, load) and one row per bundle and ``num_workers``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _machine import describe_machine, load_line
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
# small but representative data: the bundle's own generator and transforms, fewer cases than the default run
OVERRIDES: dict[str, dict[str, Any]] = {
    "aneurysm": {"num_cases": 12},
    "ips_histogram": {"num_cases": 10},
    "embryo_pu": {"num_cases": 60},
    "sperm_emd": {"num_videos": 3},
}


def _parser(name: str, out: Path, workers: int) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    parser.update({**OVERRIDES[name], "output_dir": str(out), "ckpt_dir": str(out / "models"), "device": "cpu",
                   "num_workers": workers})
    return parser


def time_pipeline(parser: ConfigParser, epochs: int) -> tuple[float, int, Any]:
    """Samples per second over ``epochs`` passes of the bundle's training DataLoader; returns one batch too."""
    loader = parser.get_parsed_content("train#dataloader")
    seeder = parser.get_parsed_content("train#handlers")[0]  # EpochSeedHandler: fresh augmentation each epoch
    batch, n, t0 = None, 0, time.perf_counter()
    for e in range(epochs):
        seeder.reseed(e + 1)
        for b in loader:
            batch = batch or b
            n += len(b["image"])
    return n / (time.perf_counter() - t0), n, batch


def time_step(parser: ConfigParser, batch: dict[str, Any], repeats: int) -> float:
    """Samples per second of the bundle's training step (forward, loss, backward, step) on one batch."""
    trainer = parser.get_parsed_content("train#trainer")
    step = trainer._process_function  # the trainer's own iteration (SupervisedTrainer's, or the study's)
    trainer.state.device = torch.device("cpu")
    trainer.state.epoch = trainer.state.iteration = 1
    step(trainer, batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        step(trainer, batch)
    return repeats * len(batch["image"]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", nargs="+", default=list(OVERRIDES), choices=list(OVERRIDES))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(describe_machine())
    print("\n| bundle | num_workers | pipeline samples/s | training step samples/s | ratio | verdict |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.bundles:
            for workers in args.workers:
                parser = _parser(name, Path(tmp) / name, workers)
                data_rate, _, batch = time_pipeline(parser, args.epochs)
                step_rate = time_step(_parser(name, Path(tmp) / name, 0), batch, args.repeats)
                ratio = data_rate / step_rate
                verdict = "data faster" if ratio >= 2 else "DATA-BOUND: the input pipeline limits training"
                print(f"| {name} | {workers} | {data_rate:.0f} | {step_rate:.0f} | {ratio:.1f} | {verdict} |")
    print("\n" + load_line())


if __name__ == "__main__":
    main()
