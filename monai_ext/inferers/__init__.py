"""monai_ext.inferers."""

from __future__ import annotations

__all__: list[str] = []
