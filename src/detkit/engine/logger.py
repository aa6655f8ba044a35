"""Console metric logging for training and evaluation loops.

Lines look like those of torchvision's detection tutorial::

    Epoch: [0]  [10/60]  eta: 0:00:20  lr: 0.005000  loss: 1.3007 (1.5313)  ...  time: 0.4123  data: 0.0021

Each loss meter shows ``median (global average)``: the median over a recent window and the
average since the start. Lines are :mod:`logging` records (logger ``"detkit.engine"``,
level ``INFO``), sent on the main process only; they are printed even when the application
configured no logging, and :func:`detkit.set_verbosity` silences them (see
:mod:`detkit.console`). With `tqdm <https://tqdm.github.io>`_ installed, a progress bar is
drawn as well on a terminal and in notebooks.
"""

from __future__ import annotations

import datetime
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Generator, Iterable
from typing import Any, TextIO

import torch
import torch.distributed as dist

from detkit.console import progress_bar, show_output
from detkit.distributed import get_world_size, is_dist_avail_and_initialized, is_main_process

__all__ = ["MetricLogger", "SmoothedValue"]

_log = logging.getLogger("detkit.engine")
_MB = 1024.0 * 1024.0


class SmoothedValue:
    """A running series of floats: windowed median and average, global average, max, last.

    Args:
        window_size: how many recent values the windowed statistics cover.
        fmt: :meth:`str.format` template over ``median``, ``avg``, ``global_avg``, ``max``
            and ``value`` (default ``"{median:.4f} ({global_avg:.4f})"``).

    Raises:
        ValueError: for ``window_size < 1``.

    >>> meter = SmoothedValue(window_size=2)
    >>> for value in (4.0, 1.0, 3.0):
    ...     meter.update(value)
    >>> meter.median, meter.global_avg, meter.max, meter.value
    (2.0, 2.6666666666666665, 3.0, 3.0)
    >>> str(meter)
    '2.0000 (2.6667)'
    """

    def __init__(self, window_size: int = 20, fmt: str | None = None) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.fmt = fmt or "{median:.4f} ({global_avg:.4f})"
        self.window: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float | torch.Tensor, n: int = 1) -> None:
        """Add ``value``, counted ``n`` times in the global average."""
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        self.window.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Sum ``count`` and ``total`` over processes, so ``global_avg`` covers them all.

        The window stays this process's own. A collective call: every process calls it.
        No-op in a single process.
        """
        if not is_dist_avail_and_initialized() or get_world_size() == 1:
            return
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        sums = torch.tensor([self.count, self.total], dtype=torch.float64, device=device)
        dist.all_reduce(sums)
        self.count, self.total = int(sums[0].item()), float(sums[1].item())

    @property
    def median(self) -> float:
        """Median of the window (NaN when empty)."""
        return statistics.median(self.window) if self.window else math.nan

    @property
    def avg(self) -> float:
        """Mean of the window (NaN when empty)."""
        return sum(self.window) / len(self.window) if self.window else math.nan

    @property
    def global_avg(self) -> float:
        """Mean of every value since the start (NaN when empty)."""
        return self.total / self.count if self.count else math.nan

    @property
    def max(self) -> float:
        """Largest value of the window (NaN when empty)."""
        return max(self.window) if self.window else math.nan

    @property
    def value(self) -> float:
        """The last value (NaN when empty)."""
        return self.window[-1] if self.window else math.nan

    def __str__(self) -> str:
        return self.fmt.format(
            median=self.median,
            avg=self.avg,
            global_avg=self.global_avg,
            max=self.max,
            value=self.value,
        )


class MetricLogger:
    """Named :class:`SmoothedValue` meters and a loop wrapper that logs them periodically.

    Args:
        delimiter: separator between the parts of a line.
        window_size: window of meters created on first :meth:`update`.
        logger: where lines go (default: the ``"detkit.engine"`` logger, level ``INFO``).
        progress: draw a tqdm progress bar in :meth:`log_every` (main process only):
            ``None`` (default) draws one on a terminal or in a notebook while the logger is
            enabled for ``INFO``; without tqdm there is none (the lines report progress).
        stream: the progress bar's stream (default ``sys.stderr``).

    >>> metric_logger = MetricLogger()
    >>> metric_logger.update(loss=1.5, loss_classifier=0.5)
    >>> metric_logger.update(loss=0.5, loss_classifier=0.25)
    >>> str(metric_logger)
    'loss: 1.0000 (1.0000)  loss_classifier: 0.3750 (0.3750)'
    >>> metric_logger.averages()
    {'loss': 1.0, 'loss_classifier': 0.375}
    """

    def __init__(
        self,
        delimiter: str = "  ",
        *,
        window_size: int = 20,
        logger: logging.Logger | None = None,
        progress: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.delimiter = delimiter
        self.window_size = window_size
        self.meters: dict[str, SmoothedValue] = {}
        self.logger = logger or _log
        self.stream = stream
        self.main_process = is_main_process()
        self.progress = progress
        show_output()  # lines visible without any logging configuration

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        """Register ``meter`` under ``name`` (e.g. with its own window or format)."""
        self.meters[name] = meter

    def update(self, **values: float | torch.Tensor) -> None:
        """Add one value per named meter, creating meters on first use."""
        for name, value in values.items():
            meter = self.meters.get(name)
            if meter is None:
                meter = self.meters[name] = SmoothedValue(self.window_size)
            meter.update(value)

    def __getitem__(self, name: str) -> SmoothedValue:
        return self.meters[name]

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def averages(self) -> dict[str, float]:
        """``{name: global average}`` of every meter."""
        return {name: meter.global_avg for name, meter in self.meters.items()}

    def synchronize_between_processes(self) -> None:
        """Synchronize every meter's global statistics (collective; no-op in one process)."""
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def log(self, message: str, *args: Any) -> None:
        """Log ``message % args`` at ``INFO`` on the main process only."""
        if self.main_process:
            self.logger.info(message, *args)

    def log_every(
        self, iterable: Iterable[Any], print_freq: int = 10, header: str = ""
    ) -> Generator[Any, None, None]:
        """Yield from ``iterable``, logging a line every ``print_freq`` items and at the end.

        A line holds the position, the ETA, every meter, the time per iteration, the time
        spent waiting for data and (on CUDA) the peak memory. A closing line gives the total
        time. A consumer that may stop early should ``close()`` the generator (e.g. with
        :class:`contextlib.closing`), which ends the progress bar's line at once.

        Args:
            iterable: the data loader (or any iterable; without ``len`` there is no ETA).
            print_freq: log every this many items.
            header: what starts each line, e.g. ``"Epoch: [0]"``.

        Raises:
            ValueError: for ``print_freq < 1``.

        >>> metric_logger = MetricLogger(progress=False)
        >>> [x * 2 for x in metric_logger.log_every(range(3), print_freq=1)]
        [0, 2, 4]
        """
        if print_freq < 1:
            raise ValueError(f"print_freq must be >= 1, got {print_freq}")
        try:
            total: int | None = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
        width = len(str(total)) if total is not None else 1
        iter_time = SmoothedValue(fmt="{avg:.4f}")
        data_time = SmoothedValue(fmt="{avg:.4f}")
        log_enabled = self.main_process and self.logger.isEnabledFor(logging.INFO)
        bar = None
        if self.main_process:
            bar = progress_bar(
                total,
                desc=header.rstrip(":"),  # tqdm adds its own
                enabled=self.progress,
                logger=self.logger,
                stream=self.stream,
            )
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        start = end = time.perf_counter()
        i = 0
        try:
            for obj in iterable:
                data_time.update(time.perf_counter() - end)
                yield obj
                iter_time.update(time.perf_counter() - end)
                if bar is not None:
                    bar.set_postfix_str(self._bar_postfix(), refresh=False)
                    bar.update()
                last = total is not None and i == total - 1
                if log_enabled and (i % print_freq == 0 or last):
                    parts = [header, f"[{i:>{width}}/{total if total is not None else '?'}]"]
                    if total is not None:
                        parts.append(f"eta: {_hms(iter_time.global_avg * (total - i))}")
                    parts += [str(self), f"time: {iter_time}", f"data: {data_time}"]
                    if cuda:
                        parts.append(f"max mem: {torch.cuda.max_memory_allocated() / _MB:.0f}")
                    if bar is not None:
                        bar.clear()  # a line printed over a text bar would garble both
                    self.logger.info(self.delimiter.join(p for p in parts if p))
                    if bar is not None:
                        bar.refresh()
                i += 1
                end = time.perf_counter()
        finally:
            # Also when the consumer stops early (an exception in its loop): end the bar.
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
        if log_enabled:
            self.logger.info(
                "%s Total time: %s (%.4f s / it)", header, _hms(elapsed), elapsed / max(i, 1)
            )

    def _bar_postfix(self) -> str:
        loss = self.meters.get("loss")
        return f"loss: {loss.median:.4f}" if loss is not None and loss.count else ""


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))
