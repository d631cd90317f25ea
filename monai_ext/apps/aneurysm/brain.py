"""The template space of the brain landmark model (``brain.json``): where it is trained, searched and described.

The brain landmark model of the aneurysm bundle classifies tri-planar patches of brains into the 32 AFIDs
fiducials (Lau et al., "A framework for evaluating correspondence between brain images using anatomical
fiducials", Human Brain Mapping 40(14), 2019; Taha et al., "Magnetic resonance imaging datasets with anatomical
fiducials for quality control and registration", Scientific Data 10, 2023) plus a background class. It works in one
space, :class:`BrainTemplateSpace`:

- training brains are synthesised on the template's grid cropped around the fiducials
  (:class:`~monai_ext.data.synthetic.brain.SynthesizeBraind`, SynthSeg-style appearance randomisation, Billot et
  al., Medical Image Analysis 86, 2023);
- at inference, a scan is aligned to the template with ITK (:class:`~monai_ext.transforms.AlignToTemplated`, on a
  coarser registration template), resampled onto the same grid, and normalised inside the template's brain mask
  (:class:`~monai_ext.transforms.MaskedPercentileNormalize`); the search runs around the fiducials' template
  positions and the points go back to the scan's RAS mm.

:meth:`BrainTemplateSpace.to_dict` is what the checkpoint's ``model_meta.json`` stores under ``"template"``, and
:meth:`BrainTemplateSpace.from_dict` rebuilds the space from it at inference.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from .landmarks import PointSet, write_points_json

__all__ = ["BrainTemplateSpace", "NECK_T1_RELATIVE", "TEMPLATE_NAME", "add_synthetic_neck", "brain_test_datalist",
           "generate_brain_test_dataset"]

#: the template of :func:`~monai_ext.data.synthetic.brain.load_mni152_tissues` (nilearn, offline)
TEMPLATE_NAME = "MNI152 2009a symmetric (nilearn)"


class BrainTemplateSpace:
    """The MNI152 template at ``voxel_size`` mm, its grid cropped around the AFIDs fiducials, and the registration
    template at ``registration_voxel_size`` mm.

    Everything heavy (tissue maps, masks) is loaded on first use and cached per voxel size
    (:func:`~monai_ext.data.synthetic.brain.load_mni152_tissues`), so building the object in a bundle config is free.

    Args:
        voxel_size: integer voxel size (mm) of the training / search grid (1 for the real model; 3 or 4 for tests).
        registration_voxel_size: integer voxel size (mm) of the template the input is registered to (ITK mutual
            information; 2 mm registers a 1 mm brain in a few seconds).
        margin_mm: margin of the crop around the fiducials (mm); 24 mm gives the 119 x 165 x 107 grid at 1 mm.

    Raises:
        ValueError: for voxel sizes that are not positive integers or a negative margin.

    Example::

        >>> space = BrainTemplateSpace(voxel_size=4, registration_voxel_size=4)
        >>> space.spatial_size
        (31, 43, 28)
        >>> BrainTemplateSpace.from_dict(space.to_dict()).spatial_size
        (31, 43, 28)
    """

    def __init__(self, voxel_size: int = 1, registration_voxel_size: int = 2, margin_mm: float = 24.0) -> None:
        for name, v in (("voxel_size", voxel_size), ("registration_voxel_size", registration_voxel_size)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer (mm), got {v!r}.")
        if not margin_mm >= 0:
            raise ValueError(f"margin_mm must be >= 0, got {margin_mm!r}.")
        self.voxel_size, self.registration_voxel_size = int(voxel_size), int(registration_voxel_size)
        self.margin_mm = float(margin_mm)

    @property
    def template(self) -> Any:
        """The :class:`~monai_ext.data.synthetic.brain.BrainTemplate` at ``voxel_size``."""
        from monai_ext.data.synthetic.brain import load_mni152_tissues

        return load_mni152_tissues(self.voxel_size)

    @property
    def registration_template(self) -> Any:
        """The template at ``registration_voxel_size`` (the fixed image of the registration)."""
        from monai_ext.data.synthetic.brain import load_mni152_tissues

        return load_mni152_tissues(self.registration_voxel_size)

    @property
    def landmarks(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """AFIDs names and point sets in template RAS mm (:func:`~monai_ext.data.synthetic.brain.afids_landmarks`)."""
        return _afids()

    @property
    def grid(self) -> tuple[tuple[int, int, int], np.ndarray]:
        """``(spatial_size, affine)`` of the search grid: the template cropped around the fiducials."""
        return _grid(self.voxel_size, self.margin_mm)

    @property
    def spatial_size(self) -> tuple[int, int, int]:
        return self.grid[0]

    @property
    def affine(self) -> np.ndarray:
        return self.grid[1].copy()

    def brain_mask(self) -> MetaTensor:
        """The template's brain mask ``(1, X, Y, Z)`` on its own grid (resampled onto the search grid by the
        alignment)."""
        return self.template.mask_image()

    def priors(self) -> PointSet:
        """The AFIDs ground truth in template RAS mm: where the search starts for every fiducial (the synthetic
        training brains are warped from these positions, so their mean position after alignment is this)."""
        names, sets = self.landmarks
        truth = sets["groundtruth"]
        ok = np.isfinite(truth).all(1)
        labels = np.arange(1, len(names) + 1)[ok]
        return PointSet([names[k - 1] for k in labels], labels, truth[ok], "RAS", "mm", "AFIDs ground truth")

    def aligner(self, keys: Any = "image", **kwargs: Any) -> Any:
        """An :class:`~monai_ext.transforms.AlignToTemplated` onto the search grid (``kwargs``: its arguments, e.g.
        :func:`~monai_ext.transforms.register_affine` settings). The input is registered through a bias-corrected
        copy (``bias_correction=True`` unless given): heads cut to a small box with a strong bias field diverged
        without it (bundle README, "Alignment and its limits")."""
        from monai_ext.transforms import AlignToTemplated

        kwargs.setdefault("bias_correction", True)
        reg = self.registration_template
        size, affine = self.grid
        return AlignToTemplated(keys, template=reg.image("t1"), template_mask=reg.mask, brain_mask=self.brain_mask(),
                                spatial_size=size, output_affine=affine, **kwargs)

    def crop_mask(self) -> MetaTensor:
        """The template's brain mask on the search grid, ``(1, X, Y, Z)`` uint8."""
        from monai_ext.transforms import resample_to_grid

        size, affine = self.grid
        tpl = self.template
        m = resample_to_grid(self.brain_mask(), tpl.affine, np.eye(4), size, affine)
        return MetaTensor((torch.as_tensor(m) > 0.5).to(torch.uint8), affine=torch.as_tensor(affine))

    def to_dict(self) -> dict[str, Any]:
        """JSON description (``model_meta.json``'s ``"template"``): the settings and, as a check, the grid."""
        size, affine = self.grid
        return {"name": TEMPLATE_NAME, "landmarks": "AFIDs (32 fiducials, ground truth of MNI152NLin2009cSym)",
                "voxel_size": self.voxel_size, "registration_voxel_size": self.registration_voxel_size,
                "margin_mm": self.margin_mm, "spatial_size": list(size), "affine": np.asarray(affine).tolist()}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], source: str = "template description") -> BrainTemplateSpace:
        """Rebuild the space from :meth:`to_dict`; the stored grid must be the one these settings give.

        Raises:
            ValueError: for a description without the settings, or whose grid differs (e.g. written by a version
                of the template loader that cropped differently), naming ``source``.
        """
        missing = [k for k in ("voxel_size", "registration_voxel_size", "margin_mm") if k not in spec]
        if missing:
            raise ValueError(f"{source}: the template description lacks {missing}; got keys {sorted(spec)}.")
        space = cls(spec["voxel_size"], spec["registration_voxel_size"], spec["margin_mm"])
        if "spatial_size" in spec:
            size, affine = space.grid
            if list(size) != list(spec["spatial_size"]) or not np.allclose(affine, spec.get("affine", affine),
                                                                           atol=1e-4):
                raise ValueError(f"{source}: the stored grid {spec['spatial_size']} does not match the grid "
                                 f"{list(size)} of the template at {space.voxel_size} mm; the model was trained in "
                                 "another template space.")
        return space

    def __repr__(self) -> str:
        return (f"BrainTemplateSpace(voxel_size={self.voxel_size}, registration_voxel_size="
                f"{self.registration_voxel_size}, margin_mm={self.margin_mm})")


