"""Which checkpoints a run keeps: the last few, the best by a metric, and when to stop early."""

from __future__ import annotations

import logging
import math
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detkit.distributed import all_gather, barrier, is_main_process
from detkit.engine.checkpoint import save_checkpoint
from detkit.files import atomic_link

__all__ = ["CheckpointKeeper"]

_log = logging.getLogger(__name__)
_STATE_KEY = "checkpoint_keeper"
_MODES = ("max", "min")
_COCO_IOU_TYPES = ("bbox", "segm", "keypoints")  # whose statistics are -1.0 when undefined


def _epoch_pattern(filename: str) -> re.Pattern[str]:
    """A regular expression matching ``filename.format(epoch=N)``, with N as its group."""
    fields = [
        (literal, field, spec)
        for literal, field, spec, _ in string.Formatter().parse(filename)
        if field is not None
    ]
    if [field for _, field, _ in fields] != ["epoch"]:
        raise ValueError(
            f"filename must hold one '{{epoch}}' field (e.g. 'checkpoint_{{epoch:03d}}.pt'), "
            f"got {filename!r}"
        )
    if "/" in filename or os.sep in filename:
        raise ValueError(f"filename must be a file name inside folder, got {filename!r}")
    before, after = filename.split("{", 1)[0], filename.rsplit("}", 1)[1]
    return re.compile(re.escape(before) + r"(\d+)" + re.escape(after))


def _saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint file holds, read without loading its tensors (None if unreadable)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["epoch"])
    except Exception:
        return None


