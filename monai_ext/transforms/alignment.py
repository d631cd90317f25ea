"""Affine pre-alignment of a volume to a template with ITK, so that template-space models can read it.

A landmark model that searches around template positions (the aneurysm bundle's localisation) needs its input in
the template's space; real scans come in any pose, field of view and contrast. :func:`register_affine` estimates
the affine map between the template and the input with ITK's registration framework (``ImageRegistrationMethodv4``;
Avants et al., "The Insight ToolKit image registration framework", Frontiers in Neuroinformatics 8:44, 2014): Mattes
mutual information (Mattes et al., "PET-CT image registration in the chest using free-form deformations", IEEE TMI
22(1), 2003), which needs no shared intensity scale and so works across contrasts, optimised by regular-step
gradient descent in a multi-resolution pyramid, first as a similarity transform (rotation, translation, one scale)
and then as a full affine. :class:`AlignToTemplated` runs it inside a MONAI pipeline: it resamples the input onto a
template grid, writes the template's brain mask on that grid (for
:class:`~monai_ext.transforms.intensity.MaskedPercentileNormalized`) and keeps the map, so points found on the
template grid go back to the input's RAS mm with :func:`~monai_ext.transforms.spatial.apply_matrix`.

Coordinates: every matrix here is a ``4x4`` map between RAS world coordinates in mm (nibabel / MONAI MetaTensor
convention); ITK's LPS physical space is converted internally.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from scipy import ndimage

from .intensity import foreground_mask
from .spatial import apply_matrix, resample_to_grid

__all__ = [
    "AlignToTemplated",
    "AlignToTemplateD",
    "AlignToTemplateDict",
    "clip_spikes",
    "register_affine",
    "rotation_angle_deg",
]

logger = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPIKE_RATIO = 10.0  # clip_spikes' default: bright tissue of the synthetic test heads reaches 6.6 (see there)
_TRANSFORMS = ("similarity", "affine")


def _volume(img: NdarrayOrTensor, affine: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y, Z)`` float32 array and its ``4x4`` affine from a ``(1, X, Y, Z)`` / ``(X, Y, Z)`` input."""
    if affine is None:
        affine = np.asarray(img.affine, np.float64) if isinstance(img, MetaTensor) else np.eye(4)
    x = np.asarray(convert_to_tensor(img, track_meta=False).float().cpu())
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{what} must be a single-channel 3D volume (1, X, Y, Z) or (X, Y, Z), got {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} holds NaN or infinite values.")
    return x, np.asarray(affine, dtype=np.float64)


def clip_spikes(vol: np.ndarray, spike_ratio: float | None = SPIKE_RATIO, percentiles: tuple[float, float] = (0.1, 99.9)
                ) -> tuple[np.ndarray, int]:
    """``vol`` with isolated intensity spikes clipped, and how many voxels were clipped.

    Mattes mutual information bins each image's intensities between its minimum and maximum: a few voxels far
    outside the tissue range (a reconstruction spike, a corrupted or mis-scaled voxel, a marker) squash every tissue
    into one or two bins, the metric goes flat (-0.0003 to -0.001 instead of -0.07 to -0.39 on the heads below) and
    the registration wanders. With ``lo, hi`` the ``percentiles`` of ``vol`` and ``span = hi - lo``, when the
    maximum exceeds ``hi + spike_ratio * span`` the values above ``hi`` are set to ``hi`` (likewise below ``lo`` when
    the minimum is under ``lo - spike_ratio * span``); a side without such an outlier is left untouched. Idempotent.

    On the aneurysm bundle's evaluation heads cut to the AFIDs fiducials' box, 20 voxels at 1000 times the maximum
    left 4 to 7 of each row's 8 heads more than 10 mm off; clipped, every row was as close as without spikes (results
    file ``aneurysm/brain_alignment_spikes``, bundle README "Intensity spikes"). The default ratio, 10, sits above
    the brightest tissue of the bundle's synthetic heads: on its 100 evaluation and validation images (local check,
    2026-12-07) the maximum lay at most 6.6 spans above ``hi`` (a few bright scalp voxels of a head with skull cut
    to a box), 3.6 after the registration's resampling and bias correction, so none of them is clipped. A lower
    ratio clips such tissue too, as ANTs' ``--winsorize-image-intensities`` does on every image; not adopted.

    Args:
        vol: the volume (any shape, finite).
        spike_ratio: how far (in ``span``) beyond the percentile range a value must lie to count as a spike
            (``None``: never clip).
        percentiles: ``(lower, upper)`` percentiles of the tissue range, in ``[0, 100]``.

    Raises:
        ValueError: for a ``spike_ratio`` that is not positive or percentiles that are not ``0 <= lower < upper <=
            100``.
    """
    if spike_ratio is None:
        return vol, 0
    lower, upper = (float(v) for v in percentiles)
    if not spike_ratio > 0 or not 0 <= lower < upper <= 100:
        raise ValueError(f"spike_ratio must be positive (or None) and percentiles 0 <= lower < upper <= 100, got "
                         f"{spike_ratio!r} and {percentiles!r}.")
    lo, hi = (float(v) for v in np.percentile(vol, [lower, upper]))
    span = hi - lo
    if not span > 0:
        return vol, 0
    top = float(vol.max()) > hi + spike_ratio * span
    bottom = float(vol.min()) < lo - spike_ratio * span
    if not (top or bottom):
        return vol, 0
    count = int((vol > hi).sum()) * top + int((vol < lo).sum()) * bottom
    return np.clip(vol, lo if bottom else None, hi if top else None).astype(vol.dtype, copy=False), count


