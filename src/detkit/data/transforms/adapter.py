"""Run any ``torchvision.transforms.v2`` transform on detkit's ``(image, target)``.

v2 moves images, boxes (:class:`~torchvision.tv_tensors.BoundingBoxes`), masks
(:class:`~torchvision.tv_tensors.Mask`) and keypoints
(:class:`~detkit.tv_tensors.KeyPointsWithVisibility`) with one set of random parameters.
:class:`V2Transform` runs a v2 transform through :func:`~detkit.data.transforms.apply_transforms`,
which also keeps ``area``, ``iscrowd`` and declared fields aligned, and lets the transform
choose the keypoints' left/right permutation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors

from detkit.data.transforms.core import Transform
from detkit.data.transforms.keypoints import flip_arguments_repr, flip_setting
from detkit.data.transforms.pipeline import apply_transforms, check_transforms
from detkit.tv_tensors import KeyPointsWithVisibility, plain
from detkit.types import image_size

__all__ = ["V2Transform"]


class V2Transform(Transform):
    """Run a ``torchvision.transforms.v2`` transform on a detkit ``(image, target)``.

    The image, ``boxes``, ``masks`` and keypoints go through the v2 transform together (one
    draw of its random parameters), as tv_tensors; then, as for every pipeline
    (:func:`~detkit.data.transforms.apply_transforms`), keypoints that left the canvas are
    ``(0, 0, 0)``, instances whose box lost all width or height (an object cropped away) are
    dropped from every per-instance field, instances ``v2.SanitizeBoundingBoxes`` drops lose
    all their fields, and ``area`` (if present) is recomputed for the instances whose box
    changed size. Fields come back with the class they came in with.

    A v2 flip swaps left and right keypoints through the keypoints' ``flip_indices``
    (:class:`~detkit.tv_tensors.KeyPointsWithVisibility`); ``flip_indices`` here overrides
    them for this transform. Keypoint flips map ``x -> W - x``
    (see :func:`~detkit.data.transforms.horizontal_flip_keypoints`), not v2's ``W - 1 - x``.

    Args:
        transform: a ``torchvision.transforms.v2`` transform (or ``v2.Compose``), or any
            callable ``(image, target) -> (image, target)`` on tv_tensors.
        flip_indices: left/right keypoint permutation applied when the transform mirrors.
        swap_left_right: set ``False`` to mirror keypoints without swapping identities
            (keypoints without a left and right).

    >>> from torchvision.transforms import v2
    >>> pad = V2Transform(v2.Pad([2, 0, 0, 0]))  # two columns on the left
    >>> target = {
    ...     "boxes": torch.tensor([[0.0, 0, 2, 2]]),
    ...     "labels": torch.tensor([1]),
    ...     "keypoints": torch.tensor([[[1.0, 1.0, 2.0]]]),
    ...     "area": torch.tensor([4.0]),
    ... }
    >>> image, target = pad(torch.zeros(3, 4, 4, dtype=torch.uint8), target)
    >>> image.shape, target["boxes"].tolist(), target["keypoints"].tolist()
    (torch.Size([3, 4, 6]), [[2.0, 0.0, 4.0, 2.0]], [[[3.0, 1.0, 2.0]]])
    """

    def __init__(
        self,
        transform: Any,
        *,
        flip_indices: Sequence[int] | None = None,
        swap_left_right: bool = True,
    ) -> None:
        if isinstance(transform, Transform):
            raise TypeError(
                f"transform is already a detkit transform ({type(transform).__name__}); "
                "V2Transform wraps torchvision.transforms.v2 transforms"
            )
        check_transforms(transform, argument="transform")
        self.transform = transform
        self.flip_indices = flip_setting(flip_indices, swap_left_right)
        self.swap_left_right = bool(swap_left_right)

    def _repr_args(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            **flip_arguments_repr(self.flip_indices, self.swap_left_right),
        }

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        if target is None:
            out = self.transform(_as_v2_image(image))
            return (plain(out) if type(image) is torch.Tensor else out), None
        keypoints = target.get("keypoints")
        override = self.flip_indices
        if override is None and not self.swap_left_right and keypoints is not None:
            override = tuple(range(keypoints.shape[1]))
        if override is None or not isinstance(keypoints, torch.Tensor):
            return apply_transforms(self.transform, image, target)
        canvas = getattr(keypoints, "canvas_size", None) or image_size(image)
        chosen = KeyPointsWithVisibility(
            plain(keypoints), canvas_size=canvas, flip_indices=override
        )
        new_image, out = apply_transforms(self.transform, image, {**target, "keypoints": chosen})
        moved = out.get("keypoints")
        if isinstance(moved, KeyPointsWithVisibility):
            if isinstance(keypoints, KeyPointsWithVisibility):
                out["keypoints"] = moved.wrap(
                    plain(moved), like=moved, flip_indices=keypoints.flip_indices
                )
            else:
                out["keypoints"] = plain(moved)
        return new_image, out


def _as_v2_image(image: Any) -> Any:
    if type(image) is torch.Tensor:
        return image.as_subclass(tv_tensors.Image)
    return image
