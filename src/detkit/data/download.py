"""Verified downloads and safe, atomic archive extraction for datasets.

Downloads report their progress as :mod:`detkit.console` says: a tqdm bar on a terminal or in
a notebook, else ``INFO`` lines of the ``"detkit.data.download"`` logger every tenth of the
file, visible without any logging configuration.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import ssl
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from detkit.console import progress_bar, show_output
from detkit.files import atomic_write

__all__ = ["DownloadError", "download_file", "extract_zip"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed, was incomplete, or did not match its expected size or checksum."""


def _mismatches(
    received: int,
    digests: dict[str, Any],
    sha256: str | None,
    md5: str | None,
    size: int | None,
) -> list[str]:
    """What differs from the expected size and checksums, in words (empty when all match)."""
    found = []
    if size is not None and received != size:
        found.append(f"expected {size} bytes, got {received}")
    for name, expected in (("sha256", sha256), ("md5", md5)):
        actual = digests[name].hexdigest()
        if expected is not None and actual != expected.lower():
            found.append(f"{name} mismatch (expected {expected}, got {actual})")
    return found


def _new_digests() -> dict[str, Any]:
    return {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}


def _check_existing(path: Path, sha256: str | None, md5: str | None, size: int | None) -> list[str]:
    """The mismatches of the file already at ``path`` (read in chunks, as a download is)."""
    digests = _new_digests()
    received = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            received += len(chunk)
            for digest in digests.values():
                digest.update(chunk)
    return _mismatches(received, digests, sha256, md5, size)


