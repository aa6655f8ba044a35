import hashlib
import io
import logging
import socket
import zipfile

import pytest

import detkit.console as console
from detkit.data.download import DownloadError, download_file, extract_zip


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


GOOD = make_zip(
    {"PennFudanPed/PNGImages/a.png": b"image", "PennFudanPed/PedMasks/a_mask.png": b"m"}
)


def test_good_download_and_extract(http_server, tmp_path):
    base, routes = http_server
    routes["/data.zip"] = GOOD
    path = download_file(
        f"{base}/data.zip",
        tmp_path / "data.zip",
        sha256=hashlib.sha256(GOOD).hexdigest(),
        md5=hashlib.md5(GOOD).hexdigest(),
        size=len(GOOD),
    )
    assert path.read_bytes() == GOOD
    tops = extract_zip(path, tmp_path / "out")
    assert tops == [tmp_path / "out" / "PennFudanPed"]
    assert (tmp_path / "out/PennFudanPed/PNGImages/a.png").read_bytes() == b"image"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["PennFudanPed"]  # no staging left


@pytest.mark.parametrize(
    "checks,message",
    [
        ({"sha256": "0" * 64}, "sha256 mismatch"),
        ({"md5": "0" * 32}, "md5 mismatch"),
        ({"size": 10}, "expected 10 bytes"),
    ],
)
def test_bad_checksum_leaves_nothing(http_server, tmp_path, checks, message):
    base, routes = http_server
    routes["/data.zip"] = GOOD
    with pytest.raises(DownloadError, match=message):
        download_file(f"{base}/data.zip", tmp_path / "data.zip", **checks)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_leaves_nothing(http_server, tmp_path):
    base, routes = http_server
    routes["/data.zip"] = (GOOD[:100], {"Content-Length": str(len(GOOD))})
    with pytest.raises(DownloadError, match=r"data\.zip"):
        download_file(f"{base}/data.zip", tmp_path / "data.zip")
    assert list(tmp_path.iterdir()) == []


def test_a_web_page_instead_of_the_file_is_refused_and_leaves_nothing(http_server, tmp_path):
    # A share link's login or virus-scan page came back as 'data.zip', without a word.
    base, routes = http_server
    page = b"<html><body>Sign in to continue</body></html>"
    routes["/data.zip"] = (page, {"Content-Type": "text/html; charset=utf-8"})
    with pytest.raises(DownloadError, match=r"data\.zip.*web page \(Content-Type text/html\)"):
        download_file(f"{base}/data.zip", tmp_path / "data.zip")
    with pytest.raises(DownloadError, match=r"sha256 mismatch.*sent a web page"):
        download_file(f"{base}/data.zip", tmp_path / "data.zip", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    # A page asked for, and a file whose checks pass, are kept whatever their type.
    assert download_file(f"{base}/data.zip", tmp_path / "page.html").read_bytes() == page
    sha256 = hashlib.sha256(page).hexdigest()
    assert download_file(f"{base}/data.zip", tmp_path / "x.zip", sha256=sha256).exists()


def test_an_unreadable_content_length_is_an_unknown_size(http_server, tmp_path, caplog):
    """With no size from the server and no check given, a cut transfer would look whole:
    the file is kept, and a warning says it could not be verified (not with a checksum)."""
    base, routes = http_server
    routes["/data.zip"] = (GOOD, {"Content-Length": "many"})
    with caplog.at_level(logging.WARNING, logger="detkit"):
        assert download_file(f"{base}/data.zip", tmp_path / "data.zip").read_bytes() == GOOD
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"downloaded {base}/data.zip ({len(GOOD)} bytes) without a way to verify" in warning
    assert "pass sha256=" in warning
    caplog.clear()
    sha256 = hashlib.sha256(GOOD).hexdigest()
    with caplog.at_level(logging.WARNING, logger="detkit"):
        download_file(f"{base}/data.zip", tmp_path / "checked.zip", sha256=sha256)
        download_file(f"{base}/data.zip", tmp_path / "sized.zip", size=len(GOOD))
        routes["/announced.zip"] = GOOD  # the server says its size: checked, no warning
        download_file(f"{base}/announced.zip", tmp_path / "announced.zip")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_http_error(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{base}/missing.zip", tmp_path / "x.zip")


def test_offline_message(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=r"could not download .* offline") as info:
        download_file(f"http://127.0.0.1:{port}/data.zip", tmp_path / "data.zip", timeout=5)
    assert str(tmp_path / "data.zip") in str(info.value)


def test_unverifiable_certificate_says_so(https_server, tmp_path, monkeypatch):
    """An HTTPS server whose certificate chain Python cannot verify (Penn-Fudan's is such a
    server on some machines) gets an error about the certificate and how to fix it."""
    base, routes, certificate = https_server
    routes["/data.zip"] = b"payload"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(DownloadError, match=r"TLS certificate could not be verified") as info:
        download_file(f"{base}/data.zip", tmp_path / "data.zip", timeout=10)
    assert "SSL_CERT_FILE" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    # The advice works: trusting the certificate through SSL_CERT_FILE makes the download pass.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    path = download_file(f"{base}/data.zip", tmp_path / "data.zip", timeout=10)
    assert path.read_bytes() == b"payload"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_zip_slip_refused_before_writing(tmp_path, name):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"good/file.txt": b"x", name: b"evil"}))
    with pytest.raises(ValueError, match="would land outside the target folder"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "good").exists()


