"""Checking a batch of model outputs and targets before it is evaluated: once, first.

Part of :mod:`detkit.types`; import the names from there. Shapes, keys and dtypes of every
image of the batch are checked here, each problem naming the image by its position and
``image_id`` (:func:`~detkit.types.sample_name`); values (NaN, fractional labels) are the
consumer's to check, on the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch

from detkit.types.checks import Problem
from detkit.types.contract import sample_name

__all__ = [
    "PREDICTION_FIELDS",
    "check_predictions",
    "check_targets",
    "instance_shape_problem",
]

#: The fields a prediction needs for each kind of evaluation, besides ``scores`` and
#: ``labels``: ``boxes`` for ``"bbox"``, ``masks`` for ``"segm"``, ``keypoints`` for
#: ``"keypoints"``.
PREDICTION_FIELDS = {"bbox": "boxes", "segm": "masks", "keypoints": "keypoints"}

_PREDICTION_SHAPES = "'scores' [N], 'labels' [N], 'boxes' [N, 4], 'masks' [N, 1, H, W], " + (
    "'keypoints' [N, K, 3]"
)


def _namer(what: str, position: int, image_ids: Sequence[Any]) -> Callable[[], str]:
    """The sample's name, made only when a message needs it (checks run on every batch)."""

    def name() -> str:
        image_id = image_ids[position] if position < len(image_ids) else None
        return sample_name(image_id=image_id, position=f"{what}[{position}]")

    return name


def _shape(item: Mapping[str, Any], key: str, where: Callable[[], str]) -> tuple[int, ...] | None:
    """The shape of ``item[key]`` (``None`` when absent); a value without one is an error.

    ``torch.Size`` and numpy's shapes are tuples of ints already: returned as they are.
    """
    value = item.get(key)
    if value is None:
        return None
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"{where()}: '{key}' must be a tensor, got {type(value).__name__}")
    return shape


def _labels_are_numbers(item: Mapping[str, Any], where: Callable[[], str]) -> None:
    dtype = getattr(item["labels"], "dtype", None)
    if dtype in (torch.bool, torch.complex64, torch.complex128) or (
        not isinstance(dtype, torch.dtype) and getattr(dtype, "kind", "i") in "bc"
    ):
        raise ValueError(f"{where()}: 'labels' must be integers, got dtype {dtype}")


def _mask_shape_ok(shape: tuple[int, ...], num: int) -> bool:
    """``[N, 1, H, W]`` (Mask R-CNN's output) or ``[N, H, W]``."""
    return (len(shape) == 3 or (len(shape) == 4 and shape[1] == 1)) and shape[0] == num


#: Whether a field's shape is right for ``N`` instances, per field.
_SHAPE_OK: dict[str, Callable[[Any, int], bool]] = {
    "scores": lambda shape, num: shape == (num,),
    "labels": lambda shape, num: shape == (num,),
    "area": lambda shape, num: shape == (num,),
    "iscrowd": lambda shape, num: shape == (num,),
    "boxes": lambda shape, num: shape == (num, 4),
    "masks": lambda shape, num: _mask_shape_ok(shape, num),
    "keypoints": lambda shape, num: len(shape) == 3 and shape[0] == num and shape[2] == 3,
}
#: Targets' masks are ``[N, H, W]``, never Mask R-CNN's ``[N, 1, H, W]``.
_TARGET_SHAPE_OK = {**_SHAPE_OK, "masks": lambda shape, num: len(shape) == 3 and shape[0] == num}
_NOT_NUMBERS = (torch.bool, torch.complex64, torch.complex128)


def _fast_ok(
    item: Any,
    counted: str,
    optional: Sequence[str],
    required: Sequence[str],
    shape_ok: Mapping[str, Callable[[Any, int], bool]] = _SHAPE_OK,
) -> bool:
    """Whether ``item`` is certainly well formed: ``N`` from the field ``counted``, every
    ``required`` field and those ``optional`` fields present of the right shape, torch labels
    of a number dtype. The common case, checked without a call per field; anything else
    (also a malformed item) goes to the careful checks, which name what is wrong."""
    try:
        num = item[counted].shape[0]
        if not shape_ok[counted](item[counted].shape, num):
            return False
        for key in required:
            if not shape_ok[key](item[key].shape, num):
                return False
        for key in optional:
            if key in item and not shape_ok[key](item[key].shape, num):
                return False
        dtype = item["labels"].dtype
        return isinstance(dtype, torch.dtype) and dtype not in _NOT_NUMBERS
    except (AttributeError, KeyError, TypeError, IndexError):
        return False


