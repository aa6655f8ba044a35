"""COCO summary statistics from accumulated precision / recall arrays, and their table.

Every backend hands back pycocotools' ``eval["precision"]`` ``[T, R, K, A, M]`` and
``eval["recall"]`` ``[T, K, A, M]`` arrays; the statistics are computed here, once, the way
pycocotools' ``summarize`` does (mean over the entries that are not ``-1``), so they are
bit-identical whatever the backend, and custom ``max_dets`` are honoured everywhere
(pycocotools' ``stats[0]`` looks for ``maxDets=100`` whatever was asked, cocoapi#558).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detkit.evaluation._params import EvalParams

# pycocotools' area-range labels and the suffix its metric names use for them.
_AREA_SUFFIX = {"small": "s", "medium": "m", "large": "l"}


@dataclass(frozen=True)
class _Metric:
    name: str
    ap: bool  # average precision, else average recall
    iou: float | None  # None: mean over all thresholds
    area: str
    max_det: int


def metrics_for(params: EvalParams) -> list[_Metric]:
    """The named statistics of one iou type, in pycocotools' table order."""
    top = params.max_dets[-1]
    areas = [label for label in params.area_labels if label != "all"]

    def suffix(label: str) -> str:
        return _AREA_SUFFIX.get(label, f"_{label}")

    if params.iou_type == "keypoints":
        # pycocotools' keypoint table has no "small" row: its default ranges have none.
        rows = []
        for ap, kind in ((True, "AP"), (False, "AR")):
            rows += [
                _Metric(kind, ap, None, "all", top),
                _Metric(f"{kind}50", ap, 0.5, "all", top),
                _Metric(f"{kind}75", ap, 0.75, "all", top),
            ]
            rows += [_Metric(kind + suffix(a), ap, None, a, top) for a in areas]
        return rows
    rows = [
        _Metric("AP", True, None, "all", top),
        _Metric("AP50", True, 0.5, "all", top),
        _Metric("AP75", True, 0.75, "all", top),
    ]
    rows += [_Metric("AP" + suffix(a), True, None, a, top) for a in areas]
    rows += [_Metric(f"AR{m}", False, None, "all", m) for m in params.max_dets]
    rows += [_Metric("AR" + suffix(a), False, None, a, top) for a in areas]
    return rows


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return -1.0 if defined.size == 0 else float(np.mean(defined))


def _select(array: np.ndarray, params: EvalParams, metric: _Metric) -> np.ndarray:
    """The entries of ``precision`` (5-d) or ``recall`` (4-d) one statistic averages."""
    area = params.area_labels.index(metric.area)
    max_det = params.max_dets.index(metric.max_det)
    if metric.iou is not None:
        # A threshold given as 0.5 must find 0.5 even when it went through float32.
        rows = np.flatnonzero(np.isclose(params.iou_thresholds, metric.iou, rtol=0, atol=1e-6))
        array = array[rows]
    # pycocotools' axes: precision [T, R, K, A, M], recall [T, K, A, M].
    array = array[..., area, max_det]
    return array


def compute_stats(
    precision: np.ndarray, recall: np.ndarray, params: EvalParams
) -> dict[str, float | dict[int, float]]:
    """Named statistics and per-class AP from the accumulated arrays.

    Args:
        precision: ``[T, R, K, A, M]`` as pycocotools' ``accumulate`` leaves it.
        recall: ``[T, K, A, M]``.
        params: the parameters the arrays were computed with.

    Returns:
        ``{"AP": ..., ..., "per_class_AP": {category_id: AP}}``; ``-1.0`` where undefined.
    """
    stats: dict[str, float | dict[int, float]] = {}
    for metric in metrics_for(params):
        source = precision if metric.ap else recall
        stats[metric.name] = _mean_defined(_select(source, params, metric))
    # Per class: rows of the [T, R] precisions (in pycocotools' order), one row per category.
    overall = _select(precision, params, metrics_for(params)[0])
    rows = np.moveaxis(overall, -1, 0).reshape(len(params.category_ids), overall[..., 0].size)
    stats["per_class_AP"] = {
        category: _mean_defined(row) for category, row in zip(params.category_ids, rows)
    }
    return stats


def undefined_stats(params: EvalParams) -> dict[str, float | dict[int, float]]:
    """The statistics when nothing could be evaluated (no images or no categories)."""
    stats: dict[str, float | dict[int, float]] = {m.name: -1.0 for m in metrics_for(params)}
    stats["per_class_AP"] = {category: -1.0 for category in params.category_ids}
    return stats


def format_table(params: EvalParams, stats: dict) -> str:
    """pycocotools' summary table for one iou type, one line per statistic."""
    thresholds = params.iou_thresholds
    lines = []
    for metric in metrics_for(params):
        title, kind = ("Average Precision", "(AP)") if metric.ap else ("Average Recall", "(AR)")
        iou = (
            f"{thresholds[0]:0.2f}:{thresholds[-1]:0.2f}"
            if metric.iou is None
            else f"{metric.iou:0.2f}"
        )
        lines.append(
            f" {title:<18} {kind} @[ IoU={iou:<9} | area={metric.area:>6s} | "
            f"maxDets={metric.max_det:>3d} ] = {stats[metric.name]:0.3f}"
        )
    return "\n".join(lines)
