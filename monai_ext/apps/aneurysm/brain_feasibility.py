"""Feasibility run: AFIDs landmarks on brains the model has never seen (issue 16), end to end on a CPU budget.

Trains the bundle's landmark classifier (:class:`~monai_ext.networks.nets.MiniVGG`, widths 16/32/64, 33 classes) on
synthetic brains of random contrast, pose and shape (:class:`~monai_ext.data.synthetic.brain.SynthesizeBraind`;
T1-like and random contrasts, T2-like and PD-like held out; skull with probability 0.5), each normalised inside its
brain mask (:class:`~monai_ext.transforms.MaskedPercentileNormalize`), for a wall-clock budget. A pool of brains is
refreshed every epoch so the network keeps seeing new ones. Then every evaluation brain goes through the inference
path a user's scan would take: ITK affine alignment to the MNI152 T1 (:class:`~monai_ext.transforms.AlignToTemplated`),
resampling onto the training grid, normalisation inside the template's brain mask, batched coarse-to-fine search
around the priors (:class:`~monai_ext.apps.aneurysm.TriPlanarPointInferer`) and the points mapped back to the
input's RAS mm. Rows (held-out seeds, whole-head field of view):

* (a) held-out deformations of MNI152 with the template's own T1 intensities: the bundle's AFIDs test deformations
  (+-8 deg, +-8 %, +-4 mm, a weak elastic field), and the same poses with the generator's subject-like elastic field
  (4 mm of non-affine displacement at the AFIDs, as between real subjects);
* (b) held-out contrasts: T2-like and PD-like (never drawn in training), skull-stripped, subject-like deformations;
* (c) synthetic T1, skull-stripped vs with skull (the same brains);
* (d) synthetic T1 with skull, displaced (rotation +-15 deg, scale +-10 %, translation +-15 mm) on a 1.2 x 1.2 x
  1.5 mm grid.

Each row: mean error (mm) of the model, of the trivial baseline (each fiducial at its mean training position,
mapped through the same alignment), and the AFIDs inter-rater spread (distance of each of the four raters from
their mean, the raters warped with the brain), fiducial top-1 (classification of the patches at the true points),
the fraction of fiducials within twice the rater spread, and the mean probability; ``model_prior_mm`` is the same
search ranked with a Gaussian position prior around the search centres (``--prior_sigma_mm``). It also reports the
out-of-distribution check (:class:`~monai_ext.apps.aneurysm.inference.FeatureDistributionCheck`, fitted on training
patches, threshold from held-out brains) on the rows and on the synthetic vessel volumes of the bundle's default
data (a model used on data unlike its training data), and timings (synthesis, registration, localisation).

Run (20 minutes of training plus about 8 minutes of evaluation, one thread)::

    python -m monai_ext.apps.aneurysm.brain_feasibility --output_dir /tmp/brain_feasibility --train_minutes 20

``--checkpoint_dir`` evaluates the network and priors written by an earlier run instead of training. Training is
bounded by wall-clock time, so a loaded machine trains on fewer patches (the ``training:`` line of the table says
how many).

Outputs under ``--output_dir``: ``feasibility.md`` / ``.csv`` / ``.json`` (the table and timings),
``landmark_net.pt`` (``{"model": state_dict}``), ``landmark_priors.json`` and ``feature_check.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.data import MetaTensor

from monai_ext.data.synthetic.brain import SynthesizeBraind, afids_landmarks, crop_grid, load_mni152_tissues
from monai_ext.networks.nets import MiniVGG
from monai_ext.transforms import (
    AlignToTemplated,
    MaskedPercentileNormalize,
    TriPlanarPatch,
    apply_matrix,
)
from monai_ext.utils import load_checkpoint, save_checkpoint

from .data import Case, sample_landmark_patches
from .inference import FeatureDistributionCheck, TriPlanarPointInferer, out_of_distribution_verdict, save_priors
from .landmarks import read_points

__all__ = ["main", "evaluation_rows"]

logger = logging.getLogger(__name__)

#: the bundle's AFIDs test deformations: +-8 deg, +-8 %, +-4 mm and a weak elastic field (about 0.4 mm at the AFIDs)
_TODAY_WARP = {"rotate_range": np.deg2rad(8.0), "scale_range": 0.08, "translate_range": 4.0, "elastic_mm": 0.3,
               "elastic_sigma_mm": 10.0, "control_spacing_mm": 5.0}
#: the same pose range with the generator's subject-like elastic field (4 mm at the AFIDs after affine alignment)
_SUBJECT_WARP = {"rotate_range": np.deg2rad(8.0), "scale_range": 0.08, "translate_range": 4.0}


def evaluation_rows() -> dict[str, dict[str, Any]]:
    """Generator settings of the evaluation rows (contrast keyword arguments, warp, artefacts, grid)."""
    stripped = {"exclude": (), "skull_prob": 0.0}
    template_t1 = {"contrasts": ("t1",), **stripped, "jitter": 0.0, "template_mix": (1.0, 1.0), "texture": 0.0}
    return {
        "(a) MNI152 T1 intensities, the bundle's test deformations": {
            "contrast": template_t1, "warp": _TODAY_WARP, "artefacts": None},
        "(a) MNI152 T1 intensities, subject-like deformations": {
            "contrast": template_t1, "warp": _SUBJECT_WARP, "artefacts": None},
        "(b) held-out contrast T2-like": {"contrast": {"contrasts": ("t2",), **stripped}, "warp": _SUBJECT_WARP},
        "(b) held-out contrast PD-like": {"contrast": {"contrasts": ("pd",), **stripped}, "warp": _SUBJECT_WARP},
        "(c) synthetic T1, skull-stripped": {"contrast": {"contrasts": ("t1",), **stripped}, "warp": _SUBJECT_WARP,
                                             "seed_group": 100},
        "(c) synthetic T1, with skull": {"contrast": {"contrasts": ("t1",), "exclude": (), "skull_prob": 1.0},
                                         "warp": _SUBJECT_WARP, "seed_group": 100},
        "(d) synthetic T1 with skull, displaced (ITK alignment)": {
            "contrast": {"contrasts": ("t1",), "exclude": (), "skull_prob": 1.0}, "warp": {}, "grid": "displaced"},
    }


def _case(sample: dict[str, Any], normalizer: MaskedPercentileNormalize, name: str) -> Case:
    image = normalizer(sample["image"], sample["brain_mask"])
    affine = np.asarray(sample["image"].affine, dtype=np.float64)
    vox = apply_matrix(np.linalg.inv(affine), sample["landmarks"])
    inside = np.all((vox >= 0) & (vox <= np.asarray(image.shape[1:]) - 1), axis=1)
    labels = np.asarray(sample["landmark_labels"])
    plain = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    return Case(name, MetaTensor(plain, affine=torch.as_tensor(affine)), affine, vox[inside],
                labels[inside], np.zeros((0, 3)), np.zeros((0,), dtype=np.int64), {})


def train_on_synthetic_brains(net: nn.Module, generator: SynthesizeBraind, minutes: float, seed: int = 0,
                              pool: int = 12, refresh: int = 4, samples_per_brain: int = 96, batch_size: int = 64,
                              lr: float = 2e-3) -> dict[str, Any]:
    """Train ``net`` on a refreshed pool of synthetic brains for ``minutes`` (cosine learning rate over the budget).

    Returns:
        ``{"epochs", "patches", "brains", "synthesis_seconds" (per brain), "loss" (last epoch), "cases" (the
        last pool, for the feature check), "priors" ((L, 3) mean training position in template world mm: each
        brain's landmarks mapped back by the affine part of its warp, i.e. after a perfect affine alignment)}``.
    """
    normalizer = MaskedPercentileNormalize(2.0, 98.0, erode_mm=5.0)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    next_seed, synth_times, template_points = seed * 1_000_000, [], []

    def new_case() -> Case:
        nonlocal next_seed
        t0 = time.perf_counter()
        sample = generator.synthesize(next_seed)
        synth_times.append(time.perf_counter() - t0)
        template_points.append(apply_matrix(sample["warp"], sample["landmarks"]))  # undo the affine part
        next_seed += 1
        return _case(sample, normalizer, f"train_{next_seed}")

    cases = [new_case() for _ in range(pool)]
    budget = minutes * 60.0
    start = time.perf_counter()
    epoch, patches, loss_value = 0, 0, float("nan")
    gen = torch.Generator().manual_seed(seed)
    while time.perf_counter() - start < budget:
        if epoch > 0:
            cases = cases[refresh:] + [new_case() for _ in range(refresh)]
        x, y = sample_landmark_patches(cases, samples_per_brain, seed=seed * 7919 + epoch)
        order = torch.randperm(len(x), generator=gen)
        net.train()
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            frac = min((time.perf_counter() - start) / budget, 1.0)
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        loss_value = total / max(count, 1)
        patches += len(x)
        epoch += 1
        logger.info("epoch %d: loss %.3f, %d patches, %.0f s", epoch, loss_value, patches, time.perf_counter() - start)
    net.eval()
    return {"epochs": epoch, "patches": patches, "brains": next_seed - seed * 1_000_000,
            "synthesis_seconds": float(np.mean(synth_times)), "loss": loss_value, "cases": cases,
            "priors": np.nanmean(np.stack(template_points), 0)}


@torch.no_grad()
def _features(net: nn.Module, image: torch.Tensor, voxels: np.ndarray) -> np.ndarray:
    patcher = TriPlanarPatch(32)
    net.eval()
    return net.features(torch.as_tensor(patcher(image, voxels)).float()).numpy()


def fit_feature_check(net: nn.Module, cases: Sequence[Case], held_out: Sequence[Case], priors_world: np.ndarray,
                      seed: int = 0) -> FeatureDistributionCheck:
    """:class:`FeatureDistributionCheck` of ``net.features``: class means and covariance from plain (unaugmented)
    training patches of every class of ``cases`` (landmarks, near misses, background), threshold from the patches
    at the search centres (``priors_world``) of ``held_out`` brains never trained on, scored as at inference."""
    x, y = sample_landmark_patches(cases, 128, seed=seed, augment=False)
    net.eval()
    with torch.no_grad():
        feats = torch.cat([net.features(x[i : i + 512]) for i in range(0, len(x), 512)]).numpy()
    held = [_features(net, c.image, apply_matrix(np.linalg.inv(c.affine), priors_world)) for c in held_out]
    return FeatureDistributionCheck().fit(feats, y.numpy(), holdout_features=np.concatenate(held))


def _rater_spread(raters: np.ndarray) -> np.ndarray:
    mean = np.nanmean(raters, 0)
    return np.nanmean(np.linalg.norm(raters - mean, axis=-1), 0)


@torch.no_grad()
def evaluate_row(net: nn.Module, generator: SynthesizeBraind, seeds: Sequence[int], align: AlignToTemplated,
                 priors_world: np.ndarray, labels: np.ndarray, inferer: TriPlanarPointInferer,
                 check: FeatureDistributionCheck, prior_sigma_mm: float = 5.0) -> dict[str, Any]:
    """Model, baseline and rater errors (mm) plus top-1 for the brains of ``seeds`` through the inference path
    (``model_prior_mm``: the same search ranked with a Gaussian position prior of ``prior_sigma_mm``)."""
    normalizer = MaskedPercentileNormalize(2.0, 98.0, erode_mm=5.0)
    patcher = TriPlanarPatch(inferer.patch_size, inferer.extent_mm)
    errs, base, spread, top1, probs, ood, times = [], [], [], [], [], [], {"synth": [], "align": [], "localise": []}
    errs_prior: list[np.ndarray] = []
    prior_inferer = TriPlanarPointInferer("localise", inferer.patch_size, inferer.extent_mm, inferer.search_radius,
                                          inferer.search_step, prior_sigma_mm=prior_sigma_mm)
    for s in seeds:
        t0 = time.perf_counter()
        sample = generator.synthesize(int(s))
        times["synth"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d = align({"image": sample["image"]})
        times["align"].append(time.perf_counter() - t0)
        matrix = d["template_to_image"]
        image = normalizer(d["image"], d["brain_mask"])  # the template's brain within the input's field of view
        grid_affine = np.asarray(d["image"].affine, dtype=np.float64)
        inv_grid = np.linalg.inv(grid_affine)
        t0 = time.perf_counter()
        out = inferer(image, net, priors=apply_matrix(inv_grid, priors_world), labels=labels).numpy()
        times["localise"].append(time.perf_counter() - t0)
        found = apply_matrix(matrix, apply_matrix(grid_affine, out[:, :3]))
        truth = sample["landmarks"]
        errs.append(np.linalg.norm(found - truth, axis=1))
        base.append(np.linalg.norm(apply_matrix(matrix, priors_world) - truth, axis=1))
        spread.append(_rater_spread(sample["raters"]))
        probs.append(out[:, 3])
        true_vox = apply_matrix(inv_grid, apply_matrix(np.linalg.inv(matrix), truth))
        logits = net(torch.as_tensor(patcher(image, true_vox)).float())
        top1.append((logits.argmax(1).numpy() == labels).astype(float))
        with_prior = prior_inferer(image, net, priors=apply_matrix(inv_grid, priors_world), labels=labels).numpy()
        errs_prior.append(np.linalg.norm(apply_matrix(matrix, apply_matrix(grid_affine, with_prior[:, :3])) - truth,
                                         axis=1))
        feature_verdict = check.assess(_features(net, image, apply_matrix(inv_grid, priors_world)))
        ood.append(out_of_distribution_verdict(out[:, 3] < 0.5, 0.5, feature_verdict))
    errs_a, spread_a = np.array(errs), np.array(spread)
    return {
        "model_mm": float(np.mean(errs_a)), "model_median_mm": float(np.median(errs_a)),
        "model_prior_mm": float(np.mean(errs_prior)),
        "baseline_mm": float(np.mean(base)), "inter_rater_mm": float(np.nanmean(spread_a)),
        "top1": float(np.mean(top1)), "within_2x_rater": float(np.mean(errs_a <= 2 * spread_a)),
        "mean_probability": float(np.mean(probs)), "low_confidence_fraction": float(np.mean(np.array(probs) < 0.5)),
        "ood_flagged": int(sum(o["flagged"] for o in ood)),
        "ood_feature_flagged": int(sum(o["feature_check"]["out_of_distribution"] for o in ood)), "brains": len(seeds),
        "seconds": {k: float(np.mean(v)) for k, v in times.items()},
    }


def _vessel_check(net: nn.Module, check: FeatureDistributionCheck, out_dir: Path, labels: np.ndarray,
                  inferer: TriPlanarPointInferer, seed: int) -> dict[str, Any]:
    """The brain model's OOD verdict on the synthetic vessel volumes (the bundle's default data)."""
    from monai_ext.data.synthetic.aneurysm import generate_aneurysm_dataset

    from .data import load_cases

    path = generate_aneurysm_dataset(out_dir / "vessels", seed=seed, num_cases=10)
    cases = load_cases(path, "test", max_cases=3)
    rng = np.random.default_rng(seed)
    flagged, feature_flagged, fractions, low = 0, 0, [], []
    for case in cases:
        normalised = MaskedPercentileNormalize(2.0, 98.0, erode_mm=0.0)(case.image)
        # stand-ins for the search centres (the brain priors do not fall inside a 64 mm vessel volume): the central
        # half of the volume
        size = np.asarray(case.image.shape[1:])
        centres = np.round(size / 4 + rng.random((len(labels), 3)) * size / 2)
        out = inferer(normalised, net, priors=centres, labels=labels).numpy()
        verdict = out_of_distribution_verdict(out[:, 3] < 0.5, 0.5, check.assess(_features(net, normalised, centres)))
        flagged += int(verdict["flagged"])
        feature_flagged += int(verdict["feature_check"]["out_of_distribution"])
        fractions.append(verdict["feature_check"]["fraction_above"])
        low.append(verdict["low_confidence_fraction"])
    return {"volumes": len(cases), "flagged": flagged, "feature_flagged": feature_flagged,
            "fraction_above": float(np.mean(fractions)), "low_confidence_fraction": float(np.mean(low))}


def _machine() -> str:
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
        have = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
        flags = ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return (f"{model} [{flags}], {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), load average {os.getloadavg()[0]:.2f}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point (module docstring); returns the results written to ``feasibility.json``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_minutes", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=12, help="brains in the training pool")
    p.add_argument("--refresh", type=int, default=3, help="new brains per epoch")
    p.add_argument("--samples_per_brain", type=int, default=160)
    p.add_argument("--prior_sigma_mm", type=float, default=5.0, help="position prior of the 'model + prior' column")
    p.add_argument("--eval_brains", type=int, default=3, help="brains per evaluation row")
    p.add_argument("--registration_voxel", type=int, default=2, help="voxel size (mm) of the registration template")
    p.add_argument("--search_radius", type=float, default=12.0)
    p.add_argument("--search_step", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vessel_check", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--checkpoint_dir", default=None,
                   help="evaluate the landmark_net.pt / landmark_priors.json of an earlier run instead of training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    machine = _machine()

    template = load_mni152_tissues(1)
    names, sets = afids_landmarks()
    shape, affine = crop_grid(sets["groundtruth"], template)
    train_gen = SynthesizeBraind(template=template, landmark_sets=sets, spatial_size=shape, output_affine=affine)
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=len(names) + 1, channels=(16, 32, 64),
                  hidden_features=128)
    labels = np.arange(1, len(names) + 1)
    if args.checkpoint_dir:  # evaluation only: the network and priors of an earlier run, a fresh pool for the check
        ckpt = Path(args.checkpoint_dir)
        net.load_state_dict(load_checkpoint(ckpt / "landmark_net.pt")["model"])
        priors = read_points(ckpt / "landmark_priors.json")
        priors_world = priors.positions[np.argsort(priors.labels)]
        normalizer = MaskedPercentileNormalize(2.0, 98.0, erode_mm=5.0)
        cases = [_case(train_gen.synthesize(args.seed * 1_000_000 + k), normalizer, f"pool_{k}")
                 for k in range(args.pool)]
        train = {"checkpoint_dir": str(ckpt)}
    else:
        logger.info("training for %.1f min on synthetic brains (%s)", args.train_minutes, machine)
        train = train_on_synthetic_brains(net, train_gen, args.train_minutes, args.seed, args.pool, args.refresh,
                                          args.samples_per_brain)
        cases, priors_world = train.pop("cases"), train.pop("priors")
    save_checkpoint({"model": net.state_dict()}, out / "landmark_net.pt")
    save_priors([Case("template", torch.zeros(1), template.affine,
                      apply_matrix(np.linalg.inv(template.affine), priors_world), labels, np.zeros((0, 3)),
                      np.zeros(0, dtype=np.int64), {})], names, out / "landmark_priors.json")
    # held-out brains for the threshold, posed as after an affine alignment (small residual pose)
    calib = SynthesizeBraind(template=template, landmark_sets=sets, spatial_size=shape, output_affine=affine,
                             warp={"rotate_range": np.deg2rad(3.0), "scale_range": 0.03, "translate_range": 2.0})
    normalizer = MaskedPercentileNormalize(2.0, 98.0, erode_mm=5.0)
    held_out = [_case(calib.synthesize(20_000_000 + k), normalizer, f"check_{k}") for k in range(4)]
    check = fit_feature_check(net, cases, held_out, priors_world, args.seed)
    check.save(out / "feature_check.json")

    reg = load_mni152_tissues(args.registration_voxel)
    mask_1mm = template.mask_image()
    align = AlignToTemplated("image", template=reg.image("t1"), template_mask=reg.mask, brain_mask=mask_1mm,
                             spatial_size=shape, output_affine=affine)
    inferer = TriPlanarPointInferer("localise", search_radius=args.search_radius, search_step=args.search_step)
    whole = (template.shape, template.affine)
    displaced_affine = np.diag([1.2, 1.2, 1.5, 1.0])
    displaced_affine[:3, 3] = template.affine[:3, 3]
    displaced_shape = tuple(int(np.ceil(n / s)) for n, s in zip(template.shape, (1.2, 1.2, 1.5), strict=True))
    rows = {}
    for i, (row, spec) in enumerate(evaluation_rows().items()):
        grid = (displaced_shape, displaced_affine) if spec.get("grid") == "displaced" else whole
        gen = SynthesizeBraind(template=template, landmark_sets=sets, spatial_size=grid[0], output_affine=grid[1],
                               contrast=spec["contrast"], warp=spec["warp"],
                               artefacts=spec.get("artefacts", "default"))
        group = spec.get("seed_group", i)  # the two (c) rows share their brains: only the skull differs
        seeds = [10_000_000 + 1000 * group + k for k in range(args.eval_brains)]
        rows[row] = evaluate_row(net, gen, seeds, align, priors_world, labels, inferer, check,
                                 args.prior_sigma_mm)
        logger.info("%s: %s", row, rows[row])
    vessels = _vessel_check(net, check, out, labels, inferer, args.seed) if args.vessel_check else None
    results = {"machine": machine, "args": vars(args), "training": train, "rows": rows, "vessel_ood": vessels,
               "total_minutes": (time.perf_counter() - t_start) / 60}
    (out / "feasibility.json").write_text(json.dumps(results, indent=1))
    header = ["row", "model_mm", "model_prior_mm", "baseline_mm", "inter_rater_mm", "top1", "within_2x_rater",
              "mean_probability", "ood_flagged", "ood_feature_flagged", "brains"]
    with open(out / "feasibility.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row, r in rows.items():
            w.writerow([row, *[r[k] for k in header[1:]]])
    lines = [f"machine: {machine} (at the start)", "command: python -m monai_ext.apps.aneurysm.brain_feasibility "
             + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
             (f"training: {train['epochs']} epochs, {train['patches']} patches from {train['brains']} synthetic "
              f"brains, {train['synthesis_seconds']:.2f} s per brain, last loss {train['loss']:.3f}"
              if "epochs" in train else f"network and priors of {train['checkpoint_dir']} (no training)"), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, r in rows.items():
        lines.append("| " + " | ".join([row, *[f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k])
                                               for k in header[1:]]]) + " |")
    lines += ["", "seconds per evaluation brain (synthesis, ITK alignment, localisation): " + "; ".join(
        f"{row.split(')')[0]})" + " {synth:.1f} / {align:.1f} / {localise:.1f}".format(**r["seconds"])
        for row, r in rows.items())]
    if vessels is not None:
        lines.append(f"out-of-distribution verdict of this brain model on {vessels['volumes']} synthetic vessel "
                     f"volumes: {vessels['flagged']} flagged ({vessels['low_confidence_fraction']:.2f} of the points "
                     f"below p = 0.5; the feature check alone flagged {vessels['feature_flagged']}, mean fraction "
                     f"of search centres above its threshold {vessels['fraction_above']:.2f})")
    lines.append(f"total {results['total_minutes']:.1f} min, load average at the end {os.getloadavg()[0]:.2f}")
    (out / "feasibility.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
