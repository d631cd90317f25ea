"""Intensity transforms for brains of any contrast: tissue-based contrast synthesis and a normalisation that does not
depend on the field of view.

* :class:`RandTissueContrast` synthesises an MR-like image of a random contrast from tissue probability maps, the
  idea of SynthSeg (Billot et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and resolution
  without retraining", Medical Image Analysis 86, 2023): every tissue gets a random mean intensity, so a network
  trained on such images cannot rely on one contrast. Optional extra-cerebral tissue (a CSF rim, the skull and the
  scalp) is drawn as shells of random thickness around the brain mask, so that a model sees heads with and without
  skull.
* :class:`MaskedPercentileNormalize` maps intensity percentiles computed *inside a mask* (e.g. the brain mask of the
  template after alignment, eroded) to a fixed range. Whole-image percentiles move with everything outside the brain
  (a skull, a neck, a larger field of view, padding); statistics restricted to the (eroded) brain do not.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor
from scipy import ndimage

__all__ = [
    "CONTRAST_PRESETS",
    "TISSUE_CHANNELS",
    "MaskedPercentileNormalize",
    "MaskedPercentileNormalized",
    "MaskedPercentileNormalizeD",
    "MaskedPercentileNormalizeDict",
    "RandTissueContrast",
    "RandTissueContrastd",
    "RandTissueContrastD",
    "RandTissueContrastDict",
    "foreground_mask",
]

#: Channels of the tissue stack read by :class:`RandTissueContrast`: a T1 image of the template (its detail is
#: carried into every contrast), grey- and white-matter and CSF probabilities (summing to the brain mask) and the
#: distance (mm) of each voxel outside the brain mask to the mask (0 inside).
TISSUE_CHANNELS: tuple[str, ...] = ("t1", "gm", "wm", "csf", "distance")

#: Mean intensities of the tissue classes for named contrasts (relative units; ``skull`` is bone, ``scalp`` the
#: soft tissue and fat outside it; the CSF rim outside the brain takes the ``csf`` value). Orderings follow the
#: usual 3 T appearance: T1-weighted WM > GM > CSF with scalp fat brighter than WM (what moves whole-image
#: percentiles when the skull is on); T2-weighted CSF > GM > WM; proton-density GM > WM with CSF close to GM.
CONTRAST_PRESETS: dict[str, dict[str, float]] = {
    "t1": {"csf": 0.28, "gm": 0.65, "wm": 0.87, "skull": 0.08, "scalp": 1.30},
    "t2": {"csf": 1.00, "gm": 0.55, "wm": 0.40, "skull": 0.05, "scalp": 0.90},
    "pd": {"csf": 0.85, "gm": 0.78, "wm": 0.62, "skull": 0.10, "scalp": 0.90},
}
_TISSUES = ("csf", "gm", "wm", "skull", "scalp")


def _spacing(img: Any) -> np.ndarray:
    if isinstance(img, MetaTensor):
        return np.linalg.norm(np.asarray(img.affine, dtype=np.float64)[:3, :3], axis=0)
    return np.ones(3)


def _relative(means: Mapping[str, float]) -> np.ndarray:
    """(CSF, GM, WM) means divided by the largest of the three."""
    v = np.array([means["csf"], means["gm"], means["wm"]], dtype=np.float64)
    return v / max(v.max(), 1e-12)


def _smooth_field(rng: np.random.RandomState, shape: Sequence[int], factor: int) -> torch.Tensor:
    """Zero-mean, unit-peak smooth random field: white noise on a grid ``factor`` times coarser, upsampled."""
    coarse = [max(2, int(np.ceil(s / factor)) + 1) for s in shape]
    noise = torch.as_tensor(rng.normal(size=coarse), dtype=torch.float32)[None, None]
    field = F.interpolate(noise, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)[0, 0]
    return field / field.abs().max().clamp_min(1e-6)


class RandTissueContrast(Randomizable, Transform):
    """Synthesise an image of a random MR contrast from a tissue stack (SynthSeg-style appearance randomisation).

    Input: a ``(5, X, Y, Z)`` stack with the channels of :data:`TISSUE_CHANNELS` (``t1``, ``gm``, ``wm``, ``csf``,
    ``distance``); see :func:`monai_ext.data.synthetic.brain.load_mni152_tissues`. Output: ``(1, X, Y, Z)`` float32.

    Per call a contrast is drawn from ``contrasts`` (with ``probs``): a named preset of :data:`CONTRAST_PRESETS`
    (its tissue means each moved by ``U(-jitter, jitter)``) or ``"random"`` (every tissue mean ``U(0, 1)``, the
    scalp's ``U(0, 1.5)``, as in SynthSeg, Billot et al. 2023, section 3.1), redrawn while the spread of the
    CSF/GM/WM means is below ``min_contrast`` or while it lies within ``exclusion_margin`` of a preset listed in
    ``exclude`` (max absolute difference of the (CSF, GM, WM) means, each divided by the largest of the three):
    held-out contrasts are then never seen in training, even by chance. The brain is

    ``brain = (1 - b) * (gm * m_gm + wm * m_wm + csf * m_csf) + b * LUT(t1) * (gm + wm + csf)``

    where ``b ~ U(template_mix)`` and ``LUT`` is the piecewise-linear map sending the template's CSF, GM and WM T1
    levels (``template_levels``) to ``m_csf, m_gm, m_wm`` (extrapolated linearly): the first term is the tissue
    model of SynthSeg, the second carries the template's own detail (deep grey nuclei, partial volumes) into any
    contrast. With probability ``skull_prob`` extra-cerebral tissue is added outside the brain mask as shells of the
    ``distance`` channel: a CSF rim of ``U(rim_mm)`` mm (value ``m_csf``), bone of ``U(skull_mm)`` mm (``m_skull``)
    and scalp of ``U(scalp_mm)`` mm (``m_scalp``), their thickness modulated by a smooth random field by up to
    ``+-thickness_variation`` and their borders softened over one voxel. Finally the image is multiplied by
    ``1 + a * f`` with ``a ~ U(0, texture)`` and ``f`` a smooth random field (low-frequency tissue texture).

    The last draw is available as :attr:`contrast` (the name), :attr:`means` (tissue means), :attr:`skull` (bool)
    and :attr:`template_weight`.

    Args:
        contrasts: names to draw from: keys of ``presets`` and/or ``"random"``.
        probs: probabilities of ``contrasts`` (default uniform).
        presets: tissue means per name (default :data:`CONTRAST_PRESETS`).
        exclude: preset names whose neighbourhood ``"random"`` draws avoid (held-out contrasts).
        exclusion_margin: radius of that neighbourhood (relative units, see above).
        jitter: uniform perturbation of preset means.
        min_contrast: smallest accepted ``max - min`` of the CSF/GM/WM means of a random draw.
        skull_prob: probability of extra-cerebral tissue.
        rim_mm, skull_mm, scalp_mm: thickness ranges (mm) of the shells.
        thickness_variation: relative spatial variation of the shell thickness.
        template_mix: range of the weight ``b`` of the template's LUT-mapped T1.
        template_levels: the template's T1 intensity of CSF, GM and WM.
        texture: largest relative amplitude of the smooth multiplicative texture.

    Raises:
        ValueError: for an unknown contrast name, mismatched or invalid ``probs``, a held-out name that is not a
            preset, a held-out name also listed in ``contrasts``, or invalid ranges.

    Example::

        >>> import torch
        >>> stack = torch.zeros(5, 8, 8, 8); stack[2] = 1.0  # all white matter
        >>> t = RandTissueContrast(contrasts=("t1",), jitter=0.0, skull_prob=0.0, template_mix=(0.0, 0.0),
        ...                        texture=0.0)
        >>> round(float(t(stack).mean()), 4)
        0.87
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        contrasts: Sequence[str] = ("t1", "random"),
        probs: Sequence[float] | None = None,
        presets: Mapping[str, Mapping[str, float]] | None = None,
        exclude: Sequence[str] = ("t2", "pd"),
        exclusion_margin: float = 0.2,
        jitter: float = 0.05,
        min_contrast: float = 0.15,
        skull_prob: float = 0.5,
        rim_mm: tuple[float, float] = (1.0, 4.0),
        skull_mm: tuple[float, float] = (4.0, 8.0),
        scalp_mm: tuple[float, float] = (3.0, 8.0),
        thickness_variation: float = 0.3,
        template_mix: tuple[float, float] = (0.0, 1.0),
        template_levels: tuple[float, float, float] = (0.28, 0.65, 0.87),
        texture: float = 0.05,
    ) -> None:
        self.presets = {k: dict(v) for k, v in (presets or CONTRAST_PRESETS).items()}
        for name, means in self.presets.items():
            missing = [t for t in _TISSUES if t not in means]
            if missing:
                raise ValueError(f"preset {name!r} lacks tissue mean(s) {missing}; needs {_TISSUES}.")
        self.contrasts = tuple(contrasts)
        unknown = [c for c in self.contrasts if c != "random" and c not in self.presets]
        if not self.contrasts or unknown:
            raise ValueError(f"contrasts must be non-empty names of {sorted(self.presets)} or 'random', got "
                             f"{list(self.contrasts)}.")
        self.exclude = tuple(exclude)
        bad = [c for c in self.exclude if c not in self.presets]
        if bad:
            raise ValueError(f"exclude names {bad} are not presets {sorted(self.presets)}.")
        both = sorted(set(self.exclude) & set(self.contrasts))
        if both:
            raise ValueError(f"contrast(s) {both} are both drawn (contrasts) and held out (exclude).")
        if probs is None:
            self.probs = np.full(len(self.contrasts), 1.0 / len(self.contrasts))
        else:
            p = np.asarray(probs, dtype=np.float64)
            if p.shape != (len(self.contrasts),) or (p < 0).any() or not p.sum() > 0:
                raise ValueError(f"probs must be {len(self.contrasts)} non-negative numbers with a positive sum, "
                                 f"got {list(probs)}.")
            self.probs = p / p.sum()
        for name, rng in (("rim_mm", rim_mm), ("skull_mm", skull_mm), ("scalp_mm", scalp_mm),
                          ("template_mix", template_mix)):
            if len(rng) != 2 or rng[0] > rng[1] or rng[0] < 0:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {rng}.")
        if template_mix[1] > 1:
            raise ValueError(f"template_mix must lie in [0, 1], got {template_mix}.")
        if not 0 <= skull_prob <= 1:
            raise ValueError(f"skull_prob must be in [0, 1], got {skull_prob}.")
        lv = tuple(float(v) for v in template_levels)
        if len(lv) != 3 or not lv[0] < lv[1] < lv[2]:
            raise ValueError(f"template_levels must be increasing (CSF, GM, WM) T1 levels, got {template_levels}.")
        self.exclusion_margin, self.jitter, self.min_contrast = float(exclusion_margin), float(jitter), min_contrast
        self.skull_prob, self.rim_mm, self.skull_mm, self.scalp_mm = float(skull_prob), rim_mm, skull_mm, scalp_mm
        self.thickness_variation, self.template_mix, self.template_levels = thickness_variation, template_mix, lv
        self.texture = float(texture)
        self.contrast = self.contrasts[0]
        self.means: dict[str, float] = {}
        self.skull = False
        self.template_weight = 0.0
        self._thickness = np.zeros(3)
        self._fields: tuple[torch.Tensor, torch.Tensor] | None = None
        self._texture_amp = 0.0

    def _excluded(self, means: Mapping[str, float]) -> bool:
        v = _relative(means)
        return any(np.abs(v - _relative(self.presets[h])).max() < self.exclusion_margin for h in self.exclude)

    def _draw_random(self) -> dict[str, float]:
        for _ in range(1000):
            means = dict(zip(_TISSUES, self.R.uniform(0.0, 1.0, len(_TISSUES)), strict=True))
            means["scalp"] *= 1.5  # fat may be brighter than any brain tissue
            v = np.array([means["csf"], means["gm"], means["wm"]])
            if v.max() - v.min() >= self.min_contrast and not self._excluded(means):
                return {k: float(x) for k, x in means.items()}
        raise ValueError("could not draw a random contrast outside the excluded presets in 1000 tries; lower "
                         "exclusion_margin or min_contrast.")

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        """Draw the contrast, the shells and the smooth fields for a volume of ``spatial_shape``."""
        self.contrast = self.contrasts[int(self.R.choice(len(self.contrasts), p=self.probs))]
        if self.contrast == "random":
            self.means = self._draw_random()
        else:
            base = self.presets[self.contrast]
            self.means = {t: float(np.clip(base[t] + self.R.uniform(-self.jitter, self.jitter), 0.0, None))
                          for t in _TISSUES}
        self.skull = bool(self.R.random_sample() < self.skull_prob)
        self.template_weight = float(self.R.uniform(*self.template_mix))
        self._thickness = np.array([self.R.uniform(*r) for r in (self.rim_mm, self.skull_mm, self.scalp_mm)])
        self._fields = (_smooth_field(self.R, spatial_shape, 16), _smooth_field(self.R, spatial_shape, 6))
        self._texture_amp = float(self.R.uniform(0.0, self.texture))

    def _lut(self, t1: torch.Tensor) -> torch.Tensor:
        x = self.template_levels
        y = (self.means["csf"], self.means["gm"], self.means["wm"])
        lo = y[0] + (t1 - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
        mid = y[1] + (t1 - x[1]) * (y[2] - y[1]) / (x[2] - x[1])
        return torch.where(t1 < x[1], lo, mid).clamp(0.0, 1.5)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: ``(5, X, Y, Z)`` tissue stack (:data:`TISSUE_CHANNELS`).
            randomize: draw new parameters (``False`` reuses the last draw, e.g. for a second stack of equal shape).

        Returns:
            ``(1, X, Y, Z)`` float32 image of the input's type (MetaTensor meta kept).

        Raises:
            ValueError: when ``img`` is not a ``(5, X, Y, Z)`` stack.
        """
        x = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        if x.ndim != 4 or x.shape[0] != len(TISSUE_CHANNELS):
            raise ValueError(f"img must be a tissue stack {TISSUE_CHANNELS} of shape (5, X, Y, Z), got "
                             f"{tuple(x.shape)}.")
        if randomize or self._fields is None:
            self.randomize(x.shape[1:])
        t1, gm, wm, csf, dist = x
        m = self.means
        brain_pv = gm + wm + csf
        tissue = gm * m["gm"] + wm * m["wm"] + csf * m["csf"]
        b = self.template_weight
        out = (1.0 - b) * tissue + b * self._lut(t1) * brain_pv
        if self.skull:
            assert self._fields is not None
            d = dist / (1.0 + self.thickness_variation * self._fields[0])
            edges = np.cumsum(self._thickness)

            def below(edge: float) -> torch.Tensor:  # 1 inside `edge` mm, a one-voxel linear ramp at the border
                return (edge - d + 0.5).clamp(0.0, 1.0)

            outside = (1.0 - brain_pv).clamp(0.0, 1.0) * (dist > 0)
            shells = (below(edges[0]) * m["csf"] + (below(edges[1]) - below(edges[0])) * m["skull"]
                      + (below(edges[2]) - below(edges[1])) * m["scalp"])
            out = out + outside * shells
        if self._texture_amp > 0:
            assert self._fields is not None
            out = out * (1.0 + self._texture_amp * self._fields[1])
        out = out.clamp_min(0.0)[None]
        res, *_ = convert_to_dst_type(out, img, dtype=torch.float32)
        return res


class RandTissueContrastd(Randomizable, MapTransform):
    """Dictionary form of :class:`RandTissueContrast`: ``data[image_key]`` from the stack in ``data[key]``.

    The drawn contrast name and skull flag are written to ``data[f"{image_key}_contrast"]`` and
    ``data[f"{image_key}_skull"]``.

    Args:
        keys: key of the tissue stack (one key).
        image_key: output key (default: overwrite the stack).
        allow_missing_keys: don't raise for a missing key.
        kwargs: :class:`RandTissueContrast` arguments.
    """

    backend = RandTissueContrast.backend

    def __init__(self, keys: KeysCollection, image_key: str | None = None, allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.synth = RandTissueContrast(**kwargs)
        self.image_key = image_key

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> RandTissueContrastd:
        super().set_random_state(seed, state)
        self.synth.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Parameters are drawn by the wrapped transform on each call."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            out_key = self.image_key or key
            d[out_key] = self.synth(d[key])
            d[f"{out_key}_contrast"] = self.synth.contrast
            d[f"{out_key}_skull"] = self.synth.skull
        return d


def foreground_mask(img: NdarrayOrTensor, fraction: float = 0.1, upper: float = 98.0) -> np.ndarray:
    """Head (foreground) mask of a volume: a threshold at ``fraction`` of the robust intensity range, the largest
    connected component, holes filled.

    The threshold is FSL BET's (Smith, Human Brain Mapping 17, 2002): ``t = lo + fraction * (p - lo)``, with ``lo``
    the volume's minimum and ``p`` the ``upper`` percentile of the voxels above it (so constant padding at the
    minimum changes nothing). Unlike Otsu's threshold, which splits the histogram in two, it does not cut a head
    in half under a strong bias field, nor move with a few extreme voxels, and it keeps a head whose scan has no
    background at all (cut to the head): on 11 of the 40 test brains of the brain landmark model's evaluation
    that come with a brain mask, Otsu's mask covered less than half of the brain, this one at least 97 % of each
    (bundle ``aneurysm`` README, "Head mask").

    Used by :class:`MaskedPercentileNormalize` when no mask is given, and by the alignment
    (:func:`~monai_ext.transforms.alignment.register_affine` and
    :class:`~monai_ext.transforms.alignment.AlignToTemplated`: the input's centre of mass for the starts, the region
    of its bias-field correction, the head-top start). It removes the background, but it keeps the skull and scalp
    of an unstripped head.

    Args:
        img: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` volume (channels are averaged).
        fraction: the threshold's position in the robust range, in ``(0, 1)``.
        upper: percentile of the voxels above the minimum that ends the robust range, in ``(0, 100]``.

    Returns:
        ``(X, Y, Z)`` bool array.

    Raises:
        ValueError: for a constant volume, or ``fraction`` / ``upper`` out of range.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"foreground_mask: fraction must lie in (0, 1), got {fraction}.")
    if not 0.0 < float(upper) <= 100.0:
        raise ValueError(f"foreground_mask: upper must lie in (0, 100], got {upper}.")
    x = np.asarray(convert_to_tensor(img, track_meta=False).float().cpu())
    x = x.mean(0) if x.ndim == 4 else x
    lo = float(x.min())
    above = x[x > lo]
    if above.size == 0:
        raise ValueError("foreground_mask: the volume is constant.")
    threshold = lo + float(fraction) * (float(np.percentile(above, float(upper))) - lo)
    fg = x > threshold
    labels, n = ndimage.label(fg)
    if n > 1:
        fg = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    return ndimage.binary_fill_holes(fg)


class MaskedPercentileNormalize(Transform):
    """Map the ``lower`` and ``upper`` percentiles of the voxels inside an (eroded) mask to ``b_min`` and ``b_max``.

    The statistics come only from voxels inside ``mask`` at least ``erode_mm`` mm from its border, so anything
    outside the mask (skull, scalp, neck, background, padding) does not move the normalised values: give the brain
    mask of the template after alignment (:class:`~monai_ext.transforms.alignment.AlignToTemplated` writes it,
    restricted to the input's field of view) and the normalisation is the same with or without skull, neck or
    padding. A field of view that cuts through the brain itself still moves it a little: the percentiles then come
    from the part of the brain that was scanned, whose tissue mix differs (much less than when the padding was
    counted; bundle ``aneurysm`` README, "Field of view"). The erosion absorbs a few mm of
    misalignment between the mask and the brain. Without a mask, :func:`foreground_mask` is used: invariant to
    background and padding, but not to a skull. Values are not clipped.

    Args:
        lower: lower percentile in ``[0, 100)``.
        upper: upper percentile in ``(lower, 100]``.
        b_min: value of the lower percentile.
        b_max: value of the upper percentile.
        erode_mm: erosion of the mask (mm, from the image's affine) before computing the statistics.
        min_voxels: smallest accepted number of voxels in the eroded mask.

    Raises:
        ValueError: for invalid percentiles, a mask of another spatial shape, too few voxels in the eroded mask, or
            equal percentiles (a constant region).

    Example::

        >>> import numpy as np
        >>> img = np.zeros((1, 20, 20, 20), np.float32)
        >>> img[0, 5:15, 5:15, 5:15] = np.linspace(1, 9, 1000).reshape(10, 10, 10)
        >>> mask = img[0] > 0
        >>> out = MaskedPercentileNormalize(0, 100, erode_mm=0, min_voxels=1)(img, mask)
        >>> float(out[0, 14, 14, 14])
        1.0
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, lower: float = 2.0, upper: float = 98.0, b_min: float = 0.0, b_max: float = 1.0,
                 erode_mm: float = 5.0, min_voxels: int = 1000) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}.")
        if erode_mm < 0:
            raise ValueError(f"erode_mm must be non-negative, got {erode_mm}.")
        self.lower, self.upper, self.b_min, self.b_max = float(lower), float(upper), float(b_min), float(b_max)
        self.erode_mm, self.min_voxels = float(erode_mm), int(min_voxels)

    def statistics_mask(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None) -> np.ndarray:
        """The ``(X, Y, Z)`` bool mask whose voxels give the percentiles."""
        shape = tuple(img.shape[1:])
        if mask is None:
            m = foreground_mask(img)
        else:
            m = np.asarray(convert_to_tensor(mask, track_meta=False).cpu()) > 0.5
            m = m.reshape(m.shape[-3:]) if m.ndim == 4 and m.shape[0] == 1 else m
            if m.shape != shape:
                raise ValueError(f"mask has spatial shape {m.shape}, the image {shape}.")
        if self.erode_mm > 0:
            m = ndimage.distance_transform_edt(m, sampling=_spacing(img)) > self.erode_mm
        if int(m.sum()) < self.min_voxels:
            raise ValueError(f"the mask eroded by {self.erode_mm} mm holds {int(m.sum())} voxels (< min_voxels="
                             f"{self.min_voxels}); is it the brain mask of this image (same grid)?")
        return m

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        """
        Args:
            img: ``(C, X, Y, Z)`` volume.
            mask: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` mask (values > 0.5 inside); ``None``: :func:`foreground_mask`.

        Returns:
            the normalised float32 volume, type of ``img``.
        """
        if img.ndim != 4:
            raise ValueError(f"img must be channel-first (C, X, Y, Z), got shape {tuple(img.shape)}.")
        m = self.statistics_mask(img, mask)
        x = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        vals = np.asarray(x.cpu())[:, m]
        lo, hi = np.percentile(vals, [self.lower, self.upper])
        if not hi > lo:
            raise ValueError(f"percentiles {self.lower}/{self.upper} inside the mask are both {lo}: constant region.")
        out = (x - float(lo)) * ((self.b_max - self.b_min) / float(hi - lo)) + self.b_min
        res, *_ = convert_to_dst_type(out, img, dtype=torch.float32)
        return res


class MaskedPercentileNormalized(MapTransform):
    """Dictionary form of :class:`MaskedPercentileNormalize`; the mask is read from ``data[mask_key]``.

    Args:
        keys: image keys.
        mask_key: key of the mask (``None``: :func:`foreground_mask` of each image).
        allow_missing_keys: don't raise for a missing key.
        kwargs: :class:`MaskedPercentileNormalize` arguments.

    Raises:
        KeyError: when ``mask_key`` is set and missing.
    """

    backend = MaskedPercentileNormalize.backend

    def __init__(self, keys: KeysCollection, mask_key: str | None = "brain_mask", allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.normalizer = MaskedPercentileNormalize(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.mask_key is not None and self.mask_key not in d:
            raise KeyError(f"mask_key {self.mask_key!r} not found in the data; keys present: {list(d)}.")
        mask = d[self.mask_key] if self.mask_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key], mask)
        return d


MaskedPercentileNormalizeD = MaskedPercentileNormalizeDict = MaskedPercentileNormalized
RandTissueContrastD = RandTissueContrastDict = RandTissueContrastd
