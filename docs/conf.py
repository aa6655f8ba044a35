"""Sphinx configuration for detkit's documentation (builds offline, warnings are errors)."""

from __future__ import annotations

import detkit

project = "detkit"
author = "the detkit developers"
copyright = "2026, the detkit developers"
release = detkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
# No intersphinx: the docs must build without network access.

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Fine-tune torchvision detectors on your own data."}
