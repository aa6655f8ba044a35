"""What the evaluator keeps between ``update`` and ``compute``: compact columns, no dicts.

A :class:`Block` holds one ``update`` call: per image its id, size and instance counts, then
one row per ground-truth instance and one per detection (numpy columns; RLE counts as bytes).
:class:`Store` appends blocks and enforces the duplicate-image rule; :func:`gather_to_main`
brings every process's block to rank 0; :func:`block_ground_truth` and
:func:`block_detections` read a block back as :class:`~detkit.evaluation._coco.Annotations`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.distributed as dist

from detkit.distributed import all_gather, get_rank, get_world_size
from detkit.evaluation._coco import Annotations, detections_like_load_res


def _take(value, rows: np.ndarray):
    if isinstance(value, list):
        return [value[i] for i in rows.tolist()]
    return value[rows]


def _join(values: list):
    if isinstance(values[0], list):
        return [item for value in values for item in value]
    # Empty columns may carry a stale trailing shape (keypoints before K was known).
    filled = [v for v in values if len(v)]
    return np.concatenate(filled) if filled else values[0]


def _same(a, b) -> bool:
    if isinstance(a, list):
        return a == b
    if a.size == 0 and b.size == 0:  # empty keypoints may differ in their K
        return True
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass
class Block:
    """Images of one update (or a merge of several) with their ground truth and detections."""

    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    gt_counts: np.ndarray
    dt_counts: np.ndarray
    gt: dict = field(default_factory=dict)
    dt: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    @staticmethod
    def concat(blocks: list[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        return Block(
            image_ids=np.concatenate([b.image_ids for b in blocks]),
            heights=np.concatenate([b.heights for b in blocks]),
            widths=np.concatenate([b.widths for b in blocks]),
            gt_counts=np.concatenate([b.gt_counts for b in blocks]),
            dt_counts=np.concatenate([b.dt_counts for b in blocks]),
            gt={key: _join([b.gt[key] for b in blocks]) for key in first.gt},
            dt={key: _join([b.dt[key] for b in blocks]) for key in first.dt},
        )

    def select(self, keep: np.ndarray) -> Block:
        """The images where ``keep`` (bool, per image) is true, with their rows."""
        gt_rows = np.flatnonzero(np.repeat(keep, self.gt_counts))
        dt_rows = np.flatnonzero(np.repeat(keep, self.dt_counts))
        return Block(
            image_ids=self.image_ids[keep],
            heights=self.heights[keep],
            widths=self.widths[keep],
            gt_counts=self.gt_counts[keep],
            dt_counts=self.dt_counts[keep],
            gt={key: _take(value, gt_rows) for key, value in self.gt.items()},
            dt={key: _take(value, dt_rows) for key, value in self.dt.items()},
        )

    def payload(self, position: int) -> list:
        """Everything stored for the image at ``position``, for equality checks."""
        out = [self.heights[position], self.widths[position]]
        for counts, columns in ((self.gt_counts, self.gt), (self.dt_counts, self.dt)):
            start = int(counts[:position].sum())
            rows = np.arange(start, start + int(counts[position]))
            out += [_take(columns[key], rows) for key in sorted(columns)]
        return out


def same_payload(a: list, b: list) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


class _Column:
    """A numpy column that grows by doubling: few, large allocations.

    Many small arrays kept per update, between the large short-lived ones a model's outputs
    make, fragment the heap; resident memory then grows by gigabytes over a segm run.
    """

    def __init__(self, like: np.ndarray):
        self.data = np.empty((0, *like.shape[1:]), dtype=like.dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        if not len(values):  # an empty batch's trailing shape may be stale (keypoints' K)
            return
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(
                (max(end, 2 * len(self.data), 1024), *self.data.shape[1:]), self.data.dtype
            )
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def view(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.data[start : self.size if stop is None else stop]


class _BytesColumn:
    """Byte strings (RLE counts) packed in one growing buffer, with their end offsets."""

    def __init__(self) -> None:
        self.data = _Column(np.zeros(0, dtype=np.uint8))
        self.ends = _Column(np.zeros(0, dtype=np.int64))

    @property
    def size(self) -> int:
        return self.ends.size

    def extend(self, items: list[bytes]) -> None:
        if not items:
            return
        base = int(self.ends.data[self.ends.size - 1]) if self.ends.size else 0
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        self.data.extend(np.frombuffer(b"".join(items), dtype=np.uint8))
        self.ends.extend(base + np.cumsum(lengths))

    def view(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        ends = self.ends.view(start, stop).tolist()
        first = int(self.ends.data[start - 1]) if start else 0
        buffer = self.data.view()
        return [buffer[a:b].tobytes() for a, b in zip([first, *ends[:-1]], ends)]


class _Columns:
    """Named columns, list-valued ones (RLE counts) packed as bytes."""

    def __init__(self) -> None:
        self.columns: dict[str, _Column | _BytesColumn] = {}
        self.empty: dict = {}  # each key's empty value, for keys with no rows yet

    def extend(self, values: dict) -> None:
        for key, value in values.items():
            if key not in self.columns:
                if not len(value):
                    self.empty.setdefault(key, value[:0])
                    continue
                self.columns[key] = _BytesColumn() if isinstance(value, list) else _Column(value)
            self.columns[key].extend(value)

    def view(self, start: int = 0, stop: int | None = None) -> dict:
        out = dict(self.empty)
        out.update({key: column.view(start, stop) for key, column in self.columns.items()})
        return out


class Store:
    """The images ``update`` added, each image id once, in growing columns.

    An image seen again with identical ground truth and detections is skipped (a repeated
    batch, or a sample a sampler padded); with different content it is an error, since the
    metric would depend on which copy counts.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._images = _Columns()  # per image: ids, heights, widths, row counts
        self._gt = _Columns()
        self._dt = _Columns()
        self._sequence: dict[int, int] = {}  # image id -> position in the columns

    @property
    def num_images(self) -> int:
        return len(self._sequence)

    def _payload(self, position: int) -> list:
        # Row offsets from the counts: only repeated images need them.
        images = self._images.view()
        out = [images["heights"][position], images["widths"][position]]
        for part, counts in ((self._gt, images["gt_counts"]), (self._dt, images["dt_counts"])):
            start = int(counts[:position].sum())
            rows = part.view(start, start + int(counts[position]))
            out += [rows[key] for key in sorted(rows)]
        return out

    def add(self, block: Block) -> int:
        """Append a block's images; returns how many were skipped as identical repeats."""
        ids = block.image_ids.tolist()
        skipped = 0
        if len(set(ids)) != len(ids) or any(i in self._sequence for i in ids):
            keep = np.ones(len(ids), dtype=bool)
            first: dict[int, int] = {}
            for position, image_id in enumerate(ids):
                if image_id in self._sequence:
                    stored = self._payload(self._sequence[image_id])
                elif image_id in first:
                    stored = block.payload(first[image_id])
                else:
                    first[image_id] = position
                    continue
                if not same_payload(stored, block.payload(position)):
                    raise ValueError(
                        f"image_id {image_id} was already updated with different ground truth "
                        "or predictions; each image counts once: call reset() before "
                        "evaluating again, or give every image a distinct image_id"
                    )
                keep[position] = False
            block = block.select(keep)
            ids = block.image_ids.tolist()
            skipped = int((~keep).sum())
        if not ids:
            return skipped
        start = len(self._sequence)
        for offset, image_id in enumerate(ids):
            self._sequence[image_id] = start + offset
        self._images.extend(
            {
                "image_ids": block.image_ids,
                "heights": block.heights,
                "widths": block.widths,
                "gt_counts": block.gt_counts,
                "dt_counts": block.dt_counts,
            }
        )
        self._gt.extend(block.gt)
        self._dt.extend(block.dt)
        return skipped

    def merged(self) -> Block | None:
        """All stored images as one block (``None`` when nothing was stored)."""
        if not self._sequence:
            return None
        images = self._images.view()
        return Block(
            image_ids=images["image_ids"],
            heights=images["heights"],
            widths=images["widths"],
            gt_counts=images["gt_counts"],
            dt_counts=images["dt_counts"],
            gt=self._gt.view(),
            dt=self._dt.view(),
        )


