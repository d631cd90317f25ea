"""Networks for the monai_ext studies (see :mod:`monai_ext.networks.nets`)."""

from __future__ import annotations

from .nets import *  # noqa: F401,F403
from .nets import __all__  # noqa: F401
