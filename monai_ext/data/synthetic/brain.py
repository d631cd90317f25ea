"""Synthetic brains of random contrast, pose and shape from the MNI152 tissue maps, with landmarks moved along.

One template is one brain with one contrast; a landmark model trained on it alone learns that contrast and the
template's intensity scale, and fails on other subjects (issue 16). This module turns the template into an unlimited,
seeded supply of training brains in the way of SynthSeg (Billot et al., "SynthSeg: Segmentation of brain MRI scans
of any contrast and resolution without retraining", Medical Image Analysis 86, 2023):

1. **Tissues** (:func:`load_mni152_tissues`): nilearn's offline MNI152 (2009a symmetric) grey- and white-matter
   probability maps and brain mask (CSF = mask - GM - WM), the T1 template, and each voxel's distance to the brain
   mask (where skull and scalp are drawn).
2. **Contrast** (:class:`~monai_ext.transforms.RandTissueContrast`): random per-tissue intensities (T1-, T2-,
   PD-like presets or arbitrary), template detail mapped through the same tissue means, and with a given probability
   a CSF rim, skull and scalp as shells of the brain mask.
3. **Pose and shape** (:class:`~monai_ext.transforms.RandAffineElasticWarpd`): random rotation (default +-15 deg),
   per-axis scale (+-10 %), translation (+-15 mm) and a smooth elastic displacement (standard deviation 3 mm per
   component, 20 mm smoothing: as much non-affine variation at the AFIDs as between real subjects), resampled onto
   the output grid; the landmarks (AFIDs ground truth and the four raters) are moved with the image.
4. **Acquisition** (:func:`default_artefacts`, MONAI transforms): bias field, blur and lower resolution, Rician
   noise, gamma; a skull-less brain is then stripped (zero outside its mask, as a skull-stripping tool would leave
   it) and every image gets a random global gain (scanner units).
5. **Field of view** (optional, ``field_of_view``): with a given probability the brain is seen through a smaller
   box (faces moved in to a few mm beyond the outermost landmark), zero outside, as a scan cut short looks once
   aligned to the template.

:class:`SynthesizeBraind` is a deterministic function of ``data["seed"]``, so a MONAI ``CacheDataset`` caches the
brains (fixed set) and a plain ``Dataset`` with new seeds every epoch gives fresh ones.
:func:`generate_synthetic_brain_dataset` writes a datalist of such brains to disk (training contrasts, plus
evaluation sets of held-out contrasts, with/without skull, and displaced inputs on a whole-head grid).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianSmooth,
    RandRicianNoise,
    RandSimulateLowResolution,
)
from scipy import ndimage

from monai_ext.transforms.intensity import TISSUE_CHANNELS, RandTissueContrast
from monai_ext.transforms.spatial import RandAffineElasticWarpd, apply_matrix

__all__ = [
    "BrainTemplate",
    "SynthesizeBraind",
    "SynthesizeBrainD",
    "SynthesizeBrainDict",
    "afids_landmarks",
    "crop_grid",
    "default_artefacts",
    "generate_synthetic_brain_dataset",
    "load_mni152_tissues",
]


@dataclass(frozen=True)
class BrainTemplate:
    """Tissue stack of a template brain.

    Attributes:
        tissues: ``(5, X, Y, Z)`` float32, channels :data:`~monai_ext.transforms.intensity.TISSUE_CHANNELS` (T1, GM,
            WM, CSF probabilities, distance in mm outside the brain mask).
        mask: ``(X, Y, Z)`` bool brain mask.
        affine: ``4x4`` voxel-to-RAS affine.
        t1_levels: the T1 template's mean intensity in CSF, GM and WM (voxels of probability > 0.9).
    """

    tissues: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    t1_levels: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.mask.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def image(self, channel: str = "t1") -> MetaTensor:
        """One channel of the stack as a ``(1, X, Y, Z)`` MetaTensor (e.g. the registration target of
        :class:`~monai_ext.transforms.AlignToTemplated`).

        Raises:
            ValueError: for a channel not in :data:`~monai_ext.transforms.intensity.TISSUE_CHANNELS`.
        """
        if channel not in TISSUE_CHANNELS:
            raise ValueError(f"channel must be one of {TISSUE_CHANNELS}, got {channel!r}.")
        k = TISSUE_CHANNELS.index(channel)
        return MetaTensor(torch.as_tensor(self.tissues[k : k + 1]), affine=torch.as_tensor(self.affine))

    def mask_image(self) -> MetaTensor:
        """The brain mask as a ``(1, X, Y, Z)`` float32 MetaTensor."""
        return MetaTensor(torch.as_tensor(self.mask[None].astype(np.float32)), affine=torch.as_tensor(self.affine))

    def region(self, lo_world: np.ndarray, hi_world: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """The tissue stack cropped to a world bounding box (plus ``margin`` voxels), with its affine (a view)."""
        inv = np.linalg.inv(self.affine)
        corners = np.array(np.meshgrid(*zip(lo_world, hi_world, strict=True), indexing="ij")).reshape(3, -1).T
        vox = apply_matrix(inv, corners)
        lo = np.clip(np.floor(vox.min(0)).astype(int) - margin, 0, np.array(self.shape) - 1)
        hi = np.clip(np.ceil(vox.max(0)).astype(int) + margin + 1, lo + 1, np.array(self.shape))
        affine = self.affine.copy()
        affine[:3, 3] = apply_matrix(self.affine, lo[None])[0]
        return self.tissues[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], affine


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    s = [n // f * f for n in x.shape]
    x = x[: s[0], : s[1], : s[2]]
    return x.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean((1, 3, 5))


@functools.lru_cache(maxsize=4)
def load_mni152_tissues(voxel_size: int = 1) -> BrainTemplate:
    """nilearn's MNI152 tissue maps as a :class:`BrainTemplate` (offline; cached per ``voxel_size``).

    The 1 mm maps (``load_mni152_template``, ``load_mni152_gm_template``, ``load_mni152_wm_template``,
    ``load_mni152_brain_mask``, MNI152 2009a symmetric) are block-averaged by ``voxel_size`` (an integer factor:
    2, 3, 4 give coarser templates for quick tests and registration). CSF is ``mask - GM - WM`` clipped at 0.

    Raises:
        ValueError: for a ``voxel_size`` that is not a positive integer.
    """
    if isinstance(voxel_size, bool) or int(voxel_size) != voxel_size or voxel_size < 1:
        raise ValueError(f"voxel_size must be a positive integer (mm), got {voxel_size!r}.")
    from nilearn.datasets import (
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_template,
        load_mni152_wm_template,
    )

    t1_img = load_mni152_template(resolution=1)
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).get_fdata(), dtype=np.float32)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    gm, wm = gm * mask, wm * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    levels = tuple(float(t1[(p > 0.9) & (mask > 0)].mean()) for p in (csf, gm, wm))
    f = int(voxel_size)
    if f > 1:
        t1, gm, wm, csf, mask = (_block_mean(v, f) for v in (t1, gm, wm, csf, mask))
        affine = affine @ np.array([[f, 0, 0, (f - 1) / 2], [0, f, 0, (f - 1) / 2], [0, 0, f, (f - 1) / 2],
                                    [0, 0, 0, 1.0]])
    inside = mask > 0.5
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    dist = ndimage.distance_transform_edt(~inside, sampling=spacing).astype(np.float32)
    tissues = np.stack([t1, gm, wm, csf, dist]).astype(np.float32)
    return BrainTemplate(tissues, inside, affine, levels)  # type: ignore[arg-type]


def afids_landmarks() -> tuple[list[str], dict[str, np.ndarray]]:
    """AFIDs fiducial names and positions (template RAS mm): ``{"groundtruth": (32, 3), "rater01".. : (32, 3)}``.

    Rows follow the class ids ``1..32``; a fiducial a rater did not place is NaN.
    """
    from monai_ext.apps.aneurysm.afids import afids_names, load_afids

    names = afids_names()
    sets = {}
    for r in ("groundtruth", "rater01", "rater02", "rater03", "rater04"):
        pts = load_afids(r)
        arr = np.full((len(names), 3), np.nan)
        for lab, p in zip(pts.labels, pts.positions, strict=True):
            if 1 <= lab <= len(names):
                arr[lab - 1] = p
        sets[r] = arr
    return names, sets


def crop_grid(points: np.ndarray, template: BrainTemplate, margin_mm: float = 24.0
              ) -> tuple[tuple[int, int, int], np.ndarray]:
    """The template's grid cropped to the bounding box of ``points`` (world mm) plus ``margin_mm``.

    With the AFIDs ground truth and the default margin this is the 1 mm grid the aneurysm bundle has trained on
    (119 x 165 x 107 voxels).

    Returns:
        ``(spatial_size, affine)``.
    """
    inv = np.linalg.inv(template.affine)
    vox = apply_matrix(inv, np.asarray(points, dtype=np.float64)[np.isfinite(points).all(1)])
    margin = margin_mm / template.spacing
    lo = np.maximum(np.floor(vox.min(0) - margin).astype(int), 0)
    hi = np.minimum(np.ceil(vox.max(0) + margin).astype(int) + 1, template.shape)
    affine = template.affine.copy()
    affine[:3, 3] = apply_matrix(template.affine, lo[None])[0]
    return tuple(int(v) for v in hi - lo), affine  # type: ignore[return-value]


def _field_of_view_spec(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Checked ``field_of_view`` argument of :class:`SynthesizeBraind`."""
    if spec is None:
        return None
    keys = {"prob", "face_prob", "margin_mm"}
    if not isinstance(spec, Mapping) or set(spec) != keys:
        raise ValueError(f"field_of_view must be None or a mapping with exactly the keys {sorted(keys)}, got {spec!r}.")
    out = {"prob": float(spec["prob"]), "face_prob": float(spec["face_prob"]),
           "margin_mm": tuple(float(m) for m in spec["margin_mm"])}
    if not (0 <= out["prob"] <= 1 and 0 <= out["face_prob"] <= 1):
        raise ValueError(f"field_of_view prob and face_prob must lie in [0, 1], got {spec!r}.")
    if len(out["margin_mm"]) != 2 or not 0 <= out["margin_mm"][0] <= out["margin_mm"][1]:
        raise ValueError(f"field_of_view margin_mm must be a range 0 <= low <= high (mm), got {spec!r}.")
    return out


