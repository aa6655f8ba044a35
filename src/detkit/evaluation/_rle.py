"""COCO's compressed RLE, written and read with numpy: masks encoded from their non-zero crop.

pycocotools' RLE lists run lengths of a mask read in column-major order, starting with a run of
zeros; its compressed form writes each count (from the fourth on, minus the count two before)
as 5-bit groups in ASCII characters from ``'0'``. A predicted mask is zero outside a small
region, so :func:`encode_masks` thresholds each mask once, finds its non-zero crop, and turns
the crop's pixel changes into the runs of the whole frame (the zero runs around the crop are
spliced in arithmetically); the strings of a whole batch are then written at once. The bytes
are exactly ``pycocotools.mask.encode``'s.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

#: Runs are unsigned 32-bit in pycocotools; a longer run (or a negative one) is malformed.
_MAX_RUN = 2**32 - 1
#: Below ``_CHARACTER_LIMITS[k - 1]`` (in magnitude) a value fits in ``k`` characters.
_CHARACTER_LIMITS = np.array([2 ** (5 * k - 1) for k in range(1, 8)], dtype=np.int64)


def encode_masks(masks: Any, threshold: float) -> list[bytes]:
    """The compressed RLE counts of each mask, as ``pycocotools.mask.encode`` writes them.

    Args:
        masks: ``[N, 1, H, W]`` or ``[N, H, W]`` tensor (any device, tv_tensors too) or array.
            Floating masks are set where ``> threshold``, others where non-zero.
        threshold: the probability threshold for floating masks.

    Raises:
        ValueError: for any other shape.
    """
    return RleEncoder()(masks, threshold)


class RleEncoder:
    """:func:`encode_masks` with scratch buffers kept between calls.

    Freshly allocated memory costs a page fault per 4 KiB on first touch, which on a virtual
    machine costs more than thresholding the page; the crop buffers are therefore reused.
    """

    #: Scratch buffers up to this size are kept between calls.
    KEEP_BYTES = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def scratch(self, name: str, size: int) -> np.ndarray:
        """A bool buffer of ``size`` elements (contents undefined), reused when it fits."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = np.empty(size, dtype=np.bool_)
            if size <= self.KEEP_BYTES:
                self._buffers[name] = buffer
        return buffer[:size]

    def __call__(self, masks: Any, threshold: float) -> list[bytes]:
        shape = tuple(masks.shape)
        if len(shape) == 4 and shape[1] == 1:
            masks = masks[:, 0]
        elif len(shape) != 3:
            raise ValueError(f"masks must have shape [N, 1, H, W] or [N, H, W], got {shape}")
        if isinstance(masks, torch.Tensor):  # tv_tensors would pay their dispatch on every op
            masks = masks.as_subclass(torch.Tensor).detach()
        else:
            masks = np.asarray(masks)
        n, height, width = (int(v) for v in masks.shape)
        if n == 0:
            return []
        if height == 0 or width == 0:
            return [b"0"] * n
        if isinstance(masks, torch.Tensor) and masks.device.type != "cpu":
            crops = device_crops(masks, threshold, self)
        else:
            crops = host_crops(masks, threshold, self)
        counts, lengths = crops.frame_counts(n, height, width)
        return split_bytes(*counts_to_strings(counts, lengths))


