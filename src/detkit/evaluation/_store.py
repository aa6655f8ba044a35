"""What the evaluator keeps between ``update`` and ``compute``: compact columns, no dicts.

A :class:`Block` holds one ``update`` call: per image its id, size and instance counts, then
one row per ground-truth instance and one per detection (numpy columns; RLE counts as bytes).
:class:`Store` appends blocks and enforces the duplicate-image rule.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np


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


class Store:
    """Blocks appended by ``update``; each image id is stored once.

    An image seen again with identical ground truth and detections is skipped (a repeated
    batch, or a sample a sampler padded); with different content it is an error, since the
    metric would depend on which copy counts.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._blocks: list[Block] = []
        self._starts: list[int] = []
        self._sequence: dict[int, int] = {}  # image id -> order of arrival

    @property
    def num_images(self) -> int:
        return len(self._sequence)

    def image_ids(self) -> list[int]:
        return list(self._sequence)

    def _payload(self, sequence: int) -> list:
        index = bisect.bisect_right(self._starts, sequence) - 1
        return self._blocks[index].payload(sequence - self._starts[index])

    def add(self, block: Block) -> int:
        """Append a block; returns how many images were skipped as identical repeats."""
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
        start = len(self._sequence)
        for offset, image_id in enumerate(ids):
            self._sequence[image_id] = start + offset
        if ids:
            self._starts.append(start)
            self._blocks.append(block)
        return skipped

    def merged(self) -> Block | None:
        """All stored images as one block (``None`` when nothing was stored)."""
        if not self._blocks:
            return None
        merged = Block.concat(self._blocks)
        self._blocks, self._starts = [merged], [0]
        return merged