def gather_to_main(local: Block | None) -> Block | None:
    """Every rank's images as one block on rank 0 (``None`` elsewhere, or when there are none),
    collective under torch.distributed.

    Images that a lower rank also holds (``DistributedSampler`` pads the last ranks' shards
    with images from the first) are dropped first, so each image counts once.
    """
    world_size = get_world_size()
    if world_size == 1:
        return local
    ids = np.zeros(0, dtype=np.int64) if local is None else local.image_ids
    every = all_gather(ids)
    rank = get_rank()
    if local is not None and rank > 0:
        keep = ~np.isin(local.image_ids, np.concatenate(every[:rank]))
        local = local.select(keep) if not keep.all() else local
    gathered: list | None = [None] * world_size if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    blocks = [b for b in gathered or [] if b is not None and len(b)]
    return Block.concat(blocks) if blocks else None


def detections_from_columns(
    columns: Mapping[str, Any], iou_type: str, image_id: np.ndarray, sizes: np.ndarray | None
) -> Annotations:
    """Detections of one iou type from prediction columns, with ``loadRes``' derived fields.

    ``image_id`` and ``sizes`` (``[D, 2]`` mask height and width, segm only) are per row.
    """
    rles = None
    if iou_type == "segm":
        if sizes is None:
            raise ValueError("segm detections need their masks' sizes")
        rles = [{"size": s, "counts": c} for s, c in zip(sizes.tolist(), columns["rles"])]
    keypoints = columns.get("keypoints")
    return detections_like_load_res(
        iou_type,
        image_id,
        columns["category_id"],
        columns["score"],
        bbox=columns.get("bbox"),
        rles=rles,
        keypoints=None if keypoints is None else flat_points(keypoints),
    )


