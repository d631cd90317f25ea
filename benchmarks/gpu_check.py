"""GPU readiness check: every bundle trains one tiny epoch and runs its inference on the device, with and without
AMP (bf16), plus the CUDA paths of the transforms, the networks' forward/backward throughput and the sperm stream.

Writes ``<output>/gpu_check.json`` (every check: name, device, amp, seconds, status, error), the same table as
``<output>/gpu_check.csv`` (which ``docs/results.md`` renders with ``python -m monai_ext.reports``) and
``<output>/gpu_check.md``; exits with status 1 when any check failed.

Run it on a CUDA machine as ``python benchmarks/gpu_check.py --output gpu_check`` (device ``cuda``); without a GPU,
``python benchmarks/gpu_check.py --device cpu`` is the CPU smoke test that CI runs (same code paths, tiny sizes).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_ext.apps.runner import run_config  # noqa: E402

# one tiny epoch per bundle (the bundle tests' sizes)
TINY: dict[str, dict[str, Any]] = {
    "aneurysm": {"epochs": 1, "num_cases": 6, "volume_size": 32, "samples_per_case": 8, "val_samples_per_case": 8,
                 "channels": [4, 8], "hidden_features": 16},
    "ips_histogram": {"epochs": 1, "num_cases": 4, "image_size": 96, "patch_size": 32, "patches_per_image": 4,
                      "images_per_batch": 2, "stride": 8, "channels": [4, 8]},
    "embryo_pu": {"epochs": 1, "num_cases": 40, "num_frames": 4, "image_size": 32, "channels": [4, 8],
                  "num_folds": 2, "train_frames": 2, "batch_size": 8},
    "sperm_emd": {"epochs": 1, "num_videos": 3, "num_frames": 16, "num_sperm": 4, "video_size": 96, "crop_size": 16,
                  "clip_length": 4, "batch_size": 4, "warmup_epochs": 0, "network_kwargs": {"num_layers": 1}},
}
INFER: dict[str, dict[str, Any]] = {
    "aneurysm": {"num_cases": 6, "volume_size": 32, "channels": [4, 8], "hidden_features": 16, "search_radius": 2.0,
                 "search_step": 2.0, "refine_radius": 1.0},
    "ips_histogram": {"num_cases": 4, "image_size": 96, "patch_size": 32, "stride": 8, "channels": [4, 8]},
    "embryo_pu": {"num_frames": 4, "image_size": 32, "channels": [4, 8], "max_sequences": 2},
    "sperm_emd": {"num_videos": 3, "num_frames": 16, "num_sperm": 4, "video_size": 96, "crop_size": 16,
                  "clip_length": 4, "network_kwargs": {"num_layers": 1}, "rescore_every": 4, "precision": "fp32"},
}


def _check(results: list[dict[str, Any]], name: str, device: str, amp: bool, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    row: dict[str, Any] = {"check": name, "device": device, "amp": "bf16" if amp else "off"}
    try:
        extra = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        row.update(status="ok", seconds=round(time.perf_counter() - t0, 2), **(extra or {}))
    except Exception as e:  # noqa: BLE001 - a check's failure is recorded, the others still run
        row.update(status="FAILED", seconds=round(time.perf_counter() - t0, 2), error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=5))
    results.append(row)
    print(f"{row['status']:>6}  {name:<40} {row['amp']:<4} {row['seconds']:>7.2f} s  {row.get('error', '')}")


def bundle_checks(results: list[dict[str, Any]], device: str, work: Path) -> None:
    for name in TINY:
        cfg = REPO / "bundles" / name / "configs"
        for amp in (False, True):
            out = work / f"{name}_{'amp' if amp else 'fp32'}"
            over = {**TINY[name], "device": device, "output_dir": str(out), "ckpt_dir": str(out / "models"),
                    "amp": amp}
            if amp:
                over["train#trainer#amp_kwargs"] = {"dtype": "$torch.bfloat16"}
                over["validate#evaluator#amp_kwargs"] = {"dtype": "$torch.bfloat16"}
            _check(results, f"{name}: train.json 1 epoch", device, amp,
                   lambda cfg=cfg, over=over: run_config([cfg / "train.json"], **over) and None)
        out = work / f"{name}_fp32"
        infer = {**INFER[name], "device": device, "output_dir": str(out), "ckpt_dir": str(out / "models")}
        _check(results, f"{name}: inference.json", device, False,
               lambda cfg=cfg, infer=infer: run_config([cfg / "inference.json"], "infer", **infer) and None)


def transform_checks(results: list[dict[str, Any]], device: str) -> None:
    from monai_ext.transforms import RegionHistogram, TriPlanarPatch

    vol = torch.rand(1, 96, 96, 96, device=device)
    centres = torch.randint(16, 80, (256, 3), device=device).float()
    _check(results, "TriPlanarPatch 256 x 32^2 from 96^3", device, False,
           lambda: {"shape": list(TriPlanarPatch(32)(vol, centres).shape)})
    labels = torch.randint(0, 3, (256, 1, 64, 64), device=device)
    _check(results, "RegionHistogram batch 256 x 64^2", device, False,
           lambda: {"shape": [list(t.shape) for t in RegionHistogram(3, (1, 2, 4), spatial_dims=2)(labels)]})


def network_checks(results: list[dict[str, Any]], device: str) -> None:
    from monai_ext.networks.nets import HistogramNet, MiniVGG, TimeLapseNet, timesformer_tiny

    nets = {
        "MiniVGG 3x32^2": (MiniVGG(2, 3, 10), (64, 3, 32, 32)),
        "HistogramNet 1x64^2": (HistogramNet(2, 1, 3, 64, (1, 2, 4)), (32, 1, 64, 64)),
        "TimeLapseNet 1x8x64^2": (TimeLapseNet(2, 1), (8, 1, 8, 64, 64)),
        "timesformer_tiny 1x8x48^2": (timesformer_tiny(img_size=48, num_frames=8, patch_size=8, in_channels=1,
                                                       num_classes=5), (8, 1, 8, 48, 48)),
    }
    for label, (net, shape) in nets.items():
        for amp in (False, True):
            def step(net=net, shape=shape, amp=amp) -> dict[str, Any]:
                model = net.to(device).train()
                x = torch.randn(*shape, device=device)
                dev = "cuda" if device.startswith("cuda") else "cpu"
                t0 = time.perf_counter()
                for _ in range(3):
                    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                        out = model(x)
                        loss = (out[0] if isinstance(out, (list, tuple)) else out).float().mean()
                    loss.backward()
                if dev == "cuda":
                    torch.cuda.synchronize()
                return {"samples_per_s": round(3 * shape[0] / (time.perf_counter() - t0), 1)}

            _check(results, f"{label} forward+backward", device, amp, step)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--output", default="gpu_check")
    ap.add_argument("--skip-bundles", action="store_true", help="only the transform and network checks")
    args = ap.parse_args()
    print(describe_machine())
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(0)}; bf16 supported: {torch.cuda.is_bf16_supported()}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_bundles:
            bundle_checks(results, args.device, Path(tmp))
        transform_checks(results, args.device)
        network_checks(results, args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"machine": describe_machine(), "results": results}, indent=2))
    columns = ["check", "device", "amp", "status", "seconds", "detail"]
    rows = [{**{c: r[c] for c in columns[:5]},
             "detail": r.get("error") or ", ".join(f"{k} {v}" for k, v in r.items() if k in ("samples_per_s", "shape"))}
            for r in results]
    with open(out / "gpu_check.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    failed = [r["check"] for r in results if r["status"] != "ok"]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
