"""Tensor operations on instance masks and boxes, vectorized over instances.

All boxes follow detkit's contract (:mod:`detkit.types`): XYXY in continuous pixel
coordinates, so the box of a mask is ``[xmin, ymin, xmax + 1, ymax + 1]``.
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
import torch

try:  # numpy's C counter without the dispatch around np.count_nonzero: 7 us, not 17, after a decode
    from numpy._core.multiarray import count_nonzero as _count_nonzero
except ImportError:  # another numpy's layout: the public function, with the same result
    _count_nonzero = np.count_nonzero

__all__ = [
    "box_area",
    "id_mask_to_masks",
    "instance_classes",
    "instance_ids",
    "masks_area",
    "masks_to_boxes",
    "split_id_mask",
]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Boxes of binary masks, edge convention (equal to pycocotools' ``toBbox``).

    Args:
        masks: ``Tensor[N, H, W]`` of any dtype; non-zero pixels belong to the instance.

    Returns:
        float32 ``Tensor[N, 4]`` XYXY, ``[xmin, ymin, xmax + 1, ymax + 1]``, on the device of
        ``masks``; an all-zero mask gives ``[0, 0, 0, 0]`` (as ``toBbox`` does), which
        :func:`detkit.types.validate_target` rejects as degenerate.

    Unlike :func:`torchvision.ops.masks_to_boxes`, whose inclusive maxima give a one-pixel-wide
    object a zero-width box, a non-empty mask here always has a box of positive size.

    >>> m = torch.zeros(1, 4, 5, dtype=torch.uint8)
    >>> m[0, 1:3, 2] = 1  # one column wide, two rows high
    >>> masks_to_boxes(m)
    tensor([[2., 1., 3., 3.]])
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be a Tensor[N, H, W], got shape {tuple(masks.shape)}")
    if masks.device.type == "cpu":
        # numpy's boolean reductions are several times faster than torch's on one CPU thread.
        array = masks.numpy()
        present = array if array.dtype == np.bool_ else array != 0
        return _boxes_from_presence(present.any(axis=2), present.any(axis=1))
    present = masks != 0
    return _boxes_from_presence(present.any(dim=2), present.any(dim=1))


def _boxes_from_presence(rows, cols) -> torch.Tensor:
    """Edge-convention boxes from per-instance row ``[N, H]`` and column ``[N, W]`` presence.

    ``rows`` and ``cols`` are boolean numpy arrays (CPU) or tensors (any device).
    """
    num, height = rows.shape
    width = cols.shape[1]
    if isinstance(rows, np.ndarray):
        # argmax returns the first maximum: the first True from the start, and from the end
        # on the reversed array. Empty masks give 0 everywhere and are zeroed below.
        found = np.stack(
            [
                cols.argmax(axis=1),
                rows.argmax(axis=1),
                width - cols[:, ::-1].argmax(axis=1),
                height - rows[:, ::-1].argmax(axis=1),
            ],
            axis=1,
        ).astype(np.float32)
        found *= rows.any(axis=1, keepdims=True)
        return torch.from_numpy(found.reshape(num, 4))
    if num == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=rows.device)
    rows8, cols8 = rows.to(torch.uint8), cols.to(torch.uint8)
    boxes = torch.stack(
        [
            cols8.argmax(dim=1),
            rows8.argmax(dim=1),
            width - cols8.flip(1).argmax(dim=1),
            height - rows8.flip(1).argmax(dim=1),
        ],
        dim=1,
    ).to(torch.float32)
    return boxes * rows.any(dim=1, keepdim=True)


def masks_area(masks: torch.Tensor) -> torch.Tensor:
    """Pixel count of each mask (COCO's ``area`` for segmented instances).

    Args:
        masks: ``Tensor[N, H, W]``; non-zero pixels count.

    Returns:
        float32 ``Tensor[N]`` on the device of ``masks``.

    >>> masks_area(torch.ones(2, 3, 4, dtype=torch.uint8))
    tensor([12., 12.])
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be a Tensor[N, H, W], got shape {tuple(masks.shape)}")
    if masks.device.type == "cpu":
        flat = masks.numpy().reshape(masks.shape[0], masks.shape[1] * masks.shape[2])
        return torch.from_numpy(np.count_nonzero(flat, axis=1).astype(np.float32))
    return (masks != 0).flatten(1).sum(dim=1).to(torch.float32)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of XYXY boxes (the ``area`` of instances without masks).

    Args:
        boxes: ``Tensor[N, 4]`` XYXY.

    Returns:
        ``Tensor[N]`` in the floating dtype of ``boxes`` (float32 for integer boxes).

    >>> box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0]]))
    tensor([6.])
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a Tensor[N, 4], got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        boxes = boxes.to(torch.float32)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


