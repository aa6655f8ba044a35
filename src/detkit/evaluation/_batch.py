"""One ``update``'s batch of targets and predictions as tables of annotations.

The batch's shapes were checked first, once, by :func:`detkit.types.check_targets` and
:func:`~detkit.types.check_predictions`. Here each field of every image is gathered into one
float64 numpy column (CPU tensors are read in place, accelerator tensors copied once), masks
are RLE-encoded, labels mapped to category ids, and the values of the whole batch checked at
once (NaN, fractional labels, ground-truth boxes with ``x2 < x1``, negative areas), naming
the image at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from detkit import ops
from detkit.evaluation._params import LabelMap
from detkit.evaluation._rle import encode_masks
from detkit.evaluation._table import Annotations
from detkit.tv_tensors import plain, to_xyxy
from detkit.types import sample_name

logger = logging.getLogger("detkit.evaluation.evaluator")


def _where(what: str, position: int, image_ids: Sequence[int]) -> str:
    return sample_name(image_id=image_ids[position], position=f"{what}[{position}]")


def _plain(value: Any) -> Any:
    """A tensor subclass (tv_tensors) as a plain tensor, once: their dispatch costs several
    times a plain tensor's on every attribute and op. Arrays and ``None`` pass as they are."""
    return plain(value) if isinstance(value, torch.Tensor) else value


def _column(values: list, width: int, dtype=np.float64) -> np.ndarray:
    """Per-image values (``[N]`` or ``[N, width]``) as one array ``[n, width]`` (float64).

    CPU tensors are read in place by numpy (a torch call costs several times a numpy one on
    arrays this small); tensors on an accelerator are concatenated there and copied once.
    """
    if not values:
        return np.zeros((0, width), dtype=dtype)
    try:  # the common case, CPU tensors without grad (or numpy arrays): no torch call at all
        arrays = [v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]
    except (RuntimeError, TypeError):  # on an accelerator, needing grad, or bfloat16
        arrays = _host_arrays(values)
    if len(arrays) > 1:  # cast while joining: one copy, not two
        return np.concatenate(arrays, dtype=dtype, casting="unsafe").reshape(-1, width)
    return arrays[0].reshape(-1, width).astype(dtype)


def _host_arrays(values: list) -> list[np.ndarray]:
    first = values[0]
    if isinstance(first, torch.Tensor) and first.device.type != "cpu":
        try:  # concatenated where they are, copied to the host once
            values = [torch.cat([v.detach() for v in values]).cpu()]
        except RuntimeError:  # tensors on several devices
            values = [v.detach().cpu() for v in values]
    arrays = []
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        arrays.append(np.asarray(value))
    return arrays


def xyxy(boxes: Any) -> Any:
    """Boxes as XYXY: a ``BoundingBoxes`` in another format is converted (in float64: exact
    for float32 coordinates), not misread; plain tensors are XYXY by the target contract."""
    if type(boxes) is torch.Tensor:  # the contract's plain XYXY boxes, the common case
        return boxes
    if getattr(boxes, "format", None) is None:  # only BoundingBoxes carry a format
        return _plain(boxes)
    if getattr(boxes.format, "name", "") == "XYXY":
        return plain(boxes)
    return plain(to_xyxy(boxes.detach().to(torch.float64)))


def mask_size(masks: Any) -> tuple[int, int]:
    """A target's image size ``(H, W)`` from its masks ``[N, H, W]``; ``(0, 0)`` without."""
    return (int(masks.shape[1]), int(masks.shape[2])) if masks is not None else (0, 0)


def scalar_column(values: list, dtype=np.float64) -> np.ndarray:
    """Per-image values ``[N]`` as one array ``[n]`` (float64 by default)."""
    return _column(values, 1, dtype)[:, 0]