class Crops:
    """Per non-empty mask, a crop of rows and columns that holds all its set pixels.

    The crops are stored row-major in one bool buffer, each between a row of zeros above and
    one below (the frame's pixels there are zero, or stand in for the pixels that precede and
    follow the crop's columns in column-major order), rows padded with zeros to a multiple of
    8 pixels. A pixel's change from the pixel above it, which is where a column-major run
    starts or ends, is then a comparison of each crop with itself shifted by a row, made 8
    pixels at a time; :meth:`frame_counts` turns those changes into runs.
    """

    def __init__(self, encoder: RleEncoder, index, top, bottom, left, right) -> None:
        self.encoder = encoder
        self.index = np.asarray(index, dtype=np.int64)
        self.top, self.left = np.asarray(top, np.int64), np.asarray(left, np.int64)
        self.heights = np.asarray(bottom, np.int64) - self.top
        self.widths = np.asarray(right, np.int64) - self.left
        self.words = (self.widths + 7) // 8  # 8-pixel words per buffer row
        sizes = (self.heights + 2) * self.words * 8
        self.offsets = np.cumsum(sizes) - sizes
        self.buffer = encoder.scratch("crops", int(sizes.sum()))
        self._shapes = list(
            zip(
                self.offsets.tolist(),
                self.heights.tolist(),
                self.widths.tolist(),
                (self.words * 8).tolist(),
            )
        )
        #: ``(mask index, y0, y1, x0, x1)`` of each crop, as Python ints.
        self.boxes = list(
            zip(
                self.index.tolist(),
                self.top.tolist(),
                (self.top + self.heights).tolist(),
                self.left.tolist(),
                (self.left + self.widths).tolist(),
            )
        )

    def rows(self, k: int) -> np.ndarray:
        """The ``[h, w]`` bool view to fill with the ``k``-th crop."""
        offset, h, w, stride = self._shapes[k]
        region = self.buffer[offset : offset + (h + 2) * stride].reshape(h + 2, stride)
        region[0] = False
        region[h + 1] = False
        if stride > w:
            region[1 : h + 1, w:] = False
        return region[1 : h + 1, :w]

    def _changes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(crop, row, column)`` of every pixel that differs from the one above it (row
        ``h`` being the zero row below the crop), crop by crop in row-major order."""
        words = self.buffer.view(np.uint64)
        starts = self.offsets // 8
        if (self.words == self.words[0]).all():  # one stride: one comparison for all crops
            per = int(self.words[0])
            flags = self.encoder.scratch("flags", len(words) - per)
            np.not_equal(words[per:], words[:-per], out=flags)
            lower = np.flatnonzero(flags) + per
        else:
            sizes = (self.heights + 1) * self.words
            flag_starts = np.cumsum(sizes) - sizes
            flags = self.encoder.scratch("flags", int(sizes.sum()))
            for start, flag_start, h, per in zip(
                starts.tolist(), flag_starts.tolist(), self.heights.tolist(), self.words.tolist()
            ):
                region = words[start : start + (h + 2) * per].reshape(h + 2, per)
                out = flags[flag_start : flag_start + (h + 1) * per].reshape(h + 1, per)
                np.not_equal(region[1:], region[:-1], out=out)
            at = np.flatnonzero(flags)
            crop = np.searchsorted(flag_starts, at, side="right") - 1
            lower = at - flag_starts[crop] + starts[crop] + self.words[crop]
        # The word below and the one above, pixel by pixel: where they differ.
        crop = np.searchsorted(starts, lower, side="right") - 1
        changed = words[lower] ^ words[lower - self.words[crop]]
        word, byte = np.divmod(np.flatnonzero(changed.view(np.uint8)), 8)
        crop = crop[word]
        row, column = np.divmod(lower[word] - starts[crop], self.words[crop])
        return crop, row - 1, column * 8 + byte

    def frame_counts(self, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Run lengths ``(counts, lengths)`` of all ``n`` masks of ``height x width`` in
        column-major order (masks without a crop are all zero)."""
        total = height * width
        changes_per_mask = np.zeros(n, dtype=np.int64)
        positions = np.zeros(0, dtype=np.int64)
        if len(self.index):
            crop, row, column = self._changes()
            positions = (self.left[crop] + column) * height + self.top[crop] + row
            # In column-major order, mask by mask.
            key = np.sort(crop * (total + 1) + positions)
            crop, positions = np.divmod(key, total + 1)
            # A crop as tall as the frame: a column's end and the next one's start are the
            # same frame position (the run goes on); at the frame's end nothing follows.
            same = (positions[1:] == positions[:-1]) & (crop[1:] == crop[:-1])
            drop = positions == total
            drop[1:] |= same
            drop[:-1] |= same
            positions, crop = positions[~drop], crop[~drop]
            changes_per_mask[self.index] = np.bincount(crop, minlength=len(self.index))
        # Per mask: [0, changes..., total], whose differences are its runs.
        span = changes_per_mask + 2
        starts = np.cumsum(span) - span
        ends = starts + span - 1
        bounds = np.empty(int(span.sum()), dtype=np.int64)
        bounds[starts] = 0
        bounds[ends] = total
        mask_of_change = np.repeat(np.arange(n), changes_per_mask)
        bounds[np.arange(len(positions)) + 2 * mask_of_change + 1] = positions
        counts = np.delete(np.diff(bounds), ends[:-1])
        return counts, changes_per_mask + 1


