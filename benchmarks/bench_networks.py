"""Parameters, MACs and CPU inference speed of every monai_ext network, with side-by-side ratios.

Sections (each prints a Markdown table):

1. every network: parameters, MACs per sample (``torch.utils.flop_counter.FlopCounterMode``; MACs = FLOPs / 2) and
   eager fp32 throughput (samples/s) at batch 1 and batch 8;
2. ``timesformer_small`` against Hugging Face ``transformers.TimesformerModel`` with the same width, depth and heads
   (randomly initialised from a ``TimesformerConfig``, nothing downloaded) at 8 x 112 x 112, timed alternately in the
   same run; ratio = HF time / our time (> 1: ours faster);
3. ``HistogramNet.dense_forward`` against cropping every patch and calling ``forward`` (same logits);
4. CPU inference speed-ups against eager fp32 of the same network: bf16 autocast, channels-last (CNNs), dynamic int8
   quantisation of ``nn.Linear`` layers, ``torch.compile``; ratio = fp32 time / variant time (> 1: faster), with the
   maximum absolute logit difference to fp32 as the accuracy proxy.

Run: ``python benchmarks/bench_networks.py`` (one thread by default; about 10 minutes on a loaded 2-core machine;
``--quick`` for fewer repeats, ``--no-compile`` to skip ``torch.compile``, ``--threads N``).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from monai_ext.networks.nets import (
    HistogramNet,
    MiniVGG,
    TimeLapseNet,
    Tiny3DCNN,
    r2plus1d_18,
    resnet18_temporal_pool,
    timesformer_base,
    timesformer_small,
    timesformer_tiny,
)

CLIP = (3, 8, 112, 112)  # (C, T, H, W) for the video networks, the sperm study's 8 x 112^2 setting


@dataclass
class Spec:
    name: str
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]
    repeats: int  # timed repeats at batch 1 (batch 8 uses max(1, repeats // 3))
    kind: str  # "cnn2d", "cnn3d", "video2d" (2D CNN over frames), "transformer"
    variant_batch: int = 8  # batch for the speed-up section (0: skipped)
    try_compile: bool = False  # torch.compile takes minutes per network on 2 cores: two representatives only


SPECS = [
    Spec("MiniVGG (3x32x32, 61 classes)", lambda: MiniVGG(2, 3, 61), (3, 32, 32), 30, "cnn2d", 8, True),
    Spec("HistogramNet (1x64x64 patch)", lambda: HistogramNet(2, 1, 3, patch_size=64), (1, 64, 64), 30, "cnn2d"),
    Spec("TimeLapseNet (1x8x128x128)", lambda: TimeLapseNet(2, 1), (1, 8, 128, 128), 10, "video2d"),
    Spec("ResNetTemporalPool-18 (3x8x112x112)", lambda: resnet18_temporal_pool(3, 5), CLIP, 4, "video2d", 2),
    Spec("R(2+1)D-18 (3x8x112x112)", lambda: r2plus1d_18(3, 5), CLIP, 3, "cnn3d", 1),
    Spec("Tiny3DCNN (3x8x112x112)", lambda: Tiny3DCNN(3, 5), CLIP, 10, "cnn3d"),
    Spec("timesformer_tiny (3x8x112x112)", lambda: timesformer_tiny(112, 8, 16, 3, 5), CLIP, 6, "transformer"),
    Spec(
        "timesformer_small (3x8x112x112)", lambda: timesformer_small(112, 8, 16, 3, 5), CLIP, 4, "transformer", 2, True
    ),
    Spec("timesformer_base (3x8x112x112)", lambda: timesformer_base(112, 8, 16, 3, 5), CLIP, 2, "transformer", 0),
]


def flat(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().reshape(-1)
    return torch.cat([o.float().reshape(-1) for o in out])


def count_macs(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2


def time_alternating(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so machine load affects all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def section_networks(scale: float) -> None:
    print("\n### Networks: parameters, MACs, eager fp32 throughput\n")
    print("| network | params | MACs / sample | batch 1 (samples/s) | batch 8 (samples/s) |")
    print("|---|---:|---:|---:|---:|")
    for spec in SPECS:
        torch.manual_seed(0)
        net = spec.build().eval()
        params = sum(p.numel() for p in net.parameters())
        x1 = torch.randn(1, *spec.sample_shape)
        macs = count_macs(lambda net=net, x1=x1: net(x1))
        r1 = max(1, round(spec.repeats * scale))
        t1 = time_alternating({"b1": lambda net=net, x1=x1: net(x1)}, r1)["b1"]
        x8 = torch.randn(8, *spec.sample_shape)
        r8 = max(1, round(spec.repeats * scale / 3))
        # the largest models get a single timed call at batch 8 (no warm-up) to keep the run within minutes
        t8 = time_alternating({"b8": lambda net=net, x8=x8: net(x8)}, r8, warmup=1 if r8 > 1 else 0)["b8"]
        print(f"| {spec.name} | {fmt_count(params)} | {fmt_count(macs)} | {1 / t1:.1f} | {8 / t8:.1f} |", flush=True)


def _hf_timesformer_small():
    from transformers import TimesformerConfig, TimesformerModel

    config = TimesformerConfig(
        image_size=112,
        patch_size=16,
        num_channels=3,
        num_frames=8,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=4 * 384,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        attention_type="divided_space_time",
    )
    return TimesformerModel(config).eval()


def section_hf(scale: float) -> None:
    print("\n### timesformer_small vs Hugging Face TimesformerModel (8 x 112 x 112, fp32 eager, CLS features)\n")
    try:
        hf = _hf_timesformer_small()
    except ImportError as e:
        print(f"transformers not installed ({e}); `pip install transformers` to run this comparison.")
        return
    torch.manual_seed(0)
    ours = timesformer_small(112, 8, 16, 3, num_classes=0).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())
    x1 = torch.randn(1, *CLIP)
    m_ours = count_macs(lambda: ours(x1))
    m_hf = count_macs(lambda: hf(pixel_values=x1.transpose(1, 2)))
    print(
        f"params: ours {fmt_count(n_ours)}, HF {fmt_count(n_hf)}; MACs / clip: ours {fmt_count(m_ours)}, HF "
        f"{fmt_count(m_hf)} (HF keeps the paper's extra temporal_dense layer, which ours folds into the temporal "
        "output projection)\n"
    )
    print("| batch | ours (clips/s) | HF (clips/s) | ratio HF time / ours | ratio per MAC |")
    print("|---:|---:|---:|---:|---:|")
    for batch, reps in ((1, 6), (8, 2)):
        x = torch.randn(batch, *CLIP)
        xh = x.transpose(1, 2).contiguous()  # HF takes (B, T, C, H, W)
        t = time_alternating(
            {"ours": lambda x=x: ours(x), "hf": lambda xh=xh: hf(pixel_values=xh).last_hidden_state[:, 0]},
            max(1, round(reps * scale)),
        )
        ratio = t["hf"] / t["ours"]
        per_mac = ratio * m_ours / m_hf
        print(
            f"| {batch} | {batch / t['ours']:.2f} | {batch / t['hf']:.2f} | {ratio:.2f} | {per_mac:.2f} |",
            flush=True,
        )


def section_dense(scale: float) -> None:
    print("\n### HistogramNet: dense_forward vs crop-and-forward (256 x 256 image, patch 64, stride 8)\n")
    torch.manual_seed(0)
    net = HistogramNet(2, 1, 3, patch_size=64).eval()
    image = torch.randn(1, 1, 256, 256)
    stride, p = 8, 64
    n = (256 - p) // stride + 1
    patches = image.unfold(2, p, stride).unfold(3, p, stride)  # (1, 1, n, n, p, p)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * n, 1, p, p).contiguous()

    def crop():
        return [net(chunk) for chunk in patches.split(128)]

    with torch.inference_mode():
        dense = net.dense_forward(image, stride)
        cropped = [torch.cat(t) for t in zip(*[net(c) for c in patches.split(128)], strict=True)]
        diff = max((d.reshape(c.shape) - c).abs().max().item() for d, c in zip(dense, cropped, strict=True))
    macs_dense = count_macs(lambda: net.dense_forward(image, stride))
    macs_crop = count_macs(lambda: net(patches))
    t = time_alternating({"dense": lambda: net.dense_forward(image, stride), "crop": crop}, max(1, round(5 * scale)))
    print("| method | patches | MACs | time (s) | ratio crop / dense | max abs logit diff |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| crop + forward | {n * n} | {fmt_count(macs_crop)} | {t['crop']:.3f} | 1.00 | - |")
    print(
        f"| dense_forward | {n * n} | {fmt_count(macs_dense)} | {t['dense']:.3f} | {t['crop'] / t['dense']:.2f} "
        f"| {diff:.1e} |",
        flush=True,
    )


def _variants(spec: Spec, net: nn.Module, x: torch.Tensor, use_compile: bool) -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {"fp32 eager": lambda: net(x)}

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x)

    out["bf16 autocast"] = bf16
    if spec.kind in ("cnn2d", "cnn3d", "video2d"):
        fmt = torch.channels_last_3d if spec.kind == "cnn3d" else torch.channels_last
        net_cl = copy.deepcopy(net).to(memory_format=fmt)
        x_cl = x.contiguous(memory_format=fmt) if spec.kind != "video2d" else x
        out["channels-last"] = lambda: net_cl(x_cl)

        def cl_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net_cl(x_cl)

        out["channels-last + bf16"] = cl_bf16
    if any(isinstance(m, nn.Linear) for m in net.modules()):
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
        out["int8 dynamic (Linear)"] = lambda: q(x)
    if use_compile and spec.try_compile:
        compiled = torch.compile(copy.deepcopy(net))
        out["torch.compile"] = lambda: compiled(x)
    return out


def section_speedups(scale: float, use_compile: bool) -> None:
    print("\n### CPU inference speed-ups (ratio = fp32 eager time / variant time; > 1 is faster)\n")
    print("| network | batch | variant | ratio | max abs logit diff vs fp32 | max abs fp32 logit |")
    print("|---|---:|---|---:|---:|---:|")
    for spec in SPECS:
        if spec.variant_batch == 0:
            continue
        torch.manual_seed(0)
        net = spec.build().eval()
        x = torch.randn(spec.variant_batch, *spec.sample_shape)
        fns = _variants(spec, net, x, use_compile)
        compile_s = None
        with torch.inference_mode():
            ref = flat(net(x))
            diffs = {}
            for k, fn in fns.items():
                t0 = time.perf_counter()
                try:
                    diffs[k] = (flat(fn()) - ref).abs().max().item()
                except Exception as e:  # report why a variant is unavailable instead of failing the whole run
                    print(f"| {spec.name} | {spec.variant_batch} | {k} | failed: {type(e).__name__} | - | - |")
                    diffs[k] = None
                if k == "torch.compile":
                    compile_s = time.perf_counter() - t0
        fns = {k: v for k, v in fns.items() if diffs[k] is not None}
        t = time_alternating(fns, max(2, round(spec.repeats * scale / 2)), warmup=1)
        scale_ref = ref.abs().max().item()
        for k in fns:
            if k == "fp32 eager":
                continue
            note = f" (first call incl. compile {compile_s:.0f} s)" if k == "torch.compile" else ""
            print(
                f"| {spec.name} | {spec.variant_batch} | {k}{note} | {t['fp32 eager'] / t[k]:.2f} | {diffs[k]:.2e} "
                f"| {scale_ref:.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared, oversubscribed machine multi-threaded timings are noise)",
    )
    parser.add_argument(
        "--sections", default="networks,hf,dense,speedups", help="comma-separated subset of the sections to run"
    )
    args = parser.parse_args()
    scale = 0.5 if args.quick else 1.0
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    sections = set(args.sections.split(","))
    if "networks" in sections:
        section_networks(scale)
    if "hf" in sections:
        section_hf(scale)
    if "dense" in sections:
        section_dense(scale)
    if "speedups" in sections:
        section_speedups(scale, use_compile=not args.no_compile)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