def default_artefacts(bias: float = 0.3, blur: float = 1.0, low_res_prob: float = 0.25, noise: float = 0.04,
                      gamma: tuple[float, float] = (0.7, 1.5)) -> Compose:
    """Acquisition artefacts applied after the warp (MONAI transforms, each drawn from its own ``R``).

    Bias field (``RandBiasField``, degree 3, coefficients ``U(0, bias)``, probability 0.9); Gaussian blur with a
    per-axis sigma ``U(0, blur)`` voxels (probability 0.5); lower resolution (``RandSimulateLowResolution``, zoom
    ``U(0.4, 0.9)``, probability ``low_res_prob``); Rician noise of std ``U(0, noise)`` (the tissue means are in
    ``[0, 1]``; probability 0.9); gamma ``U(gamma)`` (``RandAdjustContrast``, probability 0.9).
    """
    return Compose([
        RandBiasField(degree=3, coeff_range=(0.0, bias), prob=0.9),
        RandGaussianSmooth(sigma_x=(0.0, blur), sigma_y=(0.0, blur), sigma_z=(0.0, blur), prob=0.5),
        RandSimulateLowResolution(prob=low_res_prob, zoom_range=(0.4, 0.9)),
        RandRicianNoise(prob=0.9, std=noise, sample_std=True),
        RandAdjustContrast(prob=0.9, gamma=gamma),
    ])


