"""Dropping instances that a model cannot train on, with all their fields."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from detkit.data.transforms.core import Transform, _check_sample, _where, select_instances

__all__ = ["SanitizeBoxes"]

logger = logging.getLogger(__name__)


class SanitizeBoxes(Transform):
    """Drop degenerate or out-of-canvas instances from every per-instance field.

    After crops and large downscales some boxes are too small to learn from, and a box of
    zero width is what makes torchvision's models fail with *"All bounding boxes should have
    positive height and width"*. This transform removes such instances from ``boxes``,
    ``labels``, ``masks``, ``keypoints``, ``area``, ``iscrowd`` and any extra per-instance
    tensor at once. Its output passes :func:`detkit.types.validate_target` as far as boxes
    go. Put it at the end of a training pipeline (the presets do).

    An instance is dropped when its box is not finite, has width or height ``<= 0`` or below
    ``min_size``, or area below ``min_area``; when it has a mask that is empty (the object
    was cropped away while its clipped box survived) and ``drop_empty_masks``; and, without
    ``clamp``, when its box pokes out of the canvas. With ``clamp`` (default), boxes are
    first clipped to ``[0, W] x [0, H]``.

    Args:
        min_size: smallest width and height kept, in pixels.
        min_area: smallest box area kept, in square pixels.
        clamp: clip boxes to the canvas before checking them.
        drop_empty_masks: also drop instances whose mask has no pixel.

    >>> target = {"boxes": torch.tensor([[0.0, 0, 4, 4], [2, 2, 2, 3], [1, 1, 9, 3]]),
    ...           "labels": torch.tensor([1, 2, 3]), "area": torch.tensor([16.0, 0, 16]),
    ...           "track_ids": torch.tensor([10, 11, 12]), "image_id": 0}
    >>> _, out = SanitizeBoxes()(torch.zeros(3, 5, 5), target)
    >>> out["boxes"].tolist(), out["labels"].tolist(), out["track_ids"].tolist()
    ([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 3.0]], [1, 3], [10, 12])
    """

    _accepts_none = True

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
        height, width = _check_sample(image, target, type(self).__name__)
        boxes = target["boxes"]
        if not boxes.is_floating_point():
            boxes = boxes.to(torch.float32)
        out = dict(target)
        if self.clamp:
            low = torch.zeros(4, dtype=boxes.dtype)
            high = torch.tensor([width, height, width, height], dtype=boxes.dtype)
            if bool(((boxes < low) | (boxes > high)).any()):
                boxes = torch.minimum(torch.maximum(boxes, low), high)
                out["boxes"] = boxes
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (
            torch.isfinite(boxes).all(dim=1)
            & (widths > 0)
            & (heights > 0)
            & (widths >= self.min_size)
            & (heights >= self.min_size)
            & (widths * heights >= self.min_area)
        )
        if not self.clamp:
            keep &= (boxes[:, :2] >= 0).all(dim=1) & (boxes[:, 2] <= width)
            keep &= boxes[:, 3] <= height
        masks = target.get("masks")
        if self.drop_empty_masks and masks is not None and masks.shape[0]:
            keep &= masks.flatten(1).any(dim=1).to(torch.bool)
        if bool(keep.all()):
            return image, out
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "SanitizeBoxes: %s: dropped %d of %d instances (indices %s)",
                _where(target),
                int((~keep).sum()),
                keep.numel(),
                (~keep).nonzero().flatten().tolist(),
            )
        return image, select_instances(out, keep)
