"""The API reference documents every public name of every public module."""

import importlib
import pkgutil
import re
from pathlib import Path

import detkit

DOCS = Path(__file__).resolve().parents[1] / "docs"


def public_modules():
    yield detkit
    for info in pkgutil.walk_packages(detkit.__path__, prefix="detkit."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def documented_objects():
    names = set()
    for page in (DOCS / "api").glob("*.rst"):
        names.update(re.findall(r"^\.\. automodule:: ([\w.]+)", page.read_text(), re.MULTILINE))
    objects = {}
    for name in names:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            objects[id(getattr(module, attr))] = f"{name}.{attr}"
    return names, objects


def test_every_public_name_is_in_the_api_reference():
    _, documented = documented_objects()
    missing = []
    for module in public_modules():
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        for attr in module.__all__:
            if attr == "__version__":
                continue
            if id(getattr(module, attr)) not in documented:
                missing.append(f"{module.__name__}.{attr}")
    assert missing == []


def test_every_public_name_has_a_docstring():
    undocumented = [
        f"{module.__name__}.{attr}"
        for module in public_modules()
        for attr in module.__all__
        if attr != "__version__"
        and callable(getattr(module, attr))
        and not (getattr(module, attr).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_every_public_function_and_class_has_an_example():
    """Docstrings carry a ``>>>`` example (run as a doctest); exception classes are exempt."""
    without = [
        f"{module.__name__}.{attr}"
        for module in public_modules()
        for attr in module.__all__
        if callable(obj := getattr(module, attr))
        and not (isinstance(obj, type) and issubclass(obj, BaseException))
        and ">>>" not in (obj.__doc__ or "")
    ]
    assert without == []
