"""COCO's compressed RLE, written and read with numpy, for a whole batch of masks at once.

pycocotools' RLE lists run lengths of a mask read in column-major order, starting with a run of
zeros; its compressed form writes each count (from the fourth on, minus the count two before)
as 5-bit groups in ASCII characters from ``'0'``. pycocotools (and hotcoco) need each mask
transposed into column-major order and then visit every pixel; here a batch is thresholded a
few masks at a time, in its own row-major layout, into a small reused buffer (a whole batch's
would add to the peak memory while the batch's masks are alive), and a run boundary is found
where a pixel differs from the pixel above it: rows are compared 8 pixels at a time and only
the differing words are looked into, so the long zero runs around a (predicted) mask's region
are never visited but spliced in arithmetically. The strings of the batch are then written at
once. The bytes are exactly ``pycocotools.mask.encode``'s.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import torch

#: Runs are unsigned 32-bit in pycocotools; a longer run (or a negative one) is malformed.
_MAX_RUN = 2**32 - 1
#: Below ``_CHARACTER_LIMITS[k - 1]`` (in magnitude) a value fits in ``k`` characters.
_CHARACTER_LIMITS = np.array([2 ** (5 * k - 1) for k in range(1, 8)], dtype=np.int64)
#: The encoder of each thread, its scratch buffers kept from one batch to the next.
_ENCODERS = threading.local()


def encode_masks(masks: Any, threshold: float) -> list[bytes]:
    """The compressed RLE counts of each mask, as ``pycocotools.mask.encode`` writes them.

    Args:
        masks: ``[N, 1, H, W]`` or ``[N, H, W]`` tensor (any device, tv_tensors too) or array.
            Floating masks are set where ``> threshold``, others where non-zero.
        threshold: the probability threshold for floating masks.

    Raises:
        ValueError: for any other shape.
    """
    encoder = getattr(_ENCODERS, "encoder", None)
    if encoder is None:  # one per thread: the scratch buffers are written during a call
        encoder = _ENCODERS.encoder = RleEncoder()
    return encoder(masks, threshold)


class RleEncoder:
    """:func:`encode_masks` with scratch buffers kept between calls.

    Freshly allocated memory costs a page fault per 4 KiB on first touch, which on a virtual
    machine costs more than thresholding the page; the buffers are therefore reused.
    """

    #: Masks are thresholded and encoded this many bytes of frames at a time (at least one).
    CHUNK_BYTES = 2 * 1024 * 1024
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
            masks = pack_on_device(masks, threshold)  # one transfer, a bit per pixel
        stride = _row_stride(width)
        # A few masks at a time: a whole batch's frames (a byte per pixel) would add their
        # size to the peak memory while the batch's masks are alive anyway.
        step = max(1, self.CHUNK_BYTES // ((height + 1) * stride))
        counts, lengths = [], []
        for start in range(0, n, step):
            part = masks[start : start + step]
            rows, binary = self.frames(len(part), height, width)
            if isinstance(part, Packed):
                part.unpack(binary)
            else:
                threshold_on_host(part, threshold, binary)
            chunk_counts, chunk_lengths = self.frame_counts(rows, len(part), height, width)
            counts.append(chunk_counts)
            lengths.append(chunk_lengths)
        return split_bytes(*counts_to_strings(np.concatenate(counts), np.concatenate(lengths)))

    def frames(self, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, binary)``: a bool ``[1 + n * (height + 1), stride]`` buffer of zeros but
        for ``binary``, its ``[n, height, width]`` view that the masks are written into.

        A row of zeros comes first and after every mask (in column-major order they stand
        for the pixels before the first and after the last of each column), and rows are
        padded with zeros to ``stride``, a multiple of 8 pixels, so that rows compare as
        8-pixel words.
        """
        stride = _row_stride(width)
        rows = self.scratch("frames", (1 + n * (height + 1)) * stride)
        rows = rows.reshape(1 + n * (height + 1), stride)
        rows[0] = False
        frames = rows[1:].reshape(n, height + 1, stride)
        frames[:, height] = False
        if stride > width:
            frames[:, :height, width:] = False
        return rows, frames[:, :height, :width]

    def frame_counts(
        self, rows: np.ndarray, n: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run lengths ``(counts, lengths)`` of the ``n`` masks written into ``rows`` (see
        :meth:`frames`), in column-major order, all masks' runs one after another.

        A run starts or ends where a pixel differs from the pixel above it (the zero rows
        included): rows are compared 8 pixels at a time, then only the differing words are
        looked into. The zero runs between are never visited.
        """
        total = height * width
        per = rows.shape[1] // 8
        words = rows.reshape(-1).view(np.uint64)
        flags = self.scratch("flags", len(words) - per)
        np.not_equal(words[per:], words[:-per], out=flags)
        lower = np.flatnonzero(flags) + per
        changed = words[lower] ^ words[lower - per]
        word, byte = np.divmod(np.flatnonzero(changed.view(np.uint8)), 8)
        row, column = np.divmod(lower[word], per)
        mask, y = np.divmod(row - 1, height + 1)
        positions = (column * 8 + byte) * height + y
        # In column-major order, mask by mask.
        key = np.sort(mask * (total + 1) + positions)
        # A column's end (y = height) and the next column's start are the same position:
        # there the run goes on. At the frame's end nothing follows.
        same = key[1:] == key[:-1]
        drop = key % (total + 1) == total
        drop[1:] |= same
        drop[:-1] |= same
        mask, positions = np.divmod(key[~drop], total + 1)
        changes_per_mask = np.bincount(mask, minlength=n)
        # Per mask: [0, changes..., total], whose differences are its runs.
        span = changes_per_mask + 2
        ends = np.cumsum(span) - 1
        bounds = np.zeros(int(span.sum()), dtype=np.int64)
        bounds[ends] = total
        bounds[np.arange(len(positions)) + 2 * mask + 1] = positions
        runs = np.diff(bounds)
        keep = np.ones(len(runs), dtype=bool)
        keep[ends[:-1]] = False  # from one mask's end to the next one's start
        counts = runs[keep]
        return counts, changes_per_mask + 1


def threshold_on_host(masks: Any, threshold: float, out: np.ndarray) -> None:
    """Write ``masks > threshold`` (floating) or ``masks != 0`` into the bool view ``out``:
    one pass over the masks, in their own layout."""
    if isinstance(masks, torch.Tensor):
        if masks.dtype == torch.bfloat16:  # numpy has none
            masks = masks.float()
        array = (masks.view(torch.uint8) if masks.dtype == torch.bool else masks).numpy()
    else:
        array = masks
    if np.issubdtype(array.dtype, np.floating):
        np.greater(array, threshold, out=out)
    else:
        np.not_equal(array, 0, out=out)


def _row_stride(width: int) -> int:
    """A frame row's length: ``width`` padded to a multiple of 8 pixels (one word)."""
    return (width + 7) // 8 * 8


class Packed:
    """Thresholded masks ``[n, H, W]`` as bits on the host, 8 pixels a byte; sliced by mask."""

    def __init__(self, bits: np.ndarray, width: int):
        self.bits, self.width = bits, width

    def __len__(self) -> int:
        return len(self.bits)

    def __getitem__(self, masks: slice) -> Packed:
        return Packed(self.bits[masks], self.width)

    def unpack(self, out: np.ndarray) -> None:
        """Write the masks into the bool view ``out``."""
        np.copyto(out, np.unpackbits(self.bits, axis=2, count=self.width), casting="unsafe")


def pack_on_device(masks: torch.Tensor, threshold: float) -> Packed:
    """Masks on an accelerator thresholded (floating: ``> threshold``, others: non-zero) and
    bit-packed there, so one bit per pixel crosses to the host (1/32 of float32 masks)."""
    binary = masks > threshold if masks.is_floating_point() else masks != 0
    n, height, width = binary.shape
    bits = binary.to(torch.uint8)
    if width % 8:
        bits = torch.nn.functional.pad(bits, (0, 8 - width % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    packed = (bits.view(n, height, -1, 8) * weights).sum(dim=3, dtype=torch.uint8).cpu()
    return Packed(packed.numpy(), width)


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