def test_symlink_member_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("data/link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_corrupt_archive_and_existing_folder(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot open zip archive"):
        extract_zip(tmp_path / "bad.zip", tmp_path / "out")
    (tmp_path / "good.zip").write_bytes(GOOD)
    extract_zip(tmp_path / "good.zip", tmp_path / "out")
    with pytest.raises(ValueError, match=r"\['PennFudanPed'\] already exist"):
        extract_zip(tmp_path / "good.zip", tmp_path / "out")


# -- a file already in place is verified like a download ----------------------------------------


def test_a_verified_file_already_in_place_is_kept_without_a_request(http_server, tmp_path):
    base, _ = http_server  # no route: any request would fail with HTTP 404
    (tmp_path / "data.zip").write_bytes(GOOD)
    path = download_file(
        f"{base}/data.zip", tmp_path / "data.zip", md5=hashlib.md5(GOOD).hexdigest()
    )
    assert path.read_bytes() == GOOD


def test_a_damaged_file_in_place_is_replaced_by_a_fresh_download(http_server, tmp_path):
    base, routes = http_server
    routes["/data.zip"] = GOOD
    (tmp_path / "data.zip").write_bytes(GOOD[:-7])  # an earlier download cut short
    path = download_file(
        f"{base}/data.zip", tmp_path / "data.zip", sha256=hashlib.sha256(GOOD).hexdigest()
    )
    assert path.read_bytes() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["data.zip"]


def test_a_damaged_file_in_place_that_cannot_be_replaced_says_both(http_server, tmp_path):
    base, _ = http_server
    (tmp_path / "data.zip").write_bytes(b"something else")
    with pytest.raises(DownloadError) as caught:
        download_file(f"{base}/data.zip", tmp_path / "data.zip", md5=hashlib.md5(GOOD).hexdigest())
    message = str(caught.value)
    assert (
        f"'{tmp_path / 'data.zip'}' was already there but does not match (md5 mismatch" in message
    )
    assert "downloading a fresh copy failed" in message and "HTTP 404" in message
    assert (tmp_path / "data.zip").read_bytes() == b"something else"  # the user's file stays


def test_a_full_disk_names_the_file_and_leaves_no_partial_download(
    http_server, tmp_path, monkeypatch
):
    import errno
    import os

    base, routes = http_server
    routes["/data.zip"] = GOOD

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=r"No space left on device: '.*data\.zip'") as caught:
        download_file(f"{base}/data.zip", tmp_path / "data.zip")
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_file_of_a_killed_download_is_removed_by_the_next(http_server, tmp_path):
    import os
    import subprocess
    import sys

    base, routes = http_server
    routes["/data.zip"] = GOOD
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    leftover = tmp_path / f".data.zip.{int(gone.stdout)}.0123abcd.tmp"
    leftover.write_bytes(GOOD[:10])
    os.utime(leftover, (0, 0))
    download_file(f"{base}/data.zip", tmp_path / "data.zip")
    assert [p.name for p in tmp_path.iterdir()] == ["data.zip"]


def test_progress_is_logged_every_tenth_without_a_bar(http_server, tmp_path, caplog):
    # Not a terminal (pytest captures the output): the log lines report the progress.
    base, routes = http_server
    body = bytes(range(256)) * (3584 * 4)  # 3.5 MiB: read in chunks of 1 MiB
    routes["/big.bin"] = body
    with caplog.at_level(logging.INFO, logger="detkit.data.download"):
        download_file(f"{base}/big.bin", tmp_path / "big.bin")
    assert [r.getMessage() for r in caplog.records] == [
        f"downloading {base}/big.bin to {tmp_path / 'big.bin'} (3.7 MB)",
        f"downloading {base}/big.bin: 28% (1.0 MB of 3.7 MB)",
        f"downloading {base}/big.bin: 57% (2.1 MB of 3.7 MB)",
        f"downloading {base}/big.bin: 85% (3.1 MB of 3.7 MB)",
        f"downloaded {base}/big.bin ({len(body)} bytes) to {tmp_path / 'big.bin'}",
    ]


def test_progress_bar_counts_the_bytes(http_server, tmp_path, caplog, monkeypatch):
    bars = []

    class Bar:  # stands for tqdm.auto.tqdm in a notebook
        def __init__(self, **options):
            self.options, self.counts, self.closed = options, [], False
            bars.append(self)

        def update(self, count):
            self.counts.append(count)

        def close(self):
            self.closed = True

    monkeypatch.setattr(console, "_tqdm", lambda: (Bar, True))
    base, routes = http_server
    routes["/data.zip"] = GOOD
    with caplog.at_level(logging.INFO, logger="detkit"):
        download_file(f"{base}/data.zip", tmp_path / "data.zip")
    [bar] = bars
    assert (bar.options["total"], bar.options["desc"], bar.options["unit"]) == (
        len(GOOD),
        "data.zip",
        "B",
    )
    assert sum(bar.counts) == len(GOOD) and bar.closed
    routes["/gone.zip"] = (GOOD[:100], {"Content-Length": str(len(GOOD))})
    with pytest.raises(DownloadError), caplog.at_level(logging.INFO, logger="detkit"):
        download_file(f"{base}/gone.zip", tmp_path / "gone.zip")
    assert bars[1].closed  # a failed download ends its bar too
