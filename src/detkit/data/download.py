"""Verified downloads and safe, atomic archive extraction for datasets."""

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

__all__ = ["DownloadError", "download_file", "extract_zip"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed, was incomplete, or did not match its expected size or checksum."""


def download_file(
    url: str,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``path``, verified, atomically.

    The bytes go to a temporary file beside ``path`` that is renamed into place only once
    the transfer is complete and every given check passes, so an interrupted or corrupt
    download never leaves a half-written ``path``. A transfer shorter than the server's
    ``Content-Length`` is an error.

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
            mismatch).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "src.txt").write_text("hello")
    >>> download_file((folder / "src.txt").as_uri(), folder / "copy.txt",
    ...               sha256="2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    received = 0
    try:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "detkit"})
            with (
                urllib.request.urlopen(request, timeout=timeout) as response,
                os.fdopen(fd, "wb") as out,
            ):
                announced = response.headers.get("Content-Length")
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise DownloadError(
                    f"could not download {url}: the server's TLS certificate could not be "
                    f"verified ({reason.verify_message}). Some servers send an incomplete "
                    "certificate chain; point Python at a complete CA bundle (for instance "
                    "SSL_CERT_FILE=$(python -m certifi), with certifi installed), or fetch the "
                    f"file with a browser and place it at '{path}'."
                ) from exc
            raise DownloadError(
                f"could not download {url}: {reason}. If this machine is offline, fetch the file "
                f"on another machine and place it at '{path}' (or point the program at the "
                "extracted data) instead."
            ) from exc
        except OSError as exc:  # e.g. http.client.IncompleteRead
            raise DownloadError(f"downloading {url} failed after {received} bytes: {exc}") from exc
        if announced is not None and received != int(announced):
            raise DownloadError(
                f"downloading {url}: the transfer was cut short ({received} of {announced} bytes)"
            )
        if size is not None and received != size:
            raise DownloadError(f"downloading {url}: expected {size} bytes, received {received}")
        for name, expected in (("sha256", sha256), ("md5", md5)):
            actual = digests[name].hexdigest()
            if expected is not None and actual != expected.lower():
                raise DownloadError(
                    f"downloading {url}: {name} mismatch (expected {expected}, got {actual}); "
                    "the file is corrupt or not the expected one"
                )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("downloaded %s (%d bytes) to %s", url, received, path)
    return path


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
