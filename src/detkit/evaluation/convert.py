"""Targets and predictions to COCO's formats: XYWH boxes, RLE masks, result dicts.

Boxes are converted in float64 (the difference of two float32 coordinates is exact there),
so neither float32 nor float64 inputs lose precision. Masks are thresholded on their own
device and RLE-encoded from their non-zero crop, byte for byte as pycocotools encodes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from detkit.evaluation._batch import boxes_xywh, prediction_table
from detkit.evaluation._dicts import result_dicts
from detkit.evaluation._params import IOU_TYPES, LabelMap
from detkit.evaluation._rle import encode_masks
from detkit.types import check_predictions, normalize_image_id

__all__ = ["coco_results", "masks_to_rle", "xyxy_to_xywh"]


def xyxy_to_xywh(boxes: torch.Tensor | np.ndarray) -> np.ndarray:
    """XYXY boxes to COCO's XYWH, as float64 (no rounding of float32 or float64 inputs).

    Deprecated: torchvision has the one conversion of box formats,
    ``torchvision.ops.box_convert(boxes.double(), "xyxy", "xywh")`` (in float64 for COCO's
    exact numbers); :func:`coco_results` and the evaluator convert by themselves.

    Args:
        boxes: ``Tensor[N, 4]`` or array ``[N, 4]``, XYXY.

    Returns:
        float64 array ``[N, 4]``: ``x1, y1, x2 - x1, y2 - y1``.

    >>> from torchvision.ops import box_convert  # instead of xyxy_to_xywh(boxes)
    >>> box_convert(torch.tensor([[1.0, 2.0, 4.0, 8.0]]).double(), "xyxy", "xywh")
    tensor([[1., 2., 3., 6.]], dtype=torch.float64)
    """
    warnings.warn(
        "detkit.evaluation.xyxy_to_xywh is deprecated: use torchvision.ops.box_convert(boxes"
        '.double(), "xyxy", "xywh")',
        DeprecationWarning,
        stacklevel=2,
    )
    shape = tuple(np.shape(boxes))
    if len(shape) != 2 or shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {shape}")
    return boxes_xywh([boxes])


def masks_to_rle(masks: torch.Tensor | np.ndarray, *, threshold: float = 0.5) -> list[dict]:
    """Binarize masks and encode each as COCO's compressed RLE.

    Args:
        masks: ``Tensor[N, 1, H, W]`` (Mask R-CNN's probabilities) or ``Tensor[N, H, W]``, on
            any device; a numpy array also works. Floating masks are thresholded (``> threshold``),
            integer and boolean masks count non-zero pixels.
        threshold: probability above which a pixel belongs to the instance.

    Returns:
        One ``{"size": [H, W], "counts": bytes}`` dict per mask, as
        ``pycocotools.mask.encode`` returns them (``counts.decode()`` gives JSON's string).

    >>> masks = torch.zeros(1, 1, 3, 4)
    >>> masks[0, 0, 1:, 2:] = 0.9
    >>> rle = masks_to_rle(masks)[0]
    >>> from pycocotools import mask as mask_utils
    >>> rle["size"], int(mask_utils.area(rle))
    ([3, 4], 4)
    """
    height, width = (int(v) for v in masks.shape[-2:])
    return [{"size": [height, width], "counts": c} for c in encode_masks(masks, threshold)]


def coco_results(
    predictions: Sequence[Mapping[str, Any]],
    image_ids: Sequence[Any],
    *,
    iou_type: str = "bbox",
    label_to_category: Mapping[int, int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Model outputs as COCO result dicts, the list a results json holds.

    Args:
        predictions: torchvision detection outputs, one dict per image (``boxes``, ``scores``,
            ``labels``; ``masks`` for segm; ``keypoints`` for keypoints).
        image_ids: the image id of each prediction (int or 0-d tensor).
        iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
        label_to_category: maps model labels to the dataset's category ids.
        mask_threshold: mask probability threshold (segm).

    Returns:
        ``[{"image_id", "category_id", "score", "bbox" | "segmentation" | "keypoints"}, ...]``,
        JSON-serializable (RLE counts as ``str``).

    >>> prediction = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 8.0]]),
    ...               "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
    >>> coco_results([prediction], [7], label_to_category={1: 18})
    [{'image_id': 7, 'category_id': 18, 'bbox': [1.0, 2.0, 3.0, 6.0], 'score': 0.5}]
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if len(predictions) != len(image_ids):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(image_ids)} image ids; they must align"
        )
    ids = [normalize_image_id(i, argument=f"image_ids[{n}]") for n, i in enumerate(image_ids)]
    check_predictions(predictions, ids, iou_types=(iou_type,))
    detections = prediction_table(
        predictions,
        ids,
        {iou_type},
        mask_threshold=mask_threshold,
        labels=LabelMap(label_to_category),
    )[0]
    return result_dicts(detections, iou_type)
