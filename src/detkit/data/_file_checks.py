"""A dataset's sample paths, checked at construction: pairs of paths, files that exist.

A dataset of 10,000 samples checks its 20,000 files by one directory listing per folder, not a
``stat`` per file, so that a missing mask is reported when the dataset is made, not mid-epoch,
at about twice the cost of listing the folders.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import cast

from detkit.types import PathLike

_LIST_FOLDER_FROM = 16  # check files by one listing of their folder from this many on


def find_missing(paths: Sequence[str]) -> list[tuple[int, str]]:
    """``(index, why)`` for each path that is not a readable file, e.g. ``"does not exist"``.

    Costs one directory listing per folder (from a few files per folder on) instead of one
    ``stat`` per file; a name the listing does not show as a file is checked by ``stat``, so a
    case-insensitive file system or a symbolic link gives the right answer.
    """
    sep, alt = os.sep, os.altsep
    keys = [path.replace(alt, sep) for path in paths] if alt else paths
    # Whole-list passes, no per-path Python statement: 20,000 paths take a few ms.
    folders = {key.rpartition(sep)[0] for key in keys}
    absent: Sequence[int] = range(len(keys))  # unless the folders' listings say otherwise
    if len(folders) * _LIST_FOLDER_FROM <= len(keys):  # else a stat per file is cheaper
        present: set[str] = set()
        for folder in folders:
            prefix = folder + sep if folder else ""
            present.update(map(prefix.__add__, files_in(folder or os.curdir)))
        absent = (
            []
            if present.issuperset(keys)
            else [i for i, key in enumerate(keys) if key not in present]
        )
    why = ((i, why_unreadable(paths[i])) for i in absent)
    return [(i, reason) for i, reason in why if reason is not None]


def missing_files_error(
    problems: list[tuple[int, str]], paths: Sequence[str], names: Sequence[str], listed: str
) -> OSError | ValueError:
    """The error for what :func:`find_missing` found: one line per file, naming its sample.

    ``names[i]`` says whose file ``paths[i]`` is (``"sample 3, mask"``); ``listed`` where the
    files were listed. A :class:`FileNotFoundError` when any file is missing, else a
    :class:`ValueError` (directories and other non-files).
    """
    missing = [why == "does not exist" for _, why in problems]
    # "does not exist" goes without saying under a heading that says it of them all.
    lines = [f"{names[i]}{'' if all(missing) else f' ({why})'}: {paths[i]}" for i, why in problems]
    shown = "\n  ".join(lines[:10]) + (
        f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
    )
    state = "do not exist" if all(missing) else "are not readable files"
    error = FileNotFoundError if any(missing) else ValueError
    return error(
        f"{len(lines)} file(s) listed in {listed} {state}:\n  {shown}{_hint(problems, paths)}"
    )


def _hint(problems: list[tuple[int, str]], paths: Sequence[str]) -> str:
    """Why files are missing when their names hold Windows separators, on POSIX."""
    if os.sep != "/":
        return ""
    named = [paths[i] for i, why in problems if why == "does not exist" and "\\" in paths[i]]
    if not named:
        return ""
    found = next(
        (p.replace("\\", "/") for p in named[:10] if os.path.isfile(p.replace("\\", "/"))), None
    )
    return (
        "\nTheir names hold '\\', the folder separator of Windows paths; on this system it is "
        "part of a file name. Write the names with '/'"
        + (f" (e.g. '{found}' exists)" if found else "")
    )


def files_in(folder: str) -> set[str]:
    """Names of the regular files (or links to them) in ``folder``; empty if unlistable."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except (OSError, ValueError):
        return set()


def why_unreadable(path: str) -> str | None:
    """Why ``path`` is not a readable regular file, or ``None`` if it is one."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except PermissionError:
        return "cannot be reached (permission denied)"
    except ValueError:
        return "is not a valid path (it contains a NUL character)"
    except OSError as exc:
        return f"cannot be reached ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    return None


def why_unidentified(path: PathLike) -> str:
    """Why PIL recognised no image in ``path``: a format it lacks a plugin for, or damage."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        head = b""
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return (
            "it is HEIC/HEIF, as phones save photos, which this PIL cannot read: install "
            "pillow-heif and call pillow_heif.register_heif_opener() first, or convert the "
            "files to JPEG or PNG"
        )
    return "no image format PIL knows (a corrupt file, or a format without a PIL plugin)"


def path_pairs(samples: Sequence[tuple[PathLike, PathLike]]) -> list[tuple[str, str]]:
    """A dataset's ``samples`` as pairs of path strings; raises for anything that is not a pair."""
    given = list(samples)
    # The common case, kept to one pass for folders of 10,000 files: pairs of strings.
    if all(type(p) is tuple and len(p) == 2 and type(p[0]) is type(p[1]) is str for p in given):
        return cast("list[tuple[str, str]]", given)
    pairs: list[tuple[str, str]] = []
    for i, pair in enumerate(given):
        try:
            if isinstance(pair, (str, bytes, os.PathLike)):
                raise ValueError
            image, mask = os.fspath(pair[0]), os.fspath(pair[1])
            if len(pair) != 2 or not isinstance(image, str) or not isinstance(mask, str):
                raise ValueError
        except (TypeError, ValueError, IndexError, KeyError):
            raise ValueError(
                f"samples[{i}] must be an (image_path, mask_path) pair, got {pair!r}"
            ) from None
        pairs.append((image, mask))
    return pairs