class SynthesizeBraind(MapTransform):
    """A synthetic brain with its landmarks, determined by ``data[seed_key]`` (module docstring, steps 1-4).

    Output keys: ``image`` ``(1, X, Y, Z)`` float32 MetaTensor on the output grid; ``brain_mask`` ``(1, X, Y, Z)``
    uint8 (the warped template mask); ``landmarks`` ``(L, 3)`` world mm; ``landmark_labels`` ``(L,)`` (1-based);
    ``raters`` ``(R, L, 3)`` (NaN where a rater has no point); ``contrast`` (name); ``skull`` (bool); ``warp``
    (``4x4`` output-world to template-world affine part of the warp). The same seed always gives the same brain.

    Args:
        keys: the seed key (one key; an int per item).
        template: tissue stack (default: :func:`load_mni152_tissues` at 1 mm).
        landmark_sets: ``{name: (L, 3) template world mm}``; ``"groundtruth"`` is the landmarks, the others raters
            (default :func:`afids_landmarks`).
        spatial_size: output grid shape (default: :func:`crop_grid` of the ground truth, margin 24 mm).
        output_affine: output grid affine (with ``spatial_size``).
        contrast: a :class:`~monai_ext.transforms.RandTissueContrast`, or its keyword arguments (default: T1 and
            random contrasts, T2/PD held out, skull with probability 0.5).
        warp: keyword arguments of :class:`~monai_ext.transforms.RandAffineElasticWarpd` (defaults: rotation
            +-15 deg, scale +-10 %, translation +-15 mm, centred on the ground-truth centroid, and a "subject-like"
            elastic field of standard deviation 3 mm per component smoothed over 20 mm: after the best affine fit
            over the brain, the AFIDs still move by 4.0 mm on average (20 seeds), the error of the trivial baseline
            measured on a real brain of another subject in issue 16, 4.1 mm).
        artefacts: transform applied to the warped image (default :func:`default_artefacts`; ``None`` for none).
        gain: range of the log-uniform global gain.
        field_of_view: ``None`` (the whole output grid is seen), or ``{"prob", "face_prob", "margin_mm"}``: with
            probability ``prob`` the brain is seen through a smaller field of view, each of the six faces of the
            output grid independently (probability ``face_prob``) moved in to a plane ``U(margin_mm)`` mm beyond the
            outermost landmark on that side; image and ``brain_mask`` are zero outside, as a scan cut short
            (e.g. above the vertex or below the cerebellum) looks once aligned to the template, where the padding
            is zero and the mask is restricted to the field of view
            (:class:`~monai_ext.transforms.AlignToTemplated`). The cut is drawn after everything else, so the
            brains of a seed are otherwise those without it.

    Raises:
        ValueError: when ``landmark_sets`` has no ``"groundtruth"``, only one of ``spatial_size`` /
            ``output_affine`` is given, or ``field_of_view`` is malformed.
    """

    def __init__(
        self,
        keys: KeysCollection = "seed",
        template: BrainTemplate | None = None,
        landmark_sets: Mapping[str, np.ndarray] | None = None,
        spatial_size: Sequence[int] | None = None,
        output_affine: np.ndarray | None = None,
        contrast: RandTissueContrast | Mapping[str, Any] | None = None,
        warp: Mapping[str, Any] | None = None,
        artefacts: Callable[[torch.Tensor], torch.Tensor] | str | None = "default",
        gain: tuple[float, float] = (1.0, 1000.0),
        field_of_view: Mapping[str, Any] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.template = template if template is not None else load_mni152_tissues(1)
        sets = afids_landmarks()[1] if landmark_sets is None else landmark_sets
        sets = {k: np.asarray(v, dtype=np.float64).reshape(-1, 3) for k, v in sets.items()}
        if "groundtruth" not in sets:
            raise ValueError(f"landmark_sets needs a 'groundtruth' entry, got {list(sets)}.")
        self.truth = sets["groundtruth"]
        self.raters = {k: v for k, v in sets.items() if k != "groundtruth"}
        if (spatial_size is None) != (output_affine is None):
            raise ValueError("give both spatial_size and output_affine, or neither.")
        if spatial_size is None:
            spatial_size, output_affine = crop_grid(self.truth, self.template)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.output_affine = np.asarray(output_affine, dtype=np.float64)
        if isinstance(contrast, RandTissueContrast):
            self.contrast = contrast
        else:
            kw = {"template_levels": self.template.t1_levels, **dict(contrast or {})}
            self.contrast = RandTissueContrast(**kw)
        wkw = {"rotate_range": np.deg2rad(15.0), "scale_range": 0.1, "translate_range": 15.0, "elastic_mm": 3.0,
               "elastic_sigma_mm": 20.0, "control_spacing_mm": 8.0, "center": np.nanmean(self.truth, 0),
               **dict(warp or {})}
        self.warp = RandAffineElasticWarpd(("image", "brain_mask"), points_keys=("landmarks", "raters"),
                                           spatial_size=self.spatial_size, output_affine=self.output_affine,
                                           mode=("bilinear", "bilinear"), **wkw)
        self.artefacts = default_artefacts() if artefacts == "default" else artefacts
        if gain[0] <= 0 or gain[0] > gain[1]:
            raise ValueError(f"gain must be a range 0 < low <= high, got {gain}.")
        self.gain = gain
        self.field_of_view = _field_of_view_spec(field_of_view)

    def _cut(self, rng: np.random.RandomState, landmarks: np.ndarray) -> torch.Tensor | None:
        """``(1, X, Y, Z)`` bool field of view drawn from ``rng`` (``None``: the whole grid)."""
        if self.field_of_view is None:
            return None
        spec = self.field_of_view
        use, faces = rng.uniform() < spec["prob"], rng.uniform(size=6) < spec["face_prob"]
        margins = rng.uniform(*spec["margin_mm"], size=6)
        if not use or not faces.any():
            return None
        inv = np.linalg.inv(self.output_affine)
        vox = apply_matrix(inv, landmarks[np.isfinite(landmarks).all(1)])
        step = np.sqrt((self.output_affine[:3, :3] ** 2).sum(0))
        keep = torch.ones((1, *self.spatial_size), dtype=torch.bool)
        for axis in range(3):
            n = self.spatial_size[axis]
            idx = torch.arange(n, dtype=torch.float64).reshape([-1 if a == axis else 1 for a in range(3)])
            if faces[2 * axis]:
                keep[0] &= idx >= vox[:, axis].min() - margins[2 * axis] / step[axis]
            if faces[2 * axis + 1]:
                keep[0] &= idx <= vox[:, axis].max() + margins[2 * axis + 1] / step[axis]
        return keep

    def synthesize(self, seed: int) -> dict[str, Any]:
        """The brain of ``seed`` (see the class docstring for the keys)."""
        rng = np.random.RandomState(np.random.SeedSequence([int(seed), 16]).generate_state(1)[0])
        sub = rng.randint(0, 2**31, size=3)
        self.warp.set_random_state(int(sub[0]))
        self.contrast.set_random_state(int(sub[1]))
        self.warp.randomize(self.spatial_size, self.output_affine)
        lo, hi = self.warp.source_bounds()
        stack, affine = self.template.region(lo, hi)
        image = self.contrast(MetaTensor(torch.as_tensor(stack), affine=torch.as_tensor(affine)))
        mask = MetaTensor(torch.as_tensor(stack[1:4].sum(0, keepdims=True)), affine=torch.as_tensor(affine))
        raters = np.stack([self.raters[k] for k in sorted(self.raters)]) if self.raters else np.zeros((0, 0, 3))
        d = self.warp({"image": image, "brain_mask": mask, "landmarks": self.truth.copy(), "raters": raters},
                      randomize=False)
        img = d["image"]
        if self.artefacts is not None:
            if hasattr(self.artefacts, "set_random_state"):
                self.artefacts.set_random_state(int(sub[2]))
            img = self.artefacts(img)
        brain = (d["brain_mask"] > 0.5).to(torch.uint8)
        if not self.contrast.skull:
            img = img * brain  # a skull-stripped brain is zero outside its mask
        gain = float(np.exp(rng.uniform(np.log(self.gain[0]), np.log(self.gain[1]))))
        img = MetaTensor(torch.as_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img).float() * gain,
                         affine=torch.as_tensor(self.output_affine))
        fov = self._cut(rng, np.asarray(d["landmarks"], dtype=np.float64))
        if fov is not None:
            img, brain = img * fov, brain * fov
        return {
            "image": img,
            "brain_mask": MetaTensor(brain.as_tensor(), affine=torch.as_tensor(self.output_affine)),
            "landmarks": d["landmarks"],
            "landmark_labels": np.arange(1, len(self.truth) + 1),
            "raters": d["raters"],
            "contrast": self.contrast.contrast,
            "skull": self.contrast.skull,
            "warp": self.warp.matrix.copy(),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d.update(self.synthesize(int(d[key])))
        return d


SynthesizeBrainD = SynthesizeBrainDict = SynthesizeBraind


def _write_case(out: Path, name: str, sample: Mapping[str, Any], names: Sequence[str],
                rater_names: Sequence[str]) -> dict[str, Any]:
    from monai_ext.apps.aneurysm.landmarks import PointSet, write_points_json

    affine = np.asarray(sample["image"].affine, dtype=np.float64)
    nib.save(nib.Nifti1Image(np.asarray(sample["image"][0], dtype=np.float32), affine),
             out / "images" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(sample["brain_mask"][0], dtype=np.uint8), affine),
             out / "masks" / f"{name}.nii.gz")
    labels = np.asarray(sample["landmark_labels"])
    write_points_json(PointSet(list(names), labels, sample["landmarks"], "RAS", "mm", name),
                      out / "landmarks" / f"{name}.json")
    rater_files = []
    for r, pts in zip(rater_names, sample["raters"], strict=True):
        ok = np.isfinite(pts).all(1)
        write_points_json(PointSet([n for n, k in zip(names, ok, strict=True) if k], labels[ok], pts[ok], "RAS",
                                   "mm", f"{name} {r}"), out / "raters" / f"{name}_{r}.json")
        rater_files.append(f"raters/{name}_{r}.json")
    return {"image": f"images/{name}.nii.gz", "brain_mask": f"masks/{name}.nii.gz",
            "landmarks": f"landmarks/{name}.json", "raters": rater_files, "contrast": sample["contrast"],
            "skull": bool(sample["skull"])}


