"""Running a pipeline on a sample: :func:`apply_transforms` and :class:`Compose`.

Every detkit dataset runs its ``transforms=`` through :func:`apply_transforms`, and so does
:class:`Compose`. Whatever the pipeline holds (detkit transforms, ``torchvision.transforms.v2``
transforms, a ``v2.Compose``, one nested in the other, or a plain callable), the sample comes
out with every field aligned:

* the sample enters as tv_tensors (:func:`detkit.types.to_tv_tensors`), so v2 transforms
  move boxes, masks and keypoints with the image;
* fields v2 does not know (``area``, ``iscrowd``, keypoints, declared ``instance_fields``)
  follow the instances that ``v2.SanitizeBoundingBoxes`` keeps;
* boxes another transform left in another format come back as XYXY; instances whose box a
  crop reduced to nothing are dropped; ``area`` is recomputed for the instances whose box
  changed size (a flip or a shift keeps it);
* a transform that moved the image but not a field (the field's ``canvas_size`` or shape is
  left behind) is an error naming the field, never a silent misalignment, and
  ``torchvision.transforms`` v1 transforms, which take the image alone, are refused up front.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from detkit.data.transforms.core import (
    TRACKER_KEY,
    InstanceTracker,
    Transform,
    drop_collapsed,
    per_instance_keys,
    recompute_area,
    settle,
)
from detkit.tv_tensors import KeyPointsWithVisibility, plain, to_xyxy
from detkit.types import image_size, sample_name, to_tv_tensors

__all__ = ["Compose", "apply_transforms", "check_transforms"]

logger = logging.getLogger(__name__)


def _children(transform: Any) -> list[Any]:
    """The transforms a container holds (detkit's Compose, v2 containers, V2Transform)."""
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple, torch.nn.ModuleList)):
        return list(inner)
    if isinstance(transform, Transform) and hasattr(transform, "transform"):
        return [transform.transform]  # V2Transform and the presets built on it
    return []


def _walk(transform: Any) -> Iterable[tuple[str, Any]]:
    stack = [("transforms", transform)]
    while stack:
        path, item = stack.pop()
        yield path, item
        for i, child in reversed(list(enumerate(_children(item)))):
            stack.append((f"{path}[{i}]" if _children(item) else path, child))


def check_transforms(transforms: Any, *, argument: str = "transforms") -> None:
    """Refuse a pipeline that cannot keep a sample aligned, before it runs.

    ``torchvision.transforms`` (v1) transforms take the image alone: inside a pipeline they
    would move the image and leave the target behind (or fail with an unrelated error).

    Args:
        transforms: the pipeline (any callable), searched through detkit's and v2's
            containers.
        argument: the argument's name, for the error message.

    Raises:
        TypeError: naming the position of a v1 transform, or for a non-callable.

    >>> import torchvision.transforms as v1
    >>> check_transforms(Compose([]))
    >>> check_transforms(v2.Compose([v2.RandomHorizontalFlip(), v1.ToTensor()]))
    Traceback (most recent call last):
    ...
    TypeError: transforms[1] is ToTensor from torchvision.transforms (v1), which
    takes the image alone and would leave the target behind; use detkit's
    transform of that name or torchvision.transforms.v2's
    """
    if not callable(transforms):
        raise TypeError(f"{argument} must be callable, got {type(transforms).__name__}")
    for path, item in _walk(transforms):
        if type(item).__module__.startswith("torchvision.transforms.transforms"):
            raise TypeError(
                f"{path.replace('transforms', argument, 1)} is {type(item).__name__} from "
                "torchvision.transforms (v1), which takes the image alone and would leave the "
                "target behind; use detkit's transform of that name or torchvision.transforms.v2's"
            )


def _self_aligning(transform: Any) -> bool:
    """Whether a pipeline is made of detkit transforms only (each keeps fields aligned).

    A ``V2Transform`` counts: it runs its v2 transform through a pipeline of its own.
    """
    if not isinstance(transform, Transform):
        return False
    inner = getattr(transform, "transforms", None)
    return not isinstance(inner, list) or all(_self_aligning(t) for t in inner)


def _v2_mirrors(transform: Any) -> bool:
    """Whether a pipeline holds a v2 flip that relies on the keypoints' own flip_indices
    (not one inside a ``V2Transform`` given ``flip_indices`` or ``swap_left_right=False``)."""
    stack = [transform]
    while stack:
        item = stack.pop()
        if isinstance(item, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)):
            return True
        overridden = getattr(item, "flip_indices", None) is not None or not getattr(
            item, "swap_left_right", True
        )
        if not (isinstance(item, Transform) and overridden):
            stack.extend(_children(item))
    return False


