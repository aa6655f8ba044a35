"""Geometric transforms: flips, resizes, crops and padding, on images and whole targets.

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
from detkit.data.transforms.core import Transform, _check_sample, _where
from detkit.data.transforms.keypoints import (
    _flip_setting,
    _require_flip_indices,
    horizontal_flip_keypoints,
    vertical_flip_keypoints,
)

__all__ = [
    "FixedSizeCrop",
    "RandomHorizontalFlip",
    "RandomIoUCrop",
    "RandomShortestSize",
    "RandomVerticalFlip",
    "RandomZoomOut",
    "Resize",
    "ScaleJitter",
]

Fill = float | Sequence[float]


def _check_probability(p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    return float(p)


# A mirrored XYXY box is ``extent * corner + box @ signed_permutation``: horizontally
# [W - x2, y1, W - x1, y2], vertically [x1, H - y2, x2, H - y1].
_MIRROR = {
    vertical: (
        torch.tensor([0.0, 1.0, 0.0, 1.0] if vertical else [1.0, 0.0, 1.0, 0.0]),
        torch.zeros(4, 4).index_put_(
            (torch.tensor(order), torch.arange(4)),
            torch.tensor([1.0, -1.0, 1.0, -1.0] if vertical else [-1.0, 1.0, -1.0, 1.0]),
        ),
    )
    for vertical, order in ((False, [2, 1, 0, 3]), (True, [0, 3, 2, 1]))
}


def _mirror_boxes(boxes: torch.Tensor, extent: int, vertical: bool) -> torch.Tensor:
    """``v2.functional.horizontal_flip_bounding_boxes`` (or ``vertical_``) for XYXY boxes.

    The same numbers (tested; products with 0 and 1 are exact), in one tensor op instead of
    eight: on a sample fresh from the disk each small op costs tens of microseconds, and
    this runs on every sample.
    """
    if not boxes.is_floating_point():
        boxes = boxes.to(torch.float32)
    corner, matrix = _MIRROR[vertical]
    if boxes.device != matrix.device or boxes.dtype != matrix.dtype:
        corner, matrix = corner.to(boxes), matrix.to(boxes)
    return torch.addmm(corner, boxes, matrix, beta=extent)


class _RandomFlip(Transform):
    _vertical = False
    # torchvision's kernels for the image and masks; detkit's for boxes and keypoints.
    _flip_image = staticmethod(F.horizontal_flip)
    _flip_masks = staticmethod(F.horizontal_flip_mask)

    def __init__(
        self,
        p: float = 0.5,
        *,
        flip_indices: Sequence[int] | None = None,
        swap_left_right: bool = True,
    ) -> None:
        self.p = _check_probability(p)
        self.flip_indices = _flip_setting(flip_indices, swap_left_right)
        self.swap_left_right = bool(swap_left_right)

    def _repr_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"p": self.p}
        if self.flip_indices is not None:
            args["flip_indices"] = self.flip_indices
        if not self.swap_left_right:
            args["swap_left_right"] = False
        return args

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        name = type(self).__name__
        if target is not None:
            height, width = _check_sample(image, target, name)
            keypoints = target.get("keypoints")
            if keypoints is not None:
                # Checked before the coin is tossed, so that a missing permutation fails on
                # the first sample rather than on a random one.
                _require_flip_indices(
                    self.flip_indices, self.swap_left_right, keypoints, _where(target), name
                )
        # The same draw as torchvision's flips, so a seed flips the same samples.
        if torch.rand(1).item() >= self.p:
            return image, None if target is None else dict(target)
        image = self._flip_image(image)
        if target is None:
            return image, None
        out = dict(target)
        extent = height if self._vertical else width
        out["boxes"] = _mirror_boxes(target["boxes"], extent, self._vertical)
        if "masks" in target:
            out["masks"] = self._flip_masks(target["masks"])
        if keypoints is not None:
            mirror = vertical_flip_keypoints if self._vertical else horizontal_flip_keypoints
            out["keypoints"] = mirror(keypoints, extent, self.flip_indices)
        # A mirror image has the same areas: ``area`` is kept, whatever it was computed from.
        return image, out


class RandomHorizontalFlip(_RandomFlip):
    """Flip the image and its target left to right with probability ``p``.

    Boxes ``[x1, y1, x2, y2]`` become ``[W - x2, y1, W - x1, y2]`` (exactly the box of the
    flipped mask), keypoints move to ``x -> W - x`` and swap left and right through
    ``flip_indices``; ``area`` is unchanged.

    Args:
        p: probability of flipping.
        flip_indices: the keypoints' left/right permutation (output keypoint ``k`` is input
            keypoint ``flip_indices[k]``), e.g.
            :data:`~detkit.data.transforms.COCO_PERSON_FLIP_INDICES` or one from
            :func:`~detkit.data.transforms.flip_indices_from_names`.
        swap_left_right: a target with keypoints and no ``flip_indices`` raises
            ``ValueError`` (on every such sample, flipped or not); set ``False`` to mirror
            keypoints that have no left and right without swapping.

    Raises:
        ValueError: for ``p`` outside ``[0, 1]``, an invalid ``flip_indices`` or a
            contradicting ``swap_left_right=False``.

    >>> flip = RandomHorizontalFlip(p=1.0, flip_indices=[0, 2, 1])
    >>> target = {"boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]]), "labels": torch.tensor([1]),
    ...           "keypoints": torch.tensor([[[2.0, 1.0, 2.0], [1.5, 0.5, 2.0], [2.5, 0.5, 1.0]]])}
    >>> _, out = flip(torch.zeros(3, 4, 10), target)
    >>> out["boxes"].tolist(), out["keypoints"][0].tolist()
    ([[7.0, 0.0, 9.0, 2.0]], [[8.0, 1.0, 2.0], [7.5, 0.5, 1.0], [8.5, 0.5, 2.0]])
    """


class RandomVerticalFlip(_RandomFlip):
    """Flip the image and its target top to bottom with probability ``p``.

    Boxes become ``[x1, H - y2, x2, H - y1]`` and keypoints ``y -> H - y``. An upside-down
    mirror image swaps left and right just as a left-right one does, so keypoints need
    ``flip_indices`` here too (or ``swap_left_right=False``); ``area`` is unchanged.

    Args:
        p: probability of flipping.
        flip_indices: the keypoints' left/right permutation.
        swap_left_right: set ``False`` to mirror keypoints without swapping identities.

    >>> _, out = RandomVerticalFlip(p=1.0)(torch.zeros(3, 10, 4),
    ...     {"boxes": torch.tensor([[0.0, 1.0, 2.0, 3.0]]), "labels": torch.tensor([1])})
    >>> out["boxes"].tolist()
    [[0.0, 7.0, 2.0, 9.0]]
    """

    _vertical = True
    _flip_image = staticmethod(F.vertical_flip)
    _flip_masks = staticmethod(F.vertical_flip_mask)


class _Preset(V2Transform):
    """A detkit transform made of one configured v2 transform (``repr`` shows detkit's args)."""

    def __init__(self, transform: Any, **args: Any) -> None:
        super().__init__(transform)
        self._args = args

    def _repr_args(self) -> dict[str, Any]:
        return self._args


class Resize(_Preset):
    """Resize the image and its target (``torchvision.transforms.v2.Resize``).

    Boxes and keypoints scale with the image, masks are resized with nearest-neighbour
    interpolation and ``area`` is recomputed.

    Args:
        size: ``(height, width)``, or an int: the new length of the shorter side (aspect
            ratio kept).
        max_size: with an int ``size``, the longer side is capped at this length.
        interpolation: image interpolation (``v2.InterpolationMode``).
        antialias: antialias when downscaling (tensor images).

    >>> image, target = Resize((4, 6))(torch.zeros(3, 2, 3),
    ...     {"boxes": torch.tensor([[0.0, 0.0, 3.0, 1.0]]), "labels": torch.tensor([1])})
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


class RandomShortestSize(_Preset):
    """Resize so that the shorter side is a random choice of ``min_size`` (``max_size`` caps
    the longer side); the references' ``multiscale`` policy.

    Args:
        min_size: candidate lengths of the shorter side.
        max_size: longest allowed side.
        interpolation: image interpolation.
        antialias: antialias when downscaling.

    >>> image, _ = RandomShortestSize([8], max_size=20)(torch.zeros(3, 4, 6),
    ...     {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
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


class ScaleJitter(_Preset):
    """Large-scale jitter: resize to ``target_size`` times a random factor in ``scale_range``
    (aspect ratio kept); with :class:`FixedSizeCrop`, the references' ``lsj`` policy.

    Args:
        target_size: ``(height, width)`` the scale factor refers to.
        scale_range: ``(min, max)`` of the uniform random factor.
        interpolation: image interpolation.
        antialias: antialias when downscaling.

    >>> torch.manual_seed(0) is not None
    True
    >>> image, _ = ScaleJitter((8, 8), scale_range=(2.0, 2.0))(torch.zeros(3, 4, 4),
    ...     {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
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


class RandomZoomOut(_Preset):
    """Zoom out with probability ``p``: place the image at a random spot of a canvas
    ``side_range`` times larger, filled with ``fill`` (the SSD policy's expansion).

    Args:
        fill: image fill value (one per channel, or one for all); masks get 0.
        side_range: ``(min, max)`` canvas-to-image side ratio, ``min >= 1``.
        p: probability of zooming out.

    >>> torch.manual_seed(0) is not None
    True
    >>> image, target = RandomZoomOut(side_range=(2.0, 2.0), p=1.0)(torch.ones(3, 2, 2),
    ...     {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([1])})
    >>> tuple(image.shape), float(image.sum())
    ((3, 4, 4), 12.0)
    """

    def __init__(
        self, fill: Fill = 0, side_range: tuple[float, float] = (1.0, 4.0), *, p: float = 0.5
    ) -> None:
        transform = v2.RandomZoomOut(fill=_fill_arg(fill), side_range=side_range, p=p)
        super().__init__(transform, fill=fill, side_range=side_range, p=p)


class RandomIoUCrop(_Preset):
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
    >>> image, target = RandomIoUCrop()(torch.zeros(3, 40, 40),
    ...     {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "labels": torch.tensor([1])})
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


class FixedSizeCrop(_Preset):
    """Crop a random window of at most ``size``, then pad right and bottom to exactly ``size``.

    With :class:`ScaleJitter`, the references' ``lsj`` policy. Instances cut away entirely
    are dropped with all their fields; boxes are clipped to the window.

    The reference scripts draw one random number for both offsets (crops along a diagonal
    of the possible positions); detkit draws the top and left offsets independently.

    Args:
        size: ``(height, width)`` of the output (an int for a square).
        fill: image padding value (one per channel, or one for all); masks get 0.

    >>> image, target = FixedSizeCrop((6, 6), fill=0)(torch.ones(3, 4, 4),
    ...     {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1])})
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
