"""What the Penn-Fudan example's scripts share (detkit's public API only): one-line errors and
argument types for the command line, JSON files written atomically, and the data: the
download or synthetic copy, the classes, the transforms."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from detkit.data import DownloadError, download_file, extract_zip, write_synthetic_pennfudan
from detkit.data import transforms as T

logger = logging.getLogger("pennfudan")

# The system's reasons a write fails that are the machine's state, not a bug: a full disk,
# a quota, no permission, a read-only file system.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class UserError(Exception):
    """A mistake in the command line or in the files it names: one line, exit status 2.

    Raised where the scripts read what the user gave (``--data-root``, ``--output-dir``,
    ``--resume``, ``--weights`` ...); :func:`run_cli` prints it without a traceback, which
    stays for programming errors.
    """


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (not the whole usage) and status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def score_threshold(text: str) -> float:
    """An argparse type: a score threshold in 0..1 (scores are probabilities: above 1 or NaN
    no detection would ever be drawn)."""
    value = float(text)
    if not 0 <= value <= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a score in 0..1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def one_line(error: BaseException) -> str:
    """An error's message on one line (multi-line messages joined with '; ')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a script's ``main``; report ordinary mistakes in one line with exit status 2.

    :class:`UserError` and writes that fail because of the machine's state (a full disk, no
    permission: ``OSError`` with such an ``errno``) are printed as ``script: error: ...``.
    Anything else is a bug and keeps its traceback. Otherwise the status is 0, or the
    ``"exit_status"`` of the mapping ``main`` returns (``train.py --audit``: 1 for bad samples).
    """
    prog = Path(sys.argv[0]).name or "pennfudan"
    try:
        result = main(argv)
    except UserError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    return int(result.get("exit_status", 0)) if isinstance(result, Mapping) else 0


def check_output_dir(folder: Path, option: str = "--output-dir") -> None:
    """Create ``folder`` and make sure files can be written there, before any long work."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(
            f"{option} '{folder}' is not writable: {error.strerror or one_line(error)}"
        ) from error


def read_history(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    """The epochs of ``metrics.json`` before ``before_epoch``, to continue it on resume.

    A missing file gives an empty history with a warning. A damaged one (invalid JSON, say,
    from a disk that filled up while an older version wrote it in place) is moved aside to
    ``metrics.json.corrupt-<time>``, with a warning, and the history starts afresh: losing
    the old curve must not stop the run from resuming.
    """
    if not path.is_file():
        logger.warning("%s not found: starting a fresh metrics history", path)
        return []
    try:
        epochs = json.loads(path.read_text(encoding="utf-8"))["epochs"]
        history = [e for e in epochs if int(e["epoch"]) < before_epoch]
        if not all(isinstance(e, dict) for e in history):
            raise TypeError("an epoch entry is not an object")
    except (ValueError, KeyError, TypeError, IndexError) as error:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        if aside.exists():
            aside = aside.with_name(f"{aside.name}-{os.getpid()}")
        os.replace(path, aside)
        logger.warning(
            "%s is damaged (%s): moved it to %s; starting a fresh metrics history",
            path,
            one_line(error),
            aside,
        )
        return []
    return history


#: The official archive, then the Internet Archive's raw copy of it ("id_": the bytes, no
#: page around them) for when the university's server is down. Its publishers give no
#: checksum; this MD5 is the one the Avalanche library pins for the official URL
#: (avalanche/benchmarks/datasets/penn_fudan), and it guards the mirror as well.
PENNFUDAN_URLS = (
    "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
    "https://web.archive.org/web/2023id_/https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
)
PENNFUDAN_MD5 = "5aaa3dee905cef73325923716e38fc6d"

CLASS_NAMES = ["background", "person"]
NUM_CLASSES = len(CLASS_NAMES)


def train_transforms() -> T.Compose:
    """Random horizontal flips, then a float image (the tutorial's training transform)."""
    return T.hflip_preset()


def eval_transforms() -> T.Compose:
    """A float image, nothing random."""
    return T.eval_preset()


def prepare_data(
    root: Path,
    *,
    download: bool = False,
    synthetic: int | None = None,
    seed: int = 0,
    size_range: tuple[int, int] = (250, 1000),
) -> Path:
    """Make sure ``root`` holds a Penn-Fudan-layout dataset and return it.

    ``synthetic``: write that many synthetic images there (once). ``download``: fetch and
    extract the official archive into ``root``'s parent when ``root`` has no images yet.
    """
    if synthetic:
        if not (root / "PNGImages").is_dir():
            logger.info("writing %d synthetic Penn-Fudan-layout images to %s", synthetic, root)
            # Written beside root and renamed once complete: a run killed half-way leaves no
            # folder that a later run would take for the whole dataset.
            partial = root.with_name(f".{root.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_synthetic_pennfudan(partial, synthetic, seed=seed, size_range=size_range)
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(root / "PedMasks", ignore_errors=True)  # left by a killed rename
            for folder in ("PedMasks", "PNGImages"):  # PNGImages last: it marks completion
                os.replace(partial / folder, root / folder)
            shutil.rmtree(partial, ignore_errors=True)
        return root
    if (root / "PNGImages").is_dir():
        return root
    if not download:
        raise UserError(
            f"no Penn-Fudan data at '{root}'. Pass --download to fetch it, --data-root to point at "
            "an extracted copy (the folder holding PNGImages/ and PedMasks/), or --demo / "
            "--synthetic N to train on generated data without a download."
        )
    archive = root.parent / "PennFudanPed.zip"
    failures = []
    for url in PENNFUDAN_URLS:
        # An archive already in place is checked against the pinned MD5 like a download, and
        # replaced by a fresh download when it does not match.
        if archive.is_file():
            logger.info("checking %s against its pinned MD5", archive)
        else:
            logger.info("downloading %s", url)
        try:
            download_file(url, archive, md5=PENNFUDAN_MD5)
            break
        except DownloadError as exc:
            logger.warning("%s", exc)
            failures.append(str(exc))
    else:
        raise UserError(
            "; ".join(failures) + " (Without network access, try --demo or --synthetic N.)"
        )
    try:
        extracted = extract_zip(archive, root.parent)
    except ValueError as exc:
        raise UserError(f"{exc}. Delete '{archive}' and try again.") from None
    logger.info("extracted %s", ", ".join(str(p) for p in extracted))
    if not (root / "PNGImages").is_dir():
        raise UserError(
            f"the archive extracted {[p.name for p in extracted]} into '{root.parent}', but "
            f"'{root}' has no PNGImages/: pass --data-root {root.parent / 'PennFudanPed'}"
        )
    return root


def set_epoch(batches: Any, epoch: int) -> None:
    """Tell the batch sampler, or the sampler inside it, which epoch starts (reshuffling).

    GroupedBatchSampler passes the epoch on; torch's BatchSampler has no ``set_epoch``, so
    without grouping the DistributedSampler inside it needs the call directly, or every
    epoch would see the same order.
    """
    target: Any = batches if hasattr(batches, "set_epoch") else getattr(batches, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)