def _mapping(item: Any, where: Callable[[], str]) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise TypeError(f"{where()}: expected a dict, got {type(item).__name__}")
    return item


def _require(
    item: Mapping[str, Any], keys: Sequence[str], where: Callable[[], str], why: str = ""
) -> None:
    for key in keys:
        if item.get(key) is None:
            raise ValueError(f"{where()}: missing '{key}'{why} (present: {sorted(item)})")


def check_predictions(
    predictions: Sequence[Any],
    image_ids: Sequence[Any],
    *,
    iou_types: Collection[str] = ("bbox",),
) -> None:
    """Check the shapes of a batch of torchvision detection outputs, one dict per image.

    Every output needs ``scores`` ``[N]`` and ``labels`` ``[N]`` (integers), and per iou type
    its field of :data:`PREDICTION_FIELDS`: ``boxes`` ``[N, 4]``, ``masks`` ``[N, 1, H, W]``
    (or ``[N, H, W]``), ``keypoints`` ``[N, K, 3]``. Tensors or numpy arrays.

    Args:
        predictions: the model outputs.
        image_ids: the image id of each output, for the messages.
        iou_types: the kinds of evaluation the outputs are for.

    Raises:
        TypeError: an output that is not a dict, or a field that is not a tensor.
        ValueError: a missing field, a shape that breaks the above, or boolean labels; naming
            the output's position and ``image_id``.

    >>> prediction = {"boxes": torch.zeros(2, 4), "scores": torch.zeros(2),
    ...               "labels": torch.ones(2, dtype=torch.int64)}
    >>> check_predictions([prediction], [7])
    >>> check_predictions([{**prediction, "boxes": torch.zeros(2, 5)}], [7])
    Traceback (most recent call last):
    ...
    ValueError: sample image_id=7 (predictions[0]): expected 'scores' [N],
    'labels' [N], ...; got 'boxes' (2, 5), 'labels' (2,), 'scores' (2,)
    """
    wanted = ["scores", "labels", *(PREDICTION_FIELDS[t] for t in iou_types)]
    extra = wanted[2:]
    for position, item in enumerate(predictions):
        if _fast_ok(item, "scores", ("labels",), extra):
            continue
        where = _namer("predictions", position, image_ids)
        item = _mapping(item, where)
        _require(item, wanted, where)
        shapes = {key: _shape(item, key, where) for key in wanted}
        num = shapes["scores"][0] if shapes["scores"] else -1
        if any(not _SHAPE_OK[key](shapes[key], num) for key in wanted):
            got = ", ".join(f"'{k}' {tuple(v or ())}" for k, v in sorted(shapes.items()))
            raise ValueError(f"{where()}: expected {_PREDICTION_SHAPES}; got {got}")
        _labels_are_numbers(item, where)


def check_targets(
    targets: Sequence[Any],
    image_ids: Sequence[Any],
    *,
    iou_types: Collection[str] = ("bbox",),
) -> None:
    """Check the shapes of a batch of targets as evaluation needs them.

    Every target needs ``boxes`` ``[N, 4]`` and ``labels`` ``[N]`` (integers); ``masks``
    ``[N, H, W]`` for ``"segm"`` and ``keypoints`` ``[N, K, 3]`` for ``"keypoints"``;
    ``area`` and ``iscrowd``, when given, are ``[N]``. The full contract (values, the
    image's size) is :func:`~detkit.types.validate_target`'s.

    Args:
        targets: the target dicts.
        image_ids: the image id of each target, for the messages.
        iou_types: the kinds of evaluation the targets are for.

    Raises:
        TypeError: a target that is not a dict, or a field that is not a tensor.
        ValueError: a missing field, a shape that breaks the above, or boolean labels; naming
            the target's position and ``image_id``.

    >>> labels = torch.ones(1, dtype=torch.int64)
    >>> target = {"boxes": torch.zeros(1, 4), "labels": labels}
    >>> check_targets([target], [3])
    >>> check_targets([target], [3], iou_types=("segm",))
    Traceback (most recent call last):
    ...
    ValueError: sample image_id=3 (targets[0]): missing 'masks': segm evaluation
    needs ground-truth 'masks' (present: ['boxes', 'labels'])
    """
    extra = [key for t, key in (("segm", "masks"), ("keypoints", "keypoints")) if t in iou_types]
    for position, item in enumerate(targets):
        optional = ("labels", "area", "iscrowd", "masks", "keypoints")
        if _fast_ok(item, "boxes", optional, extra, _TARGET_SHAPE_OK):
            continue
        where = _namer("targets", position, image_ids)
        item = _mapping(item, where)
        _require(item, ("boxes", "labels"), where)
        for iou_type, key in (("segm", "masks"), ("keypoints", "keypoints")):
            if iou_type in iou_types:
                _require(item, (key,), where, f": {iou_type} evaluation needs ground-truth '{key}'")
        problem = instance_shape_problem(item)
        if problem is not None:
            raise ValueError(f"{where()}: field '{problem.field}' {problem.message}")
        _labels_are_numbers(item, where)


