"""Geometric transforms: resizes, crops and padding, on images and whole targets.

The geometry of images, boxes and masks is torchvision v2's (its functional kernels); detkit
adds keypoint visibility and left/right swaps, ``area`` recomputation and instance
bookkeeping. Instances a crop removes entirely (box of zero width or height) are dropped
from every per-instance field; :class:`~detkit.data.transforms.SanitizeBoxes` cleans up
further (tiny boxes, empty masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detkit.data.transforms.adapter import V2Transform

__all__ = [
    "Fill",
    "FixedSizeCrop",
    "RandomIoUCrop",
    "RandomShortestSize",
    "RandomZoomOut",
    "Resize",
    "ScaleJitter",
]

#: The value of the pixels a transform adds (padding, a zoom-out's canvas), one for every
#: channel or one per channel.
Fill = float | Sequence[float]


class _ConfiguredV2(V2Transform):
    """A :class:`V2Transform` around one v2 transform that it configures itself.

    ``repr`` shows the arguments given to detkit's class, not those of the v2 transform.
    """

    def __init__(self, transform: Any, **args: Any) -> None:
        super().__init__(transform)
        self._args = args

    def _repr_args(self) -> dict[str, Any]:
        return self._args


class Resize(_ConfiguredV2):
    """Resize the image and its target (``torchvision.transforms.v2.Resize``).

    Boxes and keypoints scale with the image, masks are resized with nearest-neighbour
    interpolation and ``area`` is recomputed.

    Args:
        size: ``(height, width)``, or an int: the new length of the shorter side (aspect
            ratio kept).
        max_size: with an int ``size``, the longer side is capped at this length.
        interpolation: image interpolation (``v2.InterpolationMode``).
        antialias: antialias when downscaling (tensor images).

    >>> boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> image, target = Resize((4, 6))(torch.zeros(3, 2, 3), target)
    >>> image.shape, target["boxes"].tolist()
    (torch.Size([3, 4, 6]), [[0.0, 0.0, 6.0, 2.0]])
    """

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        max_size: int | None = None,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        transform = v2.Resize(
            size, interpolation=interpolation, max_size=max_size, antialias=antialias
        )
        super().__init__(transform, size=size, max_size=max_size)


class RandomShortestSize(_ConfiguredV2):
    """Resize so that the shorter side is a random choice of ``min_size`` (``max_size`` caps
    the longer side); the references' ``multiscale`` policy.

    Args:
        min_size: candidate lengths of the shorter side.
        max_size: longest allowed side.
        interpolation: image interpolation.
        antialias: antialias when downscaling.

    >>> labels = torch.zeros(0, dtype=torch.int64)
    >>> target = {"boxes": torch.zeros(0, 4), "labels": labels}
    >>> random_shortest_size = RandomShortestSize([8], max_size=20)
    >>> image, _ = random_shortest_size(torch.zeros(3, 4, 6), target)
    >>> tuple(image.shape)
    (3, 8, 12)
    """

    def __init__(
        self,
        min_size: int | Sequence[int],
        max_size: int | None = None,
        *,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        transform = v2.RandomShortestSize(
            min_size, max_size=max_size, interpolation=interpolation, antialias=antialias
        )
        super().__init__(transform, min_size=min_size, max_size=max_size)


class ScaleJitter(_ConfiguredV2):
    """Large-scale jitter: resize to ``target_size`` times a random factor in ``scale_range``
    (aspect ratio kept); with :class:`FixedSizeCrop`, the references' ``lsj`` policy.

    Args:
        target_size: ``(height, width)`` the scale factor refers to.
        scale_range: ``(min, max)`` of the uniform random factor.
        interpolation: image interpolation.
        antialias: antialias when downscaling.

    >>> torch.manual_seed(0) is not None
    True
    >>> labels = torch.zeros(0, dtype=torch.int64)
    >>> target = {"boxes": torch.zeros(0, 4), "labels": labels}
    >>> scale_jitter = ScaleJitter((8, 8), scale_range=(2.0, 2.0))
    >>> image, _ = scale_jitter(torch.zeros(3, 4, 4), target)
    >>> tuple(image.shape)
    (3, 16, 16)
    """

    def __init__(
        self,
        target_size: Sequence[int],
        scale_range: tuple[float, float] = (0.1, 2.0),
        *,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        transform = v2.ScaleJitter(
            tuple(target_size), scale_range, interpolation=interpolation, antialias=antialias
        )
        super().__init__(transform, target_size=tuple(target_size), scale_range=scale_range)


def _fill_value(fill: Fill) -> float | list[float]:
    if isinstance(fill, (int, float)):
        return float(fill)
    values = [float(v) for v in fill]
    if not values:
        raise ValueError("fill must be a number or one number per channel, got an empty sequence")
    return values


def _fill_arg(fill: Fill) -> dict[Any, Any]:
    # Masks are always padded with background, whatever colour the image gets.
    return {tv_tensors.Mask: 0, "others": _fill_value(fill)}


class RandomZoomOut(_ConfiguredV2):
    """Zoom out with probability ``p``: place the image at a random spot of a canvas
    ``side_range`` times larger, filled with ``fill`` (the SSD policy's expansion).

    Args:
        fill: image fill value (one per channel, or one for all); masks get 0.
        side_range: ``(min, max)`` canvas-to-image side ratio, ``min >= 1``.
        p: probability of zooming out.

    >>> torch.manual_seed(0) is not None
    True
    >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> random_zoom_out = RandomZoomOut(side_range=(2.0, 2.0), p=1.0)
    >>> image, target = random_zoom_out(torch.ones(3, 2, 2), target)
    >>> tuple(image.shape), float(image.sum())
    ((3, 4, 4), 12.0)
    """

    def __init__(
        self, fill: Fill = 0, side_range: tuple[float, float] = (1.0, 4.0), *, p: float = 0.5
    ) -> None:
        transform = v2.RandomZoomOut(fill=_fill_arg(fill), side_range=side_range, p=p)
        super().__init__(transform, fill=fill, side_range=side_range, p=p)


class RandomIoUCrop(_ConfiguredV2):
    """SSD's random crop: a crop whose IoU with some box exceeds a randomly chosen bound.

    torchvision v2's sampler; instances whose box centre falls outside the crop are dropped
    with all their fields (as in torchvision's reference scripts), boxes are clipped to the
    crop, keypoints outside it become invisible. A target without instances is returned
    unchanged (the crop needs boxes to aim at).

    Args:
        min_scale: smallest crop side as a fraction of the image side.
        max_scale: largest crop side fraction.
        min_aspect_ratio: smallest crop width / height.
        max_aspect_ratio: largest crop width / height.
        sampler_options: the minimum-IoU choices; a value ``>= 1`` means "no crop".
        trials: crops tried per chosen bound.

    >>> torch.manual_seed(0) is not None
    True
    >>> boxes = torch.tensor([[5.0, 5.0, 30.0, 30.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> image, target = RandomIoUCrop()(torch.zeros(3, 40, 40), target)
    >>> bool((target["boxes"][:, 2:] <= torch.tensor(image.shape[:0:-1])).all())
    True
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect_ratio: float = 0.5,
        max_aspect_ratio: float = 2.0,
        sampler_options: Sequence[float] | None = None,
        trials: int = 40,
    ) -> None:
        options = None if sampler_options is None else list(sampler_options)
        transform = v2.RandomIoUCrop(
            min_scale, max_scale, min_aspect_ratio, max_aspect_ratio, options, trials
        )
        super().__init__(transform, min_scale=min_scale, max_scale=max_scale)

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        if target is None or target["boxes"].shape[0] == 0:
            # v2 would only stop on a "no crop" option (and loop forever without one).
            return image, None if target is None else dict(target)
        return super()._transform(image, target)


class _CropThenPad(v2.Transform):
    """v2 transform: a random crop of at most ``size``, padded right and bottom to ``size``."""

    def __init__(self, size: tuple[int, int], fill: Fill) -> None:
        super().__init__()
        self.size = size
        self.fill = _fill_value(fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_height, crop_width = min(height, self.size[0]), min(width, self.size[1])
        top = int(torch.randint(height - crop_height + 1, ()))
        left = int(torch.randint(width - crop_width + 1, ()))
        return {
            "crop": (top, left, crop_height, crop_width),
            "needs_crop": (crop_height, crop_width) != (height, width),
            "padding": [0, 0, self.size[1] - crop_width, self.size[0] - crop_height],
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["needs_crop"]:
            top, left, height, width = params["crop"]
            inpt = self._call_kernel(F.crop, inpt, top=top, left=left, height=height, width=width)
        if any(params["padding"]):
            fill = 0 if isinstance(inpt, tv_tensors.Mask) else self.fill
            inpt = self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)
        return inpt


class FixedSizeCrop(_ConfiguredV2):
    """Crop a random window of at most ``size``, then pad right and bottom to exactly ``size``.

    With :class:`ScaleJitter`, the references' ``lsj`` policy. Instances cut away entirely
    are dropped with all their fields; boxes are clipped to the window.

    The reference scripts draw one random number for both offsets (crops along a diagonal
    of the possible positions); detkit draws the top and left offsets independently.

    Args:
        size: ``(height, width)`` of the output (an int for a square).
        fill: image padding value (one per channel, or one for all); masks get 0.

    >>> boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> image, target = FixedSizeCrop((6, 6), fill=0)(torch.ones(3, 4, 4), target)
    >>> tuple(image.shape), target["boxes"].tolist()
    ((3, 6, 6), [[0.0, 0.0, 4.0, 4.0]])
    """

    def __init__(self, size: int | Sequence[int], fill: Fill = 0) -> None:
        if isinstance(size, int):
            size = (size, size)
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be a positive int or (height, width), got {size}")
        super().__init__(_CropThenPad(size, fill), size=size, fill=fill)
