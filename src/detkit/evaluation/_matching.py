"""COCO's greedy matching kept per detection, so curves can be re-accumulated without matching.

The backends hand back only pycocotools' accumulated arrays. Operating points, confusion
matrices and bootstrap intervals need what comes before: for each detection, whether it
matched a ground-truth instance at each IoU threshold. :func:`match` computes that the way
pycocotools' ``evaluateImg`` does for the area range ``"all"`` and the largest ``maxDets``
(IoUs from ``pycocotools.mask.iou``, crowd regions matched any number of times, ties going
to the last best ground truth), so that :func:`detkit.evaluation._curves.accumulate` gives
pycocotools' ``precision`` array bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from detkit.evaluation._params import EvalParams
from detkit.evaluation._table import Annotations, Images

#: The IoU types whose matching is available (keypoints' OKS is not implemented here).
MATCHED_IOU_TYPES = ("bbox", "segm")


@dataclass
class Matching:
    """Per-detection outcome of COCO matching (area range ``"all"``), in accumulation order.

    Detections are the top ``max_det`` per image and category, ordered as pycocotools'
    ``accumulate`` orders them: by category, then score (descending), then image id, then
    their order in the image. ``T`` IoU thresholds, ``D`` detections, ``I`` images, ``K``
    categories, ``G`` ground-truth rows.

    Attributes:
        iou_thresholds: ``[T]``.
        category_ids: the ``K`` evaluated categories.
        image_ids: ``[I]`` sorted, as pycocotools orders images.
        category: ``[D]`` position of each detection's category in ``category_ids``.
        image: ``[D]`` position of each detection's image in ``image_ids``.
        score: ``[D]``.
        row: ``[D]`` the detection's row in the annotations given to :func:`match`.
        matched: ``bool[T, D]`` matched to any ground truth (a crowd region included).
        ignored: ``bool[T, D]`` neither true nor false positive (matched to an ignored ground
            truth, or unmatched and outside the area range).
        positives: ``int[I, K]`` ground truth that counts (not crowd, in the area range).
        gt_matched: ``bool[T, G]`` whether each ground-truth row was matched.
        gt_ignored: ``bool[G]``.
    """

    iou_thresholds: np.ndarray
    category_ids: list[int]
    image_ids: np.ndarray
    category: np.ndarray
    image: np.ndarray
    score: np.ndarray
    row: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    positives: np.ndarray
    gt_matched: np.ndarray
    gt_ignored: np.ndarray

    @property
    def true_positive(self) -> np.ndarray:
        """``bool[T, D]``."""
        return self.matched & ~self.ignored

    @property
    def false_positive(self) -> np.ndarray:
        """``bool[T, D]``."""
        return ~self.matched & ~self.ignored


def _ious(iou_type: str, dt: Annotations, d_rows, gt: Annotations, g_rows) -> np.ndarray:
    """``[D, G]`` IoUs by ``pycocotools.mask.iou`` (crowd regions: intersection over the
    detection), exactly the values pycocotools' ``computeIoU`` matches with."""
    crowd = gt.required("iscrowd")[g_rows].astype(np.uint8).tolist()
    if iou_type == "bbox":
        ious = mask_utils.iou(dt.bbox[d_rows], gt.bbox[g_rows], crowd)
    else:
        dt_rles, gt_rles = dt.rles, gt.rles
        ious = mask_utils.iou(
            [dt_rles[i] for i in d_rows.tolist()], [gt_rles[i] for i in g_rows.tolist()], crowd
        )
    return np.asarray(ious, dtype=np.float64).reshape(len(d_rows), len(g_rows))


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and stops of the runs of equal values in ``keys``."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.r_[starts[1:], len(keys)]


@dataclass
class _Image:
    """One image's candidate detections (by score) against its ground truth (ignored
    last): ``ious`` ``[C, G]`` with other categories' pairs at -1."""

    d_rows: np.ndarray
    g_rows: np.ndarray
    ious: np.ndarray


