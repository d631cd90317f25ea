"""monai_ext.visualize."""

from __future__ import annotations

__all__: list[str] = []