def instance_shape_problem(
    target: Mapping[str, Any],
    *,
    image_size: tuple[int, int] | None = None,
    instance_fields: Collection[str] = (),
) -> Problem | None:
    """The first field of ``target`` whose shape breaks the contract, or ``None``: the one
    cheap shape check of a sample, for transforms and evaluation alike.

    ``boxes`` must be ``[N, 4]``; the other per-instance fields present must have ``N``
    rows: ``labels``, ``area``, ``iscrowd`` ``[N]``, ``masks`` ``[N, H, W]`` (``H, W`` the
    image's when ``image_size`` is given), ``keypoints`` ``[N, K, 3]``, and each of
    ``instance_fields`` (a tensor, or a list of ``N`` entries). Values are not looked at
    (:func:`~detkit.types.target_problems` does that); tensors and numpy arrays pass alike.

    Args:
        target: the target dict.
        image_size: the image's ``(height, width)``, to check the masks against.
        instance_fields: extra per-instance fields declared by the user.

    Returns:
        a :class:`~detkit.types.Problem` whose message follows ``field '<name>'``.

    >>> labels = torch.ones(3, dtype=torch.int64)
    >>> target = {"boxes": torch.zeros(2, 4), "labels": labels}
    >>> problem = instance_shape_problem(target)
    >>> problem.field, problem.message[:40]
    ('labels', 'has shape (3,) but there are 2 boxes: ev')
    """
    boxes = target.get("boxes")
    box_shape = getattr(boxes, "shape", None)
    if box_shape is None or len(box_shape) != 2 or box_shape[1] != 4:
        shown = type(boxes).__name__ if box_shape is None else tuple(box_shape)
        return Problem("boxes", f"must be a Tensor[N, 4], got {shown}")
    num = int(box_shape[0])
    for key in ("labels", "area", "iscrowd", "masks", "keypoints", *instance_fields):
        if key not in target:
            continue
        value = target[key]
        shape = getattr(value, "shape", None)
        if shape is None and key in instance_fields and isinstance(value, (list, tuple)):
            shape = (len(value),)
        if shape is None:
            kind = "a tensor or a list" if key in instance_fields else "a tensor"
            return Problem(key, f"must be {kind}, got {type(value).__name__}")
        if not len(shape) or shape[0] != num:
            shown = tuple(shape) if hasattr(value, "shape") else f"length {len(value)}"
            return Problem(
                key,
                f"has shape {shown} but there are {num} boxes: every per-instance field "
                f"needs first dimension N = {num}",
            )
        problem = _trailing_problem(key, tuple(shape), num, image_size)
        if problem is not None:
            return problem
    return None


def _trailing_problem(
    key: str, shape: tuple[int, ...], num: int, image_size: tuple[int, int] | None
) -> Problem | None:
    """The problem of a field with ``N`` rows but the wrong trailing dimensions, if any."""
    if key in ("labels", "area", "iscrowd") and len(shape) != 1:
        return Problem(key, f"must be a Tensor[{num}], got shape {shape}")
    if key == "masks" and (len(shape) != 3 or (image_size and shape[1:] != tuple(image_size))):
        if image_size is None:
            return Problem(key, f"must be a Tensor[N, H, W], got shape {shape}")
        height, width = image_size
        return Problem(
            key,
            f"must be a Tensor[N, {height}, {width}] matching the {width}x{height} (WxH) image, "
            f"got shape {shape}",
        )
    if key == "keypoints" and (len(shape) != 3 or shape[2] != 3):
        return Problem(key, f"must be a Tensor[N, K, 3] (x, y, visibility), got shape {shape}")
    return None
