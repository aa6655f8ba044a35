"""Batches of targets and predictions as the columns the evaluator keeps.

Per ``update`` each field of every image is gathered into one float64 numpy column (CPU
tensors are read in place, accelerator tensors copied once), masks are RLE-encoded, labels
mapped to category ids, and shapes and values checked, naming the image at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from detkit.evaluation._params import LabelMap
from detkit.evaluation._rle import encode_masks


def _missing(item: Any, key: str, where: str) -> Exception:
    if not isinstance(item, Mapping):
        return TypeError(f"{where}: expected a dict, got {type(item).__name__}")
    return ValueError(f"{where}: missing '{key}' (present: {sorted(item)})")


def _plain(value: Any) -> Any:
    """A tensor subclass (tv_tensors) as a plain tensor, once: their dispatch costs several
    times a plain tensor's on every attribute and op."""
    if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
        return value.as_subclass(torch.Tensor)
    return value


#: Box formats of ``tv_tensors.BoundingBoxes`` read as XYXY in float64 (exact for float32).
_TO_XYXY = {
    "XYWH": lambda b: np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1),
    "CXCYWH": lambda b: np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1),
}


def _xyxy(boxes: Any, where: str) -> Any:
    """Boxes as XYXY: a ``tv_tensors.BoundingBoxes`` in another format is converted (in
    float64), not misread; plain tensors are XYXY by the target contract."""
    box_format = getattr(boxes, "format", None)  # only BoundingBoxes carry a format
    boxes = _plain(boxes)
    if box_format is None:
        return boxes
    name = getattr(box_format, "name", str(box_format)).upper()
    if name == "XYXY":
        return boxes
    if name not in _TO_XYXY:
        raise ValueError(f"{where}: 'boxes' in format {name} cannot be evaluated as COCO boxes")
    values = boxes.detach().cpu()
    values = (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    return _TO_XYXY[name](values.astype(np.float64).reshape(-1, 4))


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
    joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return joined.reshape(-1, width).astype(dtype)


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


def boxes_xywh(values: list) -> np.ndarray:
    """Per-image XYXY boxes (tensors or arrays ``[N, 4]``) as one float64 XYWH array."""
    boxes = _column(values, 4)
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def prediction_columns(
    predictions: Sequence[Mapping[str, Any]],
    image_ids: list[int],
    iou_types: set[str],
    *,
    mask_threshold: float,
    labels: LabelMap,
) -> dict[str, Any]:
    """One batch of predictions as columns: counts per image, then one row per detection."""
    boxes, scores, label_list, rles, keypoints, sizes = [], [], [], [], [], []
    counts = []
    want_boxes, want_masks = "bbox" in iou_types, "segm" in iou_types
    want_points = "keypoints" in iou_types
    for n, prediction in enumerate(predictions):
        try:
            score, label = _plain(prediction["scores"]), _plain(prediction["labels"])
            box = prediction["boxes"] if want_boxes else None
            mask = _plain(prediction["masks"]) if want_masks else None
            point = _plain(prediction["keypoints"]) if want_points else None
        except (KeyError, TypeError):
            where = f"predictions[{n}] (image_id={image_ids[n]})"
            for key in ("scores", "labels", "boxes", "masks", "keypoints"):
                if not isinstance(prediction, Mapping) or key not in prediction:
                    raise _missing(prediction, key, where) from None
            raise
        try:
            num = score.shape[0]
            bad = (
                score.shape != (num,)
                or label.shape != (num,)
                or (want_boxes and (box is None or box.shape != (num, 4)))
                or (want_masks and (mask is None or not _mask_shape_ok(mask.shape, num)))
                or (
                    want_points
                    and (
                        point is None
                        or point.ndim != 3
                        or point.shape[:1] + point.shape[2:] != (num, 3)
                    )
                )
            )
        except (AttributeError, IndexError):
            keys = ("scores", "labels", "boxes", "masks", "keypoints")
            _check_arrays(prediction, keys, "predictions", n, image_ids)
            bad = True
        if bad:
            raise ValueError(
                f"predictions[{n}] (image_id={image_ids[n]}): expected 'scores' [N], 'labels' "
                "[N], 'boxes' [N, 4], 'masks' [N, 1, H, W], 'keypoints' [N, K, 3]; got "
                + ", ".join(
                    f"'{key}' {tuple(prediction[key].shape)}"
                    for key in ("scores", "labels", "boxes", "masks", "keypoints")
                    if key in prediction and hasattr(prediction[key], "shape")
                )
            )
        counts.append(num)
        scores.append(score)
        label_list.append(label)
        if want_boxes:
            boxes.append(_xyxy(box, f"predictions[{n}] (image_id={image_ids[n]})"))
        if mask is not None:  # wanted (and checked above)
            sizes.append((int(mask.shape[-2]), int(mask.shape[-1])))
            rles += encode_masks(mask, mask_threshold)
        if want_points:
            keypoints.append(point)
    columns: dict[str, Any] = {
        "counts": np.asarray(counts, dtype=np.int64),
        "score": _column(scores, 1)[:, 0],
        "category_id": _map_labels(
            _label_column(label_list, counts, image_ids, "predictions"),
            labels,
            counts,
            image_ids,
            "predictions",
        ),
    }
    if want_boxes:
        columns["bbox"] = boxes_xywh(boxes)
    if want_masks:
        columns["rles"], columns["mask_sizes"] = rles, sizes
    if want_points:
        columns["keypoints"] = _points(keypoints, image_ids, "predictions")
    _check_finite(columns, counts, image_ids, "predictions")
    return columns


def _check_arrays(item: Mapping, keys: tuple, what: str, n: int, image_ids: list[int]) -> None:
    for key in keys:
        value = item.get(key)
        if value is not None and not hasattr(value, "shape"):
            raise TypeError(
                f"{what}[{n}] (image_id={image_ids[n]}): '{key}' must be a tensor, got "
                f"{type(value).__name__}"
            )


def _mask_shape_ok(shape, num: int) -> bool:
    return (len(shape) == 3 or (len(shape) == 4 and shape[1] == 1)) and shape[0] == num


def _points(keypoints: list, image_ids: list[int], what: str) -> np.ndarray:
    ks = {int(k.shape[1]) for k in keypoints}
    if len(ks) > 1:
        raise ValueError(
            f"{what}: keypoints of one batch have different K {sorted(ks)} "
            f"(image_ids {image_ids}); every instance must have the same keypoints"
        )
    k = ks.pop() if ks else 0
    n = sum(int(p.shape[0]) for p in keypoints)
    return _column(keypoints, 3 * k).reshape(n, k, 3) if n else np.zeros((0, k, 3))


def _label_column(values: list, counts, image_ids, what: str) -> np.ndarray:
    """Labels as int64: integers, or floats with integral values; anything else names its image."""
    kinds = [_dtype_kind(value.dtype) for value in values]
    for n, kind in enumerate(kinds):
        if kind in "bc":
            raise ValueError(
                f"{what}[{n}] (image_id={image_ids[n]}): 'labels' must be integers, got "
                f"dtype {values[n].dtype}"
            )
    if all(kind in "iu" for kind in kinds):
        return _column(values, 1, np.int64)[:, 0]
    column = _column(values, 1)[:, 0]
    bad = ~np.isfinite(column) | (column != np.floor(column))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        image = _row_image(row, counts)
        raise ValueError(
            f"{what}[{image}] (image_id={image_ids[image]}): 'labels' must be integers (or "
            f"floats with integral values), got {column[row]}"
        )
    return column.astype(np.int64)


def _dtype_kind(dtype) -> str:
    """numpy's kind letter (``b``ool, ``i``nteger, ``f``loat, ``c``omplex) of a torch or numpy
    dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype == torch.bool:
            return "b"
        return "c" if dtype.is_complex else "f" if dtype.is_floating_point else "i"
    return np.dtype(dtype).kind


def _row_image(row: int, counts) -> int:
    """The position of the image that row ``row`` of a batch's columns belongs to."""
    return int(np.searchsorted(np.cumsum(counts), row, side="right"))


def _map_labels(values, labels: LabelMap, counts, image_ids, what: str) -> np.ndarray:
    try:
        return labels(values, what)
    except ValueError:
        # Redo image by image so the message names the image.
        start = 0
        for n, count in enumerate(counts):
            labels(values[start : start + count], f"{what}[{n}] (image_id={image_ids[n]})")
            start += count
        raise


def _check_finite(columns: dict, counts, image_ids, what: str) -> None:
    for key in ("score", "bbox", "area", "keypoints"):
        values = columns.get(key)
        if values is None or np.isfinite(values).all():
            continue
        flat = values.reshape(len(values), values.size // max(len(values), 1))
        row = int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])
        image = _row_image(row, counts)
        raise ValueError(
            f"{what}[{image}] (image_id={image_ids[image]}): '{key}' has NaN or infinite values"
        )


