"""The layering of GUIDE.md, checked on every import statement (module level or not).

``data``, ``models`` and ``evaluation`` never import each other; the shared foundations
(``tv_tensors``, ``types``, ``ops``, ``distributed``, ``files``, ``console``) import none of
the packages above them; the example uses only public names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "detkit"

# What each part of detkit may import from detkit, besides itself.
FOUNDATIONS = {"tv_tensors", "types", "ops", "distributed", "files", "console"}
ALLOWED = {
    "tv_tensors": set(),
    "types": {"tv_tensors"},
    "ops": {"types", "tv_tensors"},
    "distributed": set(),
    "files": set(),
    "console": set(),
    "visualize": {"tv_tensors", "types", "ops", "files"},
    "data": FOUNDATIONS,
    "models": FOUNDATIONS,
    "evaluation": FOUNDATIONS,
    "engine": FOUNDATIONS | {"data", "models", "evaluation"},
}


def detkit_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) for every import of detkit in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("detkit")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "detkit":
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "." * node.level + (node.module or ""), []))
    return found


def part_of(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


LIBRARY_FILES = sorted(p for p in SRC.rglob("*.py") if part_of(p) != "__init__")


def test_every_part_is_classified():
    assert {part_of(p) for p in LIBRARY_FILES} == set(ALLOWED)


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_library_layers(path):
    part = part_of(path)
    wrong = []
    for line, module, names in detkit_imports(path):
        if module.startswith("."):
            wrong.append(f"line {line}: relative import {module!r} (the house style is absolute)")
            continue
        parts = module.split(".")
        # ``from detkit import data`` imports the package ``data``.
        targets = [parts[1]] if len(parts) > 1 else names
        for target in targets:
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"line {line}: {part} imports {module} ({target})")
    assert wrong == []


EXAMPLE_FILES = sorted((ROOT / "examples").rglob("*.py"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_use_only_public_names(path):
    private = [
        f"line {line}: {module} {names}"
        for line, module, names in detkit_imports(path)
        if any(part.startswith("_") for part in module.split("."))
        or any(name.startswith("_") for name in names)
    ]
    assert private == []


def test_the_checker_sees_a_violation(tmp_path):
    """The walk finds nested and aliased imports, so the layer tests can fail."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from detkit.models import heads\n    import detkit.evaluation as ev\n"
        "from detkit.data.coco._parsing import x\n"
    )
    assert sorted(detkit_imports(bad)) == [
        (2, "detkit.models", ["heads"]),
        (3, "detkit.evaluation", []),
        (4, "detkit.data.coco._parsing", ["x"]),
    ]