def download_file(
    url: str,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``path``, verified, atomically; keep a verified file already there.

    When ``path`` already exists and checks are given (``sha256``, ``md5`` or ``size``), it
    is verified like a download: a file that passes is kept and nothing is fetched; one that
    fails (a damaged or different file) is replaced by a fresh download, and if that download
    fails too the error says both. Without checks, an existing file is downloaded again.

    The bytes go to a temporary file beside ``path`` (:func:`detkit.files.atomic_write`) that
    replaces ``path`` only once the transfer is complete and every given check passes, so an
    interrupted or corrupt download never leaves a half-written ``path``; the temporary file
    of a killed download is removed by the next write into that folder. A transfer shorter
    than the server's ``Content-Length`` is an error, and so is a web page (``Content-Type``
    ``text/html``, a login or virus-scan page of a share link) where ``path`` is not an
    ``.html`` file, unless the given checks pass. When the server gives no size (nor a
    chunked transfer, whose end is marked) and no check is given, a cut transfer cannot be
    told from a whole one: the file is kept, with a warning that says so.

    Args:
        url: what to fetch (``http(s)://`` or ``file://``).
        path: where to store it.
        sha256: expected SHA-256 hex digest, checked when given.
        md5: expected MD5 hex digest, checked when given (for sources that publish only MD5).
        size: expected size in bytes, checked when given.
        timeout: socket timeout in seconds.

    Returns:
        ``Path(path)``.

    Raises:
        DownloadError: naming the URL and what went wrong (unreachable / offline, HTTP error,
            a TLS certificate that cannot be verified, truncated transfer, size or checksum
            mismatch, a web page instead of the file).
        OSError: when ``path`` cannot be written (a full disk, no permission), naming it.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "src.txt").write_text("hello")
    >>> sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    >>> url = (folder / "src.txt").as_uri()
    >>> download_file(url, folder / "copy.txt", sha256=sha256).read_text()
    'hello'
    """
    path = Path(path)
    show_output()  # progress visible without any logging configuration
    stale = ""
    if path.is_dir():
        raise DownloadError(f"cannot download {url} to '{path}': it is a directory")
    if path.is_file() and (sha256 or md5 or size is not None):
        mismatches = _check_existing(path, sha256, md5, size)
        if not mismatches:
            logger.info("%s is already there and matches its checksum", path)
            return path
        stale = f"'{path}' was already there but does not match ({'; '.join(mismatches)})"
        logger.warning("%s: downloading a fresh copy from %s", stale, url)
    try:
        received = _fetch(url, path, sha256, md5, size, timeout)
    except DownloadError as exc:
        if stale:
            raise DownloadError(f"{stale}, and downloading a fresh copy failed: {exc}") from exc
        raise
    logger.info("downloaded %s (%d bytes) to %s", url, received, path)
    return path


def _fetch(
    url: str,
    path: Path,
    sha256: str | None,
    md5: str | None,
    size: int | None,
    timeout: float,
) -> int:
    """Stream ``url`` into ``path`` through a temporary file; return the bytes received."""
    digests = _new_digests()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "detkit"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise _unreachable(url, path, exc) from exc
    with response, atomic_write(path) as out, _Progress(url, path, response) as progress:
        announced = progress.total
        page = _html_page(response, path)
        while True:
            # Network errors become DownloadError here; an OSError from out.write is a local
            # write failure (a full disk), which atomic_write reports naming ``path``.
            try:
                chunk = response.read(_CHUNK)
            except (TimeoutError, ConnectionError) as exc:
                raise _unreachable(url, path, exc) from exc
            except OSError as exc:  # e.g. http.client.IncompleteRead
                raise DownloadError(
                    f"downloading {url} failed after {received} bytes: {exc}"
                ) from exc
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            progress.update(len(chunk))
            for digest in digests.values():
                digest.update(chunk)
        if announced is not None and received != announced:
            raise DownloadError(
                f"downloading {url}: the transfer was cut short ({received} of {announced} bytes)"
            )
        mismatches = _mismatches(received, digests, sha256, md5, size)
        if mismatches:
            raise DownloadError(
                f"downloading {url}: {'; '.join(mismatches)}; the file is corrupt or not the "
                f"expected one{page}"
            )
        checked = sha256 or md5 or size is not None
        if page and not checked:
            raise DownloadError(f"downloading {url}: not saved to '{path}'{page}")
        if announced is None and not checked and not _chunked(response):
            logger.warning(
                "downloaded %s (%d bytes) without a way to verify it: the server did not say "
                "the file's size and no checksum was given, so a transfer cut short looks "
                "like a whole one; pass sha256= (or size=) to download_file to check it",
                url,
                received,
            )
    return received


def _chunked(response: Any) -> bool:
    """Whether the body came in HTTP chunks, whose end marker shows a transfer cut short."""
    encoding = response.headers.get("Transfer-Encoding") or ""
    return "chunked" in encoding.lower()


def _html_page(response: Any, path: Path) -> str:
    """A sentence when the server answered with a web page where ``path`` wants a file."""
    kind = response.headers.get_content_type()
    if kind != "text/html" or path.suffix.lower() in (".html", ".htm"):
        return ""
    return (
        ": the server sent a web page (Content-Type text/html), not the file, as a login, "
        "consent or virus-scan page does (share links of cloud drives often give one); "
        "fetch the file with a browser and place it there, or use a direct download link"
    )


class _Progress:
    """A download's progress: a tqdm bar where one shows, else a log line every tenth of the
    file (every 64 MiB when the server does not say its size)."""

    def __init__(self, url: str, path: Path, response: Any) -> None:
        announced = response.headers.get("Content-Length")
        self.total = int(announced) if announced is not None and announced.isdigit() else None
        self.url = url
        self.received = 0
        self.every = max(self.total // 10, 1) if self.total else 64 * _CHUNK
        self.next = self.every
        size = _megabytes(self.total) if self.total is not None else "size unknown"
        logger.info("downloading %s to %s (%s)", url, path, size)
        self.bar = progress_bar(
            self.total,
            desc=path.name,
            logger=logger,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
        )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, count: int) -> None:
        self.received += count
        if self.bar is not None:
            self.bar.update(count)
            return
        if self.received < self.next or self.received == self.total:
            return  # the last line says "downloaded"
        while self.next <= self.received:
            self.next += self.every
        done = _megabytes(self.received)
        if self.total:
            done = f"{100 * self.received // self.total}% ({done} of {_megabytes(self.total)})"
        logger.info("downloading %s: %s", self.url, done)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def _unreachable(url: str, path: Path, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return DownloadError(
            f"could not download {url}: the server's TLS certificate could not be "
            f"verified ({reason.verify_message}). Some servers send an incomplete "
            "certificate chain; point Python at a complete CA bundle (for instance "
            "SSL_CERT_FILE=$(python -m certifi), with certifi installed), or fetch the "
            f"file with a browser and place it at '{path}'."
        )
    return DownloadError(
        f"could not download {url}: {reason}. If this machine is offline, fetch the file "
        f"on another machine and place it at '{path}' (or point the program at the "
        "extracted data) instead."
    )


def _check_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    name = PurePosixPath(info.filename)
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise ValueError(
            f"refusing to extract '{archive}': member '{info.filename}' would land outside the "
            "target folder"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ValueError(
            f"refusing to extract '{archive}': member '{info.filename}' is a symbolic link"
        )
    return name


def extract_zip(archive: str | os.PathLike, destination: str | os.PathLike) -> list[Path]:
    """Extract a zip archive safely and atomically into ``destination``.

    Every member is checked before anything is written: absolute paths, ``..`` components
    and symbolic links are refused (a "zip slip" archive cannot write outside
    ``destination``). Members are extracted into a temporary folder inside ``destination``,
    and each top-level entry is then renamed into place, so an interrupted extraction leaves
    no partial folder behind. Existing top-level entries of the same name are an error.

    Args:
        archive: the zip file.
        destination: the folder to extract into (created if needed).

    Returns:
        The extracted top-level paths.

    Raises:
        ValueError: for an unsafe member, a corrupt archive, or an existing entry.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(folder / "a.zip", "w") as z:
    ...     z.writestr("data/x.txt", "x")
    >>> [p.name for p in extract_zip(folder / "a.zip", folder / "out")]
    ['data']
    """
    archive, destination = Path(archive), Path(destination)
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"cannot open zip archive '{archive}': {exc}") from exc
    with handle:
        names = [_check_member(info, archive) for info in handle.infolist()]
        tops = sorted({name.parts[0] for name in names if name.parts})
        destination.mkdir(parents=True, exist_ok=True)
        existing = [top for top in tops if (destination / top).exists()]
        if existing:
            raise ValueError(
                f"cannot extract '{archive}' into '{destination}': {existing} already exist"
            )
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination))
        try:
            try:
                handle.extractall(staging)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ValueError(f"cannot extract '{archive}': {exc}") from exc
            for top in tops:
                os.replace(staging / top, destination / top)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [destination / top for top in tops]
