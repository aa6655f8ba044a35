"""The target contract: what one ``(image, target)`` sample is, written once.

Every dataset, transform, model helper and evaluator in detkit speaks this contract, which is
the one torchvision's detection models (Faster / Mask / Keypoint R-CNN, RetinaNet, FCOS, SSD)
take in training mode.

**Image.** Datasets return a ``uint8`` :class:`torchvision.tv_tensors.Image`
``[3, H, W]``; transforms also accept PIL images and plain tensors. Models want ``float``
``[3, H, W]`` with values in ``0..1``, which is what ``ToDtype(torch.float32, scale=True)``
(detkit's or torchvision v2's) produces.

**Target** (a ``dict``; see :class:`Target`), for ``N`` instances in an image of height ``H``
and width ``W``:

============  ======================  ==========================================================
key           dtype, shape            meaning
============  ======================  ==========================================================
boxes         float ``[N, 4]``        ``x1, y1, x2, y2`` (XYXY) in continuous pixel coordinates
labels        int64 ``[N]``           class of each instance; ``0`` is background, never a label
masks         uint8 ``[N, H, W]``     one binary mask per instance (optional)
keypoints     float ``[N, K, 3]``     ``x, y, visibility`` per keypoint (optional)
area          float ``[N]``           mask pixel count with masks, else the annotation's area
iscrowd       int64 ``[N]``           ``1`` marks a crowd region (ignored in COCO evaluation)
image_id      ``int``                 identifies the image; a 0-d integer tensor is accepted
============  ======================  ==========================================================

Without masks, ``area`` is the one the annotation gives (a COCO file's segmentation area),
else the box area; geometric transforms scale it with its box.

**Carriers.** Datasets carry the fields as :mod:`torchvision.tv_tensors`, as torchvision's
own detection tutorial does, so that every ``torchvision.transforms.v2`` transform moves the
image and its whole target together: ``boxes`` is a
:class:`~torchvision.tv_tensors.BoundingBoxes` (format XYXY, ``canvas_size=(H, W)``),
``masks`` a :class:`~torchvision.tv_tensors.Mask` and ``keypoints`` a
:class:`~detkit.tv_tensors.KeyPointsWithVisibility` (which keeps the visibility column and
swaps left and right on flips); :func:`to_tv_tensors` wraps a sample that way. They are
tensors: torchvision's detection models take them as they are. Plain tensors are accepted
everywhere as input, with ``boxes`` read as XYXY; a ``BoundingBoxes`` in another format
(``XYWH``, ``CXCYWH``) is converted to XYXY, never misread.

**Box convention.** Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so a box
lies in ``[0, W] x [0, H]`` and the box of a mask whose pixels span columns ``xmin..xmax`` and
rows ``ymin..ymax`` (inclusive) is ``[xmin, ymin, xmax + 1, ymax + 1]``, the same as
pycocotools' ``toBbox``. A non-empty mask therefore never yields a zero-width box, which is
the usual cause of torchvision's *"All bounding boxes should have positive height and
width"*.

**Keypoints.** Visibility follows COCO: ``0`` not labelled (the row is ``(0, 0, 0)``),
``1`` labelled but occluded, ``2`` visible.

**Empty images.** ``N = 0`` is legal everywhere, with shapes ``(0, 4)``, ``(0,)``,
``(0, H, W)`` and ``(0, K, 3)``: images without objects are negative samples, kept by default.

:func:`validate_target` checks a sample against this contract and raises
:class:`InvalidTargetError` (a :class:`ValueError`) naming the sample, the field and what is
wrong.
"""

from detkit.types.batch import (
    PREDICTION_FIELDS,
    check_predictions,
    check_targets,
    instance_shape_problem,
)
from detkit.types.checks import (
    IMAGE_RANGE_TOLERANCE,
    InvalidTargetError,
    Problem,
    check_image_range,
    image_range_problem,
    target_problems,
    validate_target,
)
from detkit.types.contract import (
    BOX_FORMAT,
    PER_INSTANCE_FIELDS,
    PathLike,
    Prediction,
    Target,
    Transforms,
    empty_target,
    image_size,
    normalize_image_id,
    sample_name,
    to_tv_tensors,
)

__all__ = [
    "BOX_FORMAT",
    "IMAGE_RANGE_TOLERANCE",
    "PER_INSTANCE_FIELDS",
    "PREDICTION_FIELDS",
    "InvalidTargetError",
    "PathLike",
    "Prediction",
    "Problem",
    "Target",
    "Transforms",
    "check_image_range",
    "check_predictions",
    "check_targets",
    "empty_target",
    "image_range_problem",
    "image_size",
    "instance_shape_problem",
    "normalize_image_id",
    "sample_name",
    "target_problems",
    "to_tv_tensors",
    "validate_target",
]
