"""Deprecated module path: ``detection_model`` lives in :mod:`detkit.models.detectors`.

``from detkit.models.pretrained import detection_model`` still works, with a
``DeprecationWarning``; import from :mod:`detkit.models` instead.
"""

from __future__ import annotations

from typing import Any

from detkit.models import detectors
from detkit.models.deprecation import warn_deprecated

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name == "detection_model":
        warn_deprecated(
            "detkit.models.pretrained.detection_model moved: import it from detkit.models "
            "(it lives in detkit.models.detectors.named)"
        )
        return detectors.detection_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