def boxes_xywh(values: list) -> np.ndarray:
    """Per-image XYXY boxes (tensors or arrays ``[N, 4]``) as one float64 XYWH array."""
    return _xywh(_column(values, 4))


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """float64 XYXY boxes ``[n, 4]`` as XYWH, in place."""
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def prediction_table(
    predictions: Sequence[Mapping[str, Any]],
    image_ids: list[int],
    iou_types: set[str],
    *,
    mask_threshold: float,
    labels: LabelMap,
) -> tuple[Annotations, np.ndarray, list[tuple[int, int]]]:
    """A checked batch of predictions as ``(detections, counts per image, mask sizes)``.

    The detections' ``area`` and ``iscrowd`` are left unset (see
    :meth:`~detkit.evaluation._table.Annotations.results`); mask sizes are ``(H, W)`` per
    image, for segm only.
    """
    boxes, scores, label_list, rles, keypoints, sizes = [], [], [], [], [], []
    counts = [int(p["scores"].shape[0]) for p in predictions]
    for position, prediction in enumerate(predictions):
        scores.append(_plain(prediction["scores"]))
        label_list.append(_plain(prediction["labels"]))
        if "bbox" in iou_types:
            boxes.append(xyxy(prediction["boxes"]))
        if "segm" in iou_types:
            mask = _plain(prediction["masks"])
            _check_probabilities(mask, position, image_ids)
            sizes.append((int(mask.shape[-2]), int(mask.shape[-1])))
            rles += encode_masks(mask, mask_threshold)
        if "keypoints" in iou_types:
            keypoints.append(_plain(prediction["keypoints"]))
    n = sum(counts)
    table = Annotations(
        image_id=np.repeat(np.asarray(image_ids, dtype=np.int64), counts),
        category_id=_categories(label_list, counts, image_ids, labels, "predictions"),
        bbox=boxes_xywh(boxes) if "bbox" in iou_types else np.zeros((n, 4)),
        area=None,  # derived per iou type by results()
        iscrowd=None,
        score=scalar_column(scores),
        rle_counts=rles if "segm" in iou_types else None,
        rle_sizes=_rle_sizes(sizes, counts) if "segm" in iou_types else None,
        keypoints=_points(keypoints, image_ids, "predictions")
        if "keypoints" in iou_types
        else None,
    )
    _check_values(table, counts, image_ids, "predictions")
    return table, np.asarray(counts, dtype=np.int64), sizes


def target_table(
    targets: Sequence[Mapping[str, Any]],
    image_ids: list[int],
    iou_types: set[str],
    *,
    labels: LabelMap,
) -> tuple[Annotations, np.ndarray, np.ndarray]:
    """A checked batch of targets as ``(ground truth, counts per image, sizes [B, 2])``.

    ``area`` defaults to the mask pixel count where masks exist, else the box area
    (:mod:`detkit.ops`); ``iscrowd`` to 0. Masks are encoded only for segm, keypoints kept
    only for keypoints; sizes are the masks' ``(H, W)``, ``(0, 0)`` without masks.
    """
    boxes, label_list, areas, crowds, rles, keypoints, sizes = ([] for _ in range(7))
    counts = [int(t["boxes"].shape[0]) for t in targets]
    for target, num in zip(targets, counts):
        masks, area = _plain(target.get("masks")), _plain(target.get("area"))
        sizes.append(mask_size(masks))
        if area is None and masks is not None:
            area = ops.masks_area(torch.as_tensor(masks))
        if "segm" in iou_types:
            rles += encode_masks(masks, 0.5)
        if "keypoints" in iou_types:
            keypoints.append(_plain(target["keypoints"]))
        boxes.append(xyxy(target["boxes"]))
        label_list.append(_plain(target["labels"]))
        areas.append(np.zeros(num) if area is None else area)
        crowd = target.get("iscrowd")
        crowds.append(np.zeros(num) if crowd is None else _plain(crowd))
    corners = _column(boxes, 4)
    area_column = scalar_column(areas)
    unknown = [t.get("area") is None and t.get("masks") is None for t in targets]
    if any(unknown):  # the whole batch's box areas at once
        from_boxes = np.repeat(unknown, counts)
        area_column[from_boxes] = ops.box_area(torch.from_numpy(corners[from_boxes])).numpy()
    points = _points(keypoints, image_ids, "targets") if "keypoints" in iou_types else None
    table = Annotations(
        image_id=np.repeat(np.asarray(image_ids, dtype=np.int64), counts),
        category_id=_categories(label_list, counts, image_ids, labels, "targets"),
        bbox=_xywh(corners),
        area=area_column,
        iscrowd=(scalar_column(crowds) != 0).astype(np.int64),
        rle_counts=rles if "segm" in iou_types else None,
        rle_sizes=_rle_sizes(sizes, counts) if "segm" in iou_types else None,
        keypoints=points,
        num_keypoints=None if points is None else (points[:, 2::3] > 0).sum(1),
    )
    _check_values(table, counts, image_ids, "targets")
    inverted, first = inverted_boxes(table, counts, image_ids, "targets")
    if inverted:  # ground truth is never inverted: it would be matched by nothing, silently
        raise ValueError(f"{first} has x2 < x1 or y2 < y1; {XYXY_ADVICE}")
    sizes_array = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    return table, np.asarray(counts, dtype=np.int64), sizes_array


