"""Sphinx configuration for detkit's documentation (builds offline, warnings are errors)."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import inspect as sphinx_inspect
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import stringify_annotation

import detkit

project = "detkit"
author = "the detkit developers"
copyright = "2026, the detkit developers"
release = detkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Links to Python, PyTorch, torchvision, NumPy and Pillow. The build stays offline: each
# inventory is read from docs/_inventories/ (written by make_inventories.py there), never
# fetched; the links in the pages still point at the projects' real documentation.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
    "torch": ("https://docs.pytorch.org/docs/stable/", "_inventories/torch.inv"),
    "torchvision": ("https://docs.pytorch.org/vision/stable/", "_inventories/torchvision.inv"),
    "numpy": ("https://numpy.org/doc/stable/", "_inventories/numpy.inv"),
    "PIL": ("https://pillow.readthedocs.io/en/stable/", "_inventories/PIL.inv"),
}

# Every reference must resolve (``sphinx -n``): a name the pages mention but no inventory
# or page documents is an error. Only names no documentation anywhere has are ignored here.
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = []

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Signatures show detkit's type aliases by name, each linked to its entry, instead of the
# union it stands for.
autodoc_type_aliases = {
    "PathLike": "detkit.types.PathLike",
    "Transforms": "detkit.types.Transforms",
    "MaxPixels": "detkit.data.MaxPixels",
    "Fill": "detkit.data.transforms.Fill",
}
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


def _documented_modules() -> list[tuple[str, str]]:
    """``(module, options)`` of every ``automodule`` of the API pages."""
    return [
        found
        for page in sorted(API_PAGES.glob("*.rst"))
        for found in _AUTOMODULE.findall(page.read_text(encoding="utf-8"))
    ]


def documented_names() -> dict[int, str]:
    """Map each object the API pages document (by ``id``) to the name its entry carries.

    The pages document a module's ``__all__`` through ``automodule``; an ``automodule`` with
    ``:no-members:`` documents none, so its names point at the module that does.
    """
    names: dict[int, str] = {}
    for module_name, options in _documented_modules():
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


def _attribute_comment(name: str, obj: object) -> list[str] | None:
    """The ``#:`` comment of a detkit module-level ``name`` bound to ``obj``, where it was written."""
    for module_name, module in sorted(sys.modules.items()):
        if module_name.startswith("detkit") and getattr(module, name, None) is obj:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs().get(("", name))
            if docs:
                return list(docs)
    return None


def _document_reexported_data(app) -> None:
    """Give the API pages' re-exported constants and aliases the ``#:`` comment they were
    written with.

    autodoc reads ``#:`` comments only in the module it documents, and leaves out a data
    member of ``__all__`` that has none there: ``detkit.types.BOX_FORMAT`` (written in
    ``detkit.types.contract``) would have no entry, and every reference to it would dangle.
    The analyzer of each documented module is cached; this adds the comment to it.
    """
    for module_name in sorted({name for name, _ in _documented_modules()}):
        module = importlib.import_module(module_name)
        analyzer = ModuleAnalyzer.for_module(module_name)
        analyzer.analyze()
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if ("", attr) in analyzer.attr_docs or inspect.isclass(obj) or inspect.isroutine(obj):
                continue
            if docs := _attribute_comment(attr, obj):
                analyzer.attr_docs["", attr] = docs


_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([\w.]+)'\)")


def _record_typehints(app, what, name, obj, options, signature, return_annotation):
    """Fix the parameter types autodoc recorded for ``name``, as the pages list them.

    Two gaps of autodoc, closed here:

    * A class's string annotations (``from __future__ import annotations``) are evaluated
      with ``typing.get_type_hints(cls)``, which holds the class's attributes, not the
      parameters of ``__init__``: those stayed unevaluated text (``np.ndarray``) that no
      reference resolves. They are recorded from ``__init__``, as a function's are.
    * An alias of ``autodoc_type_aliases`` inside another type (``PathLike | None``) is
      written as ``TypeAliasForwardRef('detkit.types.PathLike')``; it becomes the alias's
      name, shown short like every other type.
    """
    recorded = app.env.current_document.autodoc_annotations.get(name)
    if what in {"class", "exception"}:
        init = next((vars(c)["__init__"] for c in obj.__mro__ if "__init__" in vars(c)), None)
        if inspect.isfunction(init):
            try:
                sig = sphinx_inspect.signature(
                    init, bound_method=True, type_aliases=app.config.autodoc_type_aliases
                )
            except (TypeError, ValueError):
                sig = None
            if sig is not None:
                recorded = app.env.current_document.autodoc_annotations.setdefault(name, {})
                for param in sig.parameters.values():
                    if param.annotation is not param.empty:
                        recorded[param.name] = stringify_annotation(param.annotation, "smart")
    aliases = set(app.config.autodoc_type_aliases.values())
    for key, text in (recorded or {}).items():
        text = _ALIAS_REPR.sub(r"~\1", text)
        recorded[key] = f"~{text}" if text in aliases else text


def _find_object(dotted: str) -> object | None:
    """The detkit object a dotted name reaches (``detkit.models.replace_heads``), or None."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        if not module_name.startswith("detkit"):
            return None
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _resolve_public_path(app, env, node, contnode):
    """Resolve a reference to a function or class by a path it is importable from.

    Each object has one entry, under the module whose API page documents it
    (``detkit.models.heads.replace_heads``); the docs refer to it as users import it
    (``detkit.models.replace_heads``, ``detkit.set_verbosity``, or ``replace_heads`` inside
    ``detkit.models``). Such a reference goes to the entry of the same object; a name that
    reaches no documented object stays unresolved (and fails the nitpicky build).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module")
    for dotted in (target, f"{module}.{target}") if module else (target,):
        obj = _find_object(dotted)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        name = documented_names().get(id(obj))
        if name and name != dotted:
            return env.domains["py"].resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
    return None


def _public_bases(app, name, obj, options, bases) -> None:
    """Show a class's public bases: a private base of detkit (``_ImageOnly``) has no entry
    to link to; its own bases stand in for it."""

    def public(base: type) -> list[type]:
        if base.__name__.startswith("_") and base.__module__.startswith("detkit"):
            return [found for parent in base.__bases__ for found in public(parent)]
        return [base]

    bases[:] = list(dict.fromkeys(found for base in bases for found in public(base)))


def setup(app):
    app.add_directive("public-names", PublicNames)
    app.connect("builder-inited", _document_reexported_data)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _resolve_public_path)
    app.connect("autodoc-process-signature", _record_typehints)
    return {"parallel_read_safe": True}
