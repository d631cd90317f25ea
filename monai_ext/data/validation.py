"""Input validation shared by the bundles' loaders: every bad input is reported with the file and what was expected.

A lab's data set may hold one truncated file among thousands, an image of the wrong dimensionality, NaN voxels from a
failed reconstruction, an empty label map or an annotation whose grade distribution does not sum to one. Image
readers (nibabel, Pillow, PyAV) report such faults with their own exception types and messages that rarely name the
file, and NaN or infinite intensities are not reported at all: they surface epochs later as a NaN loss. The helpers
here are called by every study's loader (:mod:`monai_ext.apps`) at the first read of a file, before any training, so
that a fault stops the run at once with a ``ValueError`` (or ``FileNotFoundError``) that names the file, the fault
and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["read_image", "validate_distribution", "validate_image", "validate_label_map"]


def read_image(path: str | os.PathLike, reader: Callable[[str], Any] | None = None, what: str = "image") -> Any:
    """Read a file with ``reader``, turning any reader failure into an error that names the file.

    Args:
        path: the file.
        reader: callable ``reader(path)`` returning the data (e.g. ``monai.transforms.LoadImage(image_only=True)``,
            or ``lambda p: imageio.v3.imread(p, plugin="pyav")`` for a video); default ``imageio.v3.imread``.
        what: what the file is, for the messages (``"image"``, ``"training image"``, ``"video"``...).

    Returns:
        Whatever ``reader`` returns.

    Raises:
        FileNotFoundError: when ``path`` is not an existing file (names the file).
        ValueError: when the reader fails, e.g. on a truncated or corrupt file; the message names the file and the
            reader's own error, which is chained as the cause.

    Example::

        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "broken.png"
        >>> _ = p.write_bytes(b"not a png")
        >>> read_image(p)
        Traceback (most recent call last):
        ...
        ValueError: image '...broken.png' could not be read (...); expected a complete, readable .png file: ...
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: '{path}'.")
    if reader is None:
        import imageio.v3 as iio

        reader = iio.imread
    try:
        return reader(str(path))
    except MemoryError:
        raise
    except Exception as e:  # nibabel, gzip, Pillow and PyAV raise unrelated types for the same damaged-file fault
        suffix = "".join(s for s in os.path.basename(str(path)).split(".", 1)[1:])
        kind = f".{suffix} " if suffix else ""
        reason = " ".join(str(e).split())  # one line, whatever the reader printed
        raise ValueError(
            f"{what} '{path}' could not be read ({type(e).__name__}: {reason}); expected a complete, readable "
            f"{kind}file: is it truncated or corrupt?"
        ) from e


def validate_image(image: np.ndarray | torch.Tensor, path: str | os.PathLike, ndim: int | Sequence[int] | None = None,
                   layout: str | None = None, finite: bool = True, what: str = "image") -> np.ndarray | torch.Tensor:
    """Check an image's number of dimensions and that every value is finite.

    Args:
        image: the array as read (numpy, torch or MetaTensor).
        path: the file it was read from (for the messages).
        ndim: accepted number(s) of array dimensions; ``None`` skips the check.
        layout: the expected layout in words for the message (e.g. ``"a 3D volume (1, X, Y, Z)"``).
        finite: check that there is no NaN or infinite value (only floating-point arrays can hold them).
        what: what the file is, for the messages.

    Returns:
        ``image`` unchanged.

    Raises:
        ValueError: on a wrong number of dimensions, or NaN / infinite values (the message gives their count and
            the index of the first one).

    Example::

        >>> validate_image(np.zeros((4, 4)), "a.png", ndim=2).shape
        (4, 4)
        >>> validate_image(np.array([0.0, np.nan]), "b.nii.gz")
        Traceback (most recent call last):
        ...
        ValueError: image 'b.nii.gz' holds 1 NaN and 0 infinite value(s) (the first at index (1,)); expected ...
    """
    shape = tuple(int(s) for s in image.shape)
    if ndim is not None:
        allowed = (int(ndim),) if isinstance(ndim, int) else tuple(int(n) for n in ndim)
        if len(shape) not in allowed:
            expected = layout or f"{' or '.join(str(n) for n in allowed)} dimensions"
            raise ValueError(f"{what} '{path}' has shape {shape} ({len(shape)} dimensions); expected {expected}.")
    if finite:
        t = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(np.asarray(image))
        if t.is_floating_point() or t.is_complex():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                n_nan = int(torch.isnan(t).sum())
                first = tuple(int(i) for i in np.unravel_index(int(bad.reshape(-1).nonzero()[0]), shape))
                raise ValueError(
                    f"{what} '{path}' holds {n_nan} NaN and {int(bad.sum()) - n_nan} infinite value(s) (the first at "
                    f"index {first}); expected finite intensities."
                )
    return image


