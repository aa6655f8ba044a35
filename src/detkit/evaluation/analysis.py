"""What to do with a detector after its AP: per-class operating points, a confusion matrix,
and how sure the AP is.

:class:`OperatingPoints` and :class:`ConfusionMatrix` are plain data made by
:meth:`CocoEvaluator.operating_points <detkit.evaluation.CocoEvaluator.operating_points>` and
:meth:`CocoEvaluator.confusion_matrix <detkit.evaluation.CocoEvaluator.confusion_matrix>`
(draw them with :func:`detkit.visualize.plot_pr_curves` and
:func:`detkit.visualize.plot_confusion_matrix`); ``percentile_interval`` turns bootstrap
resamples into the intervals of ``compute(confidence=...)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from detkit.evaluation._curves import RECALL_THRESHOLDS, accumulate, layout, mean_defined
from detkit.evaluation._matching import Matching
from detkit.evaluation._table import Annotations

__all__ = ["ConfusionMatrix", "OperatingPoints"]


@dataclass
class OperatingPoints:
    """Per class, at one IoU threshold: the precision-recall curve and the score threshold
    that maximises F1. ``K`` categories, ``R`` = 101 recall levels.

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        iou: the IoU threshold of the curves and the operating points.
        category_ids: ``[K]`` dataset category ids (what the arrays' rows are).
        recall_levels: ``float[R]``, ``0, 0.01, ..., 1`` (pycocotools' ``recThrs``).
        precision: ``float[K, R]`` COCO's interpolated precision at each recall level
            (pycocotools' ``eval["precision"][t, :, k, 0, -1]``), ``-1`` for a class without
            ground truth.
        scores: ``float[K, R]`` the score of the detection where the curve reaches each recall
            level (pycocotools' ``eval["scores"]``), ``0`` where it never does.
        threshold: ``float[K]`` the score threshold (keep detections with ``score >=
            threshold``) that maximises F1 (the highest such score on ties); ``nan`` when the
            class has no ground truth or no true positive.
        precision_at, recall_at, f1: ``float[K]`` at ``threshold`` (``0`` with no true
            positive; ``nan`` without ground truth).
        true_positives, false_positives: ``int[K]`` detections kept at ``threshold`` that
            match / do not match (detections on crowd regions count as neither).
        num_ground_truth: ``int[K]`` instances that count (not crowd).
        ap: ``float[K]`` AP at ``iou`` (AP50 when ``iou`` is 0.5), ``-1`` without ground truth.
        ar: ``float[K]`` COCO's AR: recall at the largest ``max_dets`` averaged over the
            evaluator's IoU thresholds, ``-1`` without ground truth.

    >>> import torch
    >>> from detkit.evaluation import CocoEvaluator
    >>> box, label = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([1])
    >>> evaluator = CocoEvaluator("bbox")
    >>> score = torch.tensor([0.7])
    >>> evaluator.update([{"boxes": box, "scores": score, "labels": label}],
    ...                  [{"boxes": box, "labels": label, "image_id": 1}])
    >>> points = evaluator.operating_points()
    >>> points.category_ids, points.threshold.round(2).tolist(), points.f1.tolist()
    ([1], [0.7], [1.0])
    """

    iou_type: str
    iou: float
    category_ids: list[int]
    recall_levels: np.ndarray
    precision: np.ndarray
    scores: np.ndarray
    threshold: np.ndarray
    precision_at: np.ndarray
    recall_at: np.ndarray
    f1: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    num_ground_truth: np.ndarray
    ap: np.ndarray
    ar: np.ndarray

    def thresholds(self) -> dict[int, float]:
        """``{category_id: threshold}`` for the classes that have one (not ``nan``)."""
        return {c: float(t) for c, t in zip(self.category_ids, self.threshold) if not math.isnan(t)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no curves): ``{"iou_type", "iou", "classes": {"<category_id>":
        {"threshold", "precision", "recall", "f1", "true_positives", "false_positives",
        "num_ground_truth", "ap", "ar"}}}``, ``None`` where a value is ``nan``."""

        def plain(value):
            value = value.item()
            return None if isinstance(value, float) and math.isnan(value) else value

        fields = {
            "threshold": self.threshold,
            "precision": self.precision_at,
            "recall": self.recall_at,
            "f1": self.f1,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "num_ground_truth": self.num_ground_truth,
            "ap": self.ap,
            "ar": self.ar,
        }
        classes = {
            str(c): {name: plain(values[k]) for name, values in fields.items()}
            for k, c in enumerate(self.category_ids)
        }
        return {"iou_type": self.iou_type, "iou": self.iou, "classes": classes}


@dataclass
class ConfusionMatrix:
    """Counts at per-class score thresholds; the last row and column are the background.

    ``matrix[i, j]`` (``i, j < K``) counts ground-truth instances of ``category_ids[i]``
    detected as ``category_ids[j]`` (the diagonal: correct detections, found by COCO's
    same-class matching first; then each leftover detection, by score, takes the leftover
    instance of another class it overlaps most with IoU ``>= iou``). ``matrix[i, K]`` counts
    missed instances of class ``i``; ``matrix[K, j]`` false detections of class ``j`` (on no
    instance, or duplicates). ``matrix[K, K]`` is 0. Crowd regions take no part, nor
    detections on them. Row sums are the instances per class; column sums the detections kept
    per class.

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        iou: the IoU a detection needs with an instance to be counted on it.
        category_ids: ``[K]``.
        thresholds: ``float[K]`` the score each class's detections needed to be kept.
        matrix: ``int[K + 1, K + 1]``, rows ground truth, columns predictions.

    >>> import torch
    >>> from detkit.evaluation import CocoEvaluator
    >>> box = torch.tensor([[0.0, 0, 10, 10]])
    >>> evaluator = CocoEvaluator("bbox", category_ids=[1, 2])
    >>> one, two = torch.tensor([1]), torch.tensor([2])
    >>> evaluator.update(
    ...     [{"boxes": box, "scores": torch.tensor([0.7]), "labels": two}],
    ...     [{"boxes": box, "labels": one, "image_id": 1}])
    >>> evaluator.confusion_matrix(thresholds=0.5).matrix.tolist()  # 1 taken for 2
    [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    """

    iou_type: str
    iou: float
    category_ids: list[int]
    thresholds: np.ndarray
    matrix: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"iou_type", "iou", "category_ids", "thresholds", "matrix"}``."""
        return {
            "iou_type": self.iou_type,
            "iou": self.iou,
            "category_ids": list(self.category_ids),
            "thresholds": [None if math.isnan(t) else float(t) for t in self.thresholds],
            "matrix": self.matrix.tolist(),
        }


def _best_f1(tp: np.ndarray, fp: np.ndarray, score: np.ndarray, positives: int):
    """``(index, precision, recall, f1)`` of the F1-best cut of one class's sorted detections;
    a cut is only allowed after the last of equal scores; index ``-1`` without a true
    positive."""
    if not len(tp) or positives == 0:
        return -1, 0.0, 0.0, 0.0
    tps, fps = np.cumsum(tp), np.cumsum(fp)
    last_of_ties = np.r_[score[1:] != score[:-1], True]
    kept = tps + fps
    precision = np.divide(tps, kept, out=np.zeros(len(tps)), where=kept > 0)
    recall = tps / positives
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(tps)), where=total > 0)
    f1 = np.where(last_of_ties, f1, -1.0)
    best = int(np.argmax(f1))  # the first best: the highest threshold
    if f1[best] <= 0:
        return -1, 0.0, 0.0, 0.0
    return best, float(precision[best]), float(recall[best]), float(f1[best])


def operating_points(
    matching: Matching, t_row: int, *, iou_type: str, ar_rows: np.ndarray | None
) -> OperatingPoints:
    """Operating points at IoU row ``t_row`` of ``matching`` (AR over ``ar_rows``)."""
    data = layout(matching, [t_row])
    precision, _, scores = accumulate(data, scores=True)
    k_count = len(matching.category_ids)
    positives = matching.positives.sum(axis=0)
    values = np.full((4, k_count), np.nan)
    counts = np.zeros((2, k_count), dtype=np.int64)
    tp_all, fp_all = matching.true_positive[t_row], matching.false_positive[t_row]
    bounds = np.r_[0, np.cumsum(np.bincount(matching.category, minlength=k_count))]
    for k in range(k_count):
        if positives[k] == 0:
            continue
        rows = slice(bounds[k], bounds[k + 1])
        tp, fp, score = tp_all[rows], fp_all[rows], matching.score[rows]
        best, p, r, f = _best_f1(tp, fp, score, int(positives[k]))
        values[1:, k] = p, r, f
        if best >= 0:
            values[0, k] = score[best]
            counts[:, k] = tp[: best + 1].sum(), fp[: best + 1].sum()
    if ar_rows is None:
        ar = np.full(k_count, -1.0)
    else:
        _, recall, _ = accumulate(layout(matching, ar_rows))
        ar = np.array([mean_defined(recall[:, k]) for k in range(k_count)])
    return OperatingPoints(
        iou_type=iou_type,
        iou=float(matching.iou_thresholds[t_row]),
        category_ids=list(matching.category_ids),
        recall_levels=RECALL_THRESHOLDS.copy(),
        precision=precision[0].T.copy(),
        scores=scores[0].T.copy(),
        threshold=values[0],
        precision_at=values[1],
        recall_at=values[2],
        f1=values[3],
        true_positives=counts[0],
        false_positives=counts[1],
        num_ground_truth=positives,
        ap=np.array([mean_defined(precision[0, :, k]) for k in range(k_count)]),
        ar=ar,
    )


def class_thresholds(thresholds: Any, category_ids: list[int]) -> np.ndarray:
    """Per-class score thresholds ``float[K]`` from a number, a ``{category_id: score}`` dict
    (missing classes keep nothing), a sequence aligned with ``category_ids``, or an object
    with a ``threshold`` array and ``category_ids`` (:class:`OperatingPoints`)."""
    if isinstance(thresholds, OperatingPoints):
        thresholds = dict(zip(thresholds.category_ids, thresholds.threshold.tolist()))
    if isinstance(thresholds, numbers.Real) and not isinstance(thresholds, bool):
        return np.full(len(category_ids), float(thresholds))
    if isinstance(thresholds, Mapping):
        unknown = sorted(set(int(c) for c in thresholds) - set(category_ids))
        if unknown:
            raise ValueError(
                f"thresholds: category ids {unknown} are not evaluated ({category_ids})"
            )
        lookup = {int(c): float(t) for c, t in thresholds.items()}
        return np.array([lookup.get(c, np.nan) for c in category_ids], dtype=np.float64)
    if isinstance(thresholds, (Sequence, np.ndarray)) and not isinstance(thresholds, str):
        values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if len(values) != len(category_ids):
            raise ValueError(
                f"thresholds has {len(values)} values but there are {len(category_ids)} "
                f"categories {category_ids}; pass a dict {{category_id: score}}"
            )
        return values
    raise TypeError(
        "thresholds must be a number, a dict {category_id: score}, a sequence aligned with the "
        f"categories or OperatingPoints, got {type(thresholds).__name__}"
    )


def _cross_ious(iou_type: str, dt: Annotations, d_rows, gt: Annotations, g_rows) -> np.ndarray:
    crowd = [0] * len(g_rows)
    if iou_type == "bbox":
        return np.asarray(mask_utils.iou(dt.bbox[d_rows], gt.bbox[g_rows], crowd))
    dt_rles, gt_rles = dt.rles, gt.rles
    return np.asarray(
        mask_utils.iou([dt_rles[i] for i in d_rows], [gt_rles[i] for i in g_rows], crowd)
    )


def confusion_counts(
    matching: Matching, gt: Annotations, dt: Annotations, *, iou_type: str
) -> np.ndarray:
    """The ``[K + 1, K + 1]`` matrix from a one-threshold matching of the kept detections."""
    k_count = len(matching.category_ids)
    matrix = np.zeros((k_count + 1, k_count + 1), dtype=np.int64)
    tp, ignored = matching.true_positive[0], matching.ignored[0]
    np.add.at(matrix, (matching.category[tp], matching.category[tp]), 1)
    lut = {c: n for n, c in enumerate(matching.category_ids)}
    gt_cat = np.array([lut[c] for c in gt.category_id.tolist()], dtype=np.int64)
    gt_left = ~matching.gt_matched[0] & ~matching.gt_ignored & (gt.required("iscrowd") == 0)
    left = ~tp & ~ignored
    # Leftover detections meet leftover instances of other classes, image by image, by score.
    left_index = np.flatnonzero(left)
    d_rows, g_rows = matching.row[left_index], np.flatnonzero(gt_left)
    d_cat = matching.category[left_index]
    limit = min(float(matching.iou_thresholds[0]), 1 - 1e-10)
    dt_score = dt.required("score")
    for image_id in np.intersect1d(dt.image_id[d_rows], gt.image_id[g_rows]).tolist():
        d_here = np.flatnonzero(dt.image_id[d_rows] == image_id)
        d_here = d_here[np.argsort(-dt_score[d_rows[d_here]], kind="stable")]
        g_here = np.flatnonzero(gt.image_id[g_rows] == image_id)
        ious = _cross_ious(iou_type, dt, d_rows[d_here], gt, g_rows[g_here])
        free = np.ones(len(g_here), dtype=bool)
        for n, d in enumerate(d_here.tolist()):
            candidates = free & (gt_cat[g_rows[g_here]] != d_cat[d]) & (ious[n] >= limit)
            if not candidates.any():
                continue
            g = int(np.argmax(np.where(candidates, ious[n], -1.0)))
            free[g] = False
            gt_left[g_rows[g_here[g]]] = False
            left[left_index[d]] = False
            matrix[gt_cat[g_rows[g_here[g]]], d_cat[d]] += 1
    np.add.at(matrix, (gt_cat[gt_left], k_count), 1)
    np.add.at(matrix, (k_count, matching.category[left]), 1)
    return matrix


def percentile_interval(
    values: np.ndarray, confidence: float, center: float | None = None
) -> tuple[float, float]:
    """The central ``confidence`` range of bootstrap ``values`` (``nan`` ones left out).

    With ``center`` (the measured statistic), the range is moved so that the values' median
    falls on ``center``: ``(center - (median - low), center + (high - median))``. Resampling
    images with replacement repeats detections with identical scores, which lifts AP's
    interpolated precision (a maximum over the curve) above the measured AP, most on weak
    detectors; the spread is what the interval is for, so it is kept and placed around the
    number reported. ``(-1.0, -1.0)`` when every value is ``nan`` (undefined, as COCO's -1).

    >>> values = np.array([0.1, 0.2, 0.3, 0.4, np.nan])
    >>> [round(v, 3) for v in percentile_interval(values, 0.5)]
    [0.175, 0.325]
    >>> [round(v, 3) for v in percentile_interval(values, 0.5, center=0.2)]
    [0.125, 0.275]
    """
    defined = values[~np.isnan(values)]
    if not defined.size or (center is not None and center == -1.0):
        return (-1.0, -1.0)
    low, median, high = np.quantile(defined, [(1 - confidence) / 2, 0.5, (1 + confidence) / 2])
    if center is None:
        return (float(low), float(high))
    return (float(center - (median - low)), float(center + (high - median)))