def _greedy(images: list[_Image], limits: np.ndarray, crowd: np.ndarray, ignored: np.ndarray):
    """pycocotools' matching of many images at once, a detection rank at a time.

    Returns ``[(d_rows, g_rows), ...]`` per image: ``found`` ``int[T, C]``, the position of
    the matched ground truth (``-1`` unmatched). ``crowd`` / ``ignored`` are per gt row.
    """
    n, c_max = len(images), max(len(i.d_rows) for i in images)
    g_max = max(len(i.g_rows) for i in images)
    t_count = len(limits)
    ious = np.full((n, c_max, g_max), -1.0)
    is_crowd = np.zeros((n, 1, g_max), dtype=bool)
    is_ignored = np.zeros((n, 1, g_max), dtype=bool)
    for k, image in enumerate(images):
        c, g = image.ious.shape
        ious[k, :c, :g] = image.ious
        is_crowd[k, 0, :g] = crowd[image.g_rows]
        is_ignored[k, 0, :g] = ignored[image.g_rows]
    taken = np.zeros((n, t_count, g_max), dtype=bool)
    found = np.full((n, t_count, c_max), -1, dtype=np.int64)
    limit = limits[None, :, None]
    for d in range(c_max):
        active = np.flatnonzero(ious[:, d].max(axis=1) >= limits.min())
        iou = ious[active, d][:, None, :]
        ok = (~taken[active] | is_crowd[active]) & (iou >= limit)
        regular = ok & ~is_ignored[active]
        choose = np.where(regular.any(axis=2, keepdims=True), regular, ok & is_ignored[active])
        hit = choose.any(axis=2)
        # pycocotools keeps the last ground truth with the best IoU.
        values = np.where(choose, iou, -2.0)[:, :, ::-1]
        best = g_max - 1 - np.argmax(values, axis=2)
        a, t = np.nonzero(hit)
        found[active[a], t, d] = best[a, t]
        taken[active[a], t, best[a, t]] = True
    return [found[k, :, : len(image.d_rows)] for k, image in enumerate(images)]


def _image_batches(images: list[_Image], cells: int = 1 << 21):
    """Images in batches of similar size, each padded batch under ``cells`` IoU entries."""
    order = sorted(range(len(images)), key=lambda k: images[k].ious.shape)
    batch: list[_Image] = []
    c_max = g_max = 0
    for k in order:
        c, g = images[k].ious.shape
        if batch and (len(batch) + 1) * max(c, c_max) * max(g, g_max) > cells:
            yield batch
            batch, c_max, g_max = [], 0, 0
        batch.append(images[k])
        c_max, g_max = max(c, c_max), max(g, g_max)
    if batch:
        yield batch