#: How far below 0 a predicted mask may reach before it counts as logits: interpolating
#: probabilities (bicubic) undershoots a little; a logit's background is far below.
_MASK_UNDERSHOOT = 0.1


def _check_probabilities(mask: Any, position: int, image_ids: Sequence[int]) -> None:
    """Refuse floating masks that are logits or 0..255 probabilities, not probabilities:
    thresholded at 0.5, a logit passes for a probability of 0.62 and a 0..255 value for one
    of 0.002, and the metric changes without a word. The first mask, every 8th pixel each
    way, tells: a logit's background lies far below 0 everywhere, and 0..255 probabilities
    have values between 1 and their maximum (binary 0/255 masks have none: they pass)."""
    if isinstance(mask, torch.Tensor):
        # Meta tensors (stand-ins for an accelerator's in tests) have no values to look at.
        floating = mask.is_floating_point() and mask.device.type != "meta"
    else:
        floating = np.issubdtype(mask.dtype, np.floating)
    if not floating or not np.prod(mask[:1].shape):  # no mask, or masks of no pixel
        return
    sample = mask[0][..., ::8, ::8]
    low, high = float(sample.min()), float(sample.max())
    where = _where("predictions", position, image_ids)
    if low < -_MASK_UNDERSHOOT:
        raise ValueError(
            f"{where}: 'masks' hold values down to {low:.4g}, not probabilities in 0..1: pass "
            "mask logits through .sigmoid() (as torchvision's Mask R-CNN does) before the "
            "evaluator thresholds them"
        )
    if high > 1 + _MASK_UNDERSHOOT and bool(
        ((sample > 1 + _MASK_UNDERSHOOT) & (sample < high)).any()
    ):
        raise ValueError(
            f"{where}: 'masks' hold values up to {high:.4g}, not probabilities in 0..1: "
            "divide 0..255 probabilities by 255 before the evaluator thresholds them at "
            "mask_threshold"
        )


def _rle_sizes(sizes: list[tuple[int, int]], counts: list[int]) -> np.ndarray:
    """Each mask's ``(height, width)`` from its image's."""
    return np.repeat(np.asarray(sizes, dtype=np.int64).reshape(-1, 2), counts, axis=0)


def _points(keypoints: list, image_ids: list[int], what: str) -> np.ndarray:
    """Per-image keypoints ``[N, K, 3]`` as COCO's flat rows ``[n, K * 3]`` (float64)."""
    ks = {int(k.shape[1]) for k in keypoints}
    if len(ks) > 1:
        raise ValueError(
            f"{what}: keypoints of one batch have different K {sorted(ks)} "
            f"(image_ids {image_ids}); every instance must have the same keypoints"
        )
    k = ks.pop() if ks else 0
    if not sum(int(p.shape[0]) for p in keypoints):  # K may be 0 then, and means nothing
        return np.zeros((0, 3 * k))
    return _column(keypoints, 3 * k)


def _categories(values: list, counts, image_ids, labels: LabelMap, what: str) -> np.ndarray:
    """Labels (integers, or floats with integral values) mapped to category ids."""
    if all(_is_integer(value.dtype) for value in values):
        column = scalar_column(values, np.int64)
    else:
        floats = scalar_column(values)
        bad = ~np.isfinite(floats) | (floats != np.floor(floats))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            image = _row_image(row, counts)
            raise ValueError(
                f"{_where(what, image, image_ids)}: 'labels' must be integers (or floats with "
                f"integral values), got {floats[row]}"
            )
        column = floats.astype(np.int64)
    # column.all(): one reduction, no array made, unless some label is 0.
    if what == "targets" and labels.mapping is None and not labels.warned_zero and not column.all():
        labels.warned_zero = True
        first = int(np.flatnonzero(column == 0)[0])
        logger.warning(
            "%s: ground-truth label 0, which torchvision's detectors keep for background "
            "(so no model predicts it), is evaluated as category 0: its instances count as "
            "missed. Shift labels to start at 1, or pass label_to_category (with 0) if 0 is "
            "a class of your model. Said once",
            _where(what, _row_image(first, counts), image_ids),
        )
    try:
        return labels(column, what)
    except ValueError:
        # Redo image by image so the message names the image.
        start = 0
        for n, count in enumerate(counts):
            labels(column[start : start + count], _where(what, n, image_ids))
            start += count
        raise