def apply_transforms(
    transforms: Callable[..., Any],
    image: Any,
    target: Mapping[str, Any] | None,
    *,
    instance_fields: Sequence[str] = (),
    source: Any = None,
) -> tuple[Any, Any]:
    """Run ``transforms(image, target)`` so that every field stays aligned (module docs).

    Args:
        transforms: a detkit transform, a v2 transform, a ``v2.Compose`` or any callable
            ``(image, target) -> (image, target)``.
        image: a PIL image or a ``Tensor[C, H, W]``.
        target: the target dict, or ``None`` at inference (only the image is transformed).
        instance_fields: extra per-instance fields (tensors or lists, one entry per instance)
            to keep aligned besides the contract's.
        source: the sample's file, for error messages.

    Returns:
        ``(image, target)``; fields given as plain tensors come back as plain tensors, all
        others as their tv_tensor carriers (unless the pipeline itself converts them, e.g.
        with ``v2.ToPureTensor``); ``boxes`` are XYXY.

    Raises:
        ValueError: naming the sample and the field when a transform left fields out of step.
        TypeError: when the pipeline does not return an ``(image, target)`` pair.

    >>> from torchvision.transforms import v2
    >>> target = {
    ...     "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]),
    ...     "labels": torch.tensor([1]),
    ...     "iscrowd": torch.tensor([0]),
    ...     "area": torch.tensor([4.0]),
    ... }
    >>> image, target = apply_transforms(
    ...     v2.RandomHorizontalFlip(p=1.0),
    ...     torch.zeros(3, 4, 10, dtype=torch.uint8),
    ...     target,
    ... )
    >>> target["boxes"]  # plain in, plain out: v2 alone would not move it
    tensor([[ 8.,  0., 10.,  2.]])
    """
    if isinstance(transforms, Compose):  # one pass of the bookkeeping, not two
        fields = (*instance_fields, *transforms.instance_fields)
        return _apply(transforms, transforms._chain, image, target, fields, source)
    return _apply(transforms, transforms, image, target, instance_fields, source)


def _apply(
    pipeline: Any,
    run: Callable[..., Any],
    image: Any,
    target: Mapping[str, Any] | None,
    instance_fields: Sequence[str],
    source: Any,
) -> tuple[Any, Any]:
    """:func:`apply_transforms` of ``pipeline``, whose transforms ``run`` calls."""
    transforms = run
    if target is None:
        return transforms(image, None)
    if not isinstance(target, Mapping):
        raise TypeError(f"target must be a dict or None, got {type(target).__name__}")
    if TRACKER_KEY in target:  # inside another pipeline, which settles at its end
        return transforms(image, target)
    where = sample_name(target, source=source)
    if not isinstance(target.get("boxes"), torch.Tensor):
        raise ValueError(
            f"{where}: the target needs 'boxes' (a Tensor[N, 4], N = 0 for an image without "
            f"objects), got {type(target.get('boxes')).__name__}"
        )
    plain_keys = {k for k, v in target.items() if type(v) is torch.Tensor}
    plain_image = type(image) is torch.Tensor
    tv_image, sample = to_tv_tensors(image, target)
    boxes_in = plain(sample["boxes"])
    canvas_in = image_size(image)
    fields = tuple(instance_fields)
    tracked = bool(fields) or not _self_aligning(pipeline)
    keypoints = sample.get("keypoints")
    if (
        isinstance(keypoints, KeyPointsWithVisibility)
        and keypoints.shape[1]
        and keypoints.flip_indices is None
        and _v2_mirrors(pipeline)
    ):
        # Checked before any coin is tossed, so that it fails on the first sample.
        raise ValueError(
            f"{where} has keypoints (K = {keypoints.shape[1]}) without flip_indices and the "
            "pipeline contains a torchvision flip: a flip must swap left and right keypoints. "
            "Give the dataset flip_indices (COCO_PERSON_FLIP_INDICES, flip_indices_from_names"
            "(names)), or use tuple(range(K)) for keypoints that have no left and right"
        )
    if tracked:
        per_instance_keys({**sample, TRACKER_KEY: {"fields": fields}})  # shapes, up front
        num = boxes_in.shape[0]
        sample[TRACKER_KEY] = {
            "instances": InstanceTracker.new(num, canvas_in),
            "fields": fields,
            "count": num,
        }
    try:
        out = transforms(tv_image, sample)
    except (ValueError, TypeError) as exc:
        # Name the sample, which a transform deep in the pipeline may not know.
        if type(exc) in (ValueError, TypeError) and where not in str(exc):
            raise type(exc)(f"{where}: {exc}") from exc
        raise
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], Mapping)):
        raise TypeError(
            f"{where}: the transforms must return an (image, target) pair, got "
            f"{type(out).__name__}; is {type(pipeline).__name__} a transform of the image "
            "alone?"
        )
    new_image, result = out
    result = dict(result)
    if "boxes" not in result:
        raise ValueError(f"{where}: the transforms dropped the field 'boxes'")
    result["boxes"] = to_xyxy(result["boxes"])
    if tracked:
        if not isinstance(result.get(TRACKER_KEY), Mapping):
            raise ValueError(
                f"{where}: a transform rebuilt the target without the key {TRACKER_KEY!r}, "
                "which keeps instances aligned while the pipeline runs; return the target "
                "dict with all its keys"
            )
        result = settle(result)
        origin = plain(result[TRACKER_KEY]["instances"])[:, 0]
        result = _after_geometry(result, boxes_in, origin)
        del result[TRACKER_KEY]
        # detkit's own transforms keep these invariants; other code is checked.
        per_instance_keys({**result, TRACKER_KEY: {"fields": fields}})
        _check_canvas(new_image, result, where)
    if plain_image and isinstance(new_image, tv_tensors.TVTensor):
        new_image = plain(new_image)
    for key in plain_keys & result.keys():
        if isinstance(result[key], torch.Tensor):
            result[key] = plain(result[key])
    return new_image, result