def match(
    images: Images,
    gt: Annotations,
    dt: Annotations,
    params: EvalParams,
    iou_thresholds: np.ndarray | None = None,
) -> Matching:
    """Match detections to ground truth per image and category, as pycocotools does.

    Args:
        images: the evaluated images (``params.image_ids`` are their sorted ids).
        gt: ground truth of the evaluated categories, an image's rows together.
        dt: detections of the evaluated categories, an image's rows together.
        params: the evaluation parameters (categories, area range ``"all"``, ``max_dets``).
        iou_thresholds: ``[T]`` (default ``params.iou_thresholds``).

    Raises:
        ValueError: for keypoints (OKS matching is not implemented here).
    """
    if params.iou_type not in MATCHED_IOU_TYPES:
        raise ValueError(
            f"per-detection matching supports {MATCHED_IOU_TYPES}, not {params.iou_type!r}"
        )
    thresholds = np.asarray(
        params.iou_thresholds if iou_thresholds is None else iou_thresholds, dtype=np.float64
    )
    categories = list(params.category_ids)
    image_ids = np.asarray(sorted(set(images.ids.tolist())), dtype=np.int64)
    low, high = params.area_ranges[params.area_labels.index("all")]
    k_count, i_count = len(categories), len(image_ids)
    cat_lut = {c: n for n, c in enumerate(categories)}
    gt_cat = np.array([cat_lut[c] for c in gt.category_id.tolist()], dtype=np.int64)
    dt_cat = np.array([cat_lut[c] for c in dt.category_id.tolist()], dtype=np.int64)
    gt_img = np.searchsorted(image_ids, gt.image_id)
    dt_img = np.searchsorted(image_ids, dt.image_id)
    area = gt.required("area")
    gt_ignored = (gt.required("iscrowd") != 0) | (area < low) | (area > high)
    positives = np.zeros((i_count, k_count), dtype=np.int64)
    np.add.at(positives, (gt_img[~gt_ignored], gt_cat[~gt_ignored]), 1)

    # Detections per (image, category): by score (stable), the top max_det.
    score = dt.required("score")
    by_score = np.lexsort((np.arange(len(dt)), -score, dt_cat, dt_img))
    keys = dt_img[by_score] * k_count + dt_cat[by_score]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys
    rank = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    kept = by_score[rank < params.max_dets[-1]]

    t_count = len(thresholds)
    limits = np.minimum(thresholds, 1 - 1e-10)
    matched_gt = np.full((t_count, len(dt)), -1, dtype=np.int64)
    gt_matched = np.zeros((t_count, len(gt)), dtype=bool)
    candidates = _candidates(
        params.iou_type, dt, kept, dt_img, dt_cat, gt, gt_img, gt_cat, gt_ignored, limits.min()
    )
    crowd = gt.required("iscrowd") != 0
    for batch in _image_batches(candidates):
        for image, found in zip(batch, _greedy(batch, limits, crowd, gt_ignored)):
            hit = found >= 0
            matched_gt[:, image.d_rows] = np.where(hit, image.g_rows[np.maximum(found, 0)], -1)
            gt_matched[np.nonzero(hit)[0], image.g_rows[found[hit]]] = True

    # Accumulation order: category, score descending, image, order in the image.
    order = kept[np.lexsort((np.arange(len(kept)), dt_img[kept], -score[kept], dt_cat[kept]))]
    matched = matched_gt[:, order] >= 0
    dt_area = dt.required("area")[order]
    outside = (dt_area < low) | (dt_area > high)
    ignored = np.where(matched, np.r_[gt_ignored, False][matched_gt[:, order]], outside[None, :])
    return Matching(
        iou_thresholds=thresholds,
        category_ids=categories,
        image_ids=image_ids,
        category=dt_cat[order],
        image=dt_img[order],
        score=score[order],
        row=order,
        matched=matched,
        ignored=ignored,
        positives=positives,
        gt_matched=gt_matched,
        gt_ignored=gt_ignored,
    )


def _candidates(iou_type, dt, kept, dt_img, dt_cat, gt, gt_img, gt_cat, gt_ignored, limit):
    """Per image with both: the kept detections that reach ``limit`` with a ground truth of
    their category (by score), against the image's ground truth (ignored last)."""
    g_order = np.lexsort((np.arange(len(gt)), gt_ignored, gt_img))
    g_starts, g_stops = _segments(gt_img[g_order])
    g_bounds = dict(zip(gt_img[g_order][g_starts].tolist(), zip(g_starts, g_stops)))
    d_order = kept[np.lexsort((np.arange(len(kept)), -dt.score[kept], dt_img[kept]))]
    out = []
    for start, stop in zip(*_segments(dt_img[d_order])):
        bounds = g_bounds.get(int(dt_img[d_order[start]]))
        if bounds is None:
            continue
        d_rows, g_rows = d_order[start:stop], g_order[bounds[0] : bounds[1]]
        ious = _ious(iou_type, dt, d_rows, gt, g_rows)
        ious[dt_cat[d_rows][:, None] != gt_cat[g_rows][None, :]] = -1.0
        reach = ious.max(axis=1) >= limit
        if reach.any():
            out.append(_Image(d_rows[reach], g_rows, ious[reach]))
    return out
