"""The machinery every detkit transform shares: the base class, ``Compose`` and the
per-instance bookkeeping that keeps a target's fields aligned.

A *per-instance field* is a target value whose first dimension is the number of instances
``N`` (the number of boxes): ``boxes``, ``labels``, ``masks``, ``keypoints``, ``area``,
``iscrowd``, and any other tensor a user adds with first dimension ``N`` (say
``target["track_ids"]``). ``image_id`` never is. When a transform drops instances, it
drops them from every per-instance field at once (:func:`select_instances`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from PIL import Image

from detkit.ops import box_area, masks_area
from detkit.types import PER_INSTANCE_FIELDS, image_size

__all__ = [
    "Compose",
    "Transform",
    "per_instance_keys",
    "select_instances",
]

ImageLike = Any  # a PIL image or a Tensor[C, H, W]

logger = logging.getLogger(__name__)


def _where(target: Mapping[str, Any] | None) -> str:
    """How error messages name a sample: by its ``image_id`` when it has one."""
    if target is not None and "image_id" in target:
        image_id = target["image_id"]
        if isinstance(image_id, torch.Tensor) and image_id.numel() == 1:
            image_id = image_id.item()
        return f"sample image_id={image_id}"
    return "sample"


def per_instance_keys(target: Mapping[str, Any]) -> list[str]:
    """The keys of ``target`` whose values are per-instance tensors (first dimension ``N``).

    ``N`` is the number of boxes. The standard fields (``boxes``, ``labels``, ``masks``,
    ``keypoints``, ``area``, ``iscrowd``) count when present; so does any other tensor with at
    least one dimension whose first dimension is ``N``. ``image_id`` never counts.

    Raises:
        ValueError: when ``boxes`` is missing or a standard field's first dimension is not
            ``N``, naming the sample's ``image_id``.

    >>> target = {"boxes": torch.zeros(2, 4), "labels": torch.ones(2, dtype=torch.int64),
    ...           "track_ids": torch.tensor([7, 9]), "image_id": 3}
    >>> per_instance_keys(target)
    ['boxes', 'labels', 'track_ids']
    """
    boxes = target.get("boxes")
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
        shown = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{_where(target)}: field 'boxes' must be a Tensor[N, 4], got {shown}")
    num = boxes.shape[0]
    keys = []
    for key, value in target.items():
        if key == "image_id" or not isinstance(value, torch.Tensor):
            if key in PER_INSTANCE_FIELDS and key != "boxes":
                raise ValueError(
                    f"{_where(target)}: field '{key}' must be a tensor, got {type(value).__name__}"
                )
            continue
        if value.ndim >= 1 and value.shape[0] == num:
            keys.append(key)
        elif key in PER_INSTANCE_FIELDS:
            raise ValueError(
                f"{_where(target)}: field '{key}' has shape {tuple(value.shape)} but there are "
                f"{num} boxes: every per-instance field needs first dimension N = {num}"
            )
    return keys


def select_instances(target: Mapping[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """A new target holding only the instances ``keep`` selects, in every per-instance field.

    Args:
        target: the target (not modified).
        keep: a boolean ``Tensor[N]`` or an integer index tensor into the instances.

    Returns:
        a new dict; per-instance fields (see :func:`per_instance_keys`) are indexed with
        ``keep``, everything else is carried over as is.

    >>> target = {"boxes": torch.tensor([[0.0, 0, 2, 2], [1, 1, 1, 3]]),
    ...           "labels": torch.tensor([4, 5]), "image_id": 0}
    >>> select_instances(target, torch.tensor([True, False]))["labels"]
    tensor([4])
    """
    keys = per_instance_keys(target)
    out = dict(target)
    for key in keys:
        out[key] = target[key][keep]
    return out


def _check_sample(image: ImageLike, target: Mapping[str, Any], name: str) -> tuple[int, int]:
    """Cheap shape checks of a sample before a transform; returns ``(height, width)``.

    The full contract check is :func:`detkit.types.validate_target`; this catches what would
    make a transform misbehave silently (masks or keypoints of the wrong shape).
    """
    height, width = _image_size(image, name)
    per_instance_keys(target)
    masks = target.get("masks")
    if masks is not None and (masks.ndim != 3 or tuple(masks.shape[1:]) != (height, width)):
        raise ValueError(
            f"{name}: {_where(target)}: field 'masks' must be a Tensor[N, {height}, {width}] "
            f"matching the {width}x{height} (WxH) image, got shape {tuple(masks.shape)}"
        )
    keypoints = target.get("keypoints")
    if keypoints is not None and (keypoints.ndim != 3 or keypoints.shape[-1] != 3):
        raise ValueError(
            f"{name}: {_where(target)}: field 'keypoints' must be a Tensor[N, K, 3] "
            f"(x, y, visibility), got shape {tuple(keypoints.shape)}"
        )
    return height, width


def _image_size(image: ImageLike, name: str) -> tuple[int, int]:
    if isinstance(image, torch.Tensor) and image.ndim != 3:
        raise TypeError(f"{name}: image must be a Tensor[C, H, W], got shape {tuple(image.shape)}")
    if not isinstance(image, (torch.Tensor, Image.Image)):
        raise TypeError(
            f"{name}: image must be a PIL image or a Tensor[C, H, W], got {type(image).__name__}"
        )
    return image_size(image)


def _recompute_area(target: dict[str, Any]) -> None:
    """Set ``area`` from the masks when present, else from the boxes (only if it exists)."""
    if "area" not in target:
        return
    masks = target.get("masks")
    area = masks_area(masks) if masks is not None else box_area(target["boxes"])
    target["area"] = area.to(target["area"].dtype)


def _drop_degenerate(target: dict[str, Any]) -> dict[str, Any]:
    """Drop instances whose box has no width or height (what crops leave of lost objects)."""
    boxes = target["boxes"]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if bool(keep.all()):
        return target
    logger.debug("%s: dropped %d instance(s) cut away", _where(target), int((~keep).sum()))
    return select_instances(target, keep)


class Transform:
    """Base class of detkit's paired transforms: ``(image, target) -> (image, target)``.

    ``image`` is a PIL image or a ``Tensor[C, H, W]``; ``target`` is a dict in the target
    contract (:mod:`detkit.types`), or ``None`` at inference (only the image is transformed
    then). Every transform returns a new target dict and never modifies its inputs, so a
    target cached by a dataset stays intact. Random parameters are drawn from torch's global
    generator, so ``torch.manual_seed`` reproduces a pipeline.

    Subclasses implement ``_transform(image, target)`` (``target`` may be ``None``) and may
    keep fields aligned with :func:`select_instances`.

    >>> class DropCrowds(Transform):
    ...     def _transform(self, image, target):
    ...         if target is None:
    ...             return image, None
    ...         return image, select_instances(target, target["iscrowd"] == 0)
    >>> _, target = DropCrowds()(torch.zeros(3, 8, 8), {"boxes": torch.zeros(2, 4),
    ...     "labels": torch.tensor([1, 2]), "iscrowd": torch.tensor([1, 0])})
    >>> target["labels"]
    tensor([2])
    """

    def __call__(
        self, image: ImageLike, target: Mapping[str, Any] | None = None
    ) -> tuple[Any, Any]:
        if target is not None and not isinstance(target, Mapping):
            raise TypeError(
                f"{type(self).__name__}: target must be a dict or None, got {type(target).__name__}"
            )
        return self._transform(image, target)

    def _transform(self, image: ImageLike, target: Any) -> tuple[Any, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement _transform")

    def _repr_args(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms one after the other.

    Each entry is a detkit transform or any callable ``(image, target) -> (image, target)``.
    A ``torchvision.transforms.v2`` transform is wrapped in :class:`V2Transform`
    automatically: called directly on a detkit target, v2 would see plain tensors and leave
    the boxes unchanged while moving the image.

    Args:
        transforms: the transforms, applied in order.

    >>> from detkit.data.transforms import RandomHorizontalFlip, ToDtype
    >>> pipeline = Compose([RandomHorizontalFlip(p=1.0), ToDtype(torch.float32, scale=True)])
    >>> image, target = pipeline(torch.full((3, 2, 4), 255, dtype=torch.uint8),
    ...                          {"boxes": torch.tensor([[0.0, 0, 1, 2]]), "labels": torch.tensor([1])})
    >>> image.dtype, target["boxes"].tolist()
    (torch.float32, [[3.0, 0.0, 4.0, 2.0]])
    """

    def __init__(self, transforms: Iterable[Callable[..., Any]]) -> None:
        from torchvision.transforms import v2

        from detkit.data.transforms.adapter import V2Transform

        items = []
        for i, transform in enumerate(transforms):
            if isinstance(transform, v2.Transform):
                transform = V2Transform(transform)
            elif type(transform).__module__.startswith("torchvision.transforms.transforms"):
                raise TypeError(
                    f"transforms[{i}] is {type(transform).__name__} from torchvision.transforms "
                    "(v1), which takes the image alone and would leave the target behind; use "
                    "detkit's transform of that name or torchvision.transforms.v2's"
                )
            elif not callable(transform):
                raise TypeError(
                    f"transforms[{i}] must be callable (image, target) -> (image, target), got "
                    f"{type(transform).__name__}"
                )
            items.append(transform)
        self.transforms = items

    def _transform(self, image: ImageLike, target: Any) -> tuple[Any, Any]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        lines = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{lines}\n])"