@overload
def instance_ids(
    id_mask: np.ndarray | torch.Tensor,
    *,
    background: int = 0,
    return_counts: Literal[False] = False,
) -> np.ndarray: ...


@overload
def instance_ids(
    id_mask: np.ndarray | torch.Tensor, *, background: int = 0, return_counts: Literal[True]
) -> tuple[np.ndarray, np.ndarray]: ...


def instance_ids(
    id_mask: np.ndarray | torch.Tensor, *, background: int = 0, return_counts: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Sorted instance ids present in an instance-id mask, background excluded.

    Counts pixels with a histogram rather than a sort, several times faster than
    ``np.unique`` on the 8- and 16-bit masks that datasets store.

    Args:
        id_mask: ``[H, W]`` integer array or tensor; each non-background value is one instance.
        background: the value that marks background pixels.
        return_counts: also return each instance's pixel count (its mask area).

    Returns:
        int64 numpy array of the ids, ascending; with ``return_counts``, also an int64 array of
        their pixel counts.

    >>> instance_ids(np.array([[0, 3], [3, 7]], dtype=np.uint8), return_counts=True)
    (array([3, 7]), array([2, 1]))
    """
    array = _integer_array(id_mask, "id_mask")
    flat = array.reshape(-1)
    if flat.size == 0:
        empty = np.zeros((0,), dtype=np.int64)
        return (empty, empty.copy()) if return_counts else empty
    small = flat.dtype in (np.uint8, np.uint16) or (
        int(flat.min()) >= 0 and int(flat.max()) < (1 << 20)
    )
    if small:
        # torch.bincount takes uint8 as is (no widening copy) and any other integer as int64.
        if flat.dtype != np.uint8:
            flat = flat.astype(np.int64)
        elif not flat.flags.writeable:
            flat = flat.copy()  # torch.from_numpy warns on read-only arrays
        counts = torch.bincount(torch.from_numpy(flat)).numpy()
        ids = np.flatnonzero(counts)
        counts = counts[ids]
    else:
        ids, counts = np.unique(flat, return_counts=True)
    keep = ids != background
    ids, counts = ids[keep].astype(np.int64), counts[keep].astype(np.int64)
    return (ids, counts) if return_counts else ids


def instance_classes(id_mask: np.ndarray, semantic: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The class of each instance: the majority class id of its pixels in a semantic mask.

    Background (class 0) pixels do not vote; an instance lying entirely on background gets 0.

    Args:
        id_mask: ``[H, W]`` integer instance-id mask (0 is background).
        semantic: ``[H, W]`` integer class-id mask of the same image.
        ids: the instances to label, ascending, as :func:`instance_ids` gives them; every
            non-zero value of ``id_mask`` must be among them.

    Returns:
        int64 ``[N]``, one class id per entry of ``ids``.

    >>> ids = np.array([1, 2])
    >>> instance_classes(np.array([[1, 1, 2]]), np.array([[3, 0, 0]]), ids).tolist()
    [3, 0]
    """
    if len(ids) == 0:
        return np.zeros((0,), dtype=np.int64)
    # All instances at once: index each instance pixel by (instance position, class id).
    inside = id_mask != 0
    position = np.searchsorted(ids, id_mask[inside])
    classes = semantic[inside].astype(np.int64)
    num_classes = int(classes.max()) + 1 if classes.size else 1
    counts = np.bincount(position * num_classes + classes, minlength=len(ids) * num_classes)
    counts = counts.reshape(len(ids), num_classes)
    counts[:, 0] = 0  # an instance's background pixels do not vote
    return counts.argmax(axis=1).astype(np.int64)


def _integer_array(values: np.ndarray | torch.Tensor, argument: str) -> np.ndarray:
    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if array.dtype.kind not in "iu":  # np.issubdtype: Python code, ~10 us after a decode
        raise TypeError(f"{argument} must hold integers, got dtype {array.dtype}")
    return array


def id_mask_to_masks(
    id_mask: np.ndarray | torch.Tensor, ids: np.ndarray | torch.Tensor | None = None
) -> torch.Tensor:
    """Split an instance-id mask into one binary mask per instance.

    Args:
        id_mask: ``[H, W]`` integer array or tensor.
        ids: the instance ids to extract, in order (default: :func:`instance_ids`).

    Returns:
        uint8 ``Tensor[N, H, W]``, one mask per id (``N = 0`` for a mask without instances).

    >>> id_mask_to_masks(np.array([[0, 2], [5, 2]], dtype=np.uint8)).tolist()
    [[[0, 1], [0, 1]], [[0, 0], [1, 0]]]
    """
    return torch.from_numpy(_id_mask_to_bool(id_mask, ids)).view(torch.uint8)


def _id_mask_to_bool(
    id_mask: np.ndarray | torch.Tensor, ids: np.ndarray | torch.Tensor | None = None
) -> np.ndarray:
    array = _integer_array(id_mask, "id_mask")
    if array.ndim != 2:
        raise ValueError(f"id_mask must be [H, W], got shape {tuple(array.shape)}")
    if ids is None:
        ids = instance_ids(array)
    ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    # numpy's broadcast comparison is SIMD-vectorized: ~0.03 ns a pixel and instance.
    return array[None] == ids.astype(array.dtype, copy=False)[:, None, None]


def split_id_mask(id_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
    """Instances of an id mask ``[H, W]``: ``(ids, bool masks [N, H, W], boxes, areas)``.

    The dataset's hot path. It runs right after an image decode has filled the caches with
    pixels, where each pass over the masks and each library call costs several times what a
    warm loop shows: so few of both. An 8-bit mask (what PNG masks decode to) is searched as
    bytes: each id's first and last pixel (``memchr`` from either end) give its rows; its
    mask and columns are computed over those rows only, and its area within its box. Other
    masks compare every candidate id at once and find each instance's rows in one pass.

    Returns:
        ``ids`` int64 ``[N]`` (ascending, absent ids left out), ``masks`` bool
        ``[N, H, W]``, ``boxes`` float ``Tensor[N, 4]`` (edge convention, as
        :func:`masks_to_boxes`) and ``areas`` int64 ``[N]`` (pixel counts).

    >>> ids, masks, boxes, areas = split_id_mask(np.array([[0, 7, 7], [0, 0, 3]]))
    >>> ids.tolist(), boxes.tolist(), areas.tolist()
    ([3, 7], [[2.0, 1.0, 3.0, 2.0], [1.0, 0.0, 3.0, 1.0]], [1, 2])
    """
    if type(id_mask) is np.ndarray and id_mask.dtype == np.uint8 and id_mask.ndim == 2:
        return _split_bytes(id_mask)  # the dataset's case: nothing to check or convert
    array = _integer_array(id_mask, "id_mask")
    if array.ndim != 2:
        raise ValueError(f"id_mask must be [H, W], got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return _split_bytes(array)
    high = int(array.max()) if array.size else 0
    unsigned = array.dtype.kind == "u" or (array.size and int(array.min()) >= 0)
    ids = np.arange(1, high + 1, dtype=np.int64) if unsigned and high <= 64 else instance_ids(array)
    present = array[None] == ids.astype(array.dtype, copy=False)[:, None, None]
    rows = present.any(axis=2)
    top = rows.argmax(axis=1)
    keep = rows[np.arange(len(ids)), top]
    if not keep.all():
        ids, present, rows, top = ids[keep], present[keep], rows[keep], top[keep]
    num, height, width = present.shape
    bottom = height - rows[:, ::-1].argmax(axis=1)
    cols = np.empty((num, width), dtype=bool)
    areas = np.empty(num, dtype=np.int64)
    for k, (y0, y1) in enumerate(zip(top.tolist(), bottom.tolist())):
        band = present[k, y0:y1]
        np.logical_or.reduce(band, axis=0, out=cols[k])
        areas[k] = np.count_nonzero(band)
    boxes = np.empty((num, 4), dtype=np.float32)  # edge convention, as masks_to_boxes
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = top
    boxes[:, 2] = width - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = bottom
    return ids, present, torch.from_numpy(boxes), areas


def _split_bytes(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
    """:func:`split_id_mask` of a uint8 mask, by byte searches and per-instance row bands."""
    height, width = array.shape
    high = int(np.maximum.reduce(array, axis=None)) if array.size else 0  # .max(): a wrapper
    # Searching for an absent id reads the whole mask: the ids present, when they are many.
    candidates = range(1, high + 1) if high <= 32 else instance_ids(array).tolist()
    pixels = array.tobytes()  # C order, whatever the array's strides
    spans = []  # (id, first row, last row + 1)
    for value in candidates:
        first = pixels.find(value)
        if first >= 0:
            spans.append((value, first // width, pixels.rfind(value) // width + 1))
    masks = np.zeros((len(spans), height, width), dtype=bool)  # one memset; bands written
    ids, boxes, areas = [], [], []
    for k, (value, top, bottom) in enumerate(spans):
        ids.append(value)
        band = masks[k, top:bottom]
        np.equal(array[top:bottom], value, out=band)
        cols = np.logical_or.reduce(band, axis=0).tobytes()
        left, right = cols.find(1), cols.rfind(1) + 1
        boxes.append((left, top, right, bottom))  # edge convention
        areas.append(_count_nonzero(band[:, left:right]))  # within the box: 3x faster
    box_array = np.array(boxes, dtype=np.float32).reshape(-1, 4)  # torch.tensor: 4x the time
    ids_array = np.array(ids, dtype=np.int64)
    return ids_array, masks, torch.from_numpy(box_array), np.array(areas, dtype=np.int64)
