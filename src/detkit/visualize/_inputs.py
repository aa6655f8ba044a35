"""What the drawing functions accept, read once: an input that would draw a wrong picture
without a word (a float image in 0..255, boxes of another canvas, soft masks) is refused
with a message naming the argument; one that is probably a slip (normalized boxes) is warned
about."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image

from detkit.tv_tensors import plain, to_xyxy
from detkit.types import image_range_problem


def uint8_image(image: Any, name: str = "image") -> torch.Tensor:
    """``image`` (PIL, uint8, or float in 0..1; ``[3, H, W]`` or ``[1, H, W]``) as a CPU
    uint8 ``Tensor[3, H, W]``; a float one outside 0..1, or a PIL image of more than 8 bits,
    is refused, never clamped."""
    if isinstance(image, Image.Image):
        if image.mode.startswith(("I", "F")):  # convert("RGB") clips these to 0..255
            raise ValueError(
                f"{name}: a PIL image of mode {image.mode!r} (16- or 32-bit, or float) would "
                "be clipped to 0..255: scale it to an 8-bit image (or a float tensor in "
                "0..1) first"
            )
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(
            f"{name} must be a PIL image or a Tensor[3, H, W] (or [1, H, W]), got {shape}"
        )
    image = plain(image).detach().cpu()
    if image.is_floating_point():
        problem = image_range_problem(image)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise TypeError(f"integer images must be uint8, got {image.dtype}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def check_canvas(value: Any, name: str, size: tuple[int, int]) -> None:
    """Refuse a tv_tensor whose ``canvas_size`` is not the image's: its coordinates belong
    to another picture (a transform moved the image without it, or the reverse)."""
    canvas = getattr(value, "canvas_size", None)
    if canvas is not None and tuple(int(v) for v in canvas) != size:
        raise ValueError(
            f"{name}: canvas_size {tuple(canvas)} is not the size (H, W) of the image, "
            f"{size}: its coordinates belong to another image size (draw them on the image "
            "they were made for, or resize them with it)"
        )


def drawing_boxes(boxes: Any, size: tuple[int, int]) -> torch.Tensor:
    """``boxes`` as a CPU float32 XYXY ``Tensor[N, 4]`` for an image of ``size`` (H, W).

    Refuses boxes of another canvas and non-finite ones; warns when every box lies within
    ``[0, 1]`` with fractional corners (normalized coordinates?) or when some lie wholly
    outside the image.
    """
    check_canvas(boxes, "boxes", size)
    boxes = plain(to_xyxy(boxes)).detach().cpu().reshape(-1, 4).to(torch.float32)
    bad = (~boxes.isfinite().all(dim=1)).nonzero().flatten()
    if bad.numel():
        raise ValueError(f"boxes: rows {bad[:5].tolist()} are not finite (NaN or infinite)")
    height, width = size
    # Sub-pixel boxes with fractional corners, all in the first pixel: never real objects.
    sized = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    fractional = bool((boxes != boxes.round()).any())
    if sized.any() and fractional and float(boxes.abs().max()) <= 1 and max(height, width) > 2:
        warnings.warn(
            f"boxes: all {len(boxes)} lie within [0, 1] on a {height}x{width} image: "
            "normalized coordinates? Boxes are drawn in pixels: multiply x by the width "
            "and y by the height",
            stacklevel=3,
        )
        return boxes
    outside = (boxes[:, 2] < 0) | (boxes[:, 3] < 0) | (boxes[:, 0] > width) | (boxes[:, 1] > height)
    if outside.any():
        warnings.warn(
            f"boxes: {int(outside.sum())} of {len(boxes)} lie wholly outside the "
            f"{height}x{width} image and cannot be seen: coordinates of another image size?",
            stacklevel=3,
        )
    return boxes


def binary_masks(masks: Any, num: int, size: tuple[int, int]) -> torch.Tensor:
    """``masks`` (``[N, H, W]`` or ``[N, 1, H, W]``, binary in any dtype) as bool; soft
    masks (probabilities, logits) are refused, as any threshold here would be a guess."""
    masks = plain(masks).detach().cpu()
    if masks.ndim == 4:  # Mask R-CNN's [N, 1, H, W]
        masks = masks[:, 0]
    if masks.shape[0] != num or tuple(masks.shape[1:]) != size:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match {num} boxes on an image of "
            f"size {size}"
        )
    if masks.is_floating_point() and not ((masks == 0) | (masks == 1)).all():
        raise ValueError(
            "masks: values other than 0 and 1 (probabilities or logits?): pass binary "
            "masks (e.g. masks > 0.5), or a prediction to draw_prediction, whose "
            "mask_threshold says which probabilities are inside"
        )
    return masks != 0


def mask_probabilities(masks: Any) -> torch.Tensor:
    """A prediction's ``masks`` on the CPU; float ones must be probabilities (0..1)."""
    masks = plain(masks).detach().cpu()
    if masks.is_floating_point() and masks.numel():
        low, high = (float(v) for v in torch.aminmax(masks))
        if not (low >= 0 and high <= 1):  # NaN compares False too
            raise ValueError(
                f"prediction['masks']: values span [{low:.4g}, {high:.4g}], not the 0..1 of "
                "probabilities (logits? apply .sigmoid() first)"
            )
    return masks
