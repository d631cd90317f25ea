"""monai_ext.data.synthetic."""

from __future__ import annotations

__all__: list[str] = []
