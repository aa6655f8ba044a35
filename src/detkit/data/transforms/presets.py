"""Ready-made pipelines: the data-augmentation policies of torchvision's detection references.

Each function returns a :class:`~detkit.data.transforms.Compose` taking a PIL image or a
``uint8`` tensor with its target and returning a ``float32`` image in ``0..1`` with a target
that passes :func:`detkit.types.validate_target`. Every training preset is::

    ToImage() -> <policy> -> ToDtype(torch.float32, scale=True) -> SanitizeBoxes()

as torchvision's ``references/detection/presets.py`` builds them with ``use_v2=True``
(``--data-augmentation hflip | multiscale | lsj | ssd | ssdlite``), except that the image
becomes a tensor first, so every step runs on tensors. With keypoints, pass the flip
permutation (``flip_indices``) on to the horizontal flip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from detkit.data.transforms.flips import RandomHorizontalFlip
from detkit.data.transforms.geometry import (
    FixedSizeCrop,
    RandomIoUCrop,
    RandomShortestSize,
    RandomZoomOut,
    ScaleJitter,
)
from detkit.data.transforms.photometric import RandomPhotometricDistort, ToDtype, ToImage
from detkit.data.transforms.pipeline import Compose
from detkit.data.transforms.sanitize import SanitizeBoxes

__all__ = [
    "REFERENCE_MEAN",
    "eval_preset",
    "hflip_preset",
    "lsj_preset",
    "multiscale_preset",
    "ssd_preset",
    "ssdlite_preset",
]

#: Padding colour of the references' zoom-out and fixed-size crop (ImageNet mean, 0..255).
REFERENCE_MEAN: tuple[float, float, float] = (123.0, 117.0, 104.0)

_MULTISCALE_SIZES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


def _train(
    policy: list, hflip_prob: float, flip_indices, swap_left_right: bool, *, resamples: bool = True
) -> Compose:
    flip = RandomHorizontalFlip(
        hflip_prob, flip_indices=flip_indices, swap_left_right=swap_left_right
    )
    # Only crops and resizes can empty a mask; after a flip alone, reading every mask again
    # to look for empty ones would cost time for nothing.
    sanitize = SanitizeBoxes(drop_empty_masks=resamples)
    return Compose([ToImage(), *policy, flip, ToDtype(torch.float32, scale=True), sanitize])


def hflip_preset(
    *,
    hflip_prob: float = 0.5,
    flip_indices: Sequence[int] | None = None,
    swap_left_right: bool = True,
) -> Compose:
    """The references' default training policy: a random horizontal flip.

    Args:
        hflip_prob: probability of flipping.
        flip_indices: left/right keypoint permutation (needed with keypoints).
        swap_left_right: ``False`` to mirror keypoints without swapping.

    >>> pipeline = hflip_preset()
    >>> boxes = torch.tensor([[1.0, 1.0, 4.0, 4.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> image, target = pipeline(torch.zeros(3, 8, 8, dtype=torch.uint8), target)
    >>> image.dtype, target["boxes"].shape
    (torch.float32, torch.Size([1, 4]))
    """
    return _train([], hflip_prob, flip_indices, swap_left_right, resamples=False)


def multiscale_preset(
    *,
    min_size: Sequence[int] = _MULTISCALE_SIZES,
    max_size: int = 1333,
    hflip_prob: float = 0.5,
    flip_indices: Sequence[int] | None = None,
    swap_left_right: bool = True,
) -> Compose:
    """Multi-scale training: shorter side drawn from ``min_size`` (longer side capped at
    ``max_size``), then a random horizontal flip.

    Args:
        min_size: candidate shorter-side lengths (the references': 480 to 800 by 32).
        max_size: longest allowed side.
        hflip_prob: probability of flipping.
        flip_indices: left/right keypoint permutation (needed with keypoints).
        swap_left_right: ``False`` to mirror keypoints without swapping.

    >>> labels = torch.zeros(0, dtype=torch.int64)
    >>> target = {"boxes": torch.zeros(0, 4), "labels": labels}
    >>> pipeline = multiscale_preset(min_size=[16], max_size=32)
    >>> image, _ = pipeline(torch.zeros(3, 8, 12, dtype=torch.uint8), target)
    >>> tuple(image.shape)
    (3, 16, 24)
    """
    policy = [RandomShortestSize(list(min_size), max_size=max_size)]
    return _train(policy, hflip_prob, flip_indices, swap_left_right)


def lsj_preset(
    *,
    size: int | Sequence[int] = (1024, 1024),
    scale_range: tuple[float, float] = (0.1, 2.0),
    fill: float | Sequence[float] = REFERENCE_MEAN,
    hflip_prob: float = 0.5,
    flip_indices: Sequence[int] | None = None,
    swap_left_right: bool = True,
) -> Compose:
    """Large-scale jitter: :class:`ScaleJitter` to ``size``, :class:`FixedSizeCrop` to
    ``size`` (padding with ``fill``), then a random horizontal flip.

    Args:
        size: output ``(height, width)`` (the references': 1024 x 1024).
        scale_range: range of the random scale factor.
        fill: image padding value; masks are padded with 0.
        hflip_prob: probability of flipping.
        flip_indices: left/right keypoint permutation (needed with keypoints).
        swap_left_right: ``False`` to mirror keypoints without swapping.

    >>> labels = torch.zeros(0, dtype=torch.int64)
    >>> target = {"boxes": torch.zeros(0, 4), "labels": labels}
    >>> pipeline = lsj_preset(size=(32, 32))
    >>> image, _ = pipeline(torch.zeros(3, 20, 30, dtype=torch.uint8), target)
    >>> tuple(image.shape)
    (3, 32, 32)
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    policy = [ScaleJitter(size, scale_range), FixedSizeCrop(size, fill=fill)]
    return _train(policy, hflip_prob, flip_indices, swap_left_right)


def ssd_preset(
    *,
    fill: float | Sequence[float] = REFERENCE_MEAN,
    hflip_prob: float = 0.5,
    flip_indices: Sequence[int] | None = None,
    swap_left_right: bool = True,
) -> Compose:
    """SSD's policy: photometric distortion, zoom out (filled with ``fill``), IoU crop,
    random horizontal flip.

    Args:
        fill: image fill of the zoom-out canvas; masks get 0.
        hflip_prob: probability of flipping.
        flip_indices: left/right keypoint permutation (needed with keypoints).
        swap_left_right: ``False`` to mirror keypoints without swapping.

    >>> boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> pipeline = ssd_preset()
    >>> image, target = pipeline(torch.zeros(3, 16, 16, dtype=torch.uint8), target)
    >>> image.dtype
    torch.float32
    """
    policy = [RandomPhotometricDistort(), RandomZoomOut(fill=fill), RandomIoUCrop()]
    return _train(policy, hflip_prob, flip_indices, swap_left_right)


def ssdlite_preset(
    *,
    hflip_prob: float = 0.5,
    flip_indices: Sequence[int] | None = None,
    swap_left_right: bool = True,
) -> Compose:
    """SSDlite's policy: IoU crop, then a random horizontal flip.

    Args:
        hflip_prob: probability of flipping.
        flip_indices: left/right keypoint permutation (needed with keypoints).
        swap_left_right: ``False`` to mirror keypoints without swapping.

    >>> boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> pipeline = ssdlite_preset()
    >>> image, _ = pipeline(torch.zeros(3, 16, 16, dtype=torch.uint8), target)
    >>> image.dtype
    torch.float32
    """
    return _train([RandomIoUCrop()], hflip_prob, flip_indices, swap_left_right)


def eval_preset() -> Compose:
    """Evaluation: the image as a ``float32`` tensor in ``0..1``; the target unchanged.

    >>> white = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    >>> image, target = eval_preset()(white, None)
    >>> image.dtype, image.max().item(), target
    (torch.float32, 1.0, None)
    """
    return Compose([ToImage(), ToDtype(torch.float32, scale=True)])
