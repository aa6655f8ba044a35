"""Precision-recall curves accumulated from a :class:`~detkit.evaluation._matching.Matching`,
for all images or for a weighted resample of them (the bootstrap), without matching again.

:func:`accumulate` computes pycocotools' ``accumulate`` for one area range and ``maxDets``,
vectorized over categories: each category's detections sit in one row of a ``[K, L]`` layout
(padded with weight 0). A detection drawn ``w`` times adds ``w`` to the running counts; a
detection of weight 0 repeats the point before it, which changes neither the precision
envelope nor the first index reaching a recall level, so the arrays equal pycocotools' on the
resampled image list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from detkit.evaluation._matching import Matching

#: pycocotools' recall levels, built as it builds them.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class Layout:
    """A matching's detections laid out one category per row, ``[T, K, L]``."""

    tp: np.ndarray  # float [T, K, L]
    fp: np.ndarray  # float [T, K, L]
    image: np.ndarray  # int [K, L], the detection's image (any valid index where padded)
    real: np.ndarray  # bool [K, L], false where padded
    score: np.ndarray  # [K, L]
    positives: np.ndarray  # int [I, K]


def layout(matching: Matching, t_rows: np.ndarray | list[int] | slice = slice(None)) -> Layout:
    """Arrange ``matching`` (at IoU threshold rows ``t_rows``) for :func:`accumulate`."""
    k_count = len(matching.category_ids)
    counts = np.bincount(matching.category, minlength=k_count)
    width = max(int(counts.max(initial=0)), 1)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    slot = np.arange(len(matching.category)) - starts[matching.category]
    tp = matching.true_positive[t_rows]
    fp = matching.false_positive[t_rows]
    out_tp = np.zeros((tp.shape[0], k_count, width))
    out_fp = np.zeros_like(out_tp)
    out_tp[:, matching.category, slot] = tp
    out_fp[:, matching.category, slot] = fp
    image = np.zeros((k_count, width), dtype=np.int64)
    image[matching.category, slot] = matching.image
    real = np.zeros((k_count, width), dtype=bool)
    real[matching.category, slot] = True
    score = np.zeros((k_count, width))
    score[matching.category, slot] = matching.score
    return Layout(out_tp, out_fp, image, real, score, matching.positives)