@functools.lru_cache(maxsize=1)
def _afids() -> tuple[list[str], dict[str, np.ndarray]]:
    from monai_ext.data.synthetic.brain import afids_landmarks

    return afids_landmarks()


@functools.lru_cache(maxsize=8)
def _grid(voxel_size: int, margin_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    from monai_ext.data.synthetic.brain import crop_grid, load_mni152_tissues

    return crop_grid(_afids()[1]["groundtruth"], load_mni152_tissues(voxel_size), margin_mm)


def generate_brain_test_dataset(out_dir: str | os.PathLike, seed: int = 0, num_test: int = 3,
                                voxel_size: int = 1, oblique: bool = True, neck: bool = True) -> Path:
    """Write the brain model's extra test sets (``brain_evaluate.json``), besides those of
    :func:`~monai_ext.data.synthetic.brain.generate_synthetic_brain_dataset`.

    - ``test_template_t1``: the MNI152 template with its own T1 intensities (no contrast change, no artefact,
      skull-stripped), posed within +-8 deg, +-8 % and +-4 mm and deformed by the generator's subject-like elastic
      field (3 mm per component smoothed over 20 mm: about 4 mm of non-affine displacement at the fiducials, the
      baseline error measured on a real brain of another subject in issue 16). The bundle's AFIDs test instances
      (:func:`~monai_ext.apps.aneurysm.afids.generate_afids_mni152_dataset`) are nearly affine copies of the template,
      which an affine alignment undoes almost entirely, so the trivial baseline is nearly exact on them.
    - ``test_t1_whole`` / ``test_t1_skull_whole``: synthetic T1 brains (default pose and shape) on the template's
      whole-head grid, skull-stripped and the same brains with skull and scalp: a scan's usual field of view. (The
      generator's ``test_t1_skull`` is cut to the fiducials' box, which leaves a truncated head.)
    - ``test_t2_whole`` / ``test_pd_whole``: the same brains in the held-out T2-like and PD-like contrasts,
      skull-stripped, whole-head grid (the generator's ``test_t2`` / ``test_pd`` are cut to the fiducials' box,
      where less of the brain guides the alignment).
    - ``test_t1_skull_oblique`` (``oblique``): the ``test_t1_skull_whole`` brains stored as a scanner in native space
      would store them: resampled (trilinear) onto an oblique grid rotated by up to 30 degrees about each axis, with
      anisotropic ``(1.0, 1.2, 1.5) * voxel_size`` mm voxels, covering the whole original field of view. The
      physical image is the same (up to the interpolation's blur), so the fiducials and raters files are shared.
    - ``test_t1_skull_neck`` (``neck``): the ``test_t1_skull_whole`` heads with a synthetic neck below them
      (:func:`add_synthetic_neck`: the field of view 80 mm longer downwards, as in a sagittal head scan): the
      extra tissue moves the centre of mass and the field-of-view centre that the alignment starts from. The head
      keeps its voxels and world position, so the fiducials and raters files are shared.

    The fiducials and the four AFIDs raters are moved with each image. Seeds ``1_000_003 * seed + 400_000 + i`` and
    ``+ 500_000 + i`` (disjoint from the generator's and from ``brain.json``'s training seeds).

    Returns:
        The datalist path (items ``image``, ``landmarks``, ``raters``; ``test`` is ``test_template_t1``).
    """
    import nibabel as nib

    from monai_ext.data.synthetic.brain import SynthesizeBraind

    out = Path(out_dir)
    for sub in ("images", "landmarks", "raters"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    space = BrainTemplateSpace(voxel_size=voxel_size)
    names, sets = space.landmarks
    raters = sorted(k for k in sets if k != "groundtruth")
    tpl = space.template
    whole = {"spatial_size": tpl.shape, "output_affine": tpl.affine}
    crop = {"spatial_size": space.spatial_size, "output_affine": space.affine}
    t1 = {"contrasts": ("t1",), "exclude": ()}
    specs = {
        "test_template_t1": (400_000, crop, {**t1, "skull_prob": 0.0, "jitter": 0.0, "template_mix": (1.0, 1.0),
                                             "texture": 0.0}, None,
                             {"rotate_range": np.deg2rad(8.0), "scale_range": 0.08, "translate_range": 4.0}),
        "test_t1_whole": (500_000, whole, {**t1, "skull_prob": 0.0}, "default", None),
        "test_t1_skull_whole": (500_000, whole, {**t1, "skull_prob": 1.0}, "default", None),
        "test_t2_whole": (500_000, whole, {"contrasts": ("t2",), "exclude": (), "skull_prob": 0.0}, "default", None),
        "test_pd_whole": (500_000, whole, {"contrasts": ("pd",), "exclude": (), "skull_prob": 0.0}, "default", None),
    }
    sections: dict[str, list[dict[str, Any]]] = {}
    for section, (offset, grid, contrast, artefacts, warp) in specs.items():
        gen = SynthesizeBraind(template=tpl, landmark_sets=sets, contrast=contrast, artefacts=artefacts, warp=warp,
                               **grid)
        items = []
        for i in range(int(num_test)):
            name = f"{section}_{i:03d}"
            sample = gen.synthesize(1_000_003 * int(seed) + offset + i)
            affine = np.asarray(sample["image"].affine, np.float64)
            nib.save(nib.Nifti1Image(np.asarray(sample["image"][0], np.float32), affine),
                     out / "images" / f"{name}.nii.gz")
            labels = np.asarray(sample["landmark_labels"])
            write_points_json(PointSet(list(names), labels, sample["landmarks"], "RAS", "mm", name),
                              out / "landmarks" / f"{name}.json")
            files = []
            for r, pts in zip(raters, sample["raters"], strict=True):
                ok = np.isfinite(pts).all(1)
                write_points_json(PointSet([n for n, k in zip(names, ok, strict=True) if k], labels[ok], pts[ok],
                                           "RAS", "mm", f"{name} {r}"), out / "raters" / f"{name}_{r}.json")
                files.append(f"raters/{name}_{r}.json")
            items.append({"image": f"images/{name}.nii.gz", "landmarks": f"landmarks/{name}.json", "raters": files,
                          "skull": bool(sample["skull"]), "contrast": sample["contrast"]})
        sections[section] = items
    def derived(kind: str, make: Any) -> list[dict[str, Any]]:
        """The with-skull whole-head images rewritten by ``make(volume, affine, i)``; fiducials and raters shared."""
        items = []
        for i, item in enumerate(sections["test_t1_skull_whole"]):
            img = nib.load(out / item["image"])
            vol, affine = make(np.asarray(img.dataobj, np.float32), np.asarray(img.affine, np.float64), i)
            name = Path(item["image"]).name.replace("_skull_whole_", f"_skull_{kind}_")
            nib.save(nib.Nifti1Image(vol, affine), out / "images" / name)
            items.append({**item, "image": f"images/{name}"})
        return items

    if oblique:
        rng = np.random.default_rng(1_000_003 * int(seed) + 600_000)
        sections["test_t1_skull_oblique"] = derived("oblique", lambda vol, affine, i: oblique_resample(
            vol, affine, rng.uniform(-30.0, 30.0, 3), np.array([1.0, 1.2, 1.5]) * voxel_size))
    if neck:
        sections["test_t1_skull_neck"] = derived("neck", lambda vol, affine, i: add_synthetic_neck(
            vol, affine, seed=1_000_003 * int(seed) + 700_000 + i))
    datalist = {"name": "brain_model_extra_test_sets",
                "description": "MNI152 (nilearn) with its own T1 intensities under subject-like deformations, and "
                "synthetic T1 brains on the whole-head grid with and without skull (the latter also on an oblique "
                "anisotropic grid and with a synthetic neck); AFIDs fiducials and raters "
                "(CC-BY-4.0, Lau et al. 2019, Taha et al. 2023) moved with the image.",
                "landmark_names": list(names), **sections, "test": sections["test_template_t1"]}
    path = out / "dataset.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path


def oblique_resample(volume: np.ndarray, affine: np.ndarray, rotation_deg: Sequence[float],
                     spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The same world image on an oblique grid: axes rotated by ``rotation_deg`` (x, y, z Euler angles) from the
    input's, voxels of ``spacing`` mm, the grid large enough to hold the input's whole field of view (0 outside it;
    trilinear interpolation).

    Returns:
        ``(volume, affine)``: float32 ``(X', Y', Z')`` and its ``4x4`` voxel-to-world affine.
    """
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from monai_ext.transforms import apply_matrix

    axes = Rotation.from_euler("xyz", np.asarray(rotation_deg, np.float64), degrees=True).as_matrix()
    src_axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    new = np.eye(4)
    new[:3, :3] = src_axes @ axes @ np.diag(np.asarray(spacing, np.float64))
    corners = np.array([[i, j, k] for i in (-0.5, volume.shape[0] - 0.5) for j in (-0.5, volume.shape[1] - 0.5)
                        for k in (-0.5, volume.shape[2] - 0.5)])
    world = apply_matrix(affine, corners)
    local = world @ np.linalg.inv(new[:3, :3]).T  # corner coordinates in the new voxel frame (origin at 0)
    lo, hi = local.min(0), local.max(0)
    shape = np.ceil(hi - lo).astype(int)
    new[:3, 3] = new[:3, :3] @ (lo + 0.5)
    to_src = np.linalg.inv(affine) @ new
    out = ndimage.affine_transform(volume, to_src[:3, :3], to_src[:3, 3], output_shape=tuple(int(v) for v in shape),
                                   order=1, cval=0.0)
    return out.astype(np.float32), new


#: T1-weighted intensities of the neck's tissues relative to subcutaneous fat (the brightest tissue of a T1 head;
#: ratios of the generator's T1 means: muscle about grey matter, cord about white matter, CSF, vertebral marrow)
NECK_T1_RELATIVE = {"fat": 1.0, "muscle": 0.45, "cord": 0.65, "csf": 0.2, "marrow": 0.75, "air": 0.0}


def add_synthetic_neck(volume: np.ndarray, affine: np.ndarray, length_mm: float = 80.0, seed: int = 0,
                       relative: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A T1-weighted head volume with a synthetic neck added below it: the grid is extended by ``length_mm``
    downwards (towards -S) and the new slices hold an elliptic neck (semi-axes 50-60 mm) under the head's centre:
    a subcutaneous fat ring 5-8 mm thick around muscle, a vertebral body, the spinal canal (CSF) with the cord, and
    the airway, drifting forwards or backwards by up to 10 mm along its length, with a 1 mm blur and noise of the
    image's background level. Intensities are ``relative`` (default :data:`NECK_T1_RELATIVE`) times the head's
    fat level (its 99.5th percentile). The head's voxels and world positions are unchanged.

    It is a test condition for the alignment, not an anatomical model: a real scan's field of view often reaches
    well below the head, which moves the centre of mass and the field-of-view centre the registration starts from.

    Args:
        volume: ``(X, Y, Z)`` head volume.
        affine: its voxel-to-world (RAS mm) affine; the third voxel axis must point superior (an axis-aligned grid
            such as the template's whole-head grid).
        length_mm: how far the neck reaches below the grid.
        seed: seed of the neck's shape, drift and noise.
        relative: tissue intensities relative to the fat level (keys of :data:`NECK_T1_RELATIVE`).

    Returns:
        ``(volume, affine)``: float32 ``(X, Y, Z + n)`` and the affine of the extended grid.

    Raises:
        ValueError: when the grid's third axis does not point superior, ``length_mm`` is not positive, or the
            volume has no head.
    """
    from scipy import ndimage

    vol = np.asarray(volume, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    lin = affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if vol.ndim != 3 or not (abs(lin[2, 2]) > 0.99 * spacing[2] and lin[2, 2] > 0):
        raise ValueError(f"add_synthetic_neck needs an (X, Y, Z) volume whose third voxel axis points superior, got "
                         f"shape {vol.shape} and affine columns {lin.T.round(3).tolist()}.")
    if not length_mm > 0:
        raise ValueError(f"length_mm must be positive, got {length_mm}.")
    rel = {**NECK_T1_RELATIVE, **(relative or {})}
    head = vol > 0.1 * float(np.percentile(vol, 99.5))
    if not head.any():
        raise ValueError("add_synthetic_neck: the volume has no head (nothing above a tenth of its 99.5th percentile).")
    fat = float(np.percentile(vol[head], 99.5))
    rng = np.random.default_rng(int(seed))
    n = int(round(float(length_mm) / spacing[2]))
    shift = np.eye(4)
    shift[2, 3] = -n
    new_affine = affine @ shift
    # the neck's axis: under the head's centre in x, under its lower half's centre in y (the brainstem's side)
    idx = np.argwhere(head)
    low = idx[idx[:, 2] <= np.percentile(idx[:, 2], 30)]
    centre = np.array([idx[:, 0].mean(), low[:, 1].mean()])
    a, b = rng.uniform(50.0, 60.0, 2) / spacing[:2]
    ring = rng.uniform(5.0, 8.0) / spacing[0]
    drift = rng.uniform(-10.0, 10.0) / spacing[1]
    x = np.arange(vol.shape[0])[:, None] - centre[0]
    y = np.arange(vol.shape[1])[None, :] - centre[1]
    mm = spacing[0]
    neck = np.zeros(vol.shape[:2] + (n,), dtype=np.float32)
    for k in range(n):
        t = (n - k) / n  # 1 at the bottom slice, near 0 where the neck meets the head
        yk = y - drift * t
        r = np.sqrt((x / a) ** 2 + (yk / b) ** 2)
        inside, core = r <= 1.0, r <= 1.0 - ring / max(a, b)
        sl = np.where(inside, rel["fat"], 0.0)
        sl = np.where(core, rel["muscle"], sl)

        # discs along the midline: vertebral body, spinal canal (CSF) with the cord, airway (y offset mm, radius mm)
        for cy_mm, radius_mm, tissue in ((-5.0, 9.0, "marrow"), (-22.0, 7.0, "csf"), (-22.0, 4.0, "cord"),
                                         (22.0, 7.0, "air")):
            sl = np.where((x * mm) ** 2 + (yk * mm - cy_mm) ** 2 <= radius_mm**2, rel[tissue], sl)
        neck[:, :, k] = sl * fat
    neck = ndimage.gaussian_filter(neck, 1.0 / spacing, mode="nearest")
    corner = vol[: max(vol.shape[0] // 10, 1), : max(vol.shape[1] // 10, 1), -max(vol.shape[2] // 10, 1):]
    neck = neck + rng.normal(0.0, float(corner.std()), neck.shape).astype(np.float32) + float(corner.mean())
    return np.concatenate([np.clip(neck, 0.0, None).astype(np.float32), vol], axis=2), new_affine


def brain_test_datalist(output_dir: str | os.PathLike, seed: int = 0, num_test: int = 3, voxel_size: int = 1,
                        oblique: bool = True, neck: bool = True) -> Path:
    """:func:`generate_brain_test_dataset` under ``<output_dir>/brain_test_data``, written once
    (:func:`~monai_ext.data.resolve_datalist`; a folder written with other arguments is written again)."""
    from monai_ext.data import resolve_datalist

    return resolve_datalist(None, output_dir, generate_brain_test_dataset,
                            {"seed": int(seed), "num_test": int(num_test), "voxel_size": int(voxel_size),
                             "oblique": bool(oblique), "neck": bool(neck)}, folder_name="brain_test_data")
