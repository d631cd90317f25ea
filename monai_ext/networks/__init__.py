"""Networks for the monai_ext studies (see :mod:`monai_ext.networks.nets`) and inference helpers
(:func:`~monai_ext.networks.utils.fuse_batchnorm`)."""

from __future__ import annotations

from .nets import *  # noqa: F401,F403
from .nets import __all__ as _nets_all
from .utils import fuse_batchnorm

__all__ = [*_nets_all, "fuse_batchnorm"]
