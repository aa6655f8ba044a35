"""Random flips of the image and its whole target, keypoints' left and right included.

Images and masks are flipped by torchvision v2's kernels; boxes get the same numbers as v2's
box kernel (tested) in one tensor op, since flips run on every training sample; keypoints
follow :mod:`detkit.data.transforms.keypoints` (``x -> W - x`` and a left/right swap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detkit.data.transforms.core import Transform, check_sample
from detkit.data.transforms.keypoints import (
    flip_arguments_repr,
    flip_setting,
    mirror_keypoints,
    require_flip_indices,
)
from detkit.tv_tensors import KeyPointsWithVisibility, plain
from detkit.types import sample_name

__all__ = ["RandomHorizontalFlip", "RandomVerticalFlip"]


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
        self.flip_indices = flip_setting(flip_indices, swap_left_right)
        self.swap_left_right = bool(swap_left_right)

    def _repr_args(self) -> dict[str, Any]:
        return {"p": self.p, **flip_arguments_repr(self.flip_indices, self.swap_left_right)}

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        name = type(self).__name__
        flip_indices = self.flip_indices
        if target is not None:
            height, width = check_sample(image, target, name)
            keypoints = target.get("keypoints")
            if keypoints is not None:
                if flip_indices is None and self.swap_left_right:
                    # The keypoints' own permutation (KeyPointsWithVisibility), if they carry one.
                    flip_indices = getattr(keypoints, "flip_indices", None)
                # Checked before the coin is tossed, so that a missing permutation fails on
                # the first sample rather than on a random one.
                require_flip_indices(
                    flip_indices, self.swap_left_right, keypoints, sample_name(target), name
                )
        # The same draw as torchvision's flips, so a seed flips the same samples.
        if torch.rand(1).item() >= self.p:
            return image, None if target is None else dict(target)
        image = self._flip_image(image)
        if target is None:
            return image, None
        out = dict(target)
        extent = height if self._vertical else width
        boxes = target["boxes"]
        mirrored = _mirror_boxes(plain(boxes), extent, self._vertical)
        out["boxes"] = _like(mirrored, boxes)
        if "masks" in target:
            masks = target["masks"]
            out["masks"] = _like(self._flip_masks(plain(masks)), masks)
        if keypoints is not None:
            # Shape and permutation were checked above (check_sample, require_flip_indices).
            out["keypoints"] = mirror_keypoints(
                keypoints, int(self._vertical), extent, flip_indices
            )
        # A mirror image has the same areas: ``area`` is kept, whatever it was computed from.
        return image, out


def _like(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` with the tv_tensor class (and metadata) of ``like``, if it has one."""
    if isinstance(like, (tv_tensors.TVTensor, KeyPointsWithVisibility)):
        return tv_tensors.wrap(tensor, like=like)
    return tensor


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
    >>> target = {
    ...     "boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]]),
    ...     "labels": torch.tensor([1]),
    ...     "keypoints": torch.tensor(
    ...         [[[2.0, 1.0, 2.0], [1.5, 0.5, 2.0], [2.5, 0.5, 1.0]]]
    ...     ),
    ... }
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

    >>> boxes = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> _, out = RandomVerticalFlip(p=1.0)(torch.zeros(3, 10, 4), target)
    >>> out["boxes"].tolist()
    [[0.0, 7.0, 2.0, 9.0]]
    """

    _vertical = True
    _flip_image = staticmethod(F.vertical_flip)
    _flip_masks = staticmethod(F.vertical_flip_mask)
