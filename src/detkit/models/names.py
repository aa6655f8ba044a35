"""Models by name: the one check that tells a mistyped model name which name was meant."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__: list[str] = []

# Up to this many known names are listed in the message; longer lists are only counted.
_LISTED = 30


def check_model_name(name: object, known: Sequence[str], what: str) -> str:
    """``name`` if it is one of ``known``; else a ``ValueError`` that suggests close names.

    Args:
        name: the name the user gave.
        known: the names that exist.
        what: what a name must be, for the message (``"a torchvision detection model"``).

    >>> check_model_name("resnet5", ["resnet18", "resnet50"], "a classification model")
    Traceback (most recent call last):
    ...
    ValueError: 'resnet5' is not a classification model; did you mean 'resnet50', 'resnet18'? Known: resnet18, resnet50.
    """
    if not isinstance(name, str):
        raise TypeError(f"the model name must be a str, got {type(name).__name__}")
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "."
    if len(known) <= _LISTED:
        listing = f" Known: {', '.join(known)}."
    else:
        listing = f" There are {len(known)}; torchvision.models.list_models lists them."
    raise ValueError(f"{name!r} is not {what}{hint}{listing}")
