"""Figures drawn with matplotlib, an optional dependency (``pip install "torch-detkit[plot]"``).

Each function takes plain data (a report or a history, read by attribute or key, so this
module imports nothing from :mod:`detkit.data` or :mod:`detkit.engine`), draws a figure with
matplotlib's object API (no global ``pyplot`` state, safe in scripts and notebooks), saves it
atomically (:func:`detkit.files.atomic_write`) when given a path, and returns the :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detkit.files import atomic_write

__all__ = ["plot_audit", "plot_training_curves"]


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "this picture needs matplotlib, which is not installed: "
            'pip install "torch-detkit[plot]" (or pip install matplotlib)'
        ) from exc
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Any, path: str | os.PathLike | None) -> None:
    if path is None:
        return
    path = Path(path)
    with atomic_write(path) as file:
        figure.savefig(file, dpi=100, format=path.suffix.lstrip(".").lower() or "png")


def plot_audit(report: Any, path: str | os.PathLike | None = None) -> Any:
    """Draw a dataset audit: instances per class, box sizes and aspect ratios vs anchors.

    Args:
        report: a :class:`detkit.data.AuditReport`.
        path: where to save the figure (PNG by its suffix); ``None`` to only return it.

    Returns:
        the matplotlib ``Figure``.

    Raises:
        ImportError: without matplotlib, saying how to install it.

    >>> import tempfile
    >>> from detkit.data import CocoJsonDataset, audit, write_synthetic_coco
    >>> root = write_synthetic_coco(tempfile.mkdtemp(), num_images=4, seed=0)
    >>> report = audit(CocoJsonDataset(root / "images", root / "annotations.json"),
    ...                anchor_sizes=[16, 32, 64], aspect_ratios=[0.5, 1.0, 2.0])
    >>> figure = plot_audit(report, root / "audit.png")
    >>> (root / "audit.png").stat().st_size > 0
    True
    """
    figure = _figure(12, 3.6)
    counts_ax, sizes_ax, ratios_ax = figure.subplots(1, 3)
    classes = sorted(report.instances_per_class)
    names = [
        (report.class_names[c] if report.class_names and c < len(report.class_names) else str(c))
        for c in classes
    ]
    counts_ax.bar(range(len(classes)), [report.instances_per_class[c] for c in classes])
    counts_ax.set_xticks(range(len(classes)), names, rotation=45, ha="right")
    counts_ax.set_title(
        f"instances per class ({report.images_without_instances} images without any)"
    )
    boxes = np.asarray(report.box_sizes, dtype=np.float64).reshape(-1, 2)
    if len(boxes):
        sides = np.sqrt(boxes.prod(axis=1))
        bins = np.geomspace(max(sides.min(), 1e-3), max(sides.max(), 1e-3) * 1.01, 30)
        sizes_ax.hist(sides, bins=bins, color="tab:blue")
        sizes_ax.set_xscale("log")
        ratios = boxes[:, 1] / boxes[:, 0]
        ratio_bins = np.geomspace(max(ratios.min(), 1e-3), ratios.max() * 1.01, 30)
        ratios_ax.hist(ratios, bins=ratio_bins, color="tab:green")
        ratios_ax.set_xscale("log")
    for size in report.anchor_sizes or ():
        sizes_ax.axvline(size, color="tab:red", linestyle="--", linewidth=1)
    for ratio in report.aspect_ratios or ():
        ratios_ax.axvline(ratio, color="tab:red", linestyle="--", linewidth=1)
    sizes_ax.set_title("box size sqrt(w·h); anchors dashed")
    sizes_ax.set_xlabel(report.scale_note)
    ratios_ax.set_title("box aspect ratio h / w; anchors dashed")
    problems = len(report.problems)
    figure.suptitle(
        f"{report.num_samples} samples, {problems} problem(s), {len(report.warnings)} warning(s)"
    )
    _save(figure, path)
    return figure


def _epochs(history: Any) -> list[Mapping[str, Any]]:
    """The per-epoch records of ``history``, checked."""
    if isinstance(history, Mapping):
        if "epochs" not in history:
            raise ValueError(
                "history: a mapping must hold the per-epoch records under 'epochs' (the "
                "layout of the example's metrics.json)"
            )
        history = history["epochs"]
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise TypeError(f"history must be a list of per-epoch dicts, got {type(history).__name__}")
    if not history:
        raise ValueError("history has no epochs to plot")
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise TypeError(f"history[{i}] must be a dict, got {type(record).__name__}")
    return list(history)


def _value(record: Mapping[str, Any], *keys: str) -> float:
    """``record[k0][k1]...`` as a float; NaN when absent (COCO's -1 means absent too)."""
    value: Any = record
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return math.nan
        value = value[key]
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return math.nan if value == -1.0 and keys[-1].startswith("AP") else value


def _plot_series(axes: Any, x: list[float], y: list[float], **style: Any) -> bool:
    """Plot unless every value is missing; markers show epochs that stand alone."""
    if all(math.isnan(v) for v in y):
        return False
    axes.plot(x, y, marker="o", markersize=3, **style)
    return True


def _empty(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    path: str | os.PathLike | None = None,
) -> Any:
    """Draw a training run per epoch: losses, learning rate, and COCO AP / AP50.

    The three panels read what each epoch's record holds, as the example's
    ``metrics.json`` writes it, and skip what is missing:

    * ``losses``: the total ``loss`` (thick) and each component; ``val_losses`` (the
      same names), when recorded, dashed in the same colours;
    * ``lr``: the learning rate, on a log scale when it spans a factor of 10 or more;
    * every evaluated task (``bbox``, ``segm``, ``keypoints``, ...: a dict with ``AP``):
      ``AP`` solid, ``AP50`` dashed, in one colour per task.

    Args:
        history: the per-epoch records (dicts with ``epoch``, ``losses``, ``lr``,
            ``bbox``, ...), or the whole ``metrics.json`` (a dict with ``epochs``).
        path: where to save the figure (PNG by its suffix), written atomically so that
            a viewer never sees half a file; ``None`` to only return it.

    Returns:
        the matplotlib ``Figure``.

    Raises:
        ImportError: without matplotlib, saying how to install it.
        TypeError: when ``history`` is not a list of dicts.
        ValueError: when it has no epochs.

    >>> history = [
    ...     {"epoch": 0, "lr": 0.02, "losses": {"loss": 2.1, "loss_mask": 0.9},
    ...      "bbox": {"AP": 0.05, "AP50": 0.15}},
    ...     {"epoch": 1, "lr": 0.002, "losses": {"loss": 1.4, "loss_mask": 0.6},
    ...      "bbox": {"AP": 0.21, "AP50": 0.52}},
    ... ]
    >>> figure = plot_training_curves(history)
    >>> [axes.get_title() for axes in figure.axes]
    ['loss', 'learning rate', 'COCO AP (solid) and AP50 (dashed)']
    """
    epochs = _epochs(history)
    x = [
        float(record["epoch"]) if isinstance(record.get("epoch"), (int, float)) else float(i)
        for i, record in enumerate(epochs)
    ]
    figure = _figure(13, 3.8)
    loss_ax, lr_ax, ap_ax = figure.subplots(1, 3)
    colors = [f"C{i}" for i in range(10)]

    names: list[str] = []
    for record in epochs:
        for group in ("losses", "val_losses"):
            losses = record.get(group)
            if isinstance(losses, Mapping):
                names += [n for n in losses if n not in names]
    names.sort(key=lambda n: (n != "loss", n))  # the total first
    drawn = False
    for i, name in enumerate(names):
        short = name.removeprefix("loss_") if name != "loss" else "total"
        width = 2.2 if name == "loss" else 1.2
        color = colors[i % len(colors)]
        for group, style, label in (("losses", "-", short), ("val_losses", "--", f"{short} (val)")):
            y = [_value(record, group, name) for record in epochs]
            drawn |= _plot_series(
                loss_ax, x, y, color=color, linestyle=style, linewidth=width, label=label
            )
    if drawn:
        loss_ax.legend(fontsize="small", ncol=2)
    else:
        _empty(loss_ax, "no losses recorded")
    loss_ax.set_title("loss")

    rates = [_value(record, "lr") for record in epochs]
    if _plot_series(lr_ax, x, rates, color="C0"):
        known = [r for r in rates if r > 0 and not math.isnan(r)]
        if known and max(known) >= 10 * min(known):
            from matplotlib.ticker import FuncFormatter, LogLocator

            # Ticks at 1, 2 and 5 per decade, written as plain numbers (0.002, not 2e-3).
            lr_ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            lr_ax.yaxis.set_major_formatter(plain)
            lr_ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            lr_ax.yaxis.set_minor_formatter(plain)
    else:
        _empty(lr_ax, "no learning rate recorded")
    lr_ax.set_title("learning rate")

    tasks: list[str] = []
    for record in epochs:
        tasks += [
            k for k, v in record.items() if isinstance(v, Mapping) and "AP" in v and k not in tasks
        ]
    for i, task in enumerate(tasks):
        color = colors[i % len(colors)]
        _plot_series(ap_ax, x, [_value(r, task, "AP") for r in epochs], color=color, label=task)
        _plot_series(
            ap_ax, x, [_value(r, task, "AP50") for r in epochs], color=color, linestyle="--"
        )
    if tasks:
        ap_ax.set_ylim(bottom=0)
        ap_ax.legend(fontsize="small")
    else:
        _empty(ap_ax, "no evaluation recorded")
    ap_ax.set_title("COCO AP (solid) and AP50 (dashed)")

    from matplotlib.ticker import MaxNLocator

    for axes in (loss_ax, lr_ax, ap_ax):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    figure.suptitle(f"training curves, {len(epochs)} epoch{'s' if len(epochs) > 1 else ''}")
    _save(figure, path)
    return figure
