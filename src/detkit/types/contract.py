"""The contract's fields: what a target holds, how a sample is named and carried.

Part of :mod:`detkit.types` (see its documentation for the contract); import the names from
there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import Required
else:  # torch depends on typing_extensions
    from typing_extensions import Required

import torch
from PIL import Image
from torchvision import tv_tensors

from detkit.tv_tensors import KeyPointsWithVisibility, plain, to_xyxy, xyxy_boxes

__all__ = [
    "BOX_FORMAT",
    "PER_INSTANCE_FIELDS",
    "PathLike",
    "Prediction",
    "Target",
    "Transforms",
    "empty_target",
    "image_size",
    "normalize_image_id",
    "sample_name",
    "to_tv_tensors",
]

#: Box format of every ``boxes`` tensor in detkit (torchvision's name for it).
BOX_FORMAT = "XYXY"

#: Target keys whose first dimension is the instance dimension ``N``.
PER_INSTANCE_FIELDS = ("boxes", "labels", "masks", "keypoints", "area", "iscrowd")

#: A file or folder path, as a ``str`` or an :class:`os.PathLike` such as
#: :class:`pathlib.Path`.
PathLike = str | os.PathLike


class Target(TypedDict, total=False):
    """A ground-truth target for one image; see the module docs for shapes and conventions.

    ``boxes`` and ``labels`` are required (torchvision's detection models need both, and a
    type checker says so); the other keys are optional. Extra per-instance tensors (first dimension ``N``) may be added by users and
    are kept aligned by detkit's transforms.

    >>> boxes = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    >>> target: Target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> from detkit.types import validate_target
    >>> validate_target(torch.zeros(3, 2, 4), target)
    """

    boxes: Required[torch.Tensor]
    labels: Required[torch.Tensor]
    masks: torch.Tensor
    keypoints: torch.Tensor
    area: torch.Tensor
    iscrowd: torch.Tensor
    image_id: int


class Prediction(TypedDict, total=False):
    """What a torchvision detection model returns per image in eval mode.

    ``boxes`` float ``[N, 4]`` XYXY, ``labels`` int64 ``[N]``, ``scores`` float ``[N]``;
    Mask R-CNN adds ``masks`` float ``[N, 1, H, W]`` (probabilities); Keypoint R-CNN adds
    ``keypoints`` float ``[N, K, 3]`` and ``keypoints_scores`` float ``[N, K]``.

    >>> import torchvision
    >>> model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3).eval()
    >>> prediction: Prediction = model([torch.rand(3, 64, 64)])[0]
    >>> sorted(prediction)
    ['boxes', 'labels', 'scores']
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor
    keypoints: torch.Tensor
    keypoints_scores: torch.Tensor


#: What a dataset's ``transforms`` argument is: a callable taking ``(image, target)`` and
#: returning the transformed pair, as :mod:`detkit.data.transforms` and torchvision v2 give.
Transforms = Callable[[Any, Target], tuple[Any, Target]]


def normalize_image_id(image_id: Any, *, argument: str = "image_id") -> int:
    """Return ``image_id`` as a Python ``int``.

    Accepts an ``int``, a numpy integer or a 0-d / one-element integer tensor (torchvision's
    tutorials store ``image_id`` both ways, which breaks COCO evaluation when mixed).

    Raises:
        TypeError: for anything that is not an integer.

    >>> normalize_image_id(torch.tensor(7))
    7
    >>> normalize_image_id(3)
    3
    """
    if isinstance(image_id, torch.Tensor):
        if image_id.numel() != 1 or image_id.is_floating_point() or image_id.is_complex():
            raise TypeError(
                f"{argument} must be an int or a one-element integer tensor, got a tensor of "
                f"shape {tuple(image_id.shape)} and dtype {image_id.dtype}"
            )
        return int(image_id.item())
    if isinstance(image_id, bool) or not hasattr(image_id, "__index__"):
        raise TypeError(f"{argument} must be an int, got {type(image_id).__name__}: {image_id!r}")
    return int(image_id.__index__())


def image_size(image: Any) -> tuple[int, int]:
    """Return ``(height, width)`` of a PIL image or a ``Tensor[..., H, W]``.

    >>> image_size(torch.zeros(3, 20, 30))
    (20, 30)
    """
    if isinstance(image, Image.Image):
        width, height = image.size
        return height, width
    if isinstance(image, torch.Tensor):
        if image.ndim < 2:
            raise TypeError(
                f"image must have at least 2 dimensions, got shape {tuple(image.shape)}"
            )
        return int(image.shape[-2]), int(image.shape[-1])
    raise TypeError(f"image must be a PIL image or a tensor, got {type(image).__name__}")


