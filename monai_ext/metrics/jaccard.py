"""Per-class Jaccard index (intersection over union) with an ignore label, accumulated over iterations."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from scipy import ndimage

__all__ = ["JaccardMetric", "boundary_band", "jaccard_counts"]


def boundary_band(label: np.ndarray | torch.Tensor, width: int, num_classes: int,
                  ignore_index: int | None = None) -> np.ndarray:
    """Pixels within ``width`` pixels (chessboard distance) of a boundary between two classes of a label map.

    A pixel is in the band when the ``(2 width + 1)`` window around it holds pixels of at least two different
    classes and the pixel itself is not ignored; borders with ``ignore_index`` regions are not class boundaries.
    Evaluating a segmentation only inside the band (e.g. :func:`jaccard_counts` on a label with ``ignore_index``
    outside it) measures how well the method draws the boundaries, which whole-image scores dilute with the
    interiors of large regions.

    Args:
        label: class-id map ``(*spatial)`` (2D or 3D).
        width: half width of the band in pixels, ``>= 1``.
        num_classes: number of classes; class ids are ``0 .. num_classes - 1``.
        ignore_index: label value that is neither a class nor a boundary, or ``None``.

    Returns:
        bool array of ``label``'s shape.

    Raises:
        ValueError: for ``width < 1``.

    Example::

        >>> lab = np.zeros((6, 8), int); lab[:, 4:] = 1
        >>> boundary_band(lab, 1, 2)[0].astype(int).tolist()
        [0, 0, 0, 1, 1, 0, 0, 0]
    """
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width!r}.")
    lab = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    size = 2 * int(width) + 1
    present = np.zeros(lab.shape, dtype=np.int16)
    for c in range(num_classes):
        mask = lab == c
        if mask.any():
            present += ndimage.maximum_filter(mask, size=size, mode="nearest")
    band = present >= 2
    if ignore_index is not None:
        band &= lab != ignore_index
    return band


def jaccard_counts(
    y_pred: torch.Tensor, y: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Per-sample, per-class intersection and union pixel counts.

    Args:
        y_pred: ``(B, C, *spatial)`` scores/one-hot (argmax over ``C`` is taken) or ``(B, 1, *spatial)`` class ids.
        y: ``(B, 1, *spatial)`` or ``(B, *spatial)`` class ids; pixels equal to ``ignore_index`` are left out of
            both the prediction and the target counts.
        num_classes: number of classes ``C``.
        ignore_index: label value that is not evaluated (e.g. the "expert cannot tell" regions), or ``None``.

    Returns:
        ``(B, C, 2)`` float64 tensor: ``[..., 0]`` intersection, ``[..., 1]`` union.

    Raises:
        ValueError: on shape mismatch, or when a non-ignored class id lies outside ``0 .. num_classes - 1``.
    """
    if y_pred.ndim < 3:
        raise ValueError(f"y_pred must be (B, C, *spatial) or (B, 1, *spatial), got {tuple(y_pred.shape)}.")
    pred = y_pred.argmax(1) if y_pred.shape[1] > 1 else y_pred[:, 0].round().long()
    lab = y[:, 0] if y.ndim == y_pred.ndim else y
    if lab.shape != pred.shape:
        raise ValueError(
            f"y must be (B, 1, *spatial) or (B, *spatial) matching y_pred {tuple(y_pred.shape)}, got {tuple(y.shape)}."
        )
    lab = lab.round().long() if lab.dtype.is_floating_point else lab.long()
    valid = torch.ones_like(lab, dtype=torch.bool) if ignore_index is None else lab != ignore_index
    for name, t in (("y", lab[valid]), ("y_pred", pred[valid])):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} class ids must lie in 0 .. {num_classes - 1} (or equal ignore_index={ignore_index}), "
                f"found {int(t.min())} .. {int(t.max())}."
            )
    b = pred.shape[0]
    pred, lab, valid = pred.reshape(b, -1), lab.reshape(b, -1), valid.reshape(b, -1)
    out = torch.zeros(b, num_classes, 2, dtype=torch.float64, device=pred.device)
    for c in range(num_classes):
        pc, lc = (pred == c) & valid, (lab == c) & valid
        out[:, c, 0] = (pc & lc).sum(1).double()
        out[:, c, 1] = (pc | lc).sum(1).double()
    return out


class JaccardMetric(CumulativeIterationMetric):
    """Per-class Jaccard index ``|P_c & T_c| / |P_c | T_c|`` over all accumulated pixels, ignoring one label.

    Each call adds per-sample intersection/union counts to the buffer (like MONAI's cumulative metrics);
    ``aggregate()`` sums the counts over *all* samples of all iterations before dividing (a dataset-level Jaccard,
    so small images do not weigh as much as large ones), per class, and optionally averages over the classes that
    occur (non-zero union).

    Args:
        num_classes: number of classes ``C``.
        ignore_index: label value left out of the evaluation (prediction at those pixels is not counted either).
        include_background: include class 0 in the ``"mean"`` aggregate.
        reduction: ``"mean"`` (over classes with non-zero union) or ``"none"`` (``(C,)`` per class; NaN for a class
            that never occurs in prediction or target).
        class_index: when given, ``aggregate()`` returns the Jaccard of this class only (a scalar, NaN when the
            class never occurs), e.g. to log one scalar per class in TensorBoard or MLflow, which take scalars.

    Raises:
        ValueError: when ``num_classes < 1``, ``reduction`` is unknown or ``class_index`` is not a class.

    Example::

        >>> metric = JaccardMetric(num_classes=3, ignore_index=255)
        >>> _ = metric(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))
        >>> per_class = metric.aggregate("none")
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        include_background: bool = True,
        reduction: str = "mean",
        class_index: int | None = None,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}.")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.include_background = bool(include_background)
        self.reduction = reduction
        if class_index is not None and not 0 <= int(class_index) < int(num_classes):
            raise ValueError(f"class_index must be in 0 .. {int(num_classes) - 1}, got {class_index!r}.")
        self.class_index = None if class_index is None else int(class_index)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return jaccard_counts(y_pred, y, self.num_classes, self.ignore_index)

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:  # type: ignore[override]
        """Dataset-level Jaccard: per class ``(C,)`` for ``"none"``, a scalar tensor for ``"mean"``.

        Raises:
            ValueError: on an unknown ``reduction`` or an empty buffer.
        """
        reduction = reduction or self.reduction
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
        buf = self.get_buffer()
        if not isinstance(buf, torch.Tensor) or buf.numel() == 0:
            raise ValueError("JaccardMetric has no accumulated sample to aggregate.")
        tot = buf.reshape(-1, self.num_classes, 2).sum(0)
        per_class = torch.where(
            tot[:, 1] > 0, tot[:, 0] / tot[:, 1].clamp_min(1), torch.full_like(tot[:, 0], float("nan"))
        )
        if self.class_index is not None:
            return per_class[self.class_index]
        if reduction == "none":
            return per_class
        keep = per_class if self.include_background else per_class[1:]
        keep = keep[~torch.isnan(keep)]
        return keep.mean() if keep.numel() else torch.tensor(float("nan"), dtype=torch.float64)
