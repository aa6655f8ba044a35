"""Sphinx configuration for detkit's documentation (builds offline, warnings are errors)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

import detkit

project = "detkit"
author = "the detkit developers"
copyright = "2026, the detkit developers"
release = detkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
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
# The API index links to the pages written by hand; autosummary writes no pages of its own.
autosummary_generate = False

templates_path: list[str] = []
exclude_patterns = ["_build"]

# furo: a maintained theme whose right-hand column lists every name of a long API page.
html_theme = "furo"
html_title = f"detkit {release}"
# Code at 12 px (GitHub's size) instead of 13: furo's column then shows 85 characters of
# code, enough for the 80-column examples (tests/test_docs.py) inside an API entry.
html_theme_options = {"light_css_variables": {"code-font-size": "var(--font-size--small--3)"}}
toc_object_entries_show_parents = "hide"

API_PAGES = Path(__file__).parent / "api"
_AUTOMODULE = re.compile(r"^\.\. automodule:: ([\w.]+)\n((?:[ \t]+:.*\n)*)", re.MULTILINE)


def documented_names() -> dict[int, str]:
    """Map each object the API pages document (by ``id``) to the name its entry carries.

    The pages document a module's ``__all__`` through ``automodule``; an ``automodule`` with
    ``:no-members:`` documents none, so its names point at the module that does.
    """
    names: dict[int, str] = {}
    for page in sorted(API_PAGES.glob("*.rst")):
        for module_name, options in _AUTOMODULE.findall(page.read_text(encoding="utf-8")):
            if ":no-members:" in options:
                continue
            module = importlib.import_module(module_name)
            for attr in getattr(module, "__all__", ()):
                names.setdefault(id(getattr(module, attr)), f"{module_name}.{attr}")
    return names


class PublicNames(SphinxDirective):
    """``.. public-names:: detkit.data``: a table of a module's ``__all__``, one line each.

    Built from ``__all__`` with autosummary at build time, so it never goes stale; each row
    links to the entry on the module's API page. Rows are grouped by the module whose page
    documents them, and each group is read in that module's context, so that the
    cross-references of the one-line summaries resolve as they do on that page.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        documented = documented_names()
        groups: dict[str, list[str]] = {}
        for attr in module.__all__:
            if attr == "__version__":
                continue
            name = documented.get(id(getattr(module, attr)))
            if name is None:
                raise self.error(f"{module.__name__}.{attr} is on no API page")
            where, _, short = name.rpartition(".")
            groups.setdefault(where, []).append(f"   {short}")
        container = nodes.container()
        context = self.env.ref_context
        previous = context.get("py:module")
        for where, rows in groups.items():
            context["py:module"] = where
            source = StringList(
                [".. autosummary::", "   :nosignatures:", "", *rows],
                source=self.get_source_info()[0],
            )
            self.state.nested_parse(source, self.content_offset, container)
        if previous is None:
            context.pop("py:module", None)
        else:
            context["py:module"] = previous
        return container.children


def setup(app):
    app.add_directive("public-names", PublicNames)
    return {"parallel_read_safe": True}