def validate_label_map(label: np.ndarray | torch.Tensor, path: str | os.PathLike, num_classes: int,
                       ignore_label: int | None = None, require_foreground: bool = True,
                       what: str = "label map") -> np.ndarray | torch.Tensor:
    """Check that a label map holds only class ids ``0..num_classes - 1`` (or ``ignore_label``) and is not empty.

    A label map is *empty* when every pixel is the ignore label (nothing to learn or score) or, with
    ``require_foreground``, when no pixel belongs to a foreground class ``1..num_classes - 1`` (class 0 being the
    background): such a map is almost always a failed export rather than an annotation.

    Args:
        label: the label map as read.
        path: the file it was read from (for the messages).
        num_classes: number of classes, background (0) included.
        ignore_label: value of unlabelled pixels, or ``None`` when there is none.
        require_foreground: also reject a map holding only background (and ignore) pixels.
        what: what the file is, for the messages.

    Returns:
        ``label`` unchanged.

    Raises:
        ValueError: for values that are not class ids, or an empty map.

    Example::

        >>> validate_label_map(np.array([[0, 1], [2, 255]]), "lab.png", num_classes=3, ignore_label=255).shape
        (2, 2)
        >>> validate_label_map(np.full((2, 2), 255), "lab.png", num_classes=3, ignore_label=255)
        Traceback (most recent call last):
        ...
        ValueError: label map 'lab.png' is empty: every pixel is the ignore label 255; expected at least ...
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    values = np.unique(np.asarray(label.as_tensor() if hasattr(label, "as_tensor") else label))
    allowed = set(range(int(num_classes))) | ({int(ignore_label)} if ignore_label is not None else set())
    bad = [v.item() for v in values if not (float(v).is_integer() and int(v) in allowed)]
    if bad:
        ignore = f" or the ignore label {ignore_label}" if ignore_label is not None else ""
        raise ValueError(
            f"{what} '{path}' holds value(s) {bad[:8]} that are not class ids; expected 0..{int(num_classes) - 1}"
            f"{ignore} (a mask saved as 0/255 or a colour-coded PNG needs converting to class ids)."
        )
    labelled = [int(v) for v in values if ignore_label is None or int(v) != int(ignore_label)]
    if not labelled:
        raise ValueError(
            f"{what} '{path}' is empty: every pixel is the ignore label {ignore_label}; expected at least one pixel "
            f"of a class 0..{int(num_classes) - 1}."
        )
    if require_foreground and int(num_classes) > 1 and all(v == 0 for v in labelled):
        only = "background 0" + (f" or ignore {ignore_label}" if ignore_label is not None else "")
        raise ValueError(
            f"{what} '{path}' is empty: no pixel of a foreground class (only {only}); expected at least one pixel of "
            f"a class 1..{int(num_classes) - 1}."
        )
    return label


def validate_distribution(values: Any, source: str, num_classes: int | None = None, atol: float = 1e-3
                          ) -> np.ndarray:
    """Check a probability mass function (e.g. a clip's grade distribution over raters).

    Args:
        values: the pmf as read (list or array).
        source: where it comes from, for the messages (e.g. ``"annotation 'v0.json' sperm 3 'distribution'"``).
        num_classes: expected length; ``None`` skips the check.
        atol: tolerance on ``|sum - 1|`` (ratings written with a few decimals do not sum to 1 exactly).

    Returns:
        The pmf as a float64 array (not renormalised).

    Raises:
        ValueError: when the values are not a flat list of finite numbers of the expected length, are negative, or do
            not sum to 1 within ``atol``.

    Example::

        >>> validate_distribution([0.5, 0.25, 0.25], "x", num_classes=3)
        array([0.5 , 0.25, 0.25])
        >>> validate_distribution([0.5, 0.6], "x")
        Traceback (most recent call last):
        ...
        ValueError: x must sum to 1 (a distribution over grades), got sum 1.1 for [0.5, 0.6].
    """
    try:
        pmf = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source} must be a list of numbers, got {values!r}.") from e
    if pmf.ndim != 1 or pmf.size == 0:
        raise ValueError(f"{source} must be a flat, non-empty list of numbers, got {values!r}.")
    if num_classes is not None and pmf.size != int(num_classes):
        raise ValueError(f"{source} has {pmf.size} entries, expected {int(num_classes)} (one per grade): {values!r}.")
    if not np.isfinite(pmf).all():
        raise ValueError(f"{source} must hold finite numbers, got {values!r}.")
    if (pmf < 0).any():
        raise ValueError(f"{source} must be non-negative (a distribution over grades), got {values!r}.")
    total = float(pmf.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"{source} must sum to 1 (a distribution over grades), got sum {total:.6g} for {values!r}.")
    return pmf
