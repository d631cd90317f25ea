"""End-to-end frames per second of the sperm_emd stream on CPU, for 5 / 10 / 20 sperm in view, side by side.

Each run reads a synthetic 15 fps microscope video from disk (PyAV decode), detects and tracks every frame,
re-scores all tracks with a full clip buffer every ``k`` frames in one batch, draws the annotations and (unless
``--no-write``) encodes the annotated video: the fps is the whole loop. Models and speed-ups are compared in the
same process on the same videos; the ratio column is fps over the fp32 run of the same model and sperm count.

Example::

    python benchmarks/bench_stream.py --threads 2 --frames 90 --variants fp32 bf16 int8
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from monai_ext.apps.sperm_emd import build_network
from monai_ext.apps.sperm_emd.stream import SpermStream, optimise_network
from monai_ext.data.synthetic.sperm import synthesize_sperm_video, write_video

MODELS = {
    # name: (backbone, constructor overrides) -- 8 frames, patch 8 as in the bundle's default; crop size --crop_size
    "timesformer_tiny_4l": ("timesformer_tiny", {"num_layers": 4}),
    "timesformer_tiny": ("timesformer_tiny", {}),
    "tiny3d": ("tiny3d", {}),
    # the bundle's default widths for the CNN baselines (network_kwargs in train.json)
    "resnet2d": ("resnet2d", {"channels": [16, 32, 64, 128]}),
    "r2plus1d": ("r2plus1d", {"channels": [16, 32, 64, 128]}),
}


def run_once(video: str, model: str, variant: str, rescore_every: int, write: bool, out_dir: Path,
             crop_size: int = 48, crop_mode: str = "clip") -> dict:
    backbone, kwargs = MODELS[model]
    torch.manual_seed(0)
    net = build_network(backbone, img_size=crop_size, num_frames=8, patch_size=8, **kwargs).eval()
    net = optimise_network(net, quantize=variant == "int8", compile=variant == "compile")
    stream = SpermStream(net, crop_size=crop_size, clip_length=8, rescore_every=rescore_every,
                         bf16=variant == "bf16", crop_mode=crop_mode)
    stream.score(torch.zeros(2, 8, crop_size, crop_size, dtype=torch.uint8).numpy())  # warm-up (and compilation)
    out = out_dir / f"{Path(video).stem}_{model}_{variant}.mp4" if write else None
    return stream.run(video, out, None, verbose=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--sperm", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--models", nargs="+", default=["timesformer_tiny_4l", "tiny3d"], choices=list(MODELS))
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8"],
                   choices=["fp32", "bf16", "int8", "compile"])
    p.add_argument("--rescore_every", type=int, default=8)
    p.add_argument("--crop_size", type=int, default=48, help="crop side (the bundle's default: 48)")
    p.add_argument("--crop_mode", choices=["clip", "head"], default="clip")
    p.add_argument("--no-write", dest="write", action="store_false", help="skip encoding the annotated video")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {a.frames} frames of 256x256 at 15 fps, re-score every "
          f"{a.rescore_every} frames, {a.crop_size}x{a.crop_size} {a.crop_mode} crops, annotated video "
          f"{'written' if a.write else 'not written'}")
    rows = []
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
                    t0 = time.perf_counter()
                    s = run_once(videos[n], model, variant, a.rescore_every, a.write, tmp_dir, a.crop_size,
                                 a.crop_mode)
                    base = s["fps"] if variant == "fp32" else base
                    rows.append({"model": model, "variant": variant, "sperm": n, "tracks": s["tracks"],
                                 "mean_batch": s["mean_batch"], "fps": s["fps"],
                                 "ratio_vs_fp32": s["fps"] / base if base else float("nan"),
                                 "score_ms_per_frame": 1000 * s["score_s"] / s["frames"],
                                 "track_ms_per_frame": 1000 * s["detect_track_s"] / s["frames"],
                                 "draw_ms_per_frame": 1000 * s["draw_s"] / s["frames"],
                                 "wall_s": time.perf_counter() - t0})
                    r = rows[-1]
                    print(f"{model:20s} {variant:8s} sperm={n:3d} tracks={r['tracks']:3d} batch={r['mean_batch']:5.1f} "
                          f"fps={r['fps']:6.1f} x{r['ratio_vs_fp32']:.2f} (score {r['score_ms_per_frame']:.1f} ms, "
                          f"track {r['track_ms_per_frame']:.1f} ms, draw {r['draw_ms_per_frame']:.1f} ms /frame)",
                          flush=True)
    print("\n| model | speed-up | sperm | tracks | mean batch | fps | ratio vs fp32 | score ms/frame | "
          "track ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['sperm']} | {r['tracks']} | {r['mean_batch']:.1f} | "
              f"{r['fps']:.1f} | {r['ratio_vs_fp32']:.2f} | {r['score_ms_per_frame']:.1f} | "
              f"{r['track_ms_per_frame']:.1f} |")


if __name__ == "__main__":
    main()
