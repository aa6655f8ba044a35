"""Dropping instances that a model cannot train on, with all their fields."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from detkit.data.transforms.core import Transform, check_sample, recompute_area, select_instances
from detkit.tv_tensors import plain
from detkit.types import sample_name

__all__ = ["SanitizeBoxes"]

logger = logging.getLogger(__name__)


class SanitizeBoxes(Transform):
    """Drop degenerate or out-of-canvas instances from every per-instance field.

    After crops and large downscales some boxes are too small to learn from, and a box of
    zero width is what makes torchvision's models fail with *"All bounding boxes should have
    positive height and width"*. This transform removes such instances from ``boxes``,
    ``labels``, ``masks``, ``keypoints``, ``area``, ``iscrowd`` and the extra per-instance
    fields declared for the pipeline (``Compose(..., instance_fields=...)``) at once. Its output passes :func:`detkit.types.validate_target` as far as boxes
    go. Put it at the end of a training pipeline (the presets do).

    An instance is dropped when its box is not finite (NaN or infinite: checked before any
    clamping, so an infinite box never becomes a full-image one), has width or height ``<= 0`` or below
    ``min_size``, or area below ``min_area``; when it has a mask that is empty (the object
    was cropped away while its clipped box survived) and ``drop_empty_masks``; and, without
    ``clamp``, when its box pokes out of the canvas. With ``clamp`` (default), boxes are
    first clipped to ``[0, W] x [0, H]``, and without masks the ``area`` of a clipped box
    shrinks in proportion to the box's (a mask's pixel count is kept).

    Args:
        min_size: smallest width and height kept, in pixels.
        min_area: smallest box area kept, in square pixels.
        clamp: clip boxes to the canvas before checking them.
        drop_empty_masks: also drop instances whose mask has no pixel.

    >>> target = {
    ...     "boxes": torch.tensor([[0.0, 0, 4, 4], [2, 2, 2, 3], [1, 1, 9, 3]]),
    ...     "labels": torch.tensor([1, 2, 3]),
    ...     "area": torch.tensor([16.0, 0, 16]),
    ...     "iscrowd": torch.tensor([0, 0, 1]),
    ...     "image_id": 0,
    ... }
    >>> _, out = SanitizeBoxes()(torch.zeros(3, 5, 5), target)
    >>> out["boxes"].tolist(), out["labels"].tolist(), out["iscrowd"].tolist()
    ([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 3.0]], [1, 3], [0, 1])
    """

    def __init__(
        self,
        min_size: float = 1.0,
        min_area: float = 1.0,
        *,
        clamp: bool = True,
        drop_empty_masks: bool = True,
    ) -> None:
        if not min_size >= 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        if not min_area >= 0:
            raise ValueError(f"min_area must be >= 0, got {min_area}")
        self.min_size = float(min_size)
        self.min_area = float(min_area)
        self.clamp = bool(clamp)
        self.drop_empty_masks = bool(drop_empty_masks)

    def _repr_args(self) -> dict[str, Any]:
        return {
            "min_size": self.min_size,
            "min_area": self.min_area,
            "clamp": self.clamp,
            "drop_empty_masks": self.drop_empty_masks,
        }

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        if target is None:
            return image, None
        height, width = check_sample(image, target, type(self).__name__)
        boxes = plain(target["boxes"])
        out = dict(target)
        keep, clamped = _check_boxes(
            boxes, height, width, self.min_size, self.min_area, clamp=self.clamp
        )
        if clamped is not None:
            like = target["boxes"]
            out["boxes"] = (
                tv_tensors.wrap(clamped, like=like)
                if isinstance(like, tv_tensors.TVTensor)
                else clamped
            )
            if target.get("masks") is None:  # a mask's pixel count never changes by clamping
                changed = (clamped != boxes.to(clamped.dtype)).any(dim=1)
                out = recompute_area(out, changed, boxes_before=boxes)
        masks = target.get("masks")
        if self.drop_empty_masks and masks is not None and masks.shape[0]:
            if masks[0].numel():
                # amax is the quickest torch reduction over uint8 here.
                empty = plain(masks).flatten(1).amax(dim=1).cpu().numpy() == 0
                keep = np.asarray(keep) & ~empty
            else:
                keep = np.zeros(len(keep), dtype=bool)
        if keep.all() if isinstance(keep, np.ndarray) else all(keep):
            return image, out
        keep = np.asarray(keep, dtype=bool)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "SanitizeBoxes: %s: dropped %d of %d instances (indices %s)",
                sample_name(target),
                int((~keep).sum()),
                keep.size,
                np.flatnonzero(~keep).tolist(),
            )
        return image, select_instances(out, torch.from_numpy(keep).to(boxes.device))


# Up to this many boxes, plain Python floats beat vectorized calls: on a sample fresh from
# the disk each numpy or torch call costs 10-60 microseconds, a Python pass over a box well
# under one. Crowded images take the vectorized path.
_PYTHON_BOXES = 32


def _check_boxes(
    boxes: torch.Tensor,
    height: int,
    width: int,
    min_size: float,
    min_area: float,
    *,
    clamp: bool,
) -> tuple[list[bool] | np.ndarray, torch.Tensor | None]:
    """Which boxes to keep (``N`` bools) and the clamped boxes (``None`` if unchanged).

    Widths and heights must be positive (even with ``min_size = 0``); NaN fails every
    comparison, so a box with a NaN coordinate is dropped.
    """
    if boxes.shape[0] > _PYTHON_BOXES:
        return _check_boxes_vectorized(boxes, height, width, min_size, min_area, clamp=clamp)
    keep = []
    rows = []
    changed = False
    for box in boxes.tolist():
        x1, y1, x2, y2 = box
        # Checked before clamping: an infinite edge would be clipped into a full-image box.
        finite = all(map(math.isfinite, box))
        if clamp:
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            changed = changed or [x1, y1, x2, y2] != box
            rows.append([x1, y1, x2, y2])
        w, h = x2 - x1, y2 - y1
        ok = w > 0 and h > 0 and w >= min_size and h >= min_size and w * h >= min_area
        if not clamp:
            ok = ok and x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height
        keep.append(ok and finite)
    clamped = None
    if changed:
        dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
        clamped = torch.tensor(rows, dtype=dtype, device=boxes.device)
    return keep, clamped


def _check_boxes_vectorized(
    boxes: torch.Tensor,
    height: int,
    width: int,
    min_size: float,
    min_area: float,
    *,
    clamp: bool,
) -> tuple[np.ndarray, torch.Tensor | None]:
    array = boxes.detach().cpu().numpy()
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    clamped = None
    finite = np.isfinite(array).all(axis=1)
    if clamp:
        limits = np.array([width, height, width, height], dtype=array.dtype)
        inside = np.clip(array, 0, limits)
        if not np.array_equal(inside, array):
            array = inside
            clamped = torch.from_numpy(inside).to(boxes.device)
    with np.errstate(invalid="ignore"):
        sizes = array[:, 2:] - array[:, :2]
        keep = (sizes > 0).all(axis=1) & (sizes >= min_size).all(axis=1)
        keep &= sizes[:, 0] * sizes[:, 1] >= min_area
        if not clamp:
            keep &= (array >= 0).all(axis=1) & (array[:, 2] <= width) & (array[:, 3] <= height)
    return keep & finite, clamped
