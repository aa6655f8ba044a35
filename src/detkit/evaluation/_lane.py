"""The fast lane of ``update`` for bbox evaluation: check each batch now, convert many at once.

Most of an update's cost is not the data but the calls: each field of each batch becomes a
float64 column, XYWH boxes, mapped labels, an appended store row, a few numpy calls each, and
a batch of two images holds a few hundred numbers. Here a batch of plain CPU tensors is
joined field by field in its own dtype and checked at once (every check whose failure the
full path of :mod:`~detkit.evaluation._batch` reports); the conversion then runs for 64
batches at a time and gives the very columns the full path gives.

Boxes may be ``BoundingBoxes`` (converted to XYXY as the full path converts them). A batch
with anything out of the ordinary (an invalid value, a numpy or tv_tensors field other than
boxes, an accelerator tensor, a missing ``area``, a label 0 not yet warned about, a repeated
image id) is declined: the caller sends it down the full path, which raises the precise
error, warns or de-duplicates, after :meth:`BoxLane.flush` has stored the batches before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from detkit.evaluation._batch import (
    InvertedBoxes,
    boxes_xywh,
    mask_size,
    merge_sizes,
    prediction_table,
    scalar_column,
    target_table,
    xyxy,
)
from detkit.evaluation._params import LabelMap
from detkit.evaluation._store import Block, Store
from detkit.evaluation._table import Annotations, Images

#: Batches joined per conversion.
_BATCHES = 64


def _joined(values: list) -> np.ndarray:
    """Plain CPU tensors without grad, joined in their dtype (a copy); ``TypeError`` or
    ``RuntimeError`` for anything else."""
    for value in values:
        if type(value) is not torch.Tensor:
            raise TypeError("not a plain tensor")
    return np.concatenate([value.numpy() for value in values])


def _finite(*arrays: np.ndarray) -> bool:
    # A finite sum means finite values; a sum that overflows is looked at by the full path.
    return all(np.isfinite(array.sum()) for array in arrays)


class BoxLane:
    """Batches accepted for bbox evaluation, not yet in the store.

    Args:
        labels: the evaluator's label map (its ``warned_zero`` decides whether a ground-truth
            label 0 still needs the full path's warning).
        store: where the batches go, ``_BATCHES`` at a time and at :meth:`flush`.
        inverted: the count of inverted predicted boxes, updated as batches are stored.
        with_targets: whether targets carry the ground truth (no ``coco_gt``).
    """

    def __init__(
        self, labels: LabelMap, store: Store, inverted: InvertedBoxes, *, with_targets: bool
    ) -> None:
        self.labels = labels
        self.store, self.inverted = store, inverted
        self.with_targets = with_targets
        self.pending: list[tuple] = []
        self.ids: set[int] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def offer(
        self,
        predictions: Sequence[Mapping[str, Any]],
        targets: Sequence[Any],
        ids: list[int],
        sizes: np.ndarray | None,
    ) -> bool:
        """Take the batch (``True``), or decline it for the full path (``False``).

        ``sizes`` are the images' ``(H, W)`` from ``coco_gt`` (``None`` without it).
        """
        if len(set(ids)) < len(ids) or any(i in self.ids or self.store.has(i) for i in ids):
            return False
        try:
            predicted = self._predictions(predictions)
            truth = self._targets(targets) if self.with_targets else None
        except (TypeError, RuntimeError, ValueError, KeyError, AttributeError, IndexError):
            return False
        if predicted is None or (self.with_targets and truth is None):
            return False
        if sizes is None:
            sizes = truth[-1] if truth is not None else np.zeros((len(ids), 2), dtype=np.int64)
        self.pending.append((ids, sizes, predicted, truth))
        self.ids.update(ids)
        if len(self.pending) >= _BATCHES:  # few small arrays alive at a time
            self.flush()
        return True

    def _predictions(self, predictions) -> tuple | None:
        counts = [int(p["scores"].shape[0]) for p in predictions]
        boxes = _joined([xyxy(p["boxes"]) for p in predictions])
        scores = _joined([p["scores"] for p in predictions])
        labels = _joined([p["labels"] for p in predictions])
        if labels.dtype.kind not in "iu" or not _finite(boxes, scores):
            return None
        categories = self.labels(labels, "predictions")  # ValueError: declined
        return counts, boxes, scores, categories

    def _targets(self, targets) -> tuple | None:
        counts = [int(t["boxes"].shape[0]) for t in targets]
        boxes = _joined([xyxy(t["boxes"]) for t in targets])
        labels = _joined([t["labels"] for t in targets])
        area = _joined([t["area"] for t in targets])
        crowds = [t.get("iscrowd") for t in targets]
        if any(crowd is None for crowd in crowds):
            crowds = [torch.zeros(n) if c is None else c for n, c in zip(counts, crowds)]
        iscrowd = _joined(crowds)
        if labels.dtype.kind not in "iu" or not _finite(boxes, area):
            return None
        if len(area) and area.min() < 0:
            return None
        if len(boxes) and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            return None
        if self.labels.mapping is None and not self.labels.warned_zero and not labels.all():
            return None  # the full path warns about label 0
        categories = self.labels(labels, "targets")
        sizes = np.array([mask_size(t.get("masks")) for t in targets], dtype=np.int64).reshape(
            -1, 2
        )
        return counts, boxes, categories, area, iscrowd, sizes

    def flush(self) -> None:
        """Store every pending batch, converted together."""
        batches, self.pending, self.ids = self.pending, [], set()
        if not batches:
            return
        ids = [i for batch in batches for i in batch[0]]
        sizes = np.concatenate([batch[1] for batch in batches])
        dt_counts = np.array([n for batch in batches for n in batch[2][0]], dtype=np.int64)
        dt = _detections(ids, dt_counts, [batch[2] for batch in batches])
        if self.with_targets:
            gt_counts = np.array([n for batch in batches for n in batch[3][0]], dtype=np.int64)
            gt = _ground_truth(ids, gt_counts, [batch[3] for batch in batches])
        else:
            gt, gt_counts = Annotations.empty(), np.zeros(len(ids), dtype=np.int64)
        images = Images(np.asarray(ids, dtype=np.int64), sizes[:, 0].copy(), sizes[:, 1].copy())
        self.store.add(Block(images, gt, dt, gt_counts, dt_counts))
        self.inverted.add(dt, dt_counts, ids)


def _detections(ids: list[int], counts: np.ndarray, parts: list[tuple]) -> Annotations:
    return Annotations(
        image_id=np.repeat(np.asarray(ids, dtype=np.int64), counts),
        category_id=scalar_column([p[3] for p in parts], np.int64),
        bbox=boxes_xywh([p[1] for p in parts]),
        area=None,
        iscrowd=None,
        score=scalar_column([p[2] for p in parts]),
    )


def _ground_truth(ids: list[int], counts: np.ndarray, parts: list[tuple]) -> Annotations:
    return Annotations(
        image_id=np.repeat(np.asarray(ids, dtype=np.int64), counts),
        category_id=scalar_column([p[2] for p in parts], np.int64),
        bbox=boxes_xywh([p[1] for p in parts]),
        area=scalar_column([p[3] for p in parts]),
        iscrowd=(scalar_column([p[4] for p in parts]) != 0).astype(np.int64),
    )


def full_tables(predictions, targets, ids, types, known_sizes, labels, mask_threshold):
    """The full path: ``((gt, gt counts), (dt, dt counts), sizes [B, 2])`` of one batch, every
    value checked (:mod:`~detkit.evaluation._batch`); ``known_sizes`` from ``coco_gt``, whose
    ground truth is not in the targets."""
    if known_sizes is None:
        gt, gt_counts, sizes = target_table(targets, ids, types, labels=labels)
    else:
        gt, gt_counts = Annotations.empty(), np.zeros(len(ids), dtype=np.int64)
        sizes = known_sizes
    dt, dt_counts, mask_sizes = prediction_table(
        predictions, ids, types, mask_threshold=mask_threshold, labels=labels
    )
    return (gt, gt_counts), (dt, dt_counts), merge_sizes(sizes, mask_sizes, ids)
