"""Sphinx configuration for monai_ext (built with warnings as errors in CI)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import monai_ext  # noqa: E402

project = "monai_ext"
author = "monai_ext developers"
copyright = "2026, monai_ext developers"
release = monai_ext.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "results/**"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "myst.xref_missing"]
html_theme = "alabaster"
nitpicky = False