def _after_geometry(
    target: dict[str, Any], boxes_in: torch.Tensor, origin: torch.Tensor
) -> dict[str, Any]:
    """Drop instances a crop cut away and recompute the area of those whose size changed."""
    boxes = plain(target["boxes"])
    before = boxes_in[origin].to(boxes.dtype)
    if torch.equal(boxes, before):
        return target
    sizes, sizes_before = boxes[:, 2:] - boxes[:, :2], before[:, 2:] - before[:, :2]
    collapsed = (sizes <= 0).any(1) & (sizes_before > 0).all(1)
    if bool(collapsed.any()):
        target = drop_collapsed(target)
        keep = ~collapsed
        sizes, sizes_before, before = sizes[keep], sizes_before[keep], before[keep]
    resized = (sizes != sizes_before).any(1)
    if not bool(resized.any()):
        return target
    return recompute_area(target, resized, boxes_before=before)


def _check_canvas(image: Any, target: Mapping[str, Any], where: str) -> None:
    height, width = image_size(image)
    for key, value in target.items():
        canvas = getattr(value, "canvas_size", None)
        if canvas is None and isinstance(value, tv_tensors.Mask) and value.ndim == 3:
            canvas = tuple(value.shape[-2:])
        if canvas is not None and tuple(canvas) != (height, width):
            cause = "a transform moved the image without it (a callable that transforms the image alone?)"
            if abs(canvas[0] - height) <= 1 and abs(canvas[1] - width) <= 1:
                # torchvision's rotate(expand=True) rounds the two sizes apart, for some angles.
                cause = (
                    "within a pixel, as torchvision's rotate with expand=True (v2.RandomRotation) "
                    "leaves boxes for some angles, rounding their size apart from the image's "
                    "(pytorch/vision#8654); rotate without expand, after a v2.RandomZoomOut or "
                    "v2.Pad if corners must stay in the image"
                )
            raise ValueError(
                f"{where}: after the transforms the image is {width}x{height} (WxH) but field "
                f"'{key}' belongs to a {canvas[1]}x{canvas[0]} image: {cause}"
            )


class Compose(Transform):
    """Apply transforms one after the other, keeping every field aligned.

    Each entry is a detkit transform, a ``torchvision.transforms.v2`` transform (or
    ``v2.Compose``) or any callable ``(image, target) -> (image, target)``; the whole
    pipeline runs through :func:`apply_transforms`, so a v2 flip moves the boxes, masks and
    keypoints with the image and ``v2.SanitizeBoundingBoxes`` drops every field of the
    instances it removes.

    Args:
        transforms: the transforms, applied in order.
        instance_fields: extra per-instance fields to keep aligned (see
            :func:`~detkit.data.transforms.per_instance_keys`).

    Raises:
        TypeError: for an entry that is not callable, or a ``torchvision.transforms`` v1
            transform.

    >>> from detkit.data.transforms import RandomHorizontalFlip, ToDtype
    >>> pipeline = Compose(
    ...     [RandomHorizontalFlip(p=1.0), ToDtype(torch.float32, scale=True)]
    ... )
    >>> boxes = torch.tensor([[0.0, 0, 1, 2]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> white = torch.full((3, 2, 4), 255, dtype=torch.uint8)
    >>> image, target = pipeline(white, target)
    >>> image.dtype, target["boxes"].tolist()
    (torch.float32, [[3.0, 0.0, 4.0, 2.0]])
    """

    def __init__(
        self, transforms: Iterable[Callable[..., Any]], *, instance_fields: Sequence[str] = ()
    ) -> None:
        items = list(transforms)
        for i, transform in enumerate(items):
            if not callable(transform):
                raise TypeError(
                    f"transforms[{i}] must be callable (image, target) -> (image, target), got "
                    f"{type(transform).__name__}"
                )
        self.transforms = items
        check_transforms(self)
        if isinstance(instance_fields, str):
            raise TypeError(
                f"instance_fields must be a sequence of keys, got the string {instance_fields!r}"
            )
        self.instance_fields = tuple(instance_fields)

    def _transform(self, image: Any, target: Any) -> tuple[Any, Any]:
        return _apply(self, self._chain, image, target, self.instance_fields, None)

    def _chain(self, image: Any, target: Any) -> tuple[Any, Any]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        lines = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{lines}\n])"
