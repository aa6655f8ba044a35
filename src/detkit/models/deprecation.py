"""Deprecation warnings of :mod:`detkit.models` that point at the caller's line."""

from __future__ import annotations

import sys
import warnings
from types import FrameType

__all__: list[str] = []


def warn_deprecated(message: str) -> None:
    """Issue a ``DeprecationWarning`` attributed to the first caller outside detkit.models.

    Python shows a ``DeprecationWarning`` when it is attributed to ``__main__`` (a script,
    a notebook) and pytest shows them all, so the warning must name the user's line, not
    the detkit function that noticed the old usage.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_deprecated("old() is new() now")
    >>> caught[0].category.__name__, str(caught[0].message)
    ('DeprecationWarning', 'old() is new() now')
    """
    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("detkit.models"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)