def host_crops(masks: Any, threshold: float, encoder: RleEncoder) -> Crops:
    """Crops of CPU masks: one pass takes the maximum of every row, then only the rows that
    may hold a set pixel are thresholded (whole rows: a column crop would cost a second
    pass)."""
    tensor = masks if isinstance(masks, torch.Tensor) else _as_tensor(masks, threshold)
    if tensor.dtype == torch.bool:
        tensor = tensor.view(torch.uint8)
    floating = tensor.is_floating_point()
    if not floating and tensor.dtype != torch.uint8:
        # Signed integers: a row's maximum may be 0 with negative (set) pixels in it.
        tensor = (tensor != 0).view(torch.uint8)
    maxima = _comparable(tensor, threshold).amax(dim=2)
    rows = maxima > _limit(tensor, threshold) if floating else maxima != 0
    if floating and maxima.is_floating_point():  # NaN rows may hold set pixels too
        rows |= maxima.isnan()
    found, top, bottom = _extents(rows.numpy())
    width = tensor.shape[2]
    crops = Crops(encoder, found, top[found], bottom[found], 0 * found, width + 0 * found)
    array = None if tensor.dtype == torch.bfloat16 else tensor.numpy()
    for k, (i, y0, y1, _, _) in enumerate(crops.boxes):
        values = tensor[i, y0:y1].float().numpy() if array is None else array[i, y0:y1]
        if floating:
            np.greater(values, threshold, out=crops.rows(k))
        else:
            np.not_equal(values, 0, out=crops.rows(k))
    return crops


