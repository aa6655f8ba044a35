"""The machinery every detkit transform shares: the base class and the per-instance
bookkeeping that keeps a target's fields aligned.

A *per-instance field* is a target value with one entry per instance: the contract's
``boxes``, ``labels``, ``masks``, ``keypoints``, ``area`` and ``iscrowd``, plus the fields a
user declares (``instance_fields=`` of the datasets and of
:class:`~detkit.data.transforms.Compose`; a declared field may be a tensor or a list, such as
``target["names"]``). Nothing else is ever touched: a tensor that merely happens to be ``N``
long (``orig_size`` with two instances) is left as it is (from 5 instances on, with a
warning when instances are dropped). When a transform drops instances, it drops them from
every per-instance field at once (:func:`select_instances`).

While a pipeline runs (:func:`~detkit.data.transforms.apply_transforms`), the target also
holds an *instance tracker* under :data:`TRACKER_KEY`: a small
:class:`~torchvision.tv_tensors.Mask` subclass that ``v2.SanitizeBoundingBoxes`` filters
together with the boxes, so that fields torchvision does not know (``area``, ``iscrowd``,
keypoints, declared fields) follow the instances it keeps. The tracker is removed before
the sample leaves the pipeline.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detkit.ops import box_area, masks_area
from detkit.tv_tensors import GEOMETRIC_FUNCTIONALS, plain, to_xyxy
from detkit.types import (
    PER_INSTANCE_FIELDS,
    Problem,
    image_size,
    instance_shape_problem,
    sample_name,
)

# The module's helpers shared with the other transform modules (check_sample, settle,
# recompute_area, drop_collapsed, InstanceTracker, TRACKER_KEY) are public names documented
# here but not exported from the package.
__all__ = ["Transform", "per_instance_keys", "select_instances"]

ImageLike = Any  # a PIL image or a Tensor[C, H, W]

logger = logging.getLogger(__name__)

#: Key of the instance tracker in a target while a pipeline runs (see the module docs).
TRACKER_KEY = "__detkit_instances__"


class InstanceTracker(tv_tensors.Mask):
    """``[N, 2]`` int64 rows ``(original index, current row)``, one per surviving instance.

    A :class:`~torchvision.tv_tensors.Mask` so that ``v2.SanitizeBoundingBoxes`` filters it
    with the boxes; its own kernels leave its values alone under every geometric transform and
    keep its ``canvas_size`` equal to the image's, which v2 compares across a sample.
    """

    canvas_size: tuple[int, int]

    @classmethod
    def new(cls, num: int, canvas_size: tuple[int, int]) -> InstanceTracker:
        rows = torch.arange(num, dtype=torch.int64)
        return cls.wrap_as(torch.stack([rows, rows], dim=1), canvas_size)

    @classmethod
    def wrap_as(cls, tensor: torch.Tensor, canvas_size: tuple[int, int]) -> InstanceTracker:
        tracker = tensor.as_subclass(cls)
        tracker.canvas_size = canvas_size
        return tracker

    @classmethod
    def wrap(cls, tensor: torch.Tensor, like: Any, **kwargs: Any) -> InstanceTracker:
        return cls.wrap_as(tensor, kwargs.get("canvas_size", like.canvas_size))

    @classmethod
    def _wrap_output(cls, output: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        like = next(x for x in args if isinstance(x, InstanceTracker))
        if isinstance(output, torch.Tensor) and not isinstance(output, InstanceTracker):
            return cls.wrap(output, like)
        return output


def _keep_values(functional: Any) -> Any:
    """A tracker kernel: values unchanged, canvas as ``functional`` makes it for boxes."""

    def kernel(tracker: InstanceTracker, *args: Any, **kwargs: Any) -> InstanceTracker:
        probe = tv_tensors.BoundingBoxes(
            torch.zeros(0, 4), format="XYXY", canvas_size=tracker.canvas_size
        )
        canvas = functional(probe, *args, **kwargs).canvas_size
        return InstanceTracker.wrap_as(plain(tracker), canvas)

    return kernel


for _functional in GEOMETRIC_FUNCTIONALS:
    F.register_kernel(_functional, InstanceTracker)(_keep_values(_functional))
for _functional in (F.horizontal_flip, F.vertical_flip, F.to_dtype):
    F.register_kernel(_functional, InstanceTracker)(lambda tracker, *args, **kwargs: tracker)
F.register_kernel(F.get_size, InstanceTracker)(lambda tracker: list(tracker.canvas_size))


def _declared(target: Mapping[str, Any]) -> tuple[str, ...]:
    state = target.get(TRACKER_KEY)
    return tuple(state["fields"]) if isinstance(state, Mapping) else ()


def per_instance_keys(target: Mapping[str, Any]) -> list[str]:
    """The keys of ``target`` that hold per-instance fields, in the target's order.

    The contract's fields (``boxes``, ``labels``, ``masks``, ``keypoints``, ``area``,
    ``iscrowd``) count when present, and so do the fields declared for the running pipeline
    (``instance_fields=``). Other keys never count, whatever their length.

    Raises:
        ValueError: when ``boxes`` is not a ``Tensor[N, 4]``, or a per-instance field is not
            a tensor (lists are allowed for declared fields) or has a length other than ``N``,
            naming the sample and the field.

    >>> target = {
    ...     "boxes": torch.zeros(2, 4),
    ...     "labels": torch.ones(2, dtype=torch.int64),
    ...     "track_ids": torch.tensor([7, 9]),
    ...     "image_id": 3,
    ... }
    >>> per_instance_keys(target)
    ['boxes', 'labels']
    """
    declared = _declared(target)
    _raise(target, instance_shape_problem(target, instance_fields=declared))
    return [k for k in target if k in PER_INSTANCE_FIELDS or k in declared]


def _raise(target: Mapping[str, Any], problem: Problem | None, name: str | None = None) -> None:
    """Raise ``problem`` (from :func:`detkit.types.instance_shape_problem`), naming the
    sample (and the transform ``name``)."""
    if problem is not None:
        where = sample_name(target) if name is None else f"{name}: {sample_name(target)}"
        raise ValueError(f"{where}: field '{problem.field}' {problem.message}")


def _index(value: Any, keep: torch.Tensor) -> Any:
    if isinstance(value, (list, tuple)):
        rows = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        return type(value)(value[i] for i in rows.tolist())
    if isinstance(value, tv_tensors.TVTensor):
        return tv_tensors.wrap(plain(value)[keep.to(value.device)], like=value)
    return value[keep.to(value.device)]


def settle(target: Mapping[str, Any]) -> dict[str, Any]:
    """Realign fields left behind by a transform that dropped instances it knew of.

    ``v2.SanitizeBoundingBoxes`` drops boxes, masks and labels, and the instance tracker
    (see the module docs) with them, but no other field. This indexes every per-instance
    field still at its earlier length with the tracker, so that all of them agree again.
    Without a tracker the target is returned as a new dict, unchanged.

    Raises:
        ValueError: when a field can be realigned neither way (its length is neither the
            number of boxes nor the number before the drop), or a transform dropped boxes
            without the tracker (a callable that filters some fields by hand).
    """
    out = dict(target)
    state = target.get(TRACKER_KEY)
    if not isinstance(state, Mapping):
        return out
    tracker = state["instances"]
    num = target["boxes"].shape[0]
    if tracker.shape[0] != num:
        raise ValueError(
            f"{sample_name(target)}: a transform left {num} boxes but kept {tracker.shape[0]} "
            "instances in its bookkeeping: it dropped boxes without dropping the rest of each "
            "instance. Drop instances with detkit's SanitizeBoxes or select_instances, or with "
            "v2.SanitizeBoundingBoxes"
        )
    before = state["count"]
    if before == num:
        return out
    warn_undeclared(target, before)
    rows = plain(tracker)[:, 1]
    for key in _declared(target) + PER_INSTANCE_FIELDS:
        value = target.get(key)
        if value is None or key == "boxes":
            continue
        length = len(value) if isinstance(value, (list, tuple)) else value.shape[0]
        if length == before:
            out[key] = _index(value, rows)
        elif length != num:
            raise ValueError(
                f"{sample_name(target)}: field '{key}' has {length} entries but {num} instances "
                f"remain (of {before}): it cannot be realigned"
            )
    out[TRACKER_KEY] = _reset(state, plain(tracker)[:, 0])
    return out


def warn_undeclared(target: Mapping[str, Any], count: int) -> None:
    """Warn about undeclared keys with one entry per instance (from 5 on: shorter ones may be
    image-level, ``[H, W]``, a crop box): a drop leaves them unaligned with the boxes."""
    handled = (*PER_INSTANCE_FIELDS, *_declared(target), TRACKER_KEY)
    for key, value in target.items() if count >= 5 else ():
        if isinstance(value, torch.Tensor):
            length = value.shape[0] if value.ndim else None
        else:
            length = len(value) if isinstance(value, (list, tuple)) else None
        if key not in handled and length == count:
            warnings.warn(
                f"target field '{key}' has one entry per instance but is not declared as a "
                "per-instance field, so it is left as it is when instances are dropped and "
                "no longer lines up with the boxes: declare it (Compose(..., "
                f"instance_fields=['{key}']), or the dataset's instance_fields=)",
                stacklevel=4,
            )


def _reset(state: Mapping[str, Any], original: torch.Tensor) -> dict[str, Any]:
    """The tracker state after a realignment: rows numbered afresh, count updated."""
    tracker = state["instances"]
    rows = torch.arange(original.shape[0], dtype=torch.int64)
    fresh = tracker.wrap(torch.stack([original, rows], dim=1), like=tracker)
    return {**state, "instances": fresh, "count": original.shape[0]}


def select_instances(target: Mapping[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """A new target holding only the instances ``keep`` selects, in every per-instance field.

    Args:
        target: the target (not modified).
        keep: a boolean ``Tensor[N]`` or an integer index tensor into the instances.

    Returns:
        a new dict; per-instance fields (see :func:`per_instance_keys`) are indexed with
        ``keep`` and keep their tv_tensor class, everything else is carried over as is.

    >>> target = {"boxes": torch.tensor([[0.0, 0, 2, 2], [1, 1, 1, 3]]),
    ...           "labels": torch.tensor([4, 5]), "image_id": 0}
    >>> select_instances(target, torch.tensor([True, False]))["labels"]
    tensor([4])
    """
    target = settle(target)
    keys = per_instance_keys(target)
    count = int(target["boxes"].shape[0])
    if (int(keep.sum()) if keep.dtype == torch.bool else keep.numel()) != count:
        warn_undeclared(target, count)
    out = dict(target)
    for key in keys:
        out[key] = _index(target[key], keep)
    state = target.get(TRACKER_KEY)
    if isinstance(state, Mapping):
        out[TRACKER_KEY] = _reset(state, plain(state["instances"])[keep, 0])
    return out


def check_sample(image: ImageLike, target: Mapping[str, Any], name: str) -> tuple[int, int]:
    """Cheap shape checks of a sample before a transform; returns ``(height, width)``.

    The full contract check is :func:`detkit.types.validate_target`; this catches what would
    make a transform misbehave silently (fields of the wrong length, masks or keypoints of
    the wrong shape, boxes in a format other than XYXY).

    Args:
        image: a PIL image or a ``Tensor[C, H, W]``.
        target: the target dict.
        name: the transform's name, for error messages.
    """
    height, width = _image_size(image, name)
    declared = _declared(target)
    problem = instance_shape_problem(target, image_size=(height, width), instance_fields=declared)
    _raise(target, problem, name)
    boxes = target["boxes"]
    if to_xyxy(boxes) is not boxes:
        raise ValueError(
            f"{name}: {sample_name(target)}: field 'boxes' is in {boxes.format.name} format; "
            "run the sample through Compose (or convert it with detkit.tv_tensors.to_xyxy)"
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


def recompute_area(
    target: Mapping[str, Any],
    rows: torch.Tensor | None = None,
    *,
    boxes_before: torch.Tensor | None = None,
) -> dict[str, Any]:
    """A new target whose ``area`` is recomputed: from the masks, else from the boxes.

    Only when the target has an ``area``; ``rows`` (a boolean ``Tensor[N]``) limits the
    recomputation to some instances (the others keep theirs). The dtype and class are kept.

    Without masks, ``boxes_before`` (``Tensor[N, 4]``, the boxes before the transform)
    scales each area by its box's change of area instead: an area that is not the box's
    (a COCO file's segmentation area) keeps its proportion to the box, and a box area stays
    the box area. An instance whose earlier box had no area gets its box area.

    >>> boxes = torch.tensor([[0.0, 0, 2, 3]])
    >>> recompute_area({"boxes": boxes, "area": torch.tensor([1.0])})["area"]
    tensor([6.])
    >>> target = {"boxes": boxes, "area": torch.tensor([6.0])}
    >>> recompute_area(target, boxes_before=boxes * 2)["area"]  # a quarter of 6
    tensor([1.5000])
    """
    out = dict(target)
    area = target.get("area")
    if area is None:
        return out
    masks = target.get("masks")
    if rows is None:
        rows = torch.ones(area.shape[0], dtype=torch.bool)
    new = plain(area).clone()
    if bool(rows.any()):
        if masks is not None:
            fresh = masks_area(plain(masks)[rows.to(masks.device)])
        else:
            boxes = plain(target["boxes"])
            fresh = box_area(boxes[rows.to(boxes.device)])
            if boxes_before is not None:
                old = box_area(plain(boxes_before)[rows.to(boxes_before.device)]).to(fresh)
                given = plain(area)[rows.to(area.device)].to(fresh)
                usable = (old > 0) & torch.isfinite(given) & (given != old)
                fresh = torch.where(usable, given * fresh / old.clamp(min=1e-12), fresh)
        new[rows.to(new.device)] = fresh.to(new)
    new = new.to(area.dtype)
    out["area"] = tv_tensors.wrap(new, like=area) if isinstance(area, tv_tensors.TVTensor) else new
    return out


def drop_collapsed(target: Mapping[str, Any]) -> dict[str, Any]:
    """Drop instances whose box has no width or height (what crops leave of lost objects)."""
    boxes = plain(target["boxes"])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if bool(keep.all()):
        return dict(target)
    logger.debug("%s: dropped %d instance(s) cut away", sample_name(target), int((~keep).sum()))
    return select_instances(target, keep)


class Transform:
    """Base class of detkit's paired transforms: ``(image, target) -> (image, target)``.

    ``image`` is a PIL image or a ``Tensor[C, H, W]`` (a ``tv_tensors.Image`` included);
    ``target`` is a dict in the target contract (:mod:`detkit.types`), with plain tensors or
    tv_tensors, or ``None`` at inference (only the image is transformed then). Every
    transform returns a new target dict whose fields keep their classes (a
    ``tv_tensors.BoundingBoxes`` stays one), and never modifies its inputs, so a target
    cached by a dataset stays intact. Random parameters are drawn from torch's global
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
        if target is not None:
            if not isinstance(target, Mapping):
                raise TypeError(
                    f"{type(self).__name__}: target must be a dict or None, got "
                    f"{type(target).__name__}"
                )
            if TRACKER_KEY in target:
                target = settle(target)
        return self._transform(image, target)

    def _transform(self, image: ImageLike, target: Any) -> tuple[Any, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement _transform")

    def _repr_args(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"
