"""Deprecated module path: the R-CNN builders live in :mod:`detkit.models.detectors`.

``from detkit.models.builders import maskrcnn`` still works, with a ``DeprecationWarning``;
import from :mod:`detkit.models` instead.
"""

from __future__ import annotations

from typing import Any

from detkit.models import detectors
from detkit.models.deprecation import warn_deprecated

__all__: list[str] = []

_MOVED = ("fasterrcnn", "maskrcnn", "keypointrcnn")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warn_deprecated(
            f"detkit.models.builders.{name} moved: import it from detkit.models "
            f"(it lives in detkit.models.detectors.rcnn)"
        )
        return getattr(detectors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
