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

from detkit.evaluation._coco import Annotations, EvalParams, Images

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


def _groups(image_pos: np.ndarray, category_pos: np.ndarray, num_categories: int):
    """Rows sorted by (image, category), stably, and the start of each group."""
    key = image_pos.astype(np.int64) * num_categories + category_pos
    order = np.argsort(key, kind="stable")
    keys = key[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, int)
    return order, keys, starts


def _ious(iou_type: str, dt: Annotations, d_rows, gt: Annotations, g_rows) -> np.ndarray:
    crowd = gt.iscrowd[g_rows].astype(np.uint8).tolist()
    if iou_type == "bbox":
        return np.asarray(mask_utils.iou(dt.bbox[d_rows], gt.bbox[g_rows], crowd))
    dts = [dt.rles[i] for i in d_rows.tolist()]
    gts = [gt.rles[i] for i in g_rows.tolist()]
    return np.asarray(mask_utils.iou(dts, gts, crowd))


def _greedy(ious, thresholds, crowd, ignored):
    """pycocotools' matching of one image and category; returns matched gt index ``[T, D]``
    (``-1`` unmatched). ``ious`` is ``[D, G]`` with detections by score, ground truth with
    the ignored last."""
    t_count, (d_count, g_count) = len(thresholds), ious.shape
    dt_match = np.full((t_count, d_count), -1, dtype=np.int64)
    taken = np.zeros((t_count, g_count), dtype=bool)
    limits = np.minimum(thresholds, 1 - 1e-10)[:, None]
    # A detection below every threshold with every ground truth matches nothing.
    for d in np.flatnonzero(ious.max(axis=1, initial=-1.0) >= limits.min()):
        iou = ious[d][None, :]
        ok = (~taken | crowd) & (iou >= limits)
        regular = ok & ~ignored
        choose = np.where(regular.any(axis=1, keepdims=True), regular, ok & ignored)
        found = np.flatnonzero(choose.any(axis=1))
        if not len(found):
            continue
        values = np.where(choose[found], iou, -1.0)
        # pycocotools keeps the last ground truth with the best IoU.
        best = g_count - 1 - np.argmax(values[:, ::-1], axis=1)
        dt_match[found, d] = best
        taken[found, best] = True
    return dt_match


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
    gt_ignored = (gt.iscrowd != 0) | (gt.area < low) | (gt.area > high)
    positives = np.zeros((i_count, k_count), dtype=np.int64)
    np.add.at(positives, (gt_img[~gt_ignored], gt_cat[~gt_ignored]), 1)

    # Detections per (image, category): by score (stable), the top max_det.
    by_score = np.lexsort((np.arange(len(dt)), -dt.score, dt_cat, dt_img))
    keys = dt_img[by_score] * k_count + dt_cat[by_score]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys
    rank = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    kept = by_score[rank < params.max_dets[-1]]

    t_count = len(thresholds)
    matched_gt = np.full((t_count, len(dt)), -1, dtype=np.int64)
    gt_matched = np.zeros((t_count, len(gt)), dtype=bool)
    g_order, g_keys, g_starts = _groups(gt_img, gt_cat, k_count)
    g_bounds = dict(zip(g_keys[g_starts].tolist(), zip(g_starts, np.r_[g_starts[1:], len(g_keys)])))
    d_keys = dt_img[kept] * k_count + dt_cat[kept]
    d_starts = np.flatnonzero(np.r_[True, d_keys[1:] != d_keys[:-1]]) if len(kept) else d_keys
    for start, stop in zip(d_starts.tolist(), np.r_[d_starts[1:], len(kept)].tolist()):
        bounds = g_bounds.get(int(d_keys[start]))
        if bounds is None:
            continue
        d_rows = kept[start:stop]
        g_rows = g_order[bounds[0] : bounds[1]]
        g_rows = g_rows[np.argsort(gt_ignored[g_rows], kind="stable")]
        ious = _ious(params.iou_type, dt, d_rows, gt, g_rows)
        found = _greedy(ious, thresholds, gt.iscrowd[g_rows] != 0, gt_ignored[g_rows])
        hit = found >= 0
        matched_gt[:, d_rows] = np.where(hit, g_rows[np.maximum(found, 0)], -1)
        t_hit, d_hit = np.nonzero(hit)
        gt_matched[t_hit, g_rows[found[t_hit, d_hit]]] = True

    # Accumulation order: category, score descending, image, order in the image.
    order = kept[np.lexsort((np.arange(len(kept)), dt_img[kept], -dt.score[kept], dt_cat[kept]))]
    matched = matched_gt[:, order] >= 0
    outside = (dt.area[order] < low) | (dt.area[order] > high)
    ignored = np.where(matched, gt_ignored[np.maximum(matched_gt[:, order], 0)], outside[None, :])
    return Matching(
        iou_thresholds=thresholds,
        category_ids=categories,
        image_ids=image_ids,
        category=dt_cat[order],
        image=dt_img[order],
        score=dt.score[order],
        row=order,
        matched=matched,
        ignored=ignored,
        positives=positives,
        gt_matched=gt_matched,
        gt_ignored=gt_ignored,
    )
