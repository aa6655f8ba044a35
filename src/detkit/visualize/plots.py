"""Figures drawn with matplotlib, an optional dependency (``pip install "torch-detkit[plot]"``).

Each function takes plain data (a report or a history, read by attribute or key, so this
module imports nothing from :mod:`detkit.data` or :mod:`detkit.engine`), draws a figure with
matplotlib's object API (no global ``pyplot`` state, safe in scripts and notebooks), saves it
atomically (:func:`detkit.files.atomic_write`) when given a path, and returns the :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from detkit.files import atomic_write

__all__ = ["plot_audit"]


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
