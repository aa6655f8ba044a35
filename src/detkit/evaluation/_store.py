"""What the evaluator keeps between ``update`` and ``compute``: compact columns, no dicts.

A :class:`Block` holds one ``update`` call: its :class:`~detkit.evaluation._table.Images`,
their ground truth and detections as :class:`~detkit.evaluation._table.Annotations`, and the
rows per image. :class:`Store` appends blocks into growing columns (RLE counts packed as
bytes; the derived columns of :data:`~detkit.evaluation._table.DERIVED_COLUMNS` not kept) and
enforces the duplicate-image rule; :func:`gather_to_main` brings every process's block to
rank 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.distributed as dist

from detkit.distributed import all_gather, get_rank, get_world_size
from detkit.evaluation._table import DERIVED_COLUMNS, Annotations, Images


def _same(a, b) -> bool:
    if isinstance(a, list):
        return a == b
    if a.size == 0 and b.size == 0:  # empty keypoints may differ in their K
        return True
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass
class Block:
    """Images of one update (or a merge of several) with their ground truth and detections,
    the rows of each image contiguous and in the order of ``images``."""

    images: Images
    gt: Annotations
    dt: Annotations
    gt_counts: np.ndarray
    dt_counts: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def concat(blocks: list[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        return Block(
            images=Images.concat([b.images for b in blocks]),
            gt=Annotations.concat([b.gt for b in blocks]),
            dt=Annotations.concat([b.dt for b in blocks]),
            gt_counts=np.concatenate([b.gt_counts for b in blocks]),
            dt_counts=np.concatenate([b.dt_counts for b in blocks]),
        )

    def select(self, keep: np.ndarray) -> Block:
        """The images where ``keep`` (bool, per image) is true, with their rows."""
        return Block(
            images=self.images.take(keep),
            gt=self.gt.take(np.repeat(keep, self.gt_counts)),
            dt=self.dt.take(np.repeat(keep, self.dt_counts)),
            gt_counts=self.gt_counts[keep],
            dt_counts=self.dt_counts[keep],
        )

    def payload(self, position: int) -> list:
        """Everything stored for the image at ``position``, for equality checks."""
        out = [self.images.heights[position], self.images.widths[position]]
        for counts, table, part in (
            (self.gt_counts, self.gt, "gt"),
            (self.dt_counts, self.dt, "dt"),
        ):
            start = int(counts[:position].sum())
            rows = table.take(np.arange(start, start + int(counts[position])))
            columns = rows.columns(skip=DERIVED_COLUMNS[part])
            out += [columns[key] for key in sorted(columns)]
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

    def has(self, image_id: int) -> bool:
        """Whether ``image_id`` is stored."""
        return image_id in self._sequence

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
        ids = block.images.ids.tolist()
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
            ids = block.images.ids.tolist()
            skipped = int((~keep).sum())
        if not ids:
            return skipped
        start = len(self._sequence)
        for offset, image_id in enumerate(ids):
            self._sequence[image_id] = start + offset
        images = block.images
        self._images.extend(
            {
                "ids": images.ids,
                "heights": images.heights,
                "widths": images.widths,
                "gt_counts": block.gt_counts,
                "dt_counts": block.dt_counts,
            }
        )
        self._gt.extend(block.gt.columns(skip=DERIVED_COLUMNS["gt"]))
        self._dt.extend(block.dt.columns(skip=DERIVED_COLUMNS["dt"]))
        return skipped

    def merged(self) -> Block | None:
        """All stored images as one block (``None`` when nothing was stored)."""
        if not self._sequence:
            return None
        view = self._images.view()
        images = Images(view["ids"], view["heights"], view["widths"])
        return Block(
            images=images,
            gt=_table(self._gt.view(), images, view["gt_counts"]),
            dt=_table(self._dt.view(), images, view["dt_counts"]),
            gt_counts=view["gt_counts"],
            dt_counts=view["dt_counts"],
        )


def _table(columns: dict[str, Any], images: Images, counts: np.ndarray) -> Annotations:
    """Stored columns as a table, with the columns derived from the images (each row's
    image id, and its mask size where there are masks)."""
    columns = {"area": None, "iscrowd": None, **columns}
    if "rle_counts" in columns:
        sizes = np.stack([images.heights, images.widths], axis=1)
        columns["rle_sizes"] = np.repeat(sizes, counts, axis=0)
    return Annotations(image_id=np.repeat(images.ids, counts), **columns)


def gather_to_main(local: Block | None) -> Block | None:
    """Every rank's images as one block on rank 0 (``None`` elsewhere, or when there are none),
    collective under torch.distributed.

    Images that a lower rank also holds (``DistributedSampler`` pads the last ranks' shards
    with images from the first) are dropped first, so each image counts once.
    """
    world_size = get_world_size()
    if world_size == 1:
        return local
    ids = np.zeros(0, dtype=np.int64) if local is None else local.images.ids
    every = all_gather(ids)
    rank = get_rank()
    if local is not None and rank > 0:
        keep = ~np.isin(local.images.ids, np.concatenate(every[:rank]))
        local = local.select(keep) if not keep.all() else local
    gathered: list | None = [None] * world_size if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    blocks = [b for b in gathered or [] if b is not None and len(b)]
    return Block.concat(blocks) if blocks else None
