"""Checking a sample against the contract: every problem at once, or the first as an error.

Part of :mod:`detkit.types`; import the names from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from detkit.tv_tensors import plain, to_xyxy
from detkit.types.contract import image_size, normalize_image_id, sample_name

__all__ = [
    "IMAGE_RANGE_TOLERANCE",
    "InvalidTargetError",
    "Problem",
    "check_image_range",
    "image_range_problem",
    "target_problems",
    "validate_target",
]


class InvalidTargetError(ValueError):
    """A sample breaks the target contract.

    Attributes:
        image_id: the sample's ``image_id`` (``None`` when the target has none).
        field: the offending key of the target (or ``"image"``).
    """

    def __init__(self, message: str, *, image_id: Any = None, field: str | None = None):
        super().__init__(message)
        self.image_id = image_id
        self.field = field


class Problem(NamedTuple):
    """One way a sample breaks the contract: the ``field`` at fault and what is wrong.

    >>> Problem("labels", "label 0 at instance 2: labels start at 1").field
    'labels'
    """

    field: str
    message: str


def _indices(mask: torch.Tensor, limit: int = 5) -> str:
    rows = mask.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in rows[:limit])
    return f"{shown}, ... ({len(rows)} in all)" if len(rows) > limit else shown


def target_problems(
    image: Any, target: Mapping[str, Any], *, num_classes: int | None = None
) -> list[Problem]:
    """Every way ``(image, target)`` breaks the target contract, in the order checked.

    The checks of :func:`validate_target`, which raises the first of them. A malformed field
    (missing, wrong type, dtype or rank, fields disagreeing on ``N``) ends the list, since the
    value checks need well-formed fields; value problems (degenerate, out-of-image or
    non-finite boxes, bad labels, keypoints, areas, crowd flags) are all reported, each naming
    the instances at fault.

    Args:
        image: the sample's image (PIL image or ``Tensor[C, H, W]``).
        target: the target dict.
        num_classes: when given, labels must also be below it (the model's ``num_classes``).

    >>> target = {
    ...     "boxes": torch.tensor([[0.0, 0, 5, 5], [3, 3, 3, 4], [0, 0, 12, 2]]),
    ...     "labels": torch.tensor([1, 1, 0]),
    ... }
    >>> for problem in target_problems(torch.zeros(3, 10, 10), target):
    ...     print(problem.field, "|", problem.message)
    boxes | box 1 [3.0, 3.0, 3.0, 4.0] has zero or negative width or height
      (x2 <= x1 or y2 <= y1)
    boxes | box 2 [0.0, 0.0, 12.0, 2.0] lies outside the 10x10 (WxH) image
      (boxes are XYXY in [0, 10] x [0, 10])
    labels | label 0 at instance 2: labels start at 1 (0 is background)
    """
    problems: list[Problem] = []

    def add(field: str, message: str) -> None:
        problems.append(Problem(field, message))

    size = _sample_problems(image, target, add)
    if size is None:
        return problems
    fields = _field_problems(target, size, add) or {}
    boxes = fields.get("boxes")
    # The value checks need every field well formed (an image range problem stops them too).
    if problems or boxes is None:
        return problems
    num = boxes.shape[0]
    counts = {key: value.shape[0] for key, value in fields.items() if value is not None}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in counts.items())
        add(next(k for k, v in counts.items() if v != num), f"fields disagree on N ({shown})")
    elif num:
        _value_problems(fields, size, num_classes, add)
    return problems


def _sample_problems(
    image: Any, target: Any, add: Callable[[str, str], Any]
) -> tuple[int, int] | None:
    """Check the target's type, its ``image_id``, the image, and that ``boxes`` and ``labels``
    are present; the image's ``(H, W)``, or ``None`` after a problem that ends the checks."""
    if not isinstance(target, Mapping):
        add("target", f"target must be a dict, got {type(target).__name__}")
        return None
    if target.get("image_id") is not None:
        try:
            normalize_image_id(target["image_id"])
        except TypeError as exc:
            add("image_id", str(exc))
            return None
    try:
        height, width = image_size(image)
    except TypeError as exc:
        add("image", str(exc))
        return None
    if isinstance(image, torch.Tensor) and image.ndim != 3:
        add("image", f"expected a Tensor[C, H, W], got shape {tuple(image.shape)}")
        return None
    range_problem = image_range_problem(image)
    if range_problem is not None:
        add("image", range_problem)
    for key in ("boxes", "labels"):
        if key not in target:
            add(key, "missing (torchvision detection models need 'boxes' and 'labels')")
            return None
    return height, width


def _field_tensor(
    target: Mapping[str, Any],
    key: str,
    rank: int,
    size: tuple[int, int],
    add: Callable[[str, str], Any],
    *,
    floating: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor | None:
    """``target[key]`` as a plain tensor (boxes in XYXY), or ``None`` after reporting why not:
    not a tensor, a ``canvas_size`` other than the image's, the wrong rank or dtype."""
    value = target[key]
    if not isinstance(value, torch.Tensor):
        add(key, f"expected a tensor, got {type(value).__name__}")
        return None
    canvas = getattr(value, "canvas_size", None)
    if canvas is not None and tuple(canvas) != size:
        add(
            key,
            f"its canvas_size {tuple(canvas)} differs from the image size {size}: "
            "a transform moved the image without this field",
        )
        return None
    value = plain(to_xyxy(value) if key == "boxes" else value)
    if value.ndim != rank:
        add(key, f"expected {rank} dimensions, got shape {tuple(value.shape)}")
    elif dtype is not None and value.dtype != dtype:
        add(key, f"expected dtype {dtype}, got {value.dtype}")
    elif floating and not value.is_floating_point():
        add(key, f"expected a floating-point dtype, got {value.dtype}")
    else:
        return value
    return None


def _field_problems(
    target: Mapping[str, Any], size: tuple[int, int], add: Callable[[str, str], Any]
) -> dict[str, torch.Tensor | None] | None:
    """Check each field's type, rank, dtype and shape; the fields as plain tensors (``None``
    for a malformed one), or ``None`` when ``boxes`` is not ``[N, 4]``."""

    def tensor(key: str, rank: int, **kind: Any) -> torch.Tensor | None:
        return _field_tensor(target, key, rank, size, add, **kind)

    boxes = tensor("boxes", 2, floating=True)
    if boxes is not None and boxes.shape[1] != 4:
        add("boxes", f"expected shape [N, 4], got {tuple(boxes.shape)}")
        return None
    fields = {"boxes": boxes, "labels": tensor("labels", 1, dtype=torch.int64)}
    if "masks" in target:
        masks = fields["masks"] = tensor("masks", 3, dtype=torch.uint8)
        if masks is not None and tuple(masks.shape[1:]) != size:
            add("masks", f"mask size {tuple(masks.shape[1:])} differs from the image size {size}")
            fields["masks"] = None
    if "keypoints" in target:
        keypoints = fields["keypoints"] = tensor("keypoints", 3, floating=True)
        if keypoints is not None and keypoints.shape[2] != 3:
            add(
                "keypoints",
                f"expected shape [N, K, 3] (x, y, visibility), got {tuple(keypoints.shape)}",
            )
            fields["keypoints"] = None
    if "area" in target:
        fields["area"] = tensor("area", 1, floating=True)
    if "iscrowd" in target:
        fields["iscrowd"] = tensor("iscrowd", 1, dtype=torch.int64)
    return fields


def _value_problems(
    fields: Mapping[str, torch.Tensor | None],
    size: tuple[int, int],
    num_classes: int | None,
    add: Callable[[str, str], Any],
) -> None:
    """Report the bad values of well-formed, non-empty fields through ``add(field, message)``."""
    height, width = size
    boxes, labels = fields["boxes"], fields["labels"]
    if boxes is None or labels is None:  # malformed: reported by the caller
        return
    keypoints, area, iscrowd = fields.get("keypoints"), fields.get("area"), fields.get("iscrowd")
    finite = torch.isfinite(boxes).all(1)
    if not bool(finite.all()):
        add("boxes", f"boxes {_indices(~finite)} contain NaN or infinite values")
    bad = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    for i in bad.nonzero().flatten().tolist():
        add(
            "boxes",
            f"box {i} {boxes[i].tolist()} has zero or negative width or height "
            "(x2 <= x1 or y2 <= y1)",
        )
    outside = finite & ((boxes[:, :2] < 0).any(1) | (boxes[:, 2] > width) | (boxes[:, 3] > height))
    for i in outside.nonzero().flatten().tolist():
        add(
            "boxes",
            f"box {i} {boxes[i].tolist()} lies outside the {width}x{height} (WxH) image "
            f"(boxes are XYXY in [0, {width}] x [0, {height}])",
        )
    for i in (labels <= 0).nonzero().flatten().tolist():
        add(
            "labels", f"label {int(labels[i])} at instance {i}: labels start at 1 (0 is background)"
        )
    if num_classes is not None:
        for i in (labels >= num_classes).nonzero().flatten().tolist():
            add(
                "labels",
                f"label {int(labels[i])} at instance {i} is not below num_classes = "
                f"{num_classes} (labels run from 1 to num_classes - 1)",
            )
    if keypoints is not None:
        if not bool(torch.isfinite(keypoints).all()):
            add("keypoints", "contains NaN or infinite values")
        vis = keypoints[..., 2]
        if ((vis != 0) & (vis != 1) & (vis != 2)).any():
            add("keypoints", "visibility must be 0, 1 or 2 (COCO convention)")
        hidden = keypoints[vis == 0]
        if hidden.numel() and (hidden != 0).any():
            add("keypoints", "keypoints with visibility 0 must be (0, 0, 0)")
    if area is not None:
        if not bool(torch.isfinite(area).all()):
            add("area", "contains NaN or infinite values")
        elif (area < 0).any():
            add("area", f"areas must be non-negative (instances {_indices(area < 0)})")
    if iscrowd is not None and ((iscrowd != 0) & (iscrowd != 1)).any():
        add("iscrowd", "values must be 0 or 1")


def validate_target(
    image: Any,
    target: Mapping[str, Any],
    *,
    source: str | None = None,
    num_classes: int | None = None,
) -> None:
    """Check one ``(image, target)`` sample against the target contract.

    Args:
        image: the sample's image (PIL image or ``Tensor[C, H, W]``); gives the canvas size.
        target: the target dict (see :class:`Target`), with plain tensors or the tv_tensor
            carriers of the module docs.
        source: where the sample comes from (a file path, say), added to error messages.
        num_classes: when given, labels must also be below it (the model's ``num_classes``).

    ``boxes`` given as a :class:`~torchvision.tv_tensors.BoundingBoxes` in another format
    than XYXY are checked after conversion to XYXY; their ``canvas_size`` must be the image's
    size (a transform that moved the image without its boxes leaves it behind). All checks
    are :func:`target_problems`'; this raises the first problem found.

    Raises:
        InvalidTargetError: naming the sample (``image_id`` and ``source``), the field and what
            is wrong: a missing ``boxes`` / ``labels``, a wrong dtype or rank, fields with
            different numbers of instances, a degenerate or out-of-canvas box, a non-finite
            value, label 0, masks of the wrong size, keypoints without a last dimension of 3,
            a tv_tensor whose ``canvas_size`` differs from the image's size.

    >>> image = torch.zeros(3, 10, 10)
    >>> boxes = torch.tensor([[0.0, 0, 5, 5]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> validate_target(image, target)
    >>> flat = torch.tensor([[2.0, 1.0, 2.0, 5.0]])
    >>> validate_target(image, {**target, "boxes": flat})
    Traceback (most recent call last):
    ...
    detkit.types.checks.InvalidTargetError: sample: field 'boxes': box 0
    [2.0, 1.0, 2.0, 5.0] has zero or negative width or height (x2 <= x1 or y2 <= y1)
    """
    problems = target_problems(image, target, num_classes=num_classes)
    if not problems:
        return
    field, message = problems[0]
    raw_id = target.get("image_id") if isinstance(target, Mapping) else None
    try:
        image_id = None if raw_id is None else normalize_image_id(raw_id)
    except TypeError:
        image_id = raw_id
    where = sample_name(image_id=image_id, source=source)
    if field == "target":
        raise InvalidTargetError(f"{where}: {message}", field="target")
    raise InvalidTargetError(f"{where}: field '{field}': {message}", image_id=image_id, field=field)


#: How far outside ``0..1`` a float image may stray before :func:`check_image_range` objects:
#: bicubic resizing overshoots a little at sharp edges; images in 0..255 or normalised with a
#: mean and standard deviation stray far further.
IMAGE_RANGE_TOLERANCE = 0.1


def check_image_range(image: Any, *, source: str | None = None, image_id: Any = None) -> None:
    """Check that a float image tensor holds values in ``0..1``, as detection models expect.

    The usual slip is ``ToDtype(torch.float32)`` without ``scale=True``: it keeps the values
    in ``0..255``, and the model trains (badly) without a word. Normalising with a mean and
    standard deviation is another (torchvision's detection models normalise inside). Integer
    images (``uint8`` from the datasets) and PIL images pass: their range is their dtype's.
    Values up to :data:`IMAGE_RANGE_TOLERANCE` outside ``0..1`` are accepted.

    Args:
        image: a ``Tensor[C, H, W]`` (or any tensor), or a PIL image.
        source: where the image comes from (a file path, say), for the message.
        image_id: the sample's ``image_id``, for the message.

    Raises:
        InvalidTargetError: (field ``"image"``) naming the sample, the values found and what
            to do; also for NaN or infinite values.

    >>> check_image_range(torch.rand(3, 4, 4))
    >>> try:
    ...     check_image_range(torch.full((3, 4, 4), 200.0), image_id=7)
    ... except InvalidTargetError as error:
    ...     print(str(error)[:67])
    sample image_id=7: field 'image': float values span [200, 200], not
    """
    message = image_range_problem(image)
    if message is not None:
        where = sample_name(image_id=image_id, source=source)
        raise InvalidTargetError(
            f"{where}: field 'image': {message}", image_id=image_id, field="image"
        )


def image_range_problem(image: Any) -> str | None:
    """What is wrong with a float image's values (outside ``0..1`` or not finite), or ``None``.

    The one check behind :func:`check_image_range` and :func:`target_problems`; images that
    are not floating-point tensors have no range problem.

    >>> print(image_range_problem(torch.full((3, 2, 2), 255.0))[:40])
    float values span [255, 255], not 0..1:
    """
    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or not image.numel():
        return None
    low, high = (float(v) for v in torch.aminmax(plain(image).detach()))
    if not (abs(low) < float("inf") and abs(high) < float("inf")):  # NaN compares False
        return "contains NaN or infinite values"
    if low >= -IMAGE_RANGE_TOLERANCE and high <= 1 + IMAGE_RANGE_TOLERANCE:
        return None
    if low >= -IMAGE_RANGE_TOLERANCE:
        advice = (
            "the values look like 0..255: convert with ToDtype(torch.float32, scale=True) "
            "(without scale=True, ToDtype keeps 0..255), or divide by 255"
        )
    else:
        advice = (
            "the image looks normalised with a mean and standard deviation: leave that out, "
            "torchvision's detection models normalise inside (their transform's image_mean "
            "and image_std)"
        )
    return f"float values span [{low:.4g}, {high:.4g}], not 0..1: {advice}"
