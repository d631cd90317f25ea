"""monai_ext.losses."""

from __future__ import annotations

__all__: list[str] = []