class CheckpointKeeper:
    """Save a checkpoint per epoch, keep the last few and the best, and say when to stop.

    Each :meth:`save` writes ``folder / filename.format(epoch=epoch)`` with
    :func:`~detkit.engine.save_checkpoint`, then, when the epoch's metric is the best so far,
    points ``folder / best_filename`` at it, and removes this run's checkpoints older than the
    ``keep_last`` most recent. :attr:`should_stop` turns true once the metric has not improved
    for ``patience`` evaluations (early stopping).

    Crash-safe: the checkpoint is written atomically; ``best.pt`` is replaced in one rename by
    a hard link to the new checkpoint (a copy where links are not supported), so it is at any
    moment a complete checkpoint, and removing old checkpoints never touches it; old files are
    removed only after the new one is complete. The keeper's state (best value and epoch,
    evaluations without improvement) is saved inside each checkpoint (in ``extra``), and
    :meth:`restore` takes it back on resume, also re-pointing ``best.pt`` when a run was
    killed between writing a new best checkpoint and pointing at it.

    Under ``torch.distributed`` every process calls :meth:`save` (it is collective, like
    ``save_checkpoint``); rank 0 decides and its decisions (best epoch, whether to stop) are
    given to every process, so all stop at the same epoch; rank 0 alone touches the files.

    Args:
        folder: where the checkpoints go (created when needed).
        keep_last: how many of the most recent epoch checkpoints to keep (``None``: all).
            Files of later epochs (left by a run resumed from an earlier checkpoint) are not
            removed; they are overwritten when the run reaches them.
        metric: the number to rank epochs by, as a ``/`` path into the metrics of
            :func:`~detkit.engine.evaluate`: ``"bbox/AP"``, ``"segm/AP50"``,
            ``"losses/loss"``, ``"bbox/per_class_AP/3"``. Default: ``"segm/AP"`` when the
            metrics have ``segm`` (Mask R-CNN), else ``"keypoints/AP"`` when they have
            ``keypoints``, else ``"bbox/AP"``. A COCO statistic of ``-1.0`` (undefined for
            the validation set) is a ``ValueError``, never ranked.
        mode: ``"max"`` (higher is better) or ``"min"``; default ``"min"`` for a metric whose
            last part starts with ``loss``, else ``"max"``.
        patience: stop after this many evaluations without improvement (``None``: never).
        min_delta: an improvement must beat the best by more than this.
        filename: the checkpoints' file name, with an ``{epoch}`` field.
        best_filename: the best checkpoint's file name.

    Raises:
        ValueError: for ``keep_last`` or ``patience`` below 1, an unknown ``mode``, a
            negative ``min_delta``, or a ``filename`` without exactly one ``{epoch}`` field.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> keeper = CheckpointKeeper(tempfile.mkdtemp(), keep_last=2, patience=2)
        >>> model = nn.Linear(2, 1)
        >>> for epoch, ap in enumerate([0.30, 0.42, 0.41, 0.40, 0.45]):
        ...     _ = keeper.save(epoch, {"bbox": {"AP": ap}}, model=model)
        ...     if keeper.should_stop:
        ...         break
        >>> keeper.best_epoch, keeper.best_value, epoch
        (1, 0.42, 3)
        >>> sorted(p.name for p in keeper.folder.iterdir())
        ['best.pt', 'checkpoint_002.pt', 'checkpoint_003.pt']
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        keep_last: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
        patience: int | None = None,
        min_delta: float = 0.0,
        filename: str = "checkpoint_{epoch:03d}.pt",
        best_filename: str = "best.pt",
    ) -> None:
        for name, value in (("keep_last", keep_last), ("patience", patience)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if mode is not None and mode not in _MODES:
            raise ValueError(f"mode must be 'max', 'min' or None, got {mode!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if metric is not None and (not isinstance(metric, str) or not metric.strip("/")):
            raise ValueError(f"metric must be a name such as 'bbox/AP', got {metric!r}")
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.patience = patience
        self.min_delta = float(min_delta)
        self.filename = filename
        self._pattern = _epoch_pattern(filename)
        if self._pattern.fullmatch(best_filename) or best_filename == filename:
            raise ValueError(
                f"best_filename {best_filename!r} looks like an epoch's checkpoint "
                f"({filename!r}): old checkpoints are removed by that name"
            )
        self.best_filename = best_filename
        self._metric = metric
        self._mode = mode
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.evaluations_without_improvement = 0
        self._unlinked_best: int | None = None  # a best epoch best.pt does not hold yet

    @property
    def metric(self) -> str | None:
        """The metric epochs are ranked by (``None`` until the default is chosen)."""
        return self._metric

    @property
    def mode(self) -> str | None:
        """``"max"`` or ``"min"`` (``None`` until the metric is known)."""
        if self._mode is None and self._metric is not None:
            return "min" if self._metric.rsplit("/", 1)[-1].startswith("loss") else "max"
        return self._mode

    @property
    def best_path(self) -> Path:
        """``folder / best_filename``."""
        return self.folder / self.best_filename

    @property
    def should_stop(self) -> bool:
        """Whether the metric has not improved for ``patience`` evaluations."""
        return self.patience is not None and self.evaluations_without_improvement >= self.patience

    def path_for(self, epoch: int) -> Path:
        """The checkpoint file of ``epoch``.

        >>> CheckpointKeeper("runs").path_for(7).as_posix()
        'runs/checkpoint_007.pt'
        """
        return self.folder / self.filename.format(epoch=epoch)

    @staticmethod
    def default_metric(metrics: Mapping[str, Any]) -> str:
        """``segm/AP`` for metrics with masks, ``keypoints/AP`` with keypoints, else ``bbox/AP``.

        >>> metrics = {"bbox": {"AP": 0.5}, "segm": {"AP": 0.4}}
        >>> CheckpointKeeper.default_metric(metrics)
        'segm/AP'
        """
        for iou_type in ("segm", "keypoints"):
            if iou_type in metrics:
                return f"{iou_type}/AP"
        return "bbox/AP"

    def value_of(self, metrics: Mapping[str, Any]) -> float:
        """This keeper's metric in ``metrics`` (choosing the default on first use).

        Raises:
            ValueError: when ``metrics`` has no such entry, naming the entries it has, or a
                COCO statistic is ``-1.0`` (undefined for the validation set, so unchanging).
        """
        if self._metric is None:
            self._metric = self.default_metric(metrics)
        value: Any = metrics
        parts = self._metric.strip("/").split("/")
        for part in parts:
            key: Any = part
            if isinstance(value, Mapping) and part not in value and part.isdigit():
                key = int(part)  # per_class_AP is keyed by int category ids
            if not isinstance(value, Mapping) or key not in value:
                present = sorted(value) if isinstance(value, Mapping) else type(value).__name__
                raise ValueError(
                    f"metric {self._metric!r}: no {part!r} in the metrics (found {present})"
                )
            value = value[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"metric {self._metric!r} is a {type(value).__name__}, not a number"
            ) from None
        if number == -1.0 and parts[0] in _COCO_IOU_TYPES:
            raise ValueError(
                f"metric {self._metric!r} is -1.0, pycocotools' mark of an undefined statistic "
                "(no ground truth in its area range or category): it never changes, so it "
                "cannot rank epochs; choose a metric the validation set defines (e.g. "
                f"'{parts[0]}/AP')"
            )
        return number

    def update(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Record an evaluation's metrics; return whether ``epoch`` is the new best.

        No file is touched (:meth:`save` calls this). A NaN is never an improvement.

        >>> keeper = CheckpointKeeper("runs", metric="losses/loss", patience=1)
        >>> keeper.update(0, {"losses": {"loss": 1.5}})
        True
        >>> keeper.update(1, {"losses": {"loss": 1.7}})
        False
        >>> keeper.mode, keeper.best_epoch, keeper.should_stop
        ('min', 0, True)
        """
        value = self.value_of(metrics)
        if self.best_value is None:
            improved = not math.isnan(value)
        elif self.mode == "max":
            improved = value > self.best_value + self.min_delta
        else:
            improved = value < self.best_value - self.min_delta
        if improved:
            self.best_value, self.best_epoch = value, int(epoch)
            self.evaluations_without_improvement = 0
        else:
            self.evaluations_without_improvement += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        """The keeper's state as plain data (what :meth:`save` puts in each checkpoint)."""
        return {
            "metric": self._metric,
            "mode": self.mode,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "evaluations_without_improvement": self.evaluations_without_improvement,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back a :meth:`state_dict`.

        A state ranked by another metric or mode than this keeper was given is ignored, with a
        warning: the new metric's best starts afresh.
        """
        metric, mode = state.get("metric"), state.get("mode")
        if self._metric is not None and metric is not None and metric != self._metric:
            _log.warning(
                "checkpoints so far were ranked by %s, now by %s: the best starts afresh",
                metric,
                self._metric,
            )
            return
        if self._mode is not None and mode is not None and mode != self._mode:
            _log.warning(
                "the best so far was the %s, now the %s is: starting afresh", mode, self._mode
            )
            return
        if self._metric is None:
            self._metric = metric
        if self._mode is None:
            self._mode = mode
        best = state.get("best_value")
        self.best_value = None if best is None else float(best)
        epoch = state.get("best_epoch")
        self.best_epoch = None if epoch is None else int(epoch)
        self.evaluations_without_improvement = int(state.get("evaluations_without_improvement", 0))

    def restore(
        self, checkpoint: Mapping[str, Any], path: str | os.PathLike[str] | None = None
    ) -> bool:
        """Take the keeper's state back from a checkpoint read by :func:`load_checkpoint`.

        On the main process, also make sure ``best.pt`` holds the best epoch: a run killed
        after writing a new best checkpoint but before pointing ``best.pt`` at it is repaired
        here, from ``path`` (the file resumed from) or the best epoch's own file.

        Args:
            checkpoint: what :func:`~detkit.engine.load_checkpoint` returned.
            path: the file it was read from.

        Returns:
            Whether the checkpoint held a keeper state (one saved without a keeper holds none:
            the keeper then starts afresh).
        """
        extra = checkpoint.get("extra")
        state = extra.get(_STATE_KEY) if isinstance(extra, Mapping) else None
        if not isinstance(state, Mapping):
            return False
        self.load_state_dict(state)
        if is_main_process() and self.best_epoch is not None:
            self._repair_best(checkpoint, path, self.best_epoch)
        return True

    def _repair_best(
        self, checkpoint: Mapping[str, Any], path: str | os.PathLike[str] | None, best_epoch: int
    ) -> None:
        if self.best_path.is_file() and _saved_epoch(self.best_path) == best_epoch:
            return
        candidates = [self.path_for(best_epoch)]
        if path is not None and checkpoint.get("epoch") == best_epoch:
            candidates.insert(0, Path(path))
        for candidate in candidates:
            if candidate.is_file() and _saved_epoch(candidate) == best_epoch:
                atomic_link(candidate, self.best_path)
                _log.info("%s now holds the best epoch, %d", self.best_path, best_epoch)
                return
        _log.warning(
            "the best epoch was %d, but neither %s nor its checkpoint holds it: %s will be "
            "written at the next improvement",
            best_epoch,
            self.best_path,
            self.best_path,
        )

    def save(self, epoch: int, metrics: Mapping[str, Any] | None = None, **checkpoint: Any) -> Path:
        """Record ``metrics`` (if this epoch was evaluated), save the epoch, keep what to keep.

        A collective call under ``torch.distributed``: every process calls it.

        Args:
            epoch: the epoch just completed.
            metrics: its metrics from :func:`~detkit.engine.evaluate` (``None``: not
                evaluated; only saved and rotated).
            **checkpoint: :func:`~detkit.engine.save_checkpoint`'s keyword arguments
                (``model``, ``optimizer``, ...). ``extra`` must be a mapping; the keeper adds
                its state to it under ``"checkpoint_keeper"``.

        Returns:
            The checkpoint's path.
        """
        extra = checkpoint.pop("extra", None)
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(
                f"extra must be a mapping when saving through CheckpointKeeper, got "
                f"{type(extra).__name__}"
            )
        previous = self.state_dict()
        try:
            if metrics is not None:
                self.update(epoch, metrics)
                # Rank 0's decisions for everyone, whatever the other ranks computed.
                self.load_state_dict(all_gather(self.state_dict())[0])
            extra = {**(extra or {}), _STATE_KEY: self.state_dict()}
            path = save_checkpoint(self.path_for(epoch), epoch=epoch, extra=extra, **checkpoint)
        except BaseException:
            # Unsaved, the epoch does not count: the state stays that of the last checkpoint.
            self.load_state_dict(previous)
            raise
        if is_main_process():
            # A failed best.pt link is retried at the next save, before its source is rotated.
            self._unlinked_best = epoch if self.best_epoch == epoch else self._unlinked_best
            if self._unlinked_best is not None:
                atomic_link(self.path_for(self._unlinked_best), self.best_path)
                self._unlinked_best = None
            self._rotate(epoch)
        barrier()
        return path

    def _rotate(self, epoch: int) -> None:
        """Remove this run's checkpoints older than the ``keep_last`` most recent."""
        if self.keep_last is None:
            return
        found = {}
        for entry in os.scandir(self.folder):
            match = self._pattern.fullmatch(entry.name)
            if match and self.filename.format(epoch=int(match[1])) == entry.name:
                found[int(match[1])] = Path(entry.path)
        older = sorted(e for e in found if e <= epoch)
        for old in older[: -self.keep_last]:
            found[old].unlink(missing_ok=True)
