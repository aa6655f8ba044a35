"""Bootstrap intervals of AP and AP50 for ``CocoEvaluator.compute(confidence=...)``, and the
checks of the analysis methods' arguments."""

from __future__ import annotations

import numbers

import numpy as np

from detkit.evaluation._coco import Annotations, EvalParams
from detkit.evaluation._curves import bootstrap
from detkit.evaluation._matching import Matching
from detkit.evaluation.analysis import percentile_interval

#: The statistics that get an interval, and the IoU threshold each averages (None: all).
INTERVAL_STATS = {"AP": None, "AP50": 0.5}


def check_bootstrap(confidence, resamples, seed) -> dict | None:
    """The bootstrap's options, checked; ``None`` when no interval was asked for."""
    if confidence is None:
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise TypeError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral):
        raise TypeError(f"resamples must be an integer, got {resamples!r}")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return {"confidence": float(confidence), "resamples": int(resamples), "seed": int(seed)}


def check_iou(iou) -> float:
    if isinstance(iou, bool) or not isinstance(iou, numbers.Real) or not 0 < iou <= 1:
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
    matching: Matching | None, params: EvalParams, *, confidence: float, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """``{"AP_interval": (low, high), "AP50_interval": ...}`` by resampling images."""
    rows = _rows(params)
    if matching is None or not len(matching.image_ids):
        return undefined_intervals(params)
    values = bootstrap(matching, iou_rows=rows, resamples=resamples, seed=seed)
    return {f"{name}_interval": percentile_interval(values[name], confidence) for name in rows}


def empty_annotations(*, score: bool = False) -> Annotations:
    """No annotations (for an evaluator that has seen no image)."""
    return Annotations(
        image_id=np.zeros(0, dtype=np.int64),
        category_id=np.zeros(0, dtype=np.int64),
        bbox=np.zeros((0, 4)),
        area=np.zeros(0),
        iscrowd=np.zeros(0, dtype=np.int64),
        score=np.zeros(0) if score else None,
        rles=[],
    )