def _block_mean(vol: np.ndarray, affine: np.ndarray, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ``factor`` voxel blocks (per axis); the affine moves to the blocks' centres."""
    f = [int(v) for v in factor]
    s = [n // k * k for n, k in zip(vol.shape, f, strict=True)]
    x = vol[: s[0], : s[1], : s[2]].reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean((1, 3, 5))
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = (np.array(f) - 1) / 2.0
    return x.astype(np.float32), affine @ scale


def _smooth_resample(vol: np.ndarray, affine: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample along the voxel axes to ``ratio`` times the voxel size (``ratio >= 1`` per axis, need not be an
    integer), after a Gaussian anti-aliasing filter of ``(ratio - 1) / 2`` input voxels; output voxel 0 stays at
    input voxel 0 and the affine scales its columns by ``ratio``."""
    r = np.maximum(np.asarray(ratio, dtype=np.float64), 1.0)
    smooth = ndimage.gaussian_filter(vol.astype(np.float32, copy=False), sigma=(r - 1.0) / 2.0, mode="nearest")
    shape = tuple(int(np.floor((n - 1) / k + 1e-9)) + 1 for n, k in zip(vol.shape, r, strict=True))
    out = ndimage.affine_transform(smooth, r, output_shape=shape, order=1, mode="nearest")
    scale = np.eye(4)
    scale[:3, :3] = np.diag(r)
    return out.astype(np.float32), affine @ scale


def _to_itk(vol: np.ndarray, affine: np.ndarray, pixel: Any = None) -> Any:
    import itk

    arr = np.ascontiguousarray(vol.transpose(2, 1, 0))  # ITK index (i, j, k) is numpy [k, j, i]
    img = itk.image_from_array(arr.astype(np.float32) if pixel is None else arr.astype(pixel))
    lps = _LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:3, :3] / spacing)))
    return img


def _centre_of_mass(vol: np.ndarray, affine: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    w = np.clip(vol, 0, None) * (mask if mask is not None else 1.0)
    if not w.sum() > 0:
        return affine[:3, :3] @ ((np.array(vol.shape) - 1) / 2) + affine[:3, 3]
    com = np.array(ndimage.center_of_mass(w))
    return affine[:3, :3] @ com + affine[:3, 3]


def _n4_corrected(vol: np.ndarray, affine: np.ndarray, voxel_mm: float) -> np.ndarray:
    """``vol`` divided by the N4 bias field fitted inside its foreground mask on a grid of about ``voxel_mm``."""
    import itk

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factor = np.maximum(np.round(float(voxel_mm) / spacing).astype(int), 1)
    small, _ = _block_mean(vol, affine, factor)
    small = np.clip(small, 0, None).astype(np.float32)
    mask = foreground_mask(small).astype(np.uint8)
    if mask.sum() < 27:
        return vol
    image_f, image_uc = itk.Image[itk.F, 3], itk.Image[itk.UC, 3]
    n4 = itk.N4BiasFieldCorrectionImageFilter[image_f, image_uc, image_f].New()
    n4.SetInput(itk.image_from_array(np.ascontiguousarray(small.transpose(2, 1, 0)) + 1e-3))
    n4.SetMaskImage(itk.image_from_array(np.ascontiguousarray(mask.transpose(2, 1, 0))))
    n4.SetNumberOfFittingLevels(3)
    n4.SetMaximumNumberOfIterations([50, 50, 30])
    n4.Update()
    corrected = itk.array_from_image(n4.GetOutput()).transpose(2, 1, 0)
    log_field = np.log(np.maximum(small + 1e-3, 1e-6) / np.maximum(corrected, 1e-6))
    log_field = np.where(mask > 0, log_field, float(np.median(log_field[mask > 0])))
    log_field = ndimage.gaussian_filter(log_field, 1.0)
    full = ndimage.zoom(log_field, np.array(vol.shape) / np.array(log_field.shape), order=1)
    return (vol / np.exp(full)).astype(np.float32)


def _prepared_moving(mvol: np.ndarray, maff: np.ndarray, faff: np.ndarray, bias_correction: bool,
                     bias_voxel_mm: float, num_threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """The moving volume the registration sees: brought to about the fixed grid's finest voxel size where it is
    finer (a finer moving image only costs time: ITK smooths and samples it at every level), then bias-corrected
    (N4, on ``num_threads`` ITK threads: its result depends slightly on the thread count) when asked.

    Axes whose voxel size divides the target an integer number of times are block-averaged (a 1 mm input becomes
    2 mm exactly, as it always was); what remains finer than the target by more than 5 % (voxel sizes such as 1.2 or
    1.5 mm, of anisotropic and oblique scans) is smoothed and resampled to the target. Idempotent: a prepared volume
    passes through unchanged (with ``bias_correction=False``)."""
    if bias_correction and num_threads is not None:
        import itk

        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(num_threads))
    target = np.linalg.norm(faff[:3, :3], axis=0).min()
    factor = np.floor(target / np.linalg.norm(maff[:3, :3], axis=0) + 1e-6).astype(int)
    if (factor > 1).any():
        mvol, maff = _block_mean(mvol, maff, np.maximum(factor, 1))
    ratio = target / np.linalg.norm(maff[:3, :3], axis=0)
    if (ratio > 1.05).any():
        mvol, maff = _smooth_resample(mvol, maff, np.where(ratio > 1.05, ratio, 1.0))
    if bias_correction:
        mvol = _n4_corrected(mvol, maff, bias_voxel_mm)
    return mvol, maff


#: the :func:`register_affine` settings :class:`AlignToTemplated` takes through ``**kwargs`` (the images, masks,
#: affines and starts are its own)
REGISTRATION_OPTIONS = ("transform", "shrink_factors", "smoothing_mm", "iterations", "sampling", "bins", "seed",
                        "num_threads", "bias_correction", "bias_voxel_mm", "spike_ratio")
#: every setting of :class:`AlignToTemplated` but its data, keys and output grid: its own (starts, overlap, output
#: clipping) and :data:`REGISTRATION_OPTIONS` (what a model stores as its alignment settings)
ALIGNMENT_SETTINGS = (*REGISTRATION_OPTIONS, "start_tolerance_mm", "min_overlap", "head_height_mm", "inverse_fallback",
                      "inverse_start_overlap", "clip_output")


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle (degrees) of the rotation part of a ``3x3`` / ``4x4`` matrix (polar decomposition, scale removed)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64)[:3, :3])
    rot = u @ vt
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))))


def register_affine(
    fixed: NdarrayOrTensor,
    moving: NdarrayOrTensor,
    fixed_affine: np.ndarray | None = None,
    moving_affine: np.ndarray | None = None,
    fixed_mask: NdarrayOrTensor | None = None,
    transform: str = "affine",
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_mm: Sequence[float] = (4.0, 2.0, 0.0),
    iterations: Sequence[int] = (200, 100, 50),
    sampling: float | Sequence[float] | None = None,
    bins: int = 32,
    seed: int = 0,
    num_threads: int | None = 1,
    return_info: bool = False,
    bias_correction: bool = False,
    bias_voxel_mm: float = 4.0,
    initial: np.ndarray | None = None,
    spike_ratio: float | None = SPIKE_RATIO,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Affine map from ``fixed`` (the template) to ``moving`` (the input), by maximising mutual information.

    The returned ``4x4`` matrix ``T`` maps a fixed RAS point (mm) to the corresponding moving RAS point: resample
    the input onto the template grid by sampling it at ``T @ x``, and map a point ``p`` found in template space back
    to the input with ``T @ p``. Initialisation: the translation between the intensity centres of mass (the moving
    one inside its :func:`~monai_ext.transforms.intensity.foreground_mask`). Then ITK's ``ImageRegistrationMethodv4``
    with the Mattes mutual information metric (``bins`` histogram bins, a random ``sampling`` fraction of the fixed
    voxels inside ``fixed_mask``, ``seed`` fixed) and regular-step gradient descent with scales from physical shift,
    over the levels ``shrink_factors`` / ``smoothing_mm`` / ``iterations``: a similarity transform on every level,
    then (``transform="affine"``) a full affine on the last two levels.

    Args:
        fixed: the template, ``(1, X, Y, Z)`` or ``(X, Y, Z)``; a MetaTensor gives its affine.
        moving: the input volume, same conventions; any contrast, field of view and voxel size.
        fixed_affine: ``4x4`` affine of ``fixed`` (overrides a MetaTensor's).
        moving_affine: ``4x4`` affine of ``moving``.
        fixed_mask: region of the fixed image where the metric is evaluated (e.g. the template's brain mask,
            dilated a few mm), same grid as ``fixed``.
        transform: ``"similarity"`` (7 parameters) or ``"affine"`` (12).
        shrink_factors: pyramid shrink factor per level.
        smoothing_mm: Gaussian smoothing sigma (mm) per level.
        iterations: maximum optimiser iterations per level.
        sampling: fraction of the fixed voxels sampled by the metric, in ``(0, 1]``, one for all levels or one per
            level; ``None``: every voxel on all levels but the finest, half of them there (coarse levels have few
            voxels: sampling them all keeps the metric smooth enough for low-contrast inputs such as proton
            density).
        bins: histogram bins of the metric.
        seed: seed of the metric's random sampling (the result is deterministic for a given seed and thread count).
        num_threads: ITK threads for this call (``None``: ITK's default).
        return_info: also return ``{"seconds", "metric", "iterations"}``.
        bias_correction: register a bias-field-corrected copy of ``moving`` (ITK's N4, Tustison et al., IEEE TMI
            2010, fitted inside its foreground mask on a grid of about ``bias_voxel_mm`` mm and divided out at full
            resolution); only the registration sees it. A strong bias field (e.g. a head with skull cut to a small
            box) can otherwise make the registration diverge.
        bias_voxel_mm: voxel size (mm) of the grid N4 is fitted on.
        initial: ``4x4`` fixed-to-moving RAS matrix to start from (e.g. another start when the default one
            diverged); the similarity levels start from its closest rotation and isotropic scale (polar
            decomposition) mapping the fixed centre of mass to the same point, the affine levels from the similarity
            result as usual.

    Returns:
        The ``4x4`` fixed-to-moving RAS matrix (and the info dict with ``return_info``).

    Raises:
        ValueError: for an unknown ``transform``, levels of different lengths, a sampling fraction outside
            ``(0, 1]``, volumes that are not single-channel 3D or hold non-finite values, a mask of another shape or
            an empty one, or an ``initial`` that is not a finite, invertible, orientation-preserving ``4x4`` affine.
        RuntimeError: when ITK's registration fails (e.g. a ``fixed_mask`` of a few voxels, which leaves no metric
            samples on a coarse level), with ITK's message, the shrink factors and the mask's size.

    Example::

        >>> import numpy as np
        >>> x = np.zeros((40, 40, 40), np.float32); x[10:30, 12:28, 14:26] = 1.0; x[14:20, 16:22, 17:21] = 2.0
        >>> y = np.roll(x, 3, axis=0)  # the input is the template shifted by +3 voxels along x
        >>> mask = np.zeros(x.shape, bool); mask[6:34, 8:32, 10:30] = True  # the template's object and a margin
        >>> t = register_affine(x, y, fixed_mask=mask, transform="similarity", shrink_factors=(2, 1),
        ...                     smoothing_mm=(2.0, 1.0), iterations=(100, 100))
        >>> bool(abs(t[0, 3] - 3.0) < 0.5 and abs(t[0, 0] - 1.0) < 0.03)
        True

    Give ``fixed_mask`` where the template has a wide empty background: without it, mutual information over the
    whole field rewards shrinking the moving image (about 5 % on the example above).
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}.")
    if not len(shrink_factors) == len(smoothing_mm) == len(iterations) or len(shrink_factors) == 0:
        raise ValueError(f"shrink_factors, smoothing_mm and iterations need one value per level, got "
                         f"{list(shrink_factors)}, {list(smoothing_mm)}, {list(iterations)}.")
    init_ras = None
    if initial is not None:
        init_ras = np.asarray(initial, dtype=np.float64)
        if init_ras.shape != (4, 4) or not np.isfinite(init_ras).all() or not np.allclose(init_ras[3], [0, 0, 0, 1]) \
                or np.linalg.det(init_ras[:3, :3]) <= 1e-6:
            raise ValueError("initial must be a finite 4x4 affine (last row 0 0 0 1) with a positive determinant, got "
                             f"{np.array2string(init_ras, precision=3) if init_ras.size <= 16 else init_ras.shape}.")
    if sampling is None:
        sampling = [1.0] * (len(shrink_factors) - 1) + [0.5]
    samp = np.broadcast_to(np.asarray(sampling, dtype=np.float64), (len(shrink_factors),)).copy() if np.ndim(
        sampling) == 0 or len(sampling) == len(shrink_factors) else None  # type: ignore[arg-type]
    if samp is None or not ((samp > 0) & (samp <= 1)).all():
        raise ValueError(f"sampling must be one fraction in (0, 1] or one per level ({len(shrink_factors)}), "
                         f"got {sampling}.")
    import itk

    t0 = time.perf_counter()
    if num_threads is not None:
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(num_threads))
    fvol, faff = _volume(fixed, fixed_affine, "fixed")
    fvol = clip_spikes(fvol, spike_ratio)[0]
    mvol, maff = _volume(moving, moving_affine, "moving")
    mvol, maff = _prepared_moving(clip_spikes(mvol, spike_ratio)[0], maff, faff, bias_correction, bias_voxel_mm,
                                  num_threads)
    fmask = None
    if fixed_mask is not None:
        fmask = np.asarray(convert_to_tensor(fixed_mask, track_meta=False).cpu()) > 0.5
        fmask = fmask.reshape(fmask.shape[-3:]) if fmask.ndim == 4 else fmask
        if fmask.shape != fvol.shape:
            raise ValueError(f"fixed_mask has shape {fmask.shape}, fixed {fvol.shape}.")
        if not fmask.any():
            raise ValueError("fixed_mask selects no voxel: the metric would have no samples.")
    # moments initialisation in RAS, then everything in ITK's LPS physical space
    c_fixed = _centre_of_mass(fvol, faff, fmask)
    c_moving = _centre_of_mass(mvol, maff, foreground_mask(mvol))
    scale = max(float(np.percentile(fvol[fmask] if fmask is not None else fvol, 99)), 1e-12)
    fimg = _to_itk(fvol / scale, faff)
    mimg = _to_itk(mvol / max(float(np.percentile(mvol, 99)), 1e-12), maff)
    image_type = itk.Image[itk.F, 3]
    centre = (_LPS[:3, :3] @ c_fixed).tolist()
    shift = (_LPS[:3, :3] @ (c_moving - c_fixed)).tolist()
    start_rotation = None
    if init_ras is not None:  # closest similarity: M = U S V^T -> R = U V^T, s = det(M)^(1/3); same image of the centre
        u, _, vt = np.linalg.svd(init_ras[:3, :3])
        scale0 = float(np.cbrt(np.linalg.det(init_ras[:3, :3])))
        start_rotation = _LPS[:3, :3] @ (u @ vt) @ _LPS[:3, :3]
        moved = init_ras[:3, :3] @ c_fixed + init_ras[:3, 3]
        shift = (_LPS[:3, :3] @ (moved - c_fixed)).tolist()

    def run(tfm: Any, levels: slice) -> tuple[float, int]:
        metric = itk.MattesMutualInformationImageToImageMetricv4[image_type, image_type].New()
        metric.SetNumberOfHistogramBins(int(bins))
        if fmask is not None:
            mask_obj = itk.ImageMaskSpatialObject[3].New()
            mask_obj.SetImage(_to_itk(fmask, faff, np.uint8))
            mask_obj.Update()
            metric.SetFixedImageMask(mask_obj)
        scales = itk.RegistrationParameterScalesFromPhysicalShift[type(metric)].New()
        scales.SetMetric(metric)
        optimizer = itk.RegularStepGradientDescentOptimizerv4[itk.D].New()
        optimizer.SetLearningRate(1.0)
        optimizer.SetMinimumStepLength(1e-3)
        optimizer.SetRelaxationFactor(0.6)
        optimizer.SetNumberOfIterations(int(max(iterations[levels])))
        optimizer.SetScalesEstimator(scales)
        reg = itk.ImageRegistrationMethodv4[image_type, image_type].New()
        reg.SetFixedImage(fimg)
        reg.SetMovingImage(mimg)
        reg.SetMetric(metric)
        reg.SetOptimizer(optimizer)
        reg.SetInitialTransform(tfm)
        reg.InPlaceOn()
        shrink, smooth = list(shrink_factors[levels]), list(smoothing_mm[levels])
        reg.SetNumberOfLevels(len(shrink))
        reg.SetShrinkFactorsPerLevel(shrink)
        reg.SetSmoothingSigmasPerLevel(smooth)
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetMetricSamplingStrategy(itk.ImageRegistrationMethodv4Enums.MetricSamplingStrategy_RANDOM)
        reg.SetMetricSamplingPercentagePerLevel([float(v) for v in samp[levels]])
        reg.MetricSamplingReinitializeSeed(int(seed))
        try:
            reg.Update()
        except RuntimeError as err:  # ITK's message names its own classes, not the argument at fault
            region = f"fixed_mask of {int(fmask.sum())} voxels" if fmask is not None else "no fixed_mask"
            raise RuntimeError(f"register_affine: ITK's registration failed at shrink factors {shrink} with a "
                               f"{region} (a mask of a few voxels leaves the metric no samples on coarse levels): "
                               f"{str(err).strip().splitlines()[-1]}") from err
        return float(optimizer.GetValue()), int(optimizer.GetCurrentIteration())

    sim = itk.Similarity3DTransform[itk.D].New()
    sim.SetCenter(centre)
    if start_rotation is not None:
        sim.SetMatrix(itk.matrix_from_array(np.ascontiguousarray(start_rotation)))
        sim.SetScale(scale0)
    sim.SetTranslation(shift)
    value, its = run(sim, slice(None))
    final: Any = sim
    if transform == "affine":
        aff = itk.AffineTransform[itk.D, 3].New()
        aff.SetCenter(sim.GetCenter())
        aff.SetMatrix(sim.GetMatrix())
        aff.SetTranslation(sim.GetTranslation())
        start = max(len(shrink_factors) - 2, 0)
        value, its = run(aff, slice(start, None))
        final = aff
    lps = np.eye(4)
    lps[:3, :3] = itk.array_from_matrix(final.GetMatrix())
    lps[:3, 3] = np.asarray(final.GetOffset())
    ras = _LPS @ lps @ _LPS
    if return_info:
        return ras, {"seconds": time.perf_counter() - t0, "metric": value, "iterations": its}
    return ras


class AlignToTemplated(MapTransform):
    """Register each image to a template (:func:`register_affine`) and resample it onto a template grid.

    For every key, the input ``(C, X, Y, Z)`` MetaTensor is replaced by its resampling on the output grid
    (``spatial_size`` / ``output_affine``, template world; default: the template's grid), trilinear, 0 outside. The
    fixed-to-input matrix is written to ``data[matrix_key]`` (``4x4``, template RAS to input RAS) and into the
    image's meta (``"template_to_image"``; the original affine is kept under ``"original_affine"``); with
    ``brain_mask`` given, its resampling on the output grid, restricted to the voxels that lie inside the input's
    field of view (:meth:`field_of_view`), is written to ``data[mask_key]`` (uint8): statistics taken inside it (e.g.
    :class:`~monai_ext.transforms.MaskedPercentileNormalize`) never count the zero padding of a cut field of view.
    Points found on the output grid (world mm) go back to the input with ``apply_matrix(data[matrix_key], points)``.

    Two starts: the registration starts from the centres of mass (:func:`register_affine`) and, when the input's
    field-of-view centre lies more than ``start_tolerance_mm`` from its centre of mass (a scan cut off-centre through
    the head, and most whole-head scans: a head with its neck is seldom centred on its grid), also from a translation
    that puts the template's centre of mass at the field-of-view centre. The result kept is the one with the better
    (lower) metric among those that keep at least ``min_overlap`` of the template mask inside the input's grid (a
    run that slid off the scan can score well on a sliver of overlap). On 36 synthetic test heads (local
    experiment, 2026-12-06) the second start rescued 1 of the 3 heads with skull cut to the AFIDs fiducials' box
    that the first one misaligned by more than 30 mm, and never made an alignment worse by more than 0.01 mm; the
    aneurysm bundle's brain evaluation shows the effect on each row (``brain_evaluation_one_start``).
    A third start serves scans whose field of view reaches well below the head (neck, shoulders), which pull both
    the centre of mass and the field-of-view centre down: when the input's foreground extends more than
    ``head_height_mm`` below its highest point (world superior, +S), the template's centre of mass is also put at
    the centre of mass of the foreground within ``head_height_mm`` of that top, the part a head occupies (the idea
    of FSL's ``robustfov``, which crops 170 mm below the top of the head; Jenkinson et al., NeuroImage 2012). It is
    computed on the registration's prepared copy of the input.
    A fallback serves scans whose field of view holds only part of the brain (a slab, a box cut around a region):
    the template is the fixed image, so its mask samples that fall outside such a scan drop out of the metric and a
    run can slide until only a sliver of overlap is left, from every start. When no start keeps ``min_overlap``
    (and ``inverse_fallback``), the registration is run once more the other way round, the input as the fixed
    image (every voxel of the scan counts) and the template as the moving one, from the centres of mass; its
    inverse is kept when it keeps ``min_overlap`` (its metric, recorded as the start ``"inverse"``, is that of the
    swapped problem and is not compared with the others). On the aneurysm bundle's brain test heads cut to the
    AFIDs fiducials' box (local experiment, 2026-12-06) it was tried on 3 of 32 heads, all of whose starts had
    slid off, and kept on 2 (bundle README, "Alignment and its limits").
    A last start serves the same scans before they fail: when the kept start leaves more than a sliver of the
    template mask outside the scan (its overlap below ``inverse_start_overlap``; a whole-head scan keeps all of it),
    the swapped registration (the input fixed, the template moving, from the centres of mass) is run and its inverse
    starts one more template-fixed run (recorded as ``"from_inverse"``, its seconds including the swapped run's),
    compared with the others on the same metric and overlap rule. The swapped run is robust where the template-fixed
    starts are not (no sample can leave the scan) but less accurate on whole heads (skull, scalp and neck count as
    much as the brain), hence a start, not a result. On development heads cut to the AFIDs fiducials' box (synthetic,
    seed 7, disjoint from the evaluation's; the aneurysm bundle's ``brain_alignment.json``, results file
    ``aneurysm/brain_alignment_dev``, bundle README "Start from the swapped registration") the template-fixed starts
    left one of 10 heads with skull and one of 10 T2-like boxes 40-55 mm off (mean error of the aligned fiducials);
    with this start both were within 5 mm, and no other head of those rows moved by more than 0.1 mm. On 4 whole
    heads (overlap 0.99-1.00, where the rule does not run it) the swapped run was 10-15 mm off and the
    template-fixed run from it 3-20 mm, against 3-5 mm for the other starts (local experiment). The fallback above
    reuses the swapped run (not run twice).
    The input's isolated intensity spikes are clipped (:func:`clip_spikes`, ``spike_ratio`` in ``kwargs``, a
    warning logged naming the file), then it is brought to the registration grid (block means, smoothing) and
    bias-corrected, once for all starts. With ``clip_output`` the first key's output is resampled from the clipped
    values too (a model reading it never sees the spikes); the other keys (e.g. labels) are never clipped.
    ``data[info_key]`` (and ``last_info``, see :meth:`register`) records the kept start, its metric, overlap,
    iterations and seconds, the seconds of that preparation (``"preparation_seconds"``), the number of voxels
    clipped as spikes (``"spikes_clipped"``) and every start tried (``"starts"``). A call keeps no per-call state
    on the instance: one transform may serve several threads at once (a ``CacheDataset`` with ``num_workers``).

    Args:
        keys: image keys (the first is registered; the others share its matrix).
        template: registration target ``(1, X, Y, Z)`` MetaTensor (e.g. the MNI152 T1 at 2 mm).
        template_mask: metric mask on the template's grid (e.g. its brain mask dilated by a few mm), or ``None``.
        brain_mask: brain mask MetaTensor (any grid in template space) written on the output grid, or ``None``.
        spatial_size: output grid shape (``None``: the template's).
        output_affine: output grid affine (with ``spatial_size``).
        mask_key: key of the written mask.
        matrix_key: key of the written matrix.
        allow_missing_keys: don't raise for missing keys.
        info_key: key of the written alignment record (``None``: not written).
        start_tolerance_mm: distance between the input's centre of mass and its field-of-view centre beyond which
            the second start is tried (``None``: never; ``0``: always).
        min_overlap: fraction of the template mask that must map inside the input's grid for a start's result to be
            preferred on its metric.
        head_height_mm: extent (mm, along world superior) of the head below its top used by the third start, which
            is tried when the input's foreground extends further down (``None``: never).
        inverse_fallback: run the registration with fixed and moving swapped when no start keeps ``min_overlap``
            (see above).
        inverse_start_overlap: start one more template-fixed run from the swapped registration when the best start
            keeps less than this fraction of the template mask inside the scan (see above; ``None``: never, ``1``:
            whenever part of it lies outside).
        clip_output: resample the first key from its values with the spikes clipped, when the registration found
            any (see above; ``False``: from the input as it is).
        kwargs: :func:`register_affine` arguments (``transform``, ``shrink_factors``, ``sampling``, ...).

    Raises:
        ValueError: when only one of ``spatial_size`` / ``output_affine`` is given, a negative
            ``start_tolerance_mm``, a ``min_overlap`` outside ``[0, 1]``, a ``head_height_mm`` that is not positive,
            or ``initial`` in ``kwargs`` (the starts are this transform's).
    """

    def __init__(self, keys: KeysCollection, template: MetaTensor, template_mask: NdarrayOrTensor | None = None,
                 brain_mask: MetaTensor | None = None, spatial_size: Sequence[int] | None = None,
                 output_affine: np.ndarray | None = None, mask_key: str = "brain_mask",
                 matrix_key: str = "template_to_image", allow_missing_keys: bool = False,
                 info_key: str | None = "template_alignment", start_tolerance_mm: float | None = 10.0,
                 min_overlap: float = 0.5, head_height_mm: float | None = 170.0, inverse_fallback: bool = True,
                 inverse_start_overlap: float | None = 0.95, clip_output: bool = True, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        if (spatial_size is None) != (output_affine is None):
            raise ValueError("give both spatial_size and output_affine, or neither.")
        if start_tolerance_mm is not None and not start_tolerance_mm >= 0:
            raise ValueError(f"start_tolerance_mm must be >= 0 or None, got {start_tolerance_mm}.")
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}.")
        if inverse_start_overlap is not None and not 0.0 <= inverse_start_overlap <= 1.0:
            raise ValueError(f"inverse_start_overlap must be in [0, 1] or None, got {inverse_start_overlap}.")
        if head_height_mm is not None and not head_height_mm > 0:
            raise ValueError(f"head_height_mm must be positive or None, got {head_height_mm}.")
        if "initial" in kwargs:
            raise ValueError("AlignToTemplated chooses its own starts: do not pass 'initial'.")
        unknown = sorted(set(kwargs) - set(REGISTRATION_OPTIONS))
        if unknown:
            raise ValueError(f"AlignToTemplated: unknown register_affine arguments {unknown}; the settings are "
                             f"{sorted(REGISTRATION_OPTIONS)}.")
        self.head_height_mm = None if head_height_mm is None else float(head_height_mm)
        self.inverse_fallback = bool(inverse_fallback)
        self.inverse_start_overlap = None if inverse_start_overlap is None else float(inverse_start_overlap)
        self.start_tolerance_mm, self.min_overlap, self.info_key = start_tolerance_mm, float(min_overlap), info_key
        self.template, self.template_mask, self.brain_mask = template, template_mask, brain_mask
        t_affine = np.asarray(template.affine, np.float64) if isinstance(template, MetaTensor) else np.eye(4)
        self.spatial_size = tuple(int(s) for s in (spatial_size or template.shape[-3:]))
        self.output_affine = np.asarray(output_affine if output_affine is not None else t_affine, np.float64)
        self.mask_key, self.matrix_key, self.kwargs = mask_key, matrix_key, kwargs
        self.clip_output = bool(clip_output)
        self.last_info: dict[str, Any] = {}  # the most recent call's record (see register)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        matrix, first, info = None, None, {}
        for key in self.key_iterator(d):
            img = d[key]
            affine = np.asarray(img.affine, np.float64) if isinstance(img, MetaTensor) else np.eye(4)
            source = img
            if matrix is None:
                first = (img, affine)
                matrix, info, clip_range = self._register(img, affine)
                self.last_info = info
                if self.clip_output and clip_range is not None:  # the spikes clipped as the registration read them
                    source = img.clamp(*clip_range) if isinstance(img, torch.Tensor) else np.clip(img, *clip_range)
            out = resample_to_grid(source, affine, matrix, self.spatial_size, self.output_affine)
            meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
            meta.update(original_affine=torch.as_tensor(affine), template_to_image=torch.as_tensor(matrix),
                        affine=torch.as_tensor(self.output_affine), spatial_shape=np.asarray(self.spatial_size))
            d[key] = MetaTensor(out, meta=meta)
        if matrix is not None:
            d[self.matrix_key] = matrix
            if self.info_key is not None:
                d[self.info_key] = dict(info)
            if self.brain_mask is not None:
                m_aff = np.asarray(self.brain_mask.affine, np.float64)
                m = resample_to_grid(self.brain_mask, m_aff, np.eye(4), self.spatial_size, self.output_affine) > 0.5
                m &= self.field_of_view(*first, matrix)
                d[self.mask_key] = MetaTensor(m.to(torch.uint8), affine=torch.as_tensor(self.output_affine))
        return d


    def register(self, img: NdarrayOrTensor, affine: np.ndarray,
                 return_info: bool = False) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
        """Template-to-input matrix of ``img`` (voxel-to-world ``affine``), from up to four starts (see above).

        With ``return_info``, ``(matrix, record)``: the alignment record the class docstring describes. The record
        is also kept in ``last_info``, which holds the most recent call's record only: with one transform shared by
        several threads (e.g. ``CacheDataset(num_workers=...)``, which caches deterministic transforms in a thread
        pool), read the record returned here or the one written to ``data[info_key]``, never ``last_info``. The
        calls themselves keep no per-call state on the instance and may run concurrently.
        """
        matrix, info, _ = self._register(img, affine)
        self.last_info = info
        return (matrix, dict(info)) if return_info else matrix

    def _register(self, img: NdarrayOrTensor,
                  affine: np.ndarray) -> tuple[np.ndarray, dict[str, Any], tuple[float, float] | None]:
        """``(matrix, record, clip range)``: :meth:`register`'s result and, when spikes were clipped, the
        ``(low, high)`` range the registration read the input in (else ``None``); nothing is stored on ``self``."""
        t_vol, t_aff = _volume(self.template, None, "template")
        t_mask = (np.asarray(convert_to_tensor(self.template_mask, track_meta=False).cpu()).reshape(t_vol.shape) > 0.5
                  if self.template_mask is not None else t_vol > 0)
        shape = np.asarray(img.shape[-3:], np.float64)
        points = apply_matrix(t_aff, np.argwhere(t_mask))
        vol, _ = _volume(img, affine, "image")
        extremes = float(vol.min()), float(vol.max())
        vol, spikes = clip_spikes(vol, self.kwargs.get("spike_ratio", SPIKE_RATIO))
        clip_range = (float(vol.min()), float(vol.max())) if spikes else None
        if spikes:
            source = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
            logger.warning("the image%s has intensities far outside the range of its other voxels (spikes: values "
                           "from %.4g to %.4g); the registration reads them, with every voxel beyond the image's "
                           "0.1-99.9 percentile range on that side (%d voxels in all), clipped to [%.4g, %.4g].",
                           f" '{source}'" if source else "", *extremes, spikes, float(vol.min()), float(vol.max()))
        starts: list[tuple[str, np.ndarray | None]] = [("centre_of_mass", None)]
        if self.start_tolerance_mm is not None:
            fov_centre = apply_matrix(affine, (shape - 1) / 2)
            off_centre = np.linalg.norm(_centre_of_mass(vol, affine, foreground_mask(vol)) - fov_centre)
            if off_centre > self.start_tolerance_mm:
                shift = np.eye(4)
                shift[:3, 3] = fov_centre - _centre_of_mass(t_vol, t_aff, t_mask)
                starts.append(("field_of_view_centre", shift))
        # bring to the registration grid and bias-correct the input once for every start
        t0 = time.perf_counter()
        moving, moving_affine = _prepared_moving(vol, affine, t_aff,
                                                 bool(self.kwargs.get("bias_correction", False)),
                                                 float(self.kwargs.get("bias_voxel_mm", 4.0)),
                                                 self.kwargs.get("num_threads", 1))
        prepared = time.perf_counter() - t0
        head = self._head_top_start(moving, moving_affine, _centre_of_mass(t_vol, t_aff, t_mask))
        if head is not None:
            starts.append(("head_top", head))
        kwargs = {**self.kwargs, "bias_correction": False}

        def record(name: str, found: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
            idx = apply_matrix(np.linalg.inv(affine) @ found, points)
            overlap = float(np.mean(((idx > -0.5) & (idx < shape - 0.5)).all(1))) if len(points) else 0.0
            return {"start": name, "matrix": found, "overlap": overlap, "metric": float(info["metric"]),
                    "iterations": int(info["iterations"]), "seconds": float(info["seconds"])}

        swapped: list[tuple[np.ndarray, dict[str, Any]]] = []

        def inverse() -> tuple[np.ndarray, dict[str, Any]]:
            # the input fixed, the template moving: every voxel of the scan counts, none can slide out of view
            if not swapped:
                found, info = register_affine(moving, t_vol, fixed_affine=moving_affine, moving_affine=t_aff,
                                              return_info=True, **kwargs)
                swapped.append((np.linalg.inv(found), info))
            return swapped[0]

        def choice(r: dict[str, Any]) -> tuple[bool, float]:
            return r["overlap"] < self.min_overlap, r["metric"]

        runs = []
        for name, initial in starts:
            found, info = register_affine(self.template, moving, fixed_mask=self.template_mask,
                                          moving_affine=moving_affine, return_info=True, initial=initial, **kwargs)
            runs.append(record(name, found, info))
        best = min(runs, key=choice)
        if self.inverse_start_overlap is not None and best["overlap"] < self.inverse_start_overlap:
            found, info = register_affine(self.template, moving, fixed_mask=self.template_mask,
                                          moving_affine=moving_affine, return_info=True, initial=inverse()[0],
                                          **kwargs)
            runs.append(record("from_inverse", found, {**info, "seconds": info["seconds"] + inverse()[1]["seconds"]}))
            best = min(runs, key=choice)
        if best["overlap"] < self.min_overlap and self.inverse_fallback:
            runs.append(record("inverse", *inverse()))
            if runs[-1]["overlap"] >= self.min_overlap:
                best = runs[-1]
        info = {k: v for k, v in best.items() if k != "matrix"}
        info["preparation_seconds"] = prepared
        info["spikes_clipped"] = spikes
        info["starts"] = [{k: v for k, v in r.items() if k != "matrix"} for r in runs]
        return np.asarray(best["matrix"]), info, clip_range

    def _head_top_start(self, vol: np.ndarray, affine: np.ndarray, template_centre: np.ndarray) -> np.ndarray | None:
        """The third start (see above): a translation putting ``template_centre`` at the centre of mass of the
        foreground within ``head_height_mm`` of its top, or ``None`` when the foreground is not taller than that."""
        if self.head_height_mm is None:
            return None
        fg = foreground_mask(vol)
        idx = np.argwhere(fg)
        if len(idx) == 0:
            return None
        height = apply_matrix(affine, idx)[:, 2]
        top = float(height.max())
        if top - float(height.min()) <= self.head_height_mm:
            return None
        keep = height >= top - self.head_height_mm
        weight = np.clip(vol[fg][keep], 0, None)
        if not weight.sum() > 0:
            return None
        centre = apply_matrix(affine, (idx[keep] * weight[:, None]).sum(0)[None] / weight.sum())[0]
        shift = np.eye(4)
        shift[:3, 3] = centre - template_centre
        return shift

    def field_of_view(self, img: NdarrayOrTensor, affine: np.ndarray, matrix: np.ndarray) -> torch.Tensor:
        """``(1, X', Y', Z')`` bool: output voxels whose trilinear sample lies wholly inside the input's grid.

        Args:
            img: the input ``(C, X, Y, Z)`` volume (only its shape is used).
            affine: its voxel-to-world affine.
            matrix: template world to input world.
        """
        ones = torch.ones((1, *img.shape[-3:]), dtype=torch.float32)
        return resample_to_grid(ones, affine, matrix, self.spatial_size, self.output_affine) > 0.999


AlignToTemplateD = AlignToTemplateDict = AlignToTemplated