def flat_points(keypoints: np.ndarray) -> np.ndarray:
    """``[n, K, 3]`` keypoints as COCO's flat ``[n, K * 3]`` rows (also for ``n = 0``)."""
    return keypoints.reshape(len(keypoints), keypoints.shape[1] * 3)


def block_ground_truth(block: Block, iou_types) -> Annotations:
    """The ground truth stored in a block (built from targets) as annotations of one type."""
    gt = block.gt
    rles = keypoints = num_keypoints = None
    if "segm" in iou_types and "rles" in gt:
        heights = np.repeat(block.heights, block.gt_counts).tolist()
        widths = np.repeat(block.widths, block.gt_counts).tolist()
        rles = [{"size": [h, w], "counts": c} for h, w, c in zip(heights, widths, gt["rles"])]
    if "keypoints" in iou_types and "keypoints" in gt:
        keypoints = flat_points(gt["keypoints"])
        num_keypoints = (gt["keypoints"][..., 2] > 0).sum(1)
    return Annotations(
        image_id=np.repeat(block.image_ids, block.gt_counts),
        category_id=gt["category_id"],
        bbox=gt["bbox"],
        area=gt["area"],
        iscrowd=gt["iscrowd"],
        rles=rles,
        keypoints=keypoints,
        num_keypoints=num_keypoints,
    )


def block_detections(block: Block, iou_type: str) -> Annotations:
    """The detections stored in a block as annotations of one type."""
    sizes = None
    if iou_type == "segm":  # only masks need their image's size
        sizes = np.repeat(np.stack([block.heights, block.widths], axis=1), block.dt_counts, 0)
    return detections_from_columns(
        block.dt, iou_type, np.repeat(block.image_ids, block.dt_counts), sizes
    )
