"""The sperm_emd stream on this CPU: fixed fp32 / bf16 / int8 against the adaptive choice, offline and in real time.

For every model, number of sperm in view and precision variant the same synthetic 15 fps 256x256 video (written to
disk, decoded with PyAV) goes through :class:`~monai_ext.apps.sperm_emd.stream.SpermStream` twice:

- **offline** (as fast as possible): detect and track every frame, re-score all ready tracks every ``k`` frames in
  one batch, draw, encode the annotated mp4 in the writer thread (unless ``--no-write``). ``fps`` is the whole loop;
  the per-frame costs outside the network (detection + tracking, crops, drawing) and the network's ms per clip are
  reported separately.
- **real time** (the file replayed at 15 fps like a camera, ``realtime=True``): the stream must take every frame at
  the source rate and re-scores only what fits; reported are the effective rate against the source rate, lost and
  late frames, and the staleness of the grades (age of the grade shown, mean / 95th percentile / max, seconds).

``auto`` is the stream's start-up probe + calibration (the choice is printed). The header prints the CPU model, the
instruction-set flags that matter (AVX2, AVX-512, AVX-512-BF16, AMX), the ISA caps in effect, torch threads and the
load. ``--emulate-isa avx2`` re-executes the script with :data:`monai_ext.utils.hardware.ISA_CAP_ENVIRONMENT`
``["avx2"]`` (oneDNN, ATen, MKL, FBGEMM, NumPy and OpenBLAS capped to AVX2) so that an AVX-512/AMX machine computes
like an AVX2-only lab PC; the probe then reports no native bf16.

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_stream.py --threads 1 --frames 90 --sperm 10 20
    OMP_NUM_THREADS=1 python benchmarks/bench_stream.py --threads 1 --frames 90 --sperm 10 20 --emulate-isa avx2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from monai_ext.apps.sperm_emd import build_network
from monai_ext.apps.sperm_emd.stream import SpermStream
from monai_ext.data.synthetic.sperm import synthesize_sperm_video, write_video
from monai_ext.utils.hardware import ISA_CAP_ENVIRONMENT, probe_hardware

MODELS = {
    # name: (backbone, constructor overrides) -- 8 frames, patch 8 as in the bundle's default; crop size --crop_size
    "timesformer_tiny_4l": ("timesformer_tiny", {"num_layers": 4}),  # the bundle's default model
    "timesformer_tiny": ("timesformer_tiny", {}),
    "tiny3d": ("tiny3d", {}),
    # the bundle's default widths for the CNN baselines (network_kwargs in train.json)
    "resnet2d": ("resnet2d", {"channels": [16, 32, 64, 128]}),
    "r2plus1d": ("r2plus1d", {"channels": [16, 32, 64, 128]}),
    # the seed study's TimeSformer-S (12 layers) at its real input size: run with --crop_size 112 (patch 16)
    "timesformer_small": ("timesformer_small", {"patch_size": 16}),
}
_MARKER = "MONAI_EXT_BENCH_ISA_CAP"


def run_once(video: str, model: str, variant: str, rescore_every: int, write: bool, out_dir: Path, realtime: bool,
             crop_size: int = 48, crop_mode: str = "clip") -> dict:
    backbone, kwargs = MODELS[model]
    torch.manual_seed(0)
    kwargs = {"patch_size": 8, **kwargs}
    net = build_network(backbone, img_size=crop_size, num_frames=8, **kwargs).eval()
    stream = SpermStream(net, crop_size=crop_size, clip_length=8, rescore_every=rescore_every, crop_mode=crop_mode,
                         precision=variant)
    stream.prepare()  # calibration (auto) and warm-up, outside the timed run
    out = out_dir / f"{Path(video).stem}_{model}_{variant}_{int(realtime)}.mp4" if write else None
    stats = stream.run(video, out, None, verbose=False, realtime=realtime)
    if stream.choice is not None:
        stats["choice"] = stream.choice.summary()
    stats["batch_cost"] = "/".join(f"{1000 * t:.0f}" for _, t in stream.batch_costs) + " ms for " + \
        "/".join(str(k) for k, _ in stream.batch_costs) + " clips"
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--sperm", type=int, nargs="+", default=[10, 20])
    p.add_argument("--models", nargs="+", default=["timesformer_tiny_4l"], choices=list(MODELS))
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8", "auto"],
                   choices=["fp32", "bf16", "int8", "auto"])
    p.add_argument("--rescore_every", type=int, default=8)
    p.add_argument("--crop_size", type=int, default=48, help="crop side (the bundle's default: 48)")
    p.add_argument("--crop_mode", choices=["clip", "head"], default="clip")
    p.add_argument("--no-write", dest="write", action="store_false", help="skip encoding the annotated video")
    p.add_argument("--no-realtime", dest="realtime", action="store_false", help="skip the real-time runs")
    p.add_argument("--emulate-isa", choices=sorted(ISA_CAP_ENVIRONMENT), default=None,
                   help="re-run capped to this instruction-set class (environment set before torch is imported)")
    a = p.parse_args()
    if a.emulate_isa and os.environ.get(_MARKER) != a.emulate_isa:
        env = {**os.environ, **ISA_CAP_ENVIRONMENT[a.emulate_isa], _MARKER: a.emulate_isa}
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    torch.set_num_threads(a.threads)
    info = probe_hardware("cpu")
    if a.emulate_isa:
        caps = " ".join(f"{k}={v}" for k, v in ISA_CAP_ENVIRONMENT[a.emulate_isa].items())
        print(f"ISA capped to {a.emulate_isa.upper()} (emulating that CPU class on this machine): {caps}")
    print(f"machine: {info.summary()}")
    print(f"torch {torch.__version__}; {a.frames} frames of 256x256 at 15 fps; re-score every {a.rescore_every} "
          f"frames; {a.crop_size}x{a.crop_size} {a.crop_mode} crops; annotated video "
          f"{'written' if a.write else 'not written'}; load avg at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        videos = {}
        for n in a.sperm:
            frames, _, _ = synthesize_sperm_video(size=256, num_frames=a.frames, num_sperm=n, num_debris=8, seed=n)
            videos[n] = str(write_video(tmp_dir / f"sperm{n}.mp4", frames))
        for model in a.models:
            for n in a.sperm:
                base = None
                for variant in a.variants:
                    off = run_once(videos[n], model, variant, a.rescore_every, a.write, tmp_dir, False, a.crop_size,
                                   a.crop_mode)
                    rt = run_once(videos[n], model, variant, a.rescore_every, a.write, tmp_dir, True, a.crop_size,
                                  a.crop_mode) if a.realtime else None
                    base = off["fps"] if variant == "fp32" else base
                    f = off["frames"]
                    r = {"model": model, "variant": variant, "chosen": off["precision"], "sperm": n,
                         "tracks": off["tracks"], "fps": off["fps"],
                         "ratio": off["fps"] / base if base else float("nan"),
                         "detect_track_ms": 1000 * off["detect_track_s"] / f, "crop_ms": 1000 * off["crop_s"] / f,
                         "draw_ms": 1000 * off["draw_s"] / f, "ms_per_clip": off["ms_per_clip"],
                         "mean_batch": off["mean_batch"], "offline_age_max_s": off["staleness_max_s"]}
                    if rt is not None:
                        r.update({"rt_fps": rt["fps"], "rt_dropped": rt["dropped_frames"], "rt_late": rt["late_frames"],
                                  "rt_age_mean_s": rt["staleness_mean_s"], "rt_age_p95_s": rt["staleness_p95_s"],
                                  "rt_age_max_s": rt["staleness_max_s"], "rt_refresh_hz": rt["rescores_per_track_s"],
                                  "rt_batch": rt["mean_batch"]})
                    rows.append(r)
                    if "choice" in off:
                        print(f"  auto ({model}, {n} sperm): {off['choice']}")
                    line = (f"{model:20s} {variant:5s}->{r['chosen']:5s} sperm={n:3d} tracks={r['tracks']:3d} "
                            f"offline {r['fps']:5.1f} fps x{r['ratio']:.2f} (detect+track "
                            f"{r['detect_track_ms']:.1f} crop {r['crop_ms']:.1f} draw {r['draw_ms']:.1f} ms/frame, "
                            f"{r['ms_per_clip']:.1f} ms/clip)")
                    if rt is not None:
                        line += (f" | real time {r['rt_fps']:.1f}/15 fps, lost {r['rt_dropped']}, late {r['rt_late']}, "
                                 f"grade age mean {r['rt_age_mean_s']:.2f} s p95 {r['rt_age_p95_s']:.2f} s max "
                                 f"{r['rt_age_max_s']:.2f} s")
                    print(line + f" [{off['batch_cost']}]", flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nwall {time.perf_counter() - t_start:.0f} s; load avg at end {load}")
    print("\n| model | variant | runs as | sperm | tracks | offline fps | ratio vs fp32 | detect+track ms/frame | "
          "crop + draw ms/frame | score ms/clip | real-time fps (source 15) | lost / late frames | grade age mean / "
          "p95 / max (s) | refreshes per track per s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rt = (f"{r['rt_fps']:.1f} | {r['rt_dropped']} / {r['rt_late']} | {r['rt_age_mean_s']:.2f} / "
              f"{r['rt_age_p95_s']:.2f} / {r['rt_age_max_s']:.2f} | {r['rt_refresh_hz']:.2f}") if "rt_fps" in r \
            else "- | - | - | -"
        print(f"| {r['model']} | {r['variant']} | {r['chosen']} | {r['sperm']} | {r['tracks']} | {r['fps']:.1f} | "
              f"{r['ratio']:.2f} | {r['detect_track_ms']:.1f} | {r['crop_ms'] + r['draw_ms']:.1f} | "
              f"{r['ms_per_clip']:.1f} | {rt} |")


if __name__ == "__main__":
    main()