def target_columns(
    targets: Sequence[Mapping[str, Any]],
    image_ids: list[int],
    iou_types: set[str],
    *,
    labels: LabelMap,
) -> dict[str, Any]:
    """One batch of ground-truth targets as columns (counts per image, one row per instance).

    ``area`` defaults to the mask pixel count where masks exist, else the box area; ``iscrowd``
    to 0. Masks are encoded only for segm, keypoints kept only for keypoints.
    """
    counts, boxes, label_list, areas, crowds, rles, keypoints, sizes = ([] for _ in range(8))
    for n, target in enumerate(targets):
        try:
            box, label = target["boxes"], _plain(target["labels"])
        except (KeyError, TypeError):
            where = f"targets[{n}] (image_id={image_ids[n]})"
            has_boxes = isinstance(target, Mapping) and "boxes" in target
            raise _missing(target, "labels" if has_boxes else "boxes", where) from None
        box = _xyxy(box, f"targets[{n}] (image_id={image_ids[n]})")
        masks, area = _plain(target.get("masks")), _plain(target.get("area"))
        crowd = _plain(target.get("iscrowd"))
        try:
            num = box.shape[0]
            bad = (
                box.shape != (num, 4)
                or label.shape != (num,)
                or (masks is not None and (masks.ndim != 3 or masks.shape[0] != num))
                or (area is not None and area.shape != (num,))
                or (crowd is not None and crowd.shape != (num,))
            )
        except (AttributeError, IndexError):
            keys = ("boxes", "labels", "masks", "area", "iscrowd")
            _check_arrays(target, keys, "targets", n, image_ids)
            bad = True
        if bad:
            raise ValueError(
                f"targets[{n}] (image_id={image_ids[n]}): expected 'boxes' [N, 4], 'labels', "
                "'area', 'iscrowd' [N], 'masks' [N, H, W]; got "
                + ", ".join(
                    f"'{key}' {tuple(target[key].shape)}"
                    for key in ("boxes", "labels", "area", "iscrowd", "masks")
                    if key in target and hasattr(target[key], "shape")
                )
            )
        sizes.append((int(masks.shape[1]), int(masks.shape[2])) if masks is not None else (0, 0))
        if area is None:
            area = _pixel_counts(masks) if masks is not None else _box_area(box)
        if "segm" in iou_types:
            if masks is None:
                raise ValueError(
                    f"targets[{n}] (image_id={image_ids[n]}): segm evaluation needs "
                    "ground-truth 'masks'"
                )
            rles += encode_masks(masks, 0.5)
        if "keypoints" in iou_types:
            point = _plain(target.get("keypoints"))
            if point is None or point.ndim != 3 or point.shape[0] != num or point.shape[2] != 3:
                raise ValueError(
                    f"targets[{n}] (image_id={image_ids[n]}): keypoints evaluation needs "
                    f"'keypoints' [{num}, K, 3], got "
                    f"{None if point is None else tuple(point.shape)}"
                )
            keypoints.append(point)
        counts.append(num)
        boxes.append(box)
        label_list.append(label)
        areas.append(area)
        crowds.append(np.zeros(num) if crowd is None else crowd)
    columns = {
        "counts": np.asarray(counts, dtype=np.int64),
        "sizes": np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        "category_id": _map_labels(
            _label_column(label_list, counts, image_ids, "targets"),
            labels,
            counts,
            image_ids,
            "targets",
        ),
        "bbox": boxes_xywh(boxes),
        "area": _column(areas, 1)[:, 0],
        "iscrowd": (_column(crowds, 1)[:, 0] != 0).astype(np.int64),
    }
    if "segm" in iou_types:
        columns["rles"] = rles
    if "keypoints" in iou_types:
        columns["keypoints"] = _points(keypoints, image_ids, "targets")
    _check_finite(columns, counts, image_ids, "targets")
    return columns


def _pixel_counts(masks):
    if isinstance(masks, torch.Tensor):
        return (masks != 0).flatten(1).sum(1)
    array = np.asarray(masks)
    flat = array.reshape(array.shape[0], array.shape[1] * array.shape[2])
    return np.count_nonzero(flat, axis=1)


def _box_area(boxes):
    if not isinstance(boxes, torch.Tensor):
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    boxes = boxes.to(torch.float64)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


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
            f"predictions[{n}] (image_id={ids[n]}): masks are {tuple(predicted[n].tolist())} "
            f"(H, W) but the image's ground truth is {tuple(sizes[n].tolist())}; predicted "
            "masks must be pasted at the evaluated image's size"
        )
    return np.where(known[:, None], sizes, predicted)