def generate_synthetic_brain_dataset(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 16,
                                     num_val: int = 2, num_test: int = 2, contrasts: Sequence[str] = ("t1", "random"),
                                     held_out: Sequence[str] = ("t2", "pd"), skull_prob: float = 0.5,
                                     voxel_size: int = 1) -> Path:
    """Write synthetic AFIDs brains and a datalist (module docstring).

    Sections: ``training`` and ``validation`` (``contrasts``, skull with probability ``skull_prob``; ``held_out``
    contrasts never drawn), and test sets named ``test_<kind>`` with ``num_test`` brains each: ``test_t1`` (T1,
    skull-stripped), ``test_t1_skull`` (the same brains with a skull), one ``test_<contrast>`` per held-out contrast,
    and ``test_displaced`` (T1 with skull on a whole-head 1 mm grid, random pose, for the alignment path). ``test``
    is ``test_t1``. Seeds of different sections never overlap.

    Returns:
        The datalist path; items hold ``image``, ``brain_mask``, ``landmarks``, ``raters``, ``contrast``,
        ``skull``; the top level ``landmark_names``.

    Raises:
        ValueError: for ``num_train < 1`` or ``num_val < 1``.
    """
    if num_train < 1 or num_val < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1, num_val >= 1, num_test >= 0; got {num_train}, {num_val}, {num_test}.")
    out = Path(out_dir)
    for sub in ("images", "masks", "landmarks", "raters"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    template = load_mni152_tissues(voxel_size)
    names, sets = afids_landmarks()
    rater_names = sorted(k for k in sets if k != "groundtruth")
    train = SynthesizeBraind(template=template, landmark_sets=sets,
                             contrast={"contrasts": tuple(contrasts), "exclude": tuple(held_out),
                                       "skull_prob": skull_prob})
    base = 1_000_003 * int(seed)
    sections: dict[str, list[dict[str, Any]]] = {"training": [], "validation": []}
    for section, n, offset in (("training", num_train, 0), ("validation", num_val, 100_000)):
        for i in range(n):
            sections[section].append(_write_case(out, f"{section[:5]}_{i:03d}", train.synthesize(base + offset + i),
                                                 names, rater_names))
    tests: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "test_t1": ({"contrasts": ("t1",), "exclude": (), "skull_prob": 0.0}, {}),
        "test_t1_skull": ({"contrasts": ("t1",), "exclude": (), "skull_prob": 1.0}, {}),
        **{f"test_{h}": ({"contrasts": (h,), "exclude": (), "skull_prob": 0.0}, {}) for h in held_out},
    }
    for section, (ckw, _) in tests.items():
        gen = SynthesizeBraind(template=template, landmark_sets=sets, contrast=ckw)
        sections[section] = [_write_case(out, f"{section}_{i:03d}", gen.synthesize(base + 200_000 + i), names,
                                         rater_names) for i in range(num_test)]
    whole = (tuple(int(s) for s in template.shape), template.affine)
    gen = SynthesizeBraind(template=template, landmark_sets=sets, spatial_size=whole[0], output_affine=whole[1],
                           contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 1.0})
    sections["test_displaced"] = [_write_case(out, f"test_displaced_{i:03d}", gen.synthesize(base + 300_000 + i),
                                              names, rater_names) for i in range(num_test)]
    datalist = {
        "name": "synthetic_brains_afids",
        "description": "Synthetic brains of random contrast, pose and shape from nilearn's MNI152 tissue maps "
        "(SynthSeg-style, Billot et al. 2023) with AFIDs fiducials (CC-BY-4.0, Lau et al. 2019, Taha et al. 2023) "
        f"moved with the image; training contrasts {list(contrasts)}, held out {list(held_out)}.",
        "landmark_names": names,
        **sections,
        "test": sections["test_t1"],
    }
    path = out / "dataset.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path
