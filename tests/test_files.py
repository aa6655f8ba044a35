"""atomic_write and atomic_link: all or nothing under failures, errors that name the file,
stale temporaries."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from detkit import files
from detkit.files import (
    atomic_link,
    atomic_write,
    load_error_reason,
    plain_text,
    remove_stale_temporaries,
)


def test_writes_text_and_bytes_and_creates_the_folder(tmp_path):
    with atomic_write(tmp_path / "a" / "b.json", "w") as file:
        file.write('{"é": 1}')
    assert (tmp_path / "a" / "b.json").read_text(encoding="utf-8") == '{"é": 1}'
    with atomic_write(tmp_path / "c.bin") as file:
        file.write(b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.bin"]


def test_an_error_in_the_block_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("previous")
    with pytest.raises(KeyError), atomic_write(path, "w") as file:
        file.write("half of the new")
        raise KeyError("boom")
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("failing", ["fsync", "write"])
def test_a_full_disk_names_the_path_and_keeps_the_previous_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "metrics.json"
    path.write_text("previous")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "fsync":
        monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as caught, atomic_write(path, "w") as file:
        file.write("new")
        if failing == "write":
            no_space()
    error = caught.value
    assert error.errno == errno.ENOSPC
    assert str(error) == f"[Errno 28] No space left on device: '{path}'"
    assert error.filename == str(path)
    monkeypatch.undo()
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions")
def test_an_unwritable_folder_is_a_permission_error_naming_the_path(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        denied = pytest.raises(PermissionError, match=r"Permission denied: '.*locked/x\.png'")
        with denied, atomic_write(folder / "x.png") as file:
            file.write(b"x")
    finally:
        folder.chmod(0o700)


def test_a_refused_temporary_file_is_a_permission_error_naming_the_destination(
    tmp_path, monkeypatch
):
    # Root ignores folder permissions, so the refusal is simulated where the file is opened.
    def refuse(name, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))

    monkeypatch.setattr(files, "open", refuse, raising=False)
    with pytest.raises(PermissionError) as caught, atomic_write(tmp_path / "x.png") as file:
        file.write(b"x")
    assert str(caught.value) == f"[Errno 13] Permission denied: '{tmp_path / 'x.png'}'"


def test_a_message_without_errno_still_names_the_path(tmp_path):
    failed = pytest.raises(OSError, match=r"cannot write '.*out\.bin': disk went away")
    with failed, atomic_write(tmp_path / "out.bin"):
        raise OSError("disk went away")


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass


def dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


def test_atomic_link_replaces_the_destination_and_outlives_its_source(tmp_path):
    source, best = tmp_path / "checkpoint_001.pt", tmp_path / "best.pt"
    best.write_bytes(b"epoch 0")
    source.write_bytes(b"epoch 1")
    atomic_link(source, best)
    assert best.read_bytes() == b"epoch 1"
    assert os.path.samefile(source, best)  # a hard link: no bytes copied
    source.unlink()
    assert best.read_bytes() == b"epoch 1"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_atomic_link_copies_where_the_file_system_has_no_links(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    source, best = tmp_path / "checkpoint_001.pt", tmp_path / "best.pt"
    source.write_bytes(b"epoch 1")
    monkeypatch.setattr(os, "link", no_links)
    atomic_link(source, best)
    assert best.read_bytes() == b"epoch 1"
    assert not os.path.samefile(source, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint_001.pt"]


def test_a_failed_atomic_link_keeps_the_destination_and_leaves_no_temporary(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    source, best = tmp_path / "checkpoint_001.pt", tmp_path / "best.pt"
    best.write_bytes(b"epoch 0")
    source.write_bytes(b"epoch 1")
    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(PermissionError):
        atomic_link(source, best)
    monkeypatch.undo()
    assert best.read_bytes() == b"epoch 0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint_001.pt"]


@pytest.mark.skipif(os.name != "posix", reason="process liveness is asked on POSIX only")
def test_stale_temporaries_of_dead_writers_are_removed_and_others_kept(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    names = {
        "dead_old": f".last.pt.{dead}.0123abcd.tmp",
        "dead_recent": f".last.pt.{dead}.4567abcd.tmp",
        "alive_old": f".last.pt.{alive}.89abcdef.tmp",
        "other": f".last.pt.{dead}.notatemp",
        "user": "notes.tmp",
    }
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x")
        if key != "dead_recent":
            os.utime(tmp_path / name, (0, 0))
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [names["dead_old"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[k] for k in ("dead_recent", "alive_old", "other", "user")
    )


@pytest.mark.skipif(os.name != "posix", reason="process liveness is asked on POSIX only")
def test_the_first_write_into_a_folder_sweeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_swept", set())
    leftover = tmp_path / f".checkpoint_003.pt.{dead_pid()}.0123abcd.tmp"
    leftover.write_bytes(b"half")
    os.utime(leftover, (0, 0))
    with atomic_write(tmp_path / "metrics.json", "w") as file:
        file.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_plain_text_strips_terminal_codes():
    assert plain_text("\x1b[1mbold\x1b[0m and \x1b[31;1mred\x1b[m") == "bold and red"
    assert plain_text("no codes: [1m stays") == "no codes: [1m stays"


def test_load_error_reason_is_one_plain_line(tmp_path):
    import argparse

    import torch

    torch.save({"config": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pt")
    with pytest.raises(Exception) as caught:
        torch.load(tmp_path / "pickled.pt", weights_only=True)
    assert "\x1b" in str(caught.value)  # torch's own text carries codes: the test can fail
    reason = load_error_reason(caught.value)
    assert reason == (
        "it holds a pickled argparse.Namespace, which torch.load(weights_only=True) refuses to run"
    )
    assert load_error_reason(RuntimeError("\x1b[1mfirst\x1b[0m\nsecond")) == "first"
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(Exception) as caught:
        torch.load(tmp_path / "notes.pt", weights_only=True)
    assert load_error_reason(caught.value) == (
        "torch.load(weights_only=True) refused it: Unsupported operand 110"
    )
    reason = load_error_reason(caught.value, tmp_path / "notes.pt")
    assert reason == "it is not a file written by torch.save"


# -- no detkit exception text carries terminal escape codes (issue 14, item 7) --------------------


def provoked_errors(tmp_path, http_server):
    """Every error of the checkpoint, weights, download and engine paths a test can provoke,
    including those that wrap third-party messages (torch.load's carry escape codes)."""
    import argparse

    import torch
    from torch import nn

    from detkit.data import DownloadError, download_file
    from detkit.engine import load_checkpoint, save_checkpoint, train_one_epoch
    from detkit.models import read_state_dict
    from detkit.types import check_image_range

    base, routes = http_server
    routes["/short"] = (b"abc", {"Content-Length": "10"})
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    good = save_checkpoint(tmp_path / "good.pt", model=nn.Linear(2, 1), epoch=0)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:120])
    torch.save(nn.Linear(2, 1).state_dict(), tmp_path / "bare.pt")

    class Colourful(nn.Module):
        def forward(self, images, targets):
            raise RuntimeError("\x1b[1;31mCUDA error\x1b[0m: device-side assert")

    samples = [(torch.rand(3, 4, 4), {"image_id": i}) for i in range(2)]
    loader = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=lambda b: tuple(zip(*b)))
    linear = nn.Linear(2, 1)
    attempts = [
        lambda: load_checkpoint(tmp_path / "pickled.pt"),
        lambda: load_checkpoint(tmp_path / "text.pt"),
        lambda: load_checkpoint(tmp_path / "truncated.pt"),
        lambda: load_checkpoint(tmp_path / "bare.pt"),
        lambda: load_checkpoint(tmp_path),
        lambda: load_checkpoint(good, model=nn.Linear(3, 1)),
        lambda: load_checkpoint(good, optimizer=torch.optim.SGD(linear.parameters(), lr=0.1)),
        lambda: read_state_dict(tmp_path / "pickled.pt"),
        lambda: read_state_dict(tmp_path / "text.pt"),
        lambda: download_file(f"{base}/missing", tmp_path / "x.bin"),
        lambda: download_file(f"{base}/short", tmp_path / "x.bin"),
        lambda: download_file(f"{base}/short", tmp_path, md5="0" * 32),
        lambda: check_image_range(torch.full((3, 2, 2), 255.0), image_id=1),
        lambda: train_one_epoch(
            Colourful(), torch.optim.SGD(linear.parameters(), lr=0.1), loader, "cpu", 0
        ),
    ]
    errors = []
    for attempt in attempts:
        try:
            attempt()
        except (OSError, ValueError, TypeError, RuntimeError, DownloadError) as error:
            errors.append(error)
    assert len(errors) == len(attempts)  # each one failed as intended
    return errors


def test_no_detkit_error_text_carries_escape_codes(tmp_path, http_server):
    errors = provoked_errors(tmp_path, http_server)
    for error in errors:
        assert "\x1b" not in str(error), repr(error)
    # Errors about unreadable files are one line.
    for error in errors[:5] + errors[7:9]:
        assert "\n" not in str(error), repr(error)
