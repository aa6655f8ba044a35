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


def layout(matching: Matching, t_rows: np.ndarray | slice = slice(None)) -> Layout:
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


def bootstrap(
    matching: Matching,
    *,
    iou_rows: dict[str, np.ndarray],
    resamples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """AP (the mean over ``iou_rows[name]``'s thresholds) of each resample of the images.

    Images are drawn with replacement, as many as there are; a resample where no category
    has ground truth gives ``nan`` (AP is undefined there).

    Returns:
        ``{name: float[resamples]}``.
    """
    data = layout(matching)
    rng = np.random.default_rng(seed)
    count = len(matching.image_ids)
    out = {name: np.empty(resamples) for name in iou_rows}
    for n in range(resamples):
        weights = np.bincount(rng.integers(0, count, count), minlength=count)
        precision, _, _ = accumulate(data, weights)
        for name, rows in iou_rows.items():
            value = mean_defined(precision[rows])
            out[name][n] = np.nan if value == -1.0 else value
    return out
