"""MONAI Label integration: an app (``main.py`` in this folder) that serves and trains the monai_ext bundles.

``APP_DIR`` is the folder to pass as ``monailabel start_server --app``. Importing this package does not import
``monailabel`` (an optional, heavy extra: ``pip install -e ".[label]"``); see ``docs/monailabel.md``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APP_DIR"]

APP_DIR: str = str(Path(__file__).resolve().parent)
"""The MONAI Label app folder (holds ``main.py``)."""
