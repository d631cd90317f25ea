"""Label files for MONAI Label answers, written with SimpleITK instead of ITK's Python wrapping.

MONAI Label 0.8.5 writes every label image with ``itk.imwrite`` (``monailabel.transform.writer.write_itk``). ITK's
Python package loads its wrapped modules lazily, on the first use in a process: on the loaded 2-core test VM that
first write took 2.7-6.9 s for a 660 x 550 label (``benchmarks/bench_monailabel.py --profile``: all of it in
``itk_load_swig_module``), most of the 12.4 s a lab saw on its first ``/infer``. SimpleITK wraps the same ITK image
I/O in one module that imports in about 0.1 s and writes that label in under 0.1 s. :func:`write_label_image` does
what ``write_itk`` does (array transposed to ITK's index order, the RAS affine turned into LPS origin, spacing and
direction for 3D grids, none for 2D), so the files read back the same (checked against ``write_itk`` in
``tests/integration/test_monailabel_server.py``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

__all__ = ["write_label_image"]


def write_label_image(label: Any, path: str | os.PathLike, affine: Any = None, dtype: Any = None,
                      compress: bool = False) -> None:
    """Write a label array as MONAI Label's ``write_itk`` does, through SimpleITK.

    Args:
        label: the label, ``(W, H)`` or ``(X, Y, Z)`` in MONAI's index order (numpy, torch or MetaTensor).
        path: the file; its extension picks the format (``.png``, ``.nrrd``, ``.nii.gz``, ``.mha``, ...).
        affine: voxel-to-RAS affine (``4 x 4`` for a 3D grid, ``3 x 3`` for 2D), or ``None`` for unit spacing at the
            origin (MONAI Label passes ``None`` for 2D labels).
        dtype: numpy dtype of the file (``None`` keeps the array's).
        compress: ask the format's compression (e.g. gzip in NRRD).

    Raises:
        RuntimeError: SimpleITK's error when the extension is not an image format it writes.
    """
    import SimpleITK as sitk

    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if arr.ndim >= 2:  # ITK indexes (x, y, z) as the last array axis first
        arr = arr.transpose().copy()
    if dtype:
        arr = arr.astype(dtype)
    image = sitk.GetImageFromArray(arr)
    if affine is not None:
        affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
        dim = affine.shape[0] - 1
        lps = np.diag([-1.0, -1.0] + [1.0] * (dim - 1))  # RAS -> LPS, as write_itk
        affine = lps @ affine
        spacing = np.linalg.norm(affine[:dim, :dim], axis=0)
        image.SetOrigin(affine[:dim, dim].tolist())
        image.SetSpacing(spacing.tolist())
        image.SetDirection((affine[:dim, :dim] @ np.diag(1 / spacing)).ravel().tolist())
    sitk.WriteImage(image, str(path), useCompression=bool(compress))
