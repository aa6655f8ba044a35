"""The one table the evaluation data lives in, from ``update`` to the backends.

:class:`Annotations` holds ground truth or detections as numpy columns, one row per
annotation; masks stay compressed RLE bytes beside their ``(height, width)``, and become
pycocotools' per-annotation dicts only where an API needs them (:attr:`Annotations.rles`).
:class:`Images` holds the evaluated images.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

#: Columns derived from others, never stored: a row's image and mask size (from the images'
#: ids, sizes and per-image counts) and a detection's ``area`` and ``iscrowd`` (derived per
#: iou type, as pycocotools' ``loadRes`` does, by :meth:`Annotations.results`).
DERIVED_COLUMNS = {
    "gt": ("image_id", "rle_sizes"),
    "dt": ("image_id", "rle_sizes", "area", "iscrowd"),
}


@dataclass
class Images:
    """Evaluated images: ids and sizes (``0`` where unknown, which only segm needs)."""

    ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Any) -> Images:
        """The images at ``rows`` (a slice, integer positions or a boolean mask)."""
        return Images(self.ids[rows], self.heights[rows], self.widths[rows])

    @staticmethod
    def concat(parts: list[Images]) -> Images:
        """The images of ``parts``, one after another."""
        return Images(*(np.concatenate([getattr(p, f) for p in parts]) for f in _IMAGE_FIELDS))


_IMAGE_FIELDS = ("ids", "heights", "widths")


@dataclass
class Annotations:
    """Ground truth or detections as columns.

    ``bbox`` is XYWH float64. ``rle_counts`` holds each mask's compressed RLE counts and
    ``rle_sizes`` its ``[n, 2]`` ``(height, width)`` (segm only); ``keypoints`` is
    ``[n, K * 3]`` float64 (keypoints only). ``score`` is set for detections,
    ``num_keypoints`` for keypoint ground truth. Detections as stored have ``area`` and
    ``iscrowd`` of ``None``: :meth:`results` derives them for one iou type.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    area: np.ndarray | None
    iscrowd: np.ndarray | None
    score: np.ndarray | None = None
    rle_counts: list[bytes] | None = None
    rle_sizes: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    num_keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_id)

    @staticmethod
    def empty(*, detections: bool = False) -> Annotations:
        """No annotations (for an evaluator that has seen no image)."""
        return Annotations(
            image_id=np.zeros(0, dtype=np.int64),
            category_id=np.zeros(0, dtype=np.int64),
            bbox=np.zeros((0, 4)),
            area=np.zeros(0),
            iscrowd=np.zeros(0, dtype=np.int64),
            score=np.zeros(0) if detections else None,
            rle_counts=[],
            rle_sizes=np.zeros((0, 2), dtype=np.int64),
        )

    @staticmethod
    def concat(tables: list[Annotations]) -> Annotations:
        """The rows of ``tables`` one after another (the columns of the first table)."""
        columns = {name: _join([getattr(t, name) for t in tables]) for name in tables[0].columns()}
        return Annotations(**{"area": None, "iscrowd": None, **columns})

    def columns(self, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The columns that are set, by name, but those in ``skip``."""
        return {
            name: getattr(self, name)
            for name in _FIELDS
            if name not in skip and getattr(self, name) is not None
        }

    def take(self, rows: np.ndarray | slice) -> Annotations:
        """The annotations at integer positions (or a boolean mask) ``rows``; a slice gives
        views of the columns."""
        if isinstance(rows, slice):
            return Annotations(**{name: _slice(getattr(self, name), rows) for name in _FIELDS})
        rows = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        picked: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                picked[name] = [value[i] for i in rows.tolist()]
            else:
                picked[name] = None if value is None else value[rows]
        return Annotations(**picked)

    def required(self, name: str) -> np.ndarray:
        """The column ``name``, which these annotations must have.

        Raises:
            ValueError: when the column is not set (``score`` for ground truth, ``keypoints``
                outside keypoints evaluation, ``area`` of detections before :meth:`results`).
        """
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"these annotations have no '{name}' column")
        return value

    @functools.cached_property
    def rles(self) -> list[dict]:
        """Each mask as pycocotools' RLE dict ``{"size": [h, w], "counts": bytes}`` (built
        once, on first use).

        Raises:
            ValueError: when these annotations have no masks (not segm).
        """
        return rle_dicts(*self._rle_columns())

    def _rle_columns(self) -> tuple[list[bytes], np.ndarray]:
        """``(rle_counts, rle_sizes)``; raises when these annotations have no masks."""
        if self.rle_counts is None or self.rle_sizes is None:
            raise ValueError("these annotations have no RLEs (only segm annotations do)")
        return self.rle_counts, self.rle_sizes

    def results(self, iou_type: str, *, areas: bool = True) -> Annotations:
        """Detections with the ``area`` and ``bbox`` pycocotools' ``loadRes`` derives.

        bbox: area ``w * h`` (left ``None`` without ``areas``). segm: area and box of the
        RLE. keypoints: the box spanned by all keypoints (whatever their visibility) and its
        area.
        """
        n = len(self)
        bbox, keypoints = self.bbox, self.keypoints
        rle_counts = rle_sizes = None
        area: np.ndarray | None
        if iou_type == "bbox":
            area = bbox[:, 2] * bbox[:, 3] if areas else None
        elif iou_type == "segm":
            rle_counts, rle_sizes = self._rle_columns()
            area, bbox = rle_areas_boxes(rle_counts, rle_sizes)
        else:
            points = self.required("keypoints")
            x, y = points[:, 0::3], points[:, 1::3]
            if n:
                x0, x1, y0, y1 = x.min(1), x.max(1), y.min(1), y.max(1)
            else:
                x0 = x1 = y0 = y1 = np.zeros(0)
            bbox = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
            area = (x1 - x0) * (y1 - y0)
        return Annotations(
            image_id=self.image_id,
            category_id=self.category_id,
            bbox=bbox,
            area=area,
            iscrowd=np.zeros(n, dtype=np.int64),
            score=self.required("score"),
            rle_counts=rle_counts,
            rle_sizes=rle_sizes,
            keypoints=keypoints if iou_type == "keypoints" else None,
        )


def _slice(value: Any, rows: slice) -> Any:
    return None if value is None else value[rows]


def _join(values: list) -> Any:
    """Columns of several tables as one: lists chained, arrays concatenated."""
    if isinstance(values[0], list):
        return [item for value in values for item in value]
    # Empty columns may carry a stale trailing shape (keypoints before K was known).
    filled = [v for v in values if len(v)]
    return np.concatenate(filled) if filled else values[0]


_FIELDS = tuple(f.name for f in dataclasses.fields(Annotations))


#: RLEs measured per pycocotools call. Each call decodes all its RLEs into C arrays (from dicts
#: built for it), several times their compressed size: a whole dataset's at once cost more
#: than everything else the evaluation holds. 255, as pycocotools 2.0.11's ``area`` builds an
#: array with ``np.array((n,), dtype=np.uint8)``, which numpy 2 rejects for ``n > 255``.
_RLE_PIECE = 255


def rle_dicts(counts: list[bytes], sizes: np.ndarray) -> list[dict]:
    """pycocotools' RLE dicts ``{"size": [h, w], "counts": bytes}`` of ``counts`` with their
    ``[n, 2]`` ``sizes``."""
    return [{"size": s, "counts": c} for s, c in zip(sizes.tolist(), counts)]


def rle_areas_boxes(counts: list[bytes], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (float64) and XYWH boxes of RLEs (``counts`` with their ``[n, 2]``
    ``(height, width)``), pycocotools' ``area`` and ``toBbox``, a piece at a time."""
    areas, boxes = [np.zeros(0)], [np.zeros((0, 4))]
    for start in range(0, len(counts), _RLE_PIECE):
        stop = start + _RLE_PIECE
        rles = rle_dicts(counts[start:stop], sizes[start:stop])
        areas.append(mask_utils.area(rles).astype(np.float64))
        boxes.append(np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4))
    return np.concatenate(areas), np.concatenate(boxes)