def empty_target(
    height: int, width: int, *, image_id: int = 0, num_keypoints: int | None = None
) -> Target:
    """A valid target with no instances (a negative sample) for an ``height x width`` image.

    Masks are included; keypoints only when ``num_keypoints`` is given.

    >>> t = empty_target(4, 6, image_id=1)
    >>> t["boxes"].shape, t["masks"].shape
    (torch.Size([0, 4]), torch.Size([0, 4, 6]))
    """
    target: Target = {
        "boxes": torch.zeros((0, 4), dtype=torch.float32),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "masks": torch.zeros((0, height, width), dtype=torch.uint8),
        "area": torch.zeros((0,), dtype=torch.float32),
        "iscrowd": torch.zeros((0,), dtype=torch.int64),
        "image_id": image_id,
    }
    if num_keypoints is not None:
        target["keypoints"] = torch.zeros((0, num_keypoints, 3), dtype=torch.float32)
    return target


def sample_name(
    target: Mapping[str, Any] | None = None,
    *,
    image_id: Any = None,
    source: Any = None,
    position: str | None = None,
) -> str:
    """How every detkit error names a sample: its ``image_id`` and its file, where known.

    Args:
        target: the sample's target; its ``image_id`` is used unless ``image_id`` is given.
        image_id: the sample's image id.
        source: the sample's file (or another description of where it comes from).
        position: where the sample sits in what was passed, e.g. ``"targets[3]"`` for the
            fourth target of a batch.

    >>> sample_name({"image_id": torch.tensor(7)}, source="images/0007.png")
    "sample image_id=7 ('images/0007.png')"
    >>> sample_name(image_id=7, position="predictions[3]")
    'sample image_id=7 (predictions[3])'
    >>> sample_name()
    'sample'
    """
    if image_id is None and isinstance(target, Mapping):
        image_id = target.get("image_id")
    if isinstance(image_id, torch.Tensor) and image_id.numel() == 1:
        image_id = image_id.item()
    parts = ["sample"]
    if image_id is not None:
        parts.append(f"image_id={image_id}")
    if source:
        parts.append(f"('{source}')")
    if position:
        parts.append(f"({position})")
    return " ".join(parts)


def to_tv_tensors(
    image: Any, target: Mapping[str, Any], *, flip_indices: Sequence[int] | None = None
) -> tuple[Any, dict[str, Any]]:
    """The sample with the contract's tv_tensor carriers (see the module docs).

    A plain tensor image becomes a :class:`~torchvision.tv_tensors.Image` (a PIL image is
    kept); plain ``boxes`` become XYXY :class:`~torchvision.tv_tensors.BoundingBoxes`, and
    ``BoundingBoxes`` in another format are converted to XYXY; plain ``masks`` become a
    :class:`~torchvision.tv_tensors.Mask` and plain ``keypoints`` a
    :class:`~detkit.tv_tensors.KeyPointsWithVisibility` (with ``flip_indices``). Fields that
    already have their carrier, and every other field, are kept as they are; no data is
    copied and the inputs are not modified.

    >>> image, target = to_tv_tensors(
    ...     torch.zeros(3, 4, 6, dtype=torch.uint8),
    ...     {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]])},
    ... )
    >>> boxes = target["boxes"]
    >>> type(image).__name__, boxes.canvas_size, boxes.format.name
    ('Image', (4, 6), 'XYXY')
    """
    canvas = image_size(image)
    if isinstance(image, torch.Tensor) and not isinstance(image, tv_tensors.TVTensor):
        image = image.as_subclass(tv_tensors.Image)
    out = dict(target)
    boxes = out.get("boxes")
    if isinstance(boxes, tv_tensors.BoundingBoxes):
        out["boxes"] = to_xyxy(boxes)
    elif isinstance(boxes, torch.Tensor):
        out["boxes"] = xyxy_boxes(plain(boxes), canvas)
    masks = out.get("masks")
    if isinstance(masks, torch.Tensor) and not isinstance(masks, tv_tensors.Mask):
        out["masks"] = plain(masks).as_subclass(tv_tensors.Mask)
    keypoints = out.get("keypoints")
    if isinstance(keypoints, torch.Tensor) and not isinstance(keypoints, KeyPointsWithVisibility):
        out["keypoints"] = KeyPointsWithVisibility(
            plain(keypoints), canvas_size=canvas, flip_indices=flip_indices
        )
    return image, out
