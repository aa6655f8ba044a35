"""The evaluator's analyses on prepared columns: bootstrap intervals of AP and AP50
(``compute(confidence=...)``), operating points and confusion matrices, and the checks of
their arguments."""

from __future__ import annotations

import numbers

import numpy as np

from detkit.evaluation._curves import bootstrap
from detkit.evaluation._matching import MATCHED_IOU_TYPES, Matching, match
from detkit.evaluation._params import EvalParams
from detkit.evaluation._table import Annotations, Images
from detkit.evaluation.analysis import (
    ConfusionMatrix,
    OperatingPoints,
    class_thresholds,
    confusion_counts,
    operating_points,
    percentile_interval,
)

#: The statistics that get an interval, and the IoU threshold each averages (None: all).
INTERVAL_STATS = {"AP": None, "AP50": 0.5}


def check_bootstrap(confidence, resamples, seed) -> dict | None:
    """The bootstrap's options, checked; ``None`` when no interval was asked for."""
    if confidence is None:
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise TypeError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not 0 < float(confidence) < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral):
        raise TypeError(f"resamples must be an integer, got {resamples!r}")
    if int(resamples) < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return {"confidence": float(confidence), "resamples": int(resamples), "seed": int(seed)}


def check_iou(iou) -> float:
    if isinstance(iou, bool) or not isinstance(iou, numbers.Real) or not 0 < float(iou) <= 1:
        raise ValueError(f"iou must be a number in (0, 1], got {iou!r}")
    return float(iou)


def _rows(params: EvalParams) -> dict[str, np.ndarray]:
    rows = {}
    for name, iou in INTERVAL_STATS.items():
        if iou is None:
            rows[name] = np.arange(len(params.iou_thresholds))
            continue
        found = np.flatnonzero(np.isclose(params.iou_thresholds, iou, rtol=0, atol=1e-6))
        if len(found):
            rows[name] = found
    return rows


def undefined_intervals(params: EvalParams) -> dict[str, tuple[float, float]]:
    return {f"{name}_interval": (-1.0, -1.0) for name in _rows(params)}


def ap_intervals(
    matching: Matching | None,
    params: EvalParams,
    stats: dict,
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """``{"AP_interval": (low, high), "AP50_interval": ...}`` by resampling images, placed
    around the measured ``stats`` (see :func:`~detkit.evaluation.analysis.percentile_interval`)."""
    rows = _rows(params)
    if matching is None or not len(matching.image_ids):
        return undefined_intervals(params)
    values = bootstrap(matching, iou_rows=rows, resamples=resamples, seed=seed)
    return {
        f"{name}_interval": percentile_interval(values[name], confidence, center=stats[name])
        for name in rows
    }


def analysis_type(iou_type: str) -> str:
    if iou_type not in MATCHED_IOU_TYPES:
        raise ValueError(
            f"operating points and confusion matrices are available for {MATCHED_IOU_TYPES}, "
            f"not {iou_type!r}"
        )
    return iou_type


def empty_columns(params: EvalParams) -> tuple[Images, Annotations, Annotations, EvalParams]:
    """What :meth:`CocoEvaluator._prepare` gives when no image was updated."""
    none = np.zeros(0, dtype=np.int64)
    return Images(none, none, none), Annotations.empty(), Annotations.empty(detections=True), params


def points_from(
    images: Images, gt: Annotations, dt: Annotations, params: EvalParams, *, iou: float
) -> OperatingPoints:
    """Operating points at ``iou``, matched at the evaluator's thresholds (for AR) and at
    ``iou`` when it is not one of them."""
    rows = np.flatnonzero(np.isclose(params.iou_thresholds, iou, rtol=0, atol=1e-12))
    thresholds = params.iou_thresholds if len(rows) else np.r_[params.iou_thresholds, iou]
    matching = match(images, gt, dt, params, thresholds)
    t_row = int(rows[0]) if len(rows) else len(thresholds) - 1
    ar_rows = np.arange(len(params.iou_thresholds))
    return operating_points(matching, t_row, iou_type=params.iou_type, ar_rows=ar_rows)


def matrix_from(
    images: Images,
    gt: Annotations,
    dt: Annotations,
    params: EvalParams,
    *,
    iou: float,
    thresholds,
) -> ConfusionMatrix:
    """The confusion matrix of the detections kept at ``thresholds`` (see
    :func:`~detkit.evaluation.analysis.class_thresholds`)."""
    scores = class_thresholds(thresholds, params.category_ids)
    lookup = dict(zip(params.category_ids, scores.tolist()))
    needed = np.array([lookup[c] for c in dt.category_id.tolist()], dtype=np.float64)
    dt = dt.take(dt.required("score") >= needed)
    matching = match(images, gt, dt, params, np.array([iou]))
    return ConfusionMatrix(
        iou_type=params.iou_type,
        iou=iou,
        category_ids=list(params.category_ids),
        thresholds=scores,
        matrix=confusion_counts(matching, gt, dt, iou_type=params.iou_type),
    )
