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
            bands = device_bands(masks, threshold, self)
        else:
            bands = host_bands(masks, threshold, self)
        counts, lengths = bands.frame_counts(n, height, width)
        return split_bytes(*counts_to_strings(counts, lengths))


class Bands:
    """The rows holding a set pixel, per non-empty mask, stacked for :meth:`frame_counts`.

    Each mask's band of rows (``top`` to ``bottom``, full width) is stored in one bool buffer
    of the frame's width, a row of zeros before the first band and after each one: a pixel's
    change from the pixel above it, which is where a column-major run starts or ends, is then
    one comparison of the buffer with itself shifted by a row.
    """

    def __init__(self, encoder: RleEncoder, rows: int, width: int) -> None:
        self.buffer = encoder.scratch("bands", (rows + 1) * width).reshape(rows + 1, width)
        self.buffer[0] = False
        self.used = 1
        self.encoder = encoder
        self.index: list[int] = []
        self.top: list[int] = []
        self.start: list[int] = []

    def next(self, index: int, top: int, bottom: int) -> np.ndarray:
        """The ``[bottom - top, W]`` bool rows to fill with mask ``index``'s band."""
        rows = self.buffer[self.used : self.used + bottom - top]
        self.buffer[self.used + bottom - top] = False
        self.index.append(index)
        self.top.append(top)
        self.start.append(self.used)
        self.used += bottom - top + 1
        return rows

    def frame_counts(self, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Run lengths ``(counts, lengths)`` of all ``n`` masks of ``height x width`` in
        column-major order (masks without a band are all zero)."""
        total = height * width
        changes_per_mask = np.zeros(n, dtype=np.int64)
        positions = np.zeros(0, dtype=np.int64)
        if self.index:
            flags = self.encoder.scratch("flags", (self.used - 1) * width)
            flags = flags.reshape(self.used - 1, width)
            np.not_equal(self.buffer[1 : self.used], self.buffer[: self.used - 1], out=flags)
            # (2-d nonzero is 40x slower than flat here)
            row, column = np.divmod(np.flatnonzero(flags), width)
            row += 1  # the buffer row that differs from the one above it
            starts = np.asarray(self.start, dtype=np.int64)
            band = np.searchsorted(starts, row, side="right") - 1
            positions = column * height + np.asarray(self.top)[band] + (row - starts[band])
            # In column-major order, mask by mask.
            key = np.sort(band * (total + 1) + positions)
            band, positions = np.divmod(key, total + 1)
            # A band as tall as the frame: a column's end and the next one's start are the
            # same frame position (the run goes on); at the frame's end nothing follows.
            same = (positions[1:] == positions[:-1]) & (band[1:] == band[:-1])
            drop = positions == total
            drop[1:] |= same
            drop[:-1] |= same
            positions, band = positions[~drop], band[~drop]
            changes_per_mask[self.index] = np.bincount(band, minlength=len(self.index))
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


def host_bands(masks: Any, threshold: float, encoder: RleEncoder) -> Bands:
    """Bands of CPU masks: one pass finds the rows with a set pixel, then only those rows
    are thresholded."""
    tensor = masks if isinstance(masks, torch.Tensor) else _as_tensor(masks, threshold)
    if tensor.dtype == torch.bool:
        tensor = tensor.view(torch.uint8)
    array = None if tensor.dtype == torch.bfloat16 else tensor.numpy()
    floating = tensor.is_floating_point()
    if floating:
        rows = _rows_above(tensor, threshold)
    elif tensor.dtype == torch.uint8:
        rows = tensor.amax(dim=2) != 0
    else:  # signed integers: a row's maximum may be 0 with negative (set) pixels in it
        rows = (tensor != 0).any(dim=2)
    found, first, last = _extents(rows.numpy())
    bands = Bands(encoder, int((last[found] - first[found] + 1).sum()), tensor.shape[2])
    for i in found.tolist():
        top, bottom = int(first[i]), int(last[i])
        out = bands.next(i, top, bottom)
        values = tensor[i, top:bottom].float().numpy() if array is None else array[i, top:bottom]
        if floating:
            np.greater(values, threshold, out=out)
        else:
            np.not_equal(values, 0, out=out)
    return bands


def _rows_above(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per mask and row, whether a pixel may be ``> threshold``: every such row, and rows
    with a NaN (a band may be loose, never short)."""
    bits = {torch.float32: (torch.int32, np.float32, np.int32)}.get(tensor.dtype)
    if tensor.dtype == torch.float16:
        bits = (torch.int16, np.float16, np.int16)
    if bits is None or not threshold >= 0:
        return ~(tensor.amax(dim=2) <= threshold)
    # Non-negative floats order as their bit patterns do as integers (negative ones, below
    # the threshold, as negative integers), and an integer maximum is the cheaper pass. The
    # threshold is rounded to the masks' precision, as numpy and torch compare.
    integer, floating, pattern = bits
    limit = int(np.asarray(threshold, dtype=floating).view(pattern))
    return tensor.view(integer).amax(dim=2) > limit


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


def device_bands(masks: torch.Tensor, threshold: float, encoder: RleEncoder) -> Bands:
    """Bands of masks on an accelerator: thresholded and bit-packed there, so one bit per
    pixel crosses to the host (1/32 of float32 masks)."""
    binary = masks > threshold if masks.is_floating_point() else masks != 0
    n, height, width = binary.shape
    rows = binary.any(dim=2)
    bits = binary.to(torch.uint8)
    if width % 8:
        bits = torch.nn.functional.pad(bits, (0, 8 - width % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    packed = (bits.view(n, height, -1, 8) * weights).sum(dim=3, dtype=torch.uint8)
    rows, packed = rows.cpu().numpy(), packed.cpu().numpy()
    found, first, last = _extents(rows)
    bands = Bands(encoder, int((last[found] - first[found] + 1).sum()), width)
    for i in found.tolist():
        top, bottom = int(first[i]), int(last[i])
        unpacked = np.unpackbits(packed[i, top:bottom], axis=1, count=width)
        np.copyto(bands.next(i, top, bottom), unpacked, casting="unsafe")
    return bands


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
    characters, keep = [], []
    alive = np.ones(len(values), dtype=bool)
    while alive.any():
        group = values & 0x1F
        values = values >> 5
        more = np.where(group & 0x10, values != -1, values != 0)
        characters.append((group | (more << 5)) + 48)
        keep.append(alive)
        alive = alive & more
    characters = np.stack(characters, axis=1).astype(np.uint8)
    keep = np.stack(keep, axis=1)
    per_mask = np.add.reduceat(keep.sum(axis=1), starts) if len(starts) else starts
    return characters[keep], np.cumsum(per_mask)


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
