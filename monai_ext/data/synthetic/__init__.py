"""Seeded synthetic generators: the embedded default data set of each study.

Each generator writes image files and a Decathlon-style ``dataset.json`` into a folder and returns the JSON path:

- :func:`~monai_ext.data.synthetic.aneurysm.generate_aneurysm_dataset`: MRA-like vessel trees with landmarks and
  saccular aneurysms (aneurysm study).
- :func:`~monai_ext.data.synthetic.brain.generate_synthetic_brain_dataset`: brains of random contrast, pose and shape
  from the MNI152 tissue maps with the AFIDs fiducials (the aneurysm bundle's brain landmark model, ``brain.json``).
- :func:`~monai_ext.data.synthetic.embryo.generate_embryo_dataset`: blastocyst time-lapse sequences whose failures
  include good-looking embryos (embryo_pu study).
- :func:`~monai_ext.data.synthetic.ips.generate_ips_dataset`: phase-contrast-like iPS colonies with ignore bands
  (ips_histogram study).
- :func:`~monai_ext.data.synthetic.sperm.generate_sperm_dataset`: 15 fps microscope videos with multi-rater grade
  distributions (sperm_emd study).

The generators are imported on first use, so importing one study's generator does not import the others' dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_GENERATORS = {
    "generate_aneurysm_dataset": "aneurysm",
    "generate_synthetic_brain_dataset": "brain",
    "generate_embryo_dataset": "embryo",
    "generate_ips_dataset": "ips",
    "generate_sperm_dataset": "sperm",
}

__all__ = sorted(_GENERATORS)


def __getattr__(name: str) -> Any:
    if name in _GENERATORS:
        return getattr(importlib.import_module(f"{__name__}.{_GENERATORS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
