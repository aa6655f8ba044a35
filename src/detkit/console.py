"""What detkit prints: log lines you see without configuring :mod:`logging`, progress bars.

detkit reports through standard :mod:`logging` records on the ``"detkit"`` logger and its
children (``"detkit.engine"``: the training lines and the evaluation summary;
``"detkit.data.download"``: downloads). Python drops ``INFO`` records when the application
configured no logging, so a script or notebook that never calls
:func:`logging.basicConfig` would see nothing. detkit therefore prints them itself in
exactly that case:

* When neither the root logger nor ``"detkit"`` has a handler (and the level of
  ``"detkit"`` was left unset), detkit's loops and downloads attach a small handler to
  ``"detkit"`` that prints ``INFO`` lines to ``sys.stdout`` (as the reference scripts'
  ``print`` does) and warnings to ``sys.stderr``, and set the level of ``"detkit"`` to
  ``INFO``.
* An application that configures logging (``logging.basicConfig(level=logging.INFO)``, a
  handler of its own) gets detkit's records through its own handlers only, never twice:
  the handler is removed at the next loop, and before then it stays silent whenever a handler
  of the application would receive the record.
* :func:`set_verbosity` chooses how much detkit says, in one call.

Progress bars come from `tqdm <https://tqdm.github.io>`_ where it is installed
(``pip install "torch-detkit[progress]"``): on a terminal, and as a widget in Jupyter
notebooks (``tqdm.auto``). Without tqdm, or when the output is a file or a pipe, the
periodic log lines are the progress report.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

__all__ = ["progress_bar", "set_verbosity", "show_output"]

_LIBRARY = logging.getLogger("detkit")


class _DefaultHandler(logging.Handler):
    """Prints detkit's records while no handler of the application would receive them."""

    def emit(self, record: logging.LogRecord) -> None:
        if _handled_elsewhere(record.name):
            return  # the application configured logging after this handler was attached
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                stream: TextIO = sys.stderr
                message = f"{record.levelname}: {message}"
            else:
                stream = sys.stdout  # looked up per record: notebooks and tests replace it
            stream.write(message + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_handler = _DefaultHandler()
_level_set_here = False  # whether the level of "detkit" is the INFO that show_output set


def _handled_elsewhere(name: str) -> bool:
    """Whether a handler other than detkit's own would receive a record of logger ``name``."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(handler is not _handler for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def show_output() -> None:
    """Attach detkit's default handler if the application configured no logging; else detach it.

    Called by detkit's training and evaluation loops and by downloads as they start, so the
    decision follows the application's latest configuration. "Configured" means a handler on
    the root logger or on ``"detkit"``. Unconfigured, the level of ``"detkit"`` becomes
    ``INFO`` unless it was set (by :func:`set_verbosity` or ``setLevel``); once configured,
    that ``INFO`` is unset again, but not a level the user set since.

    >>> show_output()  # nothing to see here: it only attaches or detaches a handler
    """
    global _level_set_here
    if _handled_elsewhere("detkit"):
        if _handler in _LIBRARY.handlers:
            _LIBRARY.removeHandler(_handler)
        if _level_set_here and _LIBRARY.level == logging.INFO:
            _LIBRARY.setLevel(logging.NOTSET)  # the application's own levels apply again
        _level_set_here = False  # a level changed since is the user's: it stays
        return
    if _handler not in _LIBRARY.handlers:
        _LIBRARY.addHandler(_handler)
    if _LIBRARY.level == logging.NOTSET:
        _LIBRARY.setLevel(logging.INFO)
        _level_set_here = True


def set_verbosity(level: int | str | None) -> None:
    """Set how much detkit prints, in one call: a :mod:`logging` level for the ``"detkit"`` logger.

    ``logging.INFO`` (what detkit shows by default when the application configured no
    logging): training lines, the evaluation summary, download messages and progress bars.
    ``logging.WARNING`` silences all of those and keeps the warnings and errors;
    ``logging.ERROR`` keeps only errors. ``None`` goes back to the default behaviour
    (described in :mod:`detkit.console`).

    With logging configured by the application (``logging.basicConfig``), this is the same
    as ``logging.getLogger("detkit").setLevel(level)``, and lines go through the
    application's handlers only. Progress bars follow the level too: they show where
    ``INFO`` records of ``"detkit.engine"`` are enabled.

    Args:
        level: a level (``logging.WARNING``, or its name ``"WARNING"``), or ``None``.

    Raises:
        ValueError: for an unknown level name.
        TypeError: for anything but an int, a str or ``None``.

    >>> import logging
    >>> set_verbosity(logging.WARNING)  # quiet: warnings and errors only
    >>> logging.getLogger("detkit").level == logging.WARNING
    True
    >>> set_verbosity(None)  # back to the default
    """
    global _level_set_here
    if level is not None and (isinstance(level, bool) or not isinstance(level, (int, str))):
        raise TypeError(f"level must be a logging level (int or name) or None, got {level!r}")
    if isinstance(level, str):
        value = logging.getLevelName(level.upper())
        if not isinstance(value, int):
            raise ValueError(f"unknown logging level name {level!r}; e.g. 'INFO' or 'WARNING'")
        level = value
    _LIBRARY.setLevel(logging.NOTSET if level is None else level)
    _level_set_here = False
    show_output()


def _tqdm() -> tuple[Any, bool] | None:
    """``(tqdm class, in a notebook)``, or ``None`` without tqdm."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tqdm's notes about its notebook mode
            from tqdm import autonotebook, std
            from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm, autonotebook.tqdm is not std.tqdm


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


def progress_bar(
    total: int | None,
    *,
    desc: str = "",
    enabled: bool | None = None,
    logger: logging.Logger | None = None,
    stream: TextIO | None = None,
    **options: Any,
) -> Any:
    """A tqdm progress bar (``tqdm.auto``: a widget in notebooks), or ``None`` for none.

    ``None`` without tqdm, when ``enabled`` is ``False``, and, when ``enabled`` is ``None``
    (the default), unless ``logger`` (default ``"detkit"``) is enabled for ``INFO`` and the
    output is a terminal or a notebook: into a file or a pipe, a bar's redraws would only
    clutter the log, whose periodic lines report the progress instead.

    Args:
        total: the expected count (``None``: unknown).
        desc: the bar's label.
        enabled: ``True`` draws a bar whenever tqdm is installed.
        logger: whose level decides when ``enabled`` is ``None``.
        stream: where a text bar goes (default ``sys.stderr``, as tqdm does).
        **options: more keyword arguments for ``tqdm`` (``unit="B"``, ``unit_scale=True``).

    >>> progress_bar(10, enabled=False) is None
    True
    """
    if enabled is False:
        return None
    found = _tqdm()
    if found is None:
        return None
    tqdm, notebook = found
    stream = stream if stream is not None else sys.stderr
    if enabled is None:
        if not (logger or _LIBRARY).isEnabledFor(logging.INFO):
            return None
        if not (notebook or _isatty(stream)):
            return None
    return tqdm(total=total, desc=desc, file=stream, dynamic_ncols=True, **options)
