"""Landmark localisation speed: the original exhaustive search against the batched coarse-to-fine search, one run.

Both localise the 32 AFIDs fiducials in the same 1 mm brain (119 x 165 x 107 voxels: the bundle's AFIDs grid) with
the same network (``MiniVGG`` 16/32/64, 33 classes, the aneurysm bundle's landmark model):

* old: ``localise_landmarks(method="exhaustive")`` with the settings of the bundle README's AFIDs command (cube of
  half side 12 voxels at step 3, then unit steps within 2 voxels of the best point; one landmark after the other;
  contiguous tensors, 512 patches per forward pass, batch normalisation not folded), i.e. the code path that took
  56 CPU-seconds in issue 16;
* new: ``localise_landmarks(method="coarse_to_fine")`` with its defaults (ball of radius 12 at step 4, refinement of
  the two best points at steps 2 and 1, all landmarks in the same batches, channels-last convolutions, batch
  normalisation folded into the convolutions, 128 patches per forward pass on a CPU).

The brain is a synthetic T1 brain with subject-like deformations (``SynthesizeBraind``, small pose), so the true
fiducials are known; the search starts from the template positions. The script prints wall and CPU seconds of
each (best of ``--repeats`` interleaved runs), their ratio, the number of patches each classified, each one's error
against the truth, and the agreement check: the new search must reach at least the old one's maximum probability
(-0.02) for every landmark, every pair of points must lie within ``PLATEAU_MM`` (a jitter-trained classifier is
near-certain on a plateau a few mm wide, and the two searches may return different points of it), and the new mean
error against the truth may not exceed the old one by more than 0.25 mm. The count within 1.5 mm is printed too.

Weights: ``--checkpoint`` (a ``{"model": state_dict}`` file of that network, e.g. ``landmark_net.pt`` written by
``python -m monai_ext.apps.aneurysm.brain_feasibility``); without one, the network is first trained for
``--train_seconds`` on synthetic brains (an untrained network has no peaks to find and would make the agreement
check meaningless).

``--score log_odds`` makes both searches rank by the log-odds, as the brain model of ``brain.json`` does (the
logits still separate the points of a plateau where the probability saturates at 1).

``--mirror`` adds two runs: the coarse-to-fine search with mirror averaging everywhere (every point also scored as
its left-right mirror for the mirrored fiducial, ``mirror_labels``), which evaluates the network twice per point,
and with mirror averaging from the refinement on (``mirror_coarse=False``: the coarse lattice scored once, its best
points scored again with mirror averaging, then refined with it); the brain model uses the one its validation
brains chose (``search.mirror_selection``). It prints each one's time, error and the ratio old / it; the agreement
check stays the one between old and new.

``--shared_lattice`` adds one more run: the search of the line before it with ``coarse_lattice="shared"`` (every
landmark's coarse lattice through voxel (0, 0, 0) instead of its own prior, so that overlapping searches score their
common points once; every coarse-to-fine run already scores a point once for all landmarks whose searches reach
it, the shared lattice makes that happen on the coarse lattice too).

``--recentre`` adds one more run: the search of the line before it (with ``--mirror``, mirror averaging from the
refinement on, the brain model's default) with ``recentre=True``, a second search around the priors mapped by the
affine fit of the first search's points, which scores only the points the first search did not. ``--prior_sigma_mm``
gives every coarse-to-fine run the Gaussian position prior (the brain model's: 4.5 mm); the second search's prior is
centred on the mapped priors.

Run: ``python benchmarks/bench_localisation.py [--checkpoint PATH] [--threads 1] [--repeats 2] [--score log_odds]
[--mirror] [--shared_lattice] [--recentre] [--prior_sigma_mm 4.5]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as nn
from _machine import describe_machine, load_line  # benchmarks/_machine.py (the script's own folder is on sys.path)

from monai_ext.apps.aneurysm.evaluation import left_right_mirror_labels, localise_landmarks
from monai_ext.data.synthetic.brain import SynthesizeBraind, afids_landmarks, crop_grid, load_mni152_tissues
from monai_ext.networks.nets import MiniVGG
from monai_ext.transforms import MaskedPercentileNormalize, apply_matrix
from monai_ext.utils import load_checkpoint

OLD = {"method": "exhaustive", "search_radius": 12.0, "step": 3.0, "refine_radius": 2.0, "channels_last": False,
       "batch_size": 512, "fuse_batchnorm": False}
#: a classifier trained with landmark jitter up to 1.5 mm and background from 4 mm on is near-certain on a plateau
#: a few mm wide: two searches may return different points of it (each the centre of its own neighbourhood)
PLATEAU_MM = 4.0
NEW = {"method": "coarse_to_fine", "search_radius": 12.0, "step": 4.0, "top_k": 2, "channels_last": True}


def count_patches(net: nn.Module) -> list[int]:
    """A one-element list that counts the patches ``net`` classifies (a forward pre-hook: it also counts the
    forwards of the batch-norm-folded copy that the new search runs, which carries the hook)."""
    count = [0]

    def hook(module: nn.Module, args: tuple) -> None:
        count[0] += int(args[0].shape[0])

    net.register_forward_pre_hook(hook)
    return count


def quick_train(net: nn.Module, seconds: float) -> None:
    from monai_ext.apps.aneurysm.brain_feasibility import train_on_synthetic_brains

    template = load_mni152_tissues(1)
    _, sets = afids_landmarks()
    shape, affine = crop_grid(sets["groundtruth"], template)
    gen = SynthesizeBraind(template=template, landmark_sets=sets, spatial_size=shape, output_affine=affine,
                           contrast={"contrasts": ("t1",), "exclude": ()})
    train_on_synthetic_brains(net, gen, seconds / 60.0, pool=6, refresh=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None,
                   help="weights of the 33-class MiniVGG: a {'model': state_dict} file or a bare state_dict (model.pt)")
    p.add_argument("--train_seconds", type=float, default=180.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--score", choices=("probability", "log_odds"), default="probability",
                   help="what both searches rank points by (log_odds: as the brain model of brain.json searches)")
    p.add_argument("--mirror", action="store_true", help="also time the new search with mirror averaging")
    p.add_argument("--shared_lattice", action="store_true",
                   help="also time the last new search with coarse_lattice='shared' (one lattice for all landmarks)")
    p.add_argument("--recentre", action="store_true",
                   help="also time the last new search with recentre=True (a second search around re-fitted priors)")
    p.add_argument("--prior_sigma_mm", type=float, default=None,
                   help="Gaussian position prior of every coarse-to-fine run (mm; the brain model's is 4.5)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(describe_machine())
    print(f"both searches rank points by {args.score}")
    names, sets = afids_landmarks()
    template = load_mni152_tissues(1)
    shape, affine = crop_grid(sets["groundtruth"], template)
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=len(names) + 1, channels=(16, 32, 64),
                  hidden_features=128)
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        net.load_state_dict(state["model"] if "model" in state else state)
        print(f"weights: {args.checkpoint}")
    else:
        print(f"weights: none given, training for {args.train_seconds:.0f} s on synthetic T1 brains first")
        quick_train(net, args.train_seconds)
    net.eval()
    gen = SynthesizeBraind(template=template, landmark_sets=sets, spatial_size=shape, output_affine=affine,
                           contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 0.0},
                           warp={"rotate_range": 0.05, "scale_range": 0.03, "translate_range": 2.0})
    sample = gen.synthesize(10_000 + args.seed)
    image = MaskedPercentileNormalize(2.0, 98.0, erode_mm=5.0)(sample["image"], sample["brain_mask"])
    inv = np.linalg.inv(affine)
    priors = apply_matrix(inv, sets["groundtruth"])  # the template positions: the search centres
    truth = apply_matrix(inv, sample["landmarks"])
    labels = np.arange(1, len(names) + 1)
    print(f"volume {tuple(image.shape[1:])} at 1 mm, {len(labels)} landmarks, prior error "
          f"{np.linalg.norm(priors - truth, axis=1).mean():.2f} mm")
    new_kw = {**NEW, "prior_sigma_mm": args.prior_sigma_mm}
    runs = {"old (exhaustive)": OLD, "new (coarse-to-fine)": new_kw}
    if args.prior_sigma_mm is not None:
        print(f"every coarse-to-fine run has a position prior of sigma {args.prior_sigma_mm} mm")
    if args.mirror:
        mirror = left_right_mirror_labels(["background", *names])
        runs["new + mirror averaging"] = {**new_kw, "mirror_labels": mirror}
        runs["new + mirror from refine"] = {**new_kw, "mirror_labels": mirror, "mirror_coarse": False}
    if args.shared_lattice:
        runs[f"{list(runs)[-1]}, shared lattice"] = {**runs[list(runs)[-1]], "coarse_lattice": "shared"}
    if args.recentre:
        runs[f"{list(runs)[-1]}, re-centred"] = {**runs[list(runs)[-1]], "recentre": True}
    best = {k: (float("inf"), float("inf")) for k in runs}
    out, counts = {}, {}
    counter = count_patches(net)
    for _ in range(args.repeats):
        for name, kw in runs.items():
            counter[0] = 0
            w0, c0 = time.perf_counter(), time.process_time()
            pos, peak = localise_landmarks(net, image, priors, labels, torch.device("cpu"), score=args.score, **kw)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
            out[name], counts[name] = (pos, peak), counter[0]
    width = max(24, *map(len, runs))
    for name in runs:
        pos, _ = out[name]
        err = np.linalg.norm(pos - truth, axis=1)
        print(f"{name:{width}s} wall {best[name][0]:7.2f} s  cpu {best[name][1]:7.2f} s  patches {counts[name]:6d}  "
              f"error vs truth mean {err.mean():.2f} mm, median {np.median(err):.2f} mm")
    (old_pos, old_peak), (new_pos, new_peak) = out["old (exhaustive)"], out["new (coarse-to-fine)"]
    gap = np.linalg.norm(old_pos - new_pos, axis=1)
    print(f"ratio old/new: wall {best['old (exhaustive)'][0] / best['new (coarse-to-fine)'][0]:.1f}x, cpu "
          f"{best['old (exhaustive)'][1] / best['new (coarse-to-fine)'][1]:.1f}x, patches "
          f"{counts['old (exhaustive)'] / counts['new (coarse-to-fine)']:.1f}x")
    for m in [k for k in runs if k not in ("old (exhaustive)", "new (coarse-to-fine)")]:
        print(f"ratio old/({m}): wall {best['old (exhaustive)'][0] / best[m][0]:.1f}x, cpu "
              f"{best['old (exhaustive)'][1] / best[m][1]:.1f}x, patches "
              f"{counts['old (exhaustive)'] / counts[m]:.1f}x; new/({m}): wall "
              f"{best['new (coarse-to-fine)'][0] / best[m][0]:.2f}x")
    err_old = np.linalg.norm(old_pos - truth, axis=1).mean()
    err_new = np.linalg.norm(new_pos - truth, axis=1).mean()
    not_worse = new_peak >= old_peak - 0.02
    near = gap <= PLATEAU_MM
    print(f"same points: {int((gap <= 1.5).sum())}/{len(gap)} within 1.5 mm, {int(near.sum())}/{len(gap)} within "
          f"{PLATEAU_MM} mm (median gap {np.median(gap):.2f} mm, max {gap.max():.2f} mm)")
    print(f"same maxima: the new search's probability is at least the old one's (-0.02) for {int(not_worse.sum())}/"
          f"{len(gap)} landmarks (mean |p_old - p_new| {np.abs(old_peak - new_peak).mean():.3f})")
    ok = not_worse.all() and near.all() and err_new <= err_old + 0.25
    print(f"check: {'PASS' if ok else 'FAIL'} (every new maximum >= the old one - 0.02; every pair of points within "
          f"{PLATEAU_MM} mm, the width of the classifier's plateau; new mean error <= old + 0.25 mm)")
    print(f"at the end: {load_line()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