def _first_reaching(counts: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row of ``counts`` (``int [T, K, L]``, non-decreasing), the first index where the
    recall ``counts / positives`` (as float64) reaches each recall level: ``[T, K, R]``, ``L``
    where never. Exact: integer search, no float offsets."""
    t_count, k_count, width = counts.shape
    n = np.maximum(positives, 1).astype(np.float64)[:, None]
    guess = np.ceil(RECALL_THRESHOLDS[None, :] * n)[..., None] + np.arange(-2, 2)
    # The smallest count whose float recall reaches the level (division is monotone).
    ok = (guess >= 0) & (guess / n[..., None] >= RECALL_THRESHOLDS[None, :, None])
    needed = np.take_along_axis(guess, np.argmax(ok, axis=-1)[..., None], -1)[..., 0]
    span = int(max(counts.max(initial=0), needed.max(initial=0))) + 2
    offsets = np.arange(t_count * k_count, dtype=np.int64).reshape(t_count, k_count, 1) * span
    flat = (counts.astype(np.int64) + offsets).ravel()
    queries = needed.astype(np.int64)[None] + offsets
    found = np.searchsorted(flat, queries.ravel(), side="left").reshape(queries.shape)
    return found - np.arange(t_count * k_count).reshape(t_count, k_count, 1) * width


@overload
def accumulate(
    data: Layout, weights: np.ndarray | None = None, *, scores: Literal[False] = False
) -> tuple[np.ndarray, np.ndarray, None]: ...


@overload
def accumulate(
    data: Layout, weights: np.ndarray | None = None, *, scores: Literal[True]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def accumulate(
    data: Layout, weights: np.ndarray | None = None, *, scores: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """pycocotools' ``precision`` ``[T, R, K]``, ``recall`` ``[T, K]`` (and ``scores``
    ``[T, R, K]`` when asked) for one area range and ``maxDets``.

    Args:
        data: from :func:`layout`.
        weights: ``int[I]`` how many times each image counts (default once each).
    """
    if weights is None:
        per_detection = data.real.astype(np.float64)
        positives = data.positives.sum(axis=0)
    else:
        per_detection = np.where(data.real, weights[data.image], 0).astype(np.float64)
        positives = weights @ data.positives
    tp = np.cumsum(data.tp * per_detection, axis=-1)
    fp = np.cumsum(data.fp * per_detection, axis=-1)
    valid = positives > 0
    n = np.where(valid, positives, 1)[:, None]
    recall_curve = tp / n
    precision_curve = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(precision_curve[..., ::-1], axis=-1)[..., ::-1]
    first = _first_reaching(tp, positives)  # [T, K, R]
    inside = first < tp.shape[-1]
    picked = np.take_along_axis(envelope, np.minimum(first, tp.shape[-1] - 1), axis=-1)
    precision = np.where(inside, picked, 0.0)
    precision = np.where(valid[None, :, None], precision, -1.0)
    detections = per_detection.sum(axis=-1) > 0
    recall = np.where(detections[None], recall_curve[..., -1], 0.0)
    recall = np.where(valid[None], recall, -1.0)
    score_array = None
    if scores:
        picked = np.take_along_axis(
            np.broadcast_to(data.score, tp.shape), np.minimum(first, tp.shape[-1] - 1), axis=-1
        )
        picked = np.where(inside, picked, 0.0)
        score_array = np.moveaxis(np.where(valid[None, :, None], picked, -1.0), 1, 2)
    return np.moveaxis(precision, 1, 2), recall, score_array


def mean_defined(values: np.ndarray) -> float:
    """The mean of the entries that are not ``-1`` (pycocotools' rule), ``-1.0`` if none."""
    defined = values[values > -1]
    return -1.0 if defined.size == 0 else float(np.mean(defined))


@dataclass
class _Hits:
    """A matching's true positives per IoU threshold and category, ``[T, K, H]`` (padded by
    repeating a row's last entry with weight 0), for the bootstrap's fast AP.

    The detections counted (not ignored) before each hit are ``always`` (never ignored), a
    running sum over all detections, plus the few ``mixed`` ones ignored at some thresholds
    only (on crowd regions), summed per threshold.
    """

    detection: np.ndarray  # int [T, K, H] position in the matching's order
    real: np.ndarray  # bool [T, K, H]
    image: np.ndarray  # int [D] per detection
    always: np.ndarray  # int [D] never ignored
    before: np.ndarray  # int [K] the position before each category's first (-1: none)
    mixed: np.ndarray  # int [M] positions of detections ignored at some thresholds only
    mixed_counted: np.ndarray  # int [T, M] not ignored at each threshold
    mixed_at_hit: np.ndarray  # int [T, K, H] mixed detections up to each hit
    mixed_before: np.ndarray  # int [K] mixed detections before each category
    positives: np.ndarray  # int [I, K]


def _hits(matching: Matching) -> _Hits:
    tp, ignored = matching.true_positive, matching.ignored
    t_count, k_count = tp.shape[0], len(matching.category_ids)
    t_index, position = np.nonzero(tp)
    row = t_index * k_count + matching.category[position]
    counts = np.bincount(row, minlength=t_count * k_count)
    width = max(int(counts.max(initial=0)), 1)
    slot = np.arange(len(row)) - np.r_[0, np.cumsum(counts)[:-1]][row]
    detection = np.zeros((t_count * k_count, width), dtype=np.int64)
    real = np.zeros((t_count * k_count, width), dtype=bool)
    detection[row, slot] = position
    real[row, slot] = True
    # Padding repeats the last hit (weight 0 keeps its counts): the envelope is unchanged.
    last = np.maximum.accumulate(np.where(real, np.arange(width), 0), axis=1)
    detection = np.take_along_axis(detection, last, axis=1).reshape(t_count, k_count, width)
    last_of = np.cumsum(np.bincount(matching.category, minlength=k_count)) - 1
    before: np.ndarray = np.r_[-1, last_of[:-1]]
    mixed = np.flatnonzero(ignored.any(axis=0) & ~ignored.all(axis=0))
    return _Hits(
        detection=detection,
        real=real.reshape(t_count, k_count, width),
        image=matching.image,
        always=(~np.any(ignored, axis=0)).astype(np.int64),
        before=before,
        mixed=mixed,
        mixed_counted=(~ignored[:, mixed]).astype(np.int64),
        mixed_at_hit=np.searchsorted(mixed, detection, side="right"),
        mixed_before=np.searchsorted(mixed, before, side="right"),
        positives=matching.positives,
    )


def _ap_sums(hits: _Hits, weights: np.ndarray):
    """Per ``[T, K]``: the sum of interpolated precision over the recall levels, and which
    categories have ground truth. Only true positives are visited: the first detection
    reaching a recall level is one, and the precision envelope there is the best precision
    of the true positives from there on."""
    positives = weights @ hits.positives
    valid = positives > 0
    if not len(hits.image):  # no detection: precision 0 at every level
        return np.zeros(hits.detection.shape[:2]), valid
    per_detection = weights[hits.image]
    always = np.r_[0, np.cumsum(per_detection * hits.always)]  # counted before position + 1
    total = always[hits.detection + 1] - always[hits.before + 1][None, :, None]
    if len(hits.mixed):
        mixed = np.cumsum(per_detection[hits.mixed] * hits.mixed_counted, axis=1)
        mixed = np.pad(mixed, ((0, 0), (1, 0)))
        t_rows = np.arange(len(mixed))[:, None, None]
        total = total + mixed[t_rows, hits.mixed_at_hit]
        total = total - mixed[t_rows[:, :, 0], hits.mixed_before[None, :]][:, :, None]
    w = np.where(hits.real, per_detection[hits.detection], 0)
    tp = np.cumsum(w, axis=-1).astype(np.float64)
    precision = tp / (total.astype(np.float64) + np.spacing(1))
    envelope = np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]
    recall = tp / np.where(valid, positives, 1)[None, :, None]
    levels = np.searchsorted(RECALL_THRESHOLDS, recall, side="right")
    gained = np.diff(levels, axis=-1, prepend=0)
    return (envelope * gained).sum(axis=-1), valid


def bootstrap(
    matching: Matching,
    *,
    iou_rows: dict[str, np.ndarray],
    resamples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """AP (the mean over ``iou_rows[name]``'s thresholds) of each resample of the images.

    Images are drawn with replacement, as many as there are; a resample where no category
    has ground truth gives ``nan`` (AP is undefined there). Equal to :func:`accumulate`'s AP
    on the resample up to the order of a floating-point sum.

    Returns:
        ``{name: float[resamples]}``.
    """
    rng = np.random.default_rng(seed)
    count = len(matching.image_ids)
    out = {name: np.full(resamples, np.nan) for name in iou_rows}
    if not len(matching.category_ids):
        return out
    hits = _hits(matching)
    levels = len(RECALL_THRESHOLDS)
    for n in range(resamples):
        weights = np.bincount(rng.integers(0, count, count), minlength=count)
        sums, valid = _ap_sums(hits, weights)
        if not valid.any():
            continue
        for name, rows in iou_rows.items():
            out[name][n] = sums[rows][:, valid].sum() / (len(rows) * levels * valid.sum())
    return out
