"""Writing files so that a crash or a full disk never leaves a half-written one, and plain error text.

Everything detkit (and its example) writes -- checkpoints, metrics, COCO results, pictures,
downloads -- goes through :func:`atomic_write`: the bytes go to a temporary file in the
destination's folder, are flushed to the disk (``fsync``), and the temporary file is then
renamed over the destination. A rename within one folder is atomic on POSIX and Windows, so a
reader sees either the previous file or the complete new one, never a mix, whatever happens
in between (a kill, a power cut, a full disk).
A second name for a complete file (``best.pt`` for the best epoch's checkpoint) is made the
same way, by :func:`atomic_link`.

Temporary files are named ``.<name>.<pid>.<random>.tmp``. One left behind by a process that was
killed while writing is removed the next time any process writes into that folder (once the
process that made it is gone and the file has not changed for a minute).

Messages of third-party errors that detkit wraps are passed through :func:`plain_text`, so no
detkit exception carries terminal colour codes (torch's ``torch.load`` messages do).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_link",
    "atomic_write",
    "check_undamaged",
    "damaged_records",
    "load_error_reason",
    "plain_text",
    "remove_stale_temporaries",
    "write_json",
]

# Seconds a temporary file must have been left unchanged before it counts as abandoned.
_STALE_AFTER = 60.0
# Without a way to ask whether the writing process still lives (Windows), wait longer.
_STALE_AFTER_UNKNOWN_OWNER = 3600.0
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def _write_error(error: OSError, path: Path) -> OSError:
    """``error`` re-raised as an OSError of the same errno (and subclass) naming ``path``."""
    reason = error.strerror or plain_text(str(error)) or type(error).__name__
    if error.errno is None:
        return OSError(f"cannot write '{path}': {reason}")
    # OSError(errno, ...) picks the subclass itself: PermissionError for EACCES, and so on.
    return OSError(error.errno, reason, str(path))


def _process_alive(pid: int) -> bool | None:
    """Whether process ``pid`` runs on this machine; ``None`` where that cannot be asked."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left in ``folder``.

    A file counts as abandoned when its name is one :func:`atomic_write` gives, the process
    named in it no longer runs (where the system can tell; on Windows it is not asked and the
    file must be an hour old instead) and it has not been modified for a minute, so a write
    in progress in another process is never touched. Files that cannot be
    removed are left alone.

    Args:
        folder: the folder to clean.

    Returns:
        The paths removed.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> left = folder / ".last.pt.999999999.0123abcd.tmp"  # pid 999999999: gone
    >>> _ = left.write_bytes(b"half a checkpoint")
    >>> os.utime(left, (0, 0))  # untouched for a long time
    >>> [p.name for p in remove_stale_temporaries(folder)]
    ['.last.pt.999999999.0123abcd.tmp']
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid():
            continue
        alive = _process_alive(int(match["pid"]))
        if alive:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if age < (_STALE_AFTER if alive is False else _STALE_AFTER_UNKNOWN_OWNER):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _sweep_once(folder: Path) -> None:
    """Clean ``folder`` on this process's first write into it (not on every picture)."""
    key = folder.resolve()
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale_temporaries(folder)


def _fsync_folder(folder: Path) -> None:
    """Persist a rename (POSIX). Some file systems refuse to sync a folder: the file is safe."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temporary_path(path: Path) -> Path:
    """The name a write to ``path`` goes through first (one :func:`remove_stale_temporaries`
    recognises, so that a file left by a killed process is swept)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file to write ``path`` through; it replaces ``path`` only on success.

    Use it as ``open``. When the ``with`` block ends normally, the file is flushed, synced to
    the disk and renamed over ``path`` (the folder is created first when needed). When the
    block raises, or writing fails, the temporary file is removed and ``path`` keeps its
    previous content (or stays absent).

    Args:
        path: the file to write.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        encoding: for text mode; default UTF-8.

    Yields:
        The open temporary file.

    Raises:
        OSError: when the folder cannot be created, or the file cannot be written, synced or
            renamed (a full disk, no permission). It names ``path`` and keeps the operating
            system's reason and ``errno``, e.g. ``[Errno 28] No space left on device:
            'runs/metrics.json'``; a :class:`PermissionError` stays one. Any ``OSError`` the
            ``with`` block raises is taken as a failure to write and reported the same way.
        ValueError: for another ``mode``.

    >>> import json, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> with atomic_write(path, "w") as file:
    ...     json.dump({"AP": 0.5}, file)
    >>> path.read_text()
    '{"AP": 0.5}'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(error, folder) from error
    _sweep_once(folder)
    tmp = _temporary_path(path)
    binary = mode == "wb"
    try:
        with open(
            tmp, "xb" if binary else "x", encoding=None if binary else encoding or "utf-8"
        ) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError):
            raise _write_error(error, path) from error
        raise
    _fsync_folder(folder)


def write_json(path: str | os.PathLike[str], data: Any, **options: Any) -> Path:
    """Write ``data`` as a JSON file through :func:`atomic_write`; returns the path.

    The text is made first, so a value JSON cannot hold raises before anything is written;
    a full disk or a crash then leaves the previous file whole.

    Args:
        path: the file to write.
        data: what ``json.dumps`` can serialize.
        options: passed to ``json.dumps`` (``indent=2``, say).

    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> path = write_json(folder / "metrics.json", {"AP": 0.5}, indent=1)
    >>> json.loads(path.read_text())
    {'AP': 0.5}
    """
    text = json.dumps(data, **options)
    with atomic_write(path, "w") as file:
        file.write(text)
    return Path(path)