def _is_integer(dtype) -> bool:
    if isinstance(dtype, torch.dtype):
        return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    return np.dtype(dtype).kind in "iu"


def _row_image(row: int, counts) -> int:
    """The position of the image that row ``row`` of a batch's columns belongs to."""
    return int(np.searchsorted(np.cumsum(counts), row, side="right"))


def _check_values(table: Annotations, counts, image_ids, what: str) -> None:
    """Raise ValueError naming the image for values no evaluation can take: NaN or infinite
    numbers and negative areas (an instance outside every area range, ignored)."""
    for key in ("score", "bbox", "area", "keypoints"):
        values = getattr(table, key)
        # A finite sum means finite values (NaN and inf propagate), without a bool array;
        # a sum that overflows is looked at value by value.
        if values is None or np.isfinite(values.sum()) or np.isfinite(values).all():
            continue
        flat = values.reshape(len(values), values.size // max(len(values), 1))
        row = int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])
        image = _row_image(row, counts)
        raise ValueError(f"{_where(what, image, image_ids)}: '{key}' has NaN or infinite values")
    area = table.area
    if area is not None and len(area) and area.min() < 0:
        row = int(np.flatnonzero(area < 0)[0])
        image = _row_image(row, counts)
        raise ValueError(
            f"{_where(what, image, image_ids)}: 'area' of instance "
            f"{row - _first_row(image, counts)} is {area[row]}; areas must be >= 0"
        )


#: What to do about boxes that are not XYXY, in every message that finds them.
XYXY_ADVICE = (
    "boxes must be XYXY (x1, y1, x2, y2): convert XYWH boxes with torchvision.ops.box_convert("
    'boxes, "xywh", "xyxy")'
)


def inverted_boxes(table: Annotations, counts, image_ids, what: str) -> tuple[int, str]:
    """``(number, first)``: how many rows of a batch's table have a box with ``x2 < x1`` or
    ``y2 < y1`` (XYWH boxes read as XYXY, typically), and the first of them named by its
    image; ``(0, "")`` when none has. One pass over the widths and heights."""
    flat = table.bbox.reshape(-1)  # XYWH by now; 1-d strides reduce faster than [:, 2:]
    if not len(flat) or min(flat[2::4].min(), flat[3::4].min()) >= 0:
        return 0, ""
    rows = np.flatnonzero((table.bbox[:, 2:] < 0).any(axis=1))
    row = int(rows[0])
    image = _row_image(row, counts)
    x, y, w, h = table.bbox[row].tolist()
    index = row - _first_row(image, counts)
    return len(rows), f"{_where(what, image, image_ids)}: box {index} {[x, y, x + w, y + h]}"


class InvertedBoxes:
    """The predicted boxes with ``x2 < x1`` or ``y2 < y1`` seen so far: a model may predict
    them (they match nothing: false positives, as in pycocotools), but XYWH boxes passed as
    XYXY give them too, so the evaluator says so once per ``compute``."""

    def __init__(self) -> None:
        self.count, self.first = 0, ""

    def add(self, detections: Annotations, counts, image_ids) -> None:
        count, first = inverted_boxes(detections, counts, image_ids, "predictions")
        self.count += count
        self.first = self.first or first

    def warn(self, log: logging.Logger) -> None:
        if self.count:
            log.warning(
                "%d predicted boxes have x2 < x1 or y2 < y1 (the first: %s); they match "
                "nothing and count as false positives, as in pycocotools. If the model did "
                "not mean them so: %s",
                self.count,
                self.first,
                XYXY_ADVICE,
            )


def _first_row(image: int, counts) -> int:
    """The row of the batch's columns where the image at position ``image`` starts."""
    return int(np.sum(counts[:image]))


def merge_sizes(sizes: np.ndarray, mask_sizes: list | None, ids: list[int]) -> np.ndarray:
    """Image sizes ``[B, 2]`` from the ground truth, else from the predicted masks (checked)."""
    if not mask_sizes:
        return sizes
    predicted = np.asarray(mask_sizes, dtype=np.int64).reshape(-1, 2)
    known = np.all(sizes > 0, axis=1)
    bad = known & (sizes != predicted).any(axis=1)
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{_where('predictions', n, ids)}: masks are {tuple(predicted[n].tolist())} "
            f"(H, W) but the image's ground truth is {tuple(sizes[n].tolist())}; predicted "
            "masks must be pasted at the evaluated image's size"
        )
    return np.where(known[:, None], sizes, predicted)
