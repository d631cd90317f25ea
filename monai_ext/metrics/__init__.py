"""monai_ext.metrics."""

from __future__ import annotations

__all__: list[str] = []