def atomic_link(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
    """Make ``destination`` a complete copy of ``source`` in one atomic step.

    A hard link (no bytes copied), made under a temporary name and renamed over
    ``destination``: ``destination`` is at every moment either its previous file or
    ``source``'s, and later removing ``source`` leaves it intact (how a run keeps ``best.pt``
    beside its epoch checkpoints). Where the file system has no hard links, a copy written
    with :func:`atomic_write`. The two names share their bytes: replace ``source`` (as
    :func:`atomic_write` does), never edit it in place.

    Args:
        source: the complete file.
        destination: the file to create or replace (in an existing folder).

    Raises:
        OSError: when neither the link nor the copy can be made.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "checkpoint_003.pt").write_bytes(b"epoch 3")
    >>> atomic_link(folder / "checkpoint_003.pt", folder / "best.pt")
    >>> (folder / "checkpoint_003.pt").unlink()
    >>> (folder / "best.pt").read_bytes()
    b'epoch 3'
    """
    destination = Path(destination)
    temporary = _temporary_path(destination)
    try:
        os.link(source, temporary)
    except OSError:
        with open(source, "rb") as file, atomic_write(destination) as copy:
            shutil.copyfileobj(file, copy)
        return
    try:
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(destination.parent)


def plain_text(text: str) -> str:
    """``text`` without terminal escape sequences (colours, bold), for exception messages.

    >>> plain_text("Load failed, \\x1b[1mdo this only if you trust it\\x1b[0m.")
    'Load failed, do this only if you trust it.'
    """
    return _ESCAPE.sub("", text)


def damaged_records(path: str | os.PathLike[str]) -> list[str]:
    """The records of a ``torch.save`` file whose bytes fail the CRC-32 written with them.

    ``torch.load`` does not verify these checksums: a file altered after it was written (a bad
    copy, download or disk) loads without a word, with wrong tensor values. This reads every
    record once, a chunk at a time. Records written without a checksum (``torch.save`` under
    ``torch.serialization.set_crc32_options(False)`` writes 0) are not verified, nor are files
    that are not zip archives (the legacy format): for them the list is empty.

    Args:
        path: the file.

    Returns:
        The names of the damaged records (a record whose header is unreadable counts too).

    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "weights.pt"
    >>> torch.save({"w": torch.zeros(1000)}, path)
    >>> damaged_records(path)
    []
    >>> data = bytearray(path.read_bytes())
    >>> data[len(data) // 2] ^= 1
    >>> _ = path.write_bytes(bytes(data))
    >>> damaged_records(path)
    ['weights/data/0']
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return []
    damaged = []
    with archive:
        for info in archive.infolist():
            if info.CRC == 0:
                continue
            try:
                with archive.open(info) as record:  # checks the CRC-32 once read to the end
                    while record.read(1 << 20):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError, ValueError):
                damaged.append(info.filename)
    return damaged


def check_undamaged(path: str | os.PathLike[str], what: str, advice: str) -> None:
    """Raise ``ValueError`` naming ``path`` when :func:`damaged_records` finds damage in it.

    Args:
        path: a ``torch.save`` file.
        what: how the message names it (``"checkpoint"``, ``"weights file"``).
        advice: what the reader should do, ending the message.

    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.save({"w": torch.zeros(1000)}, path)
    >>> check_undamaged(path, "weights", "fetch it")
    >>> data = bytearray(path.read_bytes())
    >>> data[len(data) // 2] ^= 1
    >>> _ = path.write_bytes(bytes(data))
    >>> check_undamaged(path, "weights", "fetch it")
    Traceback (most recent call last):
    ValueError: weights '...w.pt' is damaged: the bytes of w/data/0 ...
    """
    records = damaged_records(path)
    if records:
        more = " and more" if len(records) > 3 else ""
        raise ValueError(
            f"{what} '{path}' is damaged: the bytes of {', '.join(records[:3])}{more} do not "
            "match the checksums written with them (the file changed after it was saved: a "
            f"bad copy, download or disk); {advice}"
        )


def load_error_reason(error: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """One plain line saying why ``torch.load(path, weights_only=True)`` failed.

    torch's messages span a dozen lines with terminal codes and advice about PyTorch 2.6; what
    matters is one of: the file is no ``torch.save`` file at all (told by its first bytes when
    ``path`` is given), it needs a pickled class (``argparse.Namespace``, a model class ...),
    it is cut short (a zip archive without its end), or the line after ``WeightsUnpickler
    error:``. Other errors give their first line.

    >>> message = ("Weights only load failed.\\n\\tWeightsUnpickler error: "
    ...            "Unsupported global: GLOBAL argparse.Namespace was not allowed")
    >>> print(load_error_reason(ValueError(message))[:42])
    it holds a pickled argparse.Namespace, whi
    """
    if path is not None:
        try:
            with open(path, "rb") as file:
                head = file.read(4)
        except OSError:
            head = b""
        # torch.save writes a zip archive (PK\x03\x04) or, in its legacy format, a pickle.
        if head and not head.startswith((b"PK\x03\x04", b"\x80")):
            return "it is not a file written by torch.save"
        if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
            return (
                "it is cut short: a torch.save zip archive without its end (an interrupted "
                "copy or download?)"
            )
    text = plain_text(str(error))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled {found[1]}, which torch.load(weights_only=True) refuses to run"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if found:
        return f"torch.load(weights_only=True) refused it: {found[1].strip()}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