def _comparable(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    """``tensor``, or its float32/float16 bits as integers when ``threshold >= 0``: then
    non-negative floats order as their bit patterns do (negative ones, below the threshold,
    as negative integers), and an integer maximum is the cheaper pass."""
    if threshold >= 0 and tensor.dtype in _BITS:
        return tensor.view(_BITS[tensor.dtype][0])
    return tensor


def _limit(tensor: torch.Tensor, threshold: float) -> float | int:
    """The threshold for :func:`_comparable`'s values, rounded to the masks' precision (as
    numpy and torch compare)."""
    if threshold >= 0 and tensor.dtype in _BITS:
        _, floating, pattern = _BITS[tensor.dtype]
        return int(np.asarray(threshold, dtype=floating).view(pattern))
    return threshold


_BITS = {
    torch.float32: (torch.int32, np.float32, np.int32),
    torch.float16: (torch.int16, np.float16, np.int16),
}


def _extents(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows with a flag, first flag, one past the last flag)`` of a bool ``[N, L]``."""
    first = flags.argmax(axis=1)
    last = flags.shape[1] - flags[:, ::-1].argmax(axis=1)
    return np.flatnonzero(flags.any(axis=1)), first, last


def _as_tensor(array: np.ndarray, threshold: float) -> torch.Tensor:
    try:
        return torch.from_numpy(array)
    except TypeError:  # a dtype torch lacks (e.g. float128): binarize here
        floating = np.issubdtype(array.dtype, np.floating)
        return torch.from_numpy(array > threshold if floating else array != 0)


def device_crops(masks: torch.Tensor, threshold: float, encoder: RleEncoder) -> Crops:
    """Crops of masks on an accelerator: thresholded and bit-packed there, so one bit per
    pixel crosses to the host (1/32 of float32 masks), with each mask's set rows and columns."""
    binary = masks > threshold if masks.is_floating_point() else masks != 0
    n, height, width = binary.shape
    rows, columns = binary.any(dim=2), binary.any(dim=1)
    bits = binary.to(torch.uint8)
    if width % 8:
        bits = torch.nn.functional.pad(bits, (0, 8 - width % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    packed = (bits.view(n, height, -1, 8) * weights).sum(dim=3, dtype=torch.uint8)
    rows, columns, packed = rows.cpu().numpy(), columns.cpu().numpy(), packed.cpu().numpy()
    found, top, bottom = _extents(rows)
    _, left, right = _extents(columns)
    crops = Crops(encoder, found, top[found], bottom[found], left[found], right[found])
    for k, (i, y0, y1, x0, x1) in enumerate(crops.boxes):
        block = np.unpackbits(packed[i, y0:y1, x0 // 8 : (x1 + 7) // 8], axis=1)
        np.copyto(crops.rows(k), block[:, x0 % 8 : x0 % 8 + x1 - x0], casting="unsafe")
    return crops


def counts_to_strings(counts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' compressed form of run lengths, for many masks at once.

    Args:
        counts: every mask's runs, one after another (int64).
        lengths: runs per mask (each at least 1).

    Returns:
        ``(data, ends)``: the characters of all masks (uint8) and where each mask's end.
    """
    starts = np.cumsum(lengths) - lengths
    within = np.arange(len(counts)) - np.repeat(starts, lengths)
    values = counts.astype(np.int64, copy=True)
    delta = np.flatnonzero(within > 2)
    values[delta] -= counts[delta - 2]
    # k characters hold a signed value in [-2^(5k-1), 2^(5k-1)): as few as that takes, each
    # 5 bits of it (lowest first) plus a continuation bit on all but the last, from '0'.
    magnitude = np.where(values < 0, ~values, values)
    size = 1 + np.searchsorted(_CHARACTER_LIMITS, magnitude, side="right")
    first = np.cumsum(size) - size
    which = np.arange(int(size.sum())) - np.repeat(first, size)
    more = which < np.repeat(size - 1, size)
    characters = (np.repeat(values, size) >> (5 * which)) & 0x1F | (more << 5)
    return (characters + 48).astype(np.uint8), np.cumsum(np.add.reduceat(size, starts))


def split_bytes(data: np.ndarray, ends: np.ndarray) -> list[bytes]:
    """The byte strings of a packed buffer, one per end offset."""
    raw = data.tobytes()
    bounds = [0, *ends.tolist()]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def string_totals(strings: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Decode compressed RLE counts and check them, many strings at once.

    Returns:
        ``(totals, valid)`` per string: the sum of its runs (the pixels it covers), and whether
        it is well formed (characters in ``'0'..'o'``, every number finished, no negative or
        over-long run). pycocotools decodes a malformed string, or one whose runs do not add
        up to ``height * width``, into uninitialised (or out-of-bounds) memory.
    """
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    values = np.frombuffer(b"".join(strings), dtype=np.uint8).astype(np.int64) - 48
    valid = np.ones(len(strings), dtype=bool)
    totals = np.zeros(len(strings), dtype=np.int64)
    if not len(values):
        return totals, valid
    string_of = np.repeat(np.arange(len(strings)), lengths)
    ends = np.cumsum(lengths)
    last = (values & 0x20) == 0  # a character without the continuation bit ends a number
    bad = (values < 0) | (values > 63)
    unfinished = np.zeros(len(strings), dtype=bool)
    unfinished[lengths > 0] = ~last[ends[lengths > 0] - 1]
    last[ends[lengths > 0] - 1] = True  # a number never runs on into the next string
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    number = np.cumsum(np.concatenate([[0], last[:-1]]))
    k = np.arange(len(values)) - starts[number]
    too_long = np.zeros(len(strings), dtype=bool)
    np.logical_or.at(too_long, string_of, (k > 6) | bad)
    shifted = (values & 0x1F) << (5 * np.minimum(k, 6))
    x = np.bitwise_or.reduceat(shifted, starts)
    final = np.append(starts[1:], len(values)) - 1
    negative = (values[final] & 0x10) != 0
    x[negative] |= -1 << (5 * (k[final[negative]] + 1))
    # Runs from the fourth on were written as differences with the run two before.
    owner = string_of[starts]
    first_number = np.searchsorted(owner, np.arange(len(strings)))
    m = np.arange(len(x)) - first_number[owner]
    chain = owner * 3 + np.where(m == 0, 0, np.where(m % 2, 1, 2))
    order = np.argsort(chain, kind="stable")
    summed = np.cumsum(x[order])
    chain_sorted = chain[order]
    chain_start = np.flatnonzero(np.concatenate([[True], chain_sorted[1:] != chain_sorted[:-1]]))
    before = np.repeat(
        np.concatenate([[0], summed[chain_start[1:] - 1]]), np.diff(np.append(chain_start, len(x)))
    )
    runs = np.empty_like(x)
    runs[order] = summed - before
    out_of_range = np.zeros(len(strings), dtype=bool)
    np.logical_or.at(out_of_range, owner, (runs < 0) | (runs > _MAX_RUN))
    np.add.at(totals, owner, runs)
    valid &= ~(unfinished | too_long | out_of_range)
    return totals, valid
