"""Figures of a detector's per-class behaviour: precision-recall curves and a confusion matrix.

They take plain data, read by attribute (what ``CocoEvaluator.operating_points()`` and
``CocoEvaluator.confusion_matrix()`` return, or any object with the same fields), so this
module imports nothing from :mod:`detkit.evaluation`. matplotlib is optional
(``pip install "torch-detkit[plot]"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detkit.visualize.plots import new_figure, save_figure
from detkit.visualize.style import label_color

__all__ = ["plot_confusion_matrix", "plot_pr_curves"]


def _name(category: int, names: Mapping[int, str] | Sequence[str] | None) -> str:
    if isinstance(names, Mapping):
        return str(names.get(category, category))
    if names is not None and 0 <= category < len(names):
        return str(names[category])
    return str(category)


def _rgb(category: int) -> tuple[float, float, float]:
    red, green, blue = label_color(category)
    return red / 255, green / 255, blue / 255


def plot_pr_curves(
    points: Any,
    path: str | os.PathLike | None = None,
    *,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
) -> Any:
    """Draw each class's precision-recall curve with its F1-best operating point marked.

    Args:
        points: per-class curves with ``category_ids`` ``[K]``, ``recall_levels`` ``[R]``,
            ``precision`` ``[K, R]`` (``-1`` rows are skipped), ``threshold``, ``precision_at``,
            ``recall_at``, ``ap`` ``[K]`` and ``iou`` (a
            :class:`detkit.evaluation.OperatingPoints`).
        path: where to save the figure (PNG by its suffix); ``None`` to only return it.
        class_names: ``{category_id: name}`` or a sequence indexed by category id.

    Returns:
        the matplotlib ``Figure``.

    Raises:
        ImportError: without matplotlib, saying how to install it.

    >>> import tempfile, pathlib, torch
    >>> from detkit.evaluation import CocoEvaluator
    >>> evaluator = CocoEvaluator("bbox")
    >>> box, label = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([1])
    >>> target = {"boxes": box, "labels": label, "image_id": 1}
    >>> prediction = {"boxes": box, "scores": torch.tensor([0.9]), "labels": label}
    >>> evaluator.update([prediction], [target])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pr.png"
    >>> points = evaluator.operating_points()
    >>> figure = plot_pr_curves(points, path, class_names={1: "person"})
    >>> path.stat().st_size > 0
    True
    """
    figure = new_figure(6.4, 4.8)
    axes = figure.subplots()
    recall = np.asarray(points.recall_levels, dtype=np.float64)
    drawn = 0
    for k, category in enumerate(points.category_ids):
        precision = np.asarray(points.precision[k], dtype=np.float64)
        if (precision < 0).all():
            continue
        color = _rgb(int(category))
        label = (
            f"{_name(int(category), class_names)} (AP{round(100 * points.iou)} {points.ap[k]:.2f})"
        )
        axes.plot(recall, precision, color=color, label=label, linewidth=1.6)
        threshold = float(points.threshold[k])
        if not math.isnan(threshold):
            axes.plot(
                [points.recall_at[k]], [points.precision_at[k]], "o", color=color, markersize=7
            )
            axes.annotate(
                f"score ≥ {threshold:.2f}",
                (points.recall_at[k], points.precision_at[k]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                color=color,
            )
        drawn += 1
    axes.set_xlim(0, 1.0)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision (COCO-interpolated)")
    axes.set_title(f"precision-recall at IoU {points.iou:.2f}; dots: best F1")
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend(loc="lower left", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no class has ground truth", ha="center", va="center")
    save_figure(figure, path)
    return figure


def plot_confusion_matrix(
    matrix: Any,
    path: str | os.PathLike | None = None,
    *,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    normalize: bool = False,
) -> Any:
    """Draw a confusion matrix: ground truth by row, predictions by column, background last.

    Args:
        matrix: ``category_ids`` ``[K]``, ``matrix`` ``int[K + 1, K + 1]``, ``iou`` and
            ``thresholds`` ``[K]`` (a :class:`detkit.evaluation.ConfusionMatrix`).
        path: where to save the figure (PNG by its suffix); ``None`` to only return it.
        class_names: ``{category_id: name}`` or a sequence indexed by category id.
        normalize: colour by the share of each row (counts are written either way).

    Returns:
        the matplotlib ``Figure``.

    Raises:
        ImportError: without matplotlib, saying how to install it.

    >>> from types import SimpleNamespace
    >>> import numpy as np
    >>> counts = np.array([[5, 1, 2], [0, 3, 1], [2, 0, 0]])
    >>> data = SimpleNamespace(category_ids=[1, 2], iou=0.5, matrix=counts,
    ...                        thresholds=np.array([0.5, 0.6]))
    >>> figure = plot_confusion_matrix(data, class_names=["bg", "cat", "dog"])
    >>> len(figure.axes) >= 1
    True
    """
    counts = np.asarray(matrix.matrix, dtype=np.int64)
    names = [_name(int(c), class_names) for c in matrix.category_ids] + ["background"]
    size = max(4.0, 0.6 * len(names) + 2.5)
    figure = new_figure(size + 1.0, size)
    axes = figure.subplots()
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    image = axes.imshow(shares if normalize else counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="share of the row" if normalize else "count")
    ticks = range(len(names))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted (background: a missed instance)")
    axes.set_ylabel("ground truth (background: a false detection)")
    axes.set_title(f"confusion at IoU {matrix.iou:.2f}, per-class score thresholds")
    top = (shares if normalize else counts).max(initial=0) or 1
    for i in ticks:
        for j in ticks:
            if i == j == len(names) - 1:
                continue
            value = shares[i, j] if normalize else counts[i, j]
            axes.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if value > 0.6 * top else "black",
            )
    save_figure(figure, path)
    return figure
