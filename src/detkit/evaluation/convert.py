"""Targets and predictions to COCO's formats: XYWH boxes, RLE masks, result dicts.

Boxes are converted in float64 (the difference of two float32 coordinates is exact there),
so neither float32 nor float64 inputs lose precision. Masks are thresholded on their own
device and RLE-encoded by pycocotools' C encoder on a Fortran-ordered view: no per-pixel
Python work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from detkit.evaluation._coco import Annotations, annotation_dicts, detections_like_load_res
from detkit.evaluation._params import IOU_TYPES
from detkit.types import normalize_image_id

__all__ = ["coco_results", "masks_to_rle", "xyxy_to_xywh"]


def xyxy_to_xywh(boxes: torch.Tensor | np.ndarray) -> np.ndarray:
    """XYXY boxes to COCO's XYWH, as float64 (no rounding of float32 or float64 inputs).

    Args:
        boxes: ``Tensor[N, 4]`` or array ``[N, 4]``, XYXY.

    Returns:
        float64 array ``[N, 4]``: ``x1, y1, x2 - x1, y2 - y1``.

    >>> xyxy_to_xywh(torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
    array([[1., 2., 3., 6.]])
    """
    array = _numpy(boxes).astype(np.float64, copy=True)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {tuple(array.shape)}")
    array[:, 2:] -= array[:, :2]
    return array


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
    tensor = masks if isinstance(masks, torch.Tensor) else torch.as_tensor(np.asarray(masks))
    tensor = tensor.detach()
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.ndim != 3:
        raise ValueError(
            f"masks must have shape [N, 1, H, W] or [N, H, W], got {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0:
        return []
    binary = tensor > threshold if tensor.is_floating_point() else tensor != 0
    # A C-ordered [N, W, H] block is the Fortran-ordered [H, W, N] array encode() reads.
    columns = binary.transpose(1, 2).to(torch.uint8).contiguous().cpu().numpy()
    return mask_utils.encode(columns.transpose(2, 1, 0))


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
    batch = prediction_columns(
        predictions,
        ids,
        {iou_type},
        mask_threshold=mask_threshold,
        labels=LabelMap(label_to_category),
    )
    rows = np.repeat(np.asarray(ids, dtype=np.int64), batch["counts"])
    sizes = np.repeat(
        np.asarray(batch.get("mask_sizes", np.zeros((len(ids), 2))), dtype=np.int64).reshape(-1, 2),
        batch["counts"],
        axis=0,
    )
    return result_dicts(detections_from_columns(batch, iou_type, rows, sizes), iou_type)


def result_dicts(detections: Annotations, iou_type: str) -> list[dict]:
    """COCO result dicts (what ``loadRes`` reads) for detections of one iou type."""
    rows = annotation_dicts(detections, iou_type, json_safe=True)
    payload = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    keep = ("image_id", "category_id", payload, "score")
    return [{key: row[key] for key in keep} for row in rows]


class LabelMap:
    """Maps model labels to dataset category ids (identity without a mapping)."""

    def __init__(self, mapping: Mapping[Any, Any] | None):
        self.mapping = None
        self._lut = None
        if mapping is None:
            return
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"label_to_category must be a dict {{label: category_id}}, got {type(mapping).__name__}"
            )
        pairs = {}
        for key, value in mapping.items():
            label = normalize_image_id(key, argument="label_to_category key")
            category = normalize_image_id(value, argument=f"label_to_category[{label}]")
            if label < 0 or category < 0:
                raise ValueError(
                    f"label_to_category must map non-negative labels to non-negative category "
                    f"ids, got {label} -> {category}"
                )
            pairs[label] = category
        self.mapping = pairs
        if pairs and max(pairs) < (1 << 20):
            self._lut = np.full(max(pairs) + 1, -1, dtype=np.int64)
            self._lut[list(pairs)] = list(pairs.values())

    def __call__(self, labels: np.ndarray, where: str) -> np.ndarray:
        labels = labels.astype(np.int64, copy=False)
        if self.mapping is None:
            if labels.size and labels.min() < 0:
                raise ValueError(f"{where}: labels must be non-negative, got {labels.min()}")
            return labels
        if self._lut is not None:
            inside = (labels >= 0) & (labels < len(self._lut))
            mapped = np.where(inside, self._lut[np.where(inside, labels, 0)], -1)
        else:
            mapped = np.array([self.mapping.get(v, -1) for v in labels.tolist()], dtype=np.int64)
        if (mapped < 0).any():
            missing = sorted(set(labels[mapped < 0].tolist()))
            raise ValueError(
                f"{where}: labels {missing} are not in label_to_category "
                f"(which maps {sorted(self.mapping)})"
            )
        return mapped


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _missing(item: Any, key: str, where: str) -> Exception:
    if not isinstance(item, Mapping):
        return TypeError(f"{where}: expected a dict, got {type(item).__name__}")
    return ValueError(f"{where}: missing '{key}' (present: {sorted(item)})")


def _column(values: list, width: int) -> np.ndarray:
    """Per-image values (``[N]`` or ``[N, width]``) as one float64 array ``[n, width]``.

    CPU tensors are read in place by numpy (a torch call costs several times a numpy one on
    arrays this small); tensors on an accelerator are concatenated there and copied once.
    """
    if not values:
        return np.zeros((0, width))
    first = values[0]
    if isinstance(first, torch.Tensor) and first.device.type != "cpu":
        try:
            values = [torch.cat([v.detach() for v in values]).cpu()]
        except RuntimeError:  # tensors on several devices
            values = [v.detach().cpu() for v in values]
    arrays = []
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        arrays.append(value)
    joined = np.concatenate(arrays) if len(arrays) > 1 else np.asarray(arrays[0])
    return joined.reshape(-1, width).astype(np.float64)


def _boxes_xywh(values: list) -> np.ndarray:
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
            score, label = prediction["scores"], prediction["labels"]
            box = prediction["boxes"] if want_boxes else None
            mask = prediction["masks"] if want_masks else None
            point = prediction["keypoints"] if want_points else None
        except (KeyError, TypeError):
            where = f"predictions[{n}] (image_id={image_ids[n]})"
            for key in ("scores", "labels", "boxes", "masks", "keypoints"):
                if not isinstance(prediction, Mapping) or key not in prediction:
                    raise _missing(prediction, key, where) from None
            raise
        _check_arrays(
            prediction,
            ("scores", "labels", "boxes", "masks", "keypoints"),
            "predictions",
            n,
            image_ids,
        )
        num = score.shape[0]
        if (
            score.shape != (num,)
            or label.shape != (num,)
            or (want_boxes and box.shape != (num, 4))
            or (want_masks and not _mask_shape_ok(mask.shape, num))
            or (want_points and (point.ndim != 3 or point.shape[0] != num or point.shape[2] != 3))
        ):
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
            boxes.append(box)
        if want_masks:
            sizes.append((int(mask.shape[-2]), int(mask.shape[-1])))
            rles += [r["counts"] for r in masks_to_rle(mask, threshold=mask_threshold)]
        if want_points:
            keypoints.append(point)
    columns = {
        "counts": np.asarray(counts, dtype=np.int64),
        "score": _column(scores, 1)[:, 0],
        "category_id": _map_labels(
            _column(label_list, 1)[:, 0].astype(np.int64), labels, counts, image_ids, "predictions"
        ),
    }
    if want_boxes:
        columns["bbox"] = _boxes_xywh(boxes)
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
    return _column(keypoints, 3 * k).reshape(-1, k, 3)


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
        image = int(np.searchsorted(np.cumsum(counts), row, side="right"))
        raise ValueError(
            f"{what}[{image}] (image_id={image_ids[image]}): '{key}' has NaN or infinite values"
        )


def detections_from_columns(
    columns: Mapping[str, Any], iou_type: str, image_id: np.ndarray, sizes: np.ndarray
) -> Annotations:
    """Detections of one iou type from prediction columns, with ``loadRes``' derived fields.

    ``image_id`` and ``sizes`` (``[D, 2]`` mask height and width, segm only) are per row.
    """
    rles = None
    if iou_type == "segm":
        rles = [{"size": s, "counts": c} for s, c in zip(sizes.tolist(), columns["rles"])]
    keypoints = columns.get("keypoints")
    return detections_like_load_res(
        iou_type,
        image_id,
        columns["category_id"],
        columns["score"],
        bbox=columns.get("bbox"),
        rles=rles,
        keypoints=None if keypoints is None else _flat_points(keypoints),
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
            box, label = target["boxes"], target["labels"]
        except (KeyError, TypeError):
            where = f"targets[{n}] (image_id={image_ids[n]})"
            has_boxes = isinstance(target, Mapping) and "boxes" in target
            raise _missing(target, "labels" if has_boxes else "boxes", where) from None
        masks, area, crowd = target.get("masks"), target.get("area"), target.get("iscrowd")
        _check_arrays(
            target, ("boxes", "labels", "masks", "area", "iscrowd"), "targets", n, image_ids
        )
        num = box.shape[0]
        if (
            box.shape != (num, 4)
            or label.shape != (num,)
            or (masks is not None and (masks.ndim != 3 or masks.shape[0] != num))
            or (area is not None and area.shape != (num,))
            or (crowd is not None and crowd.shape != (num,))
        ):
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
            rles += [r["counts"] for r in masks_to_rle(masks)]
        if "keypoints" in iou_types:
            point = target.get("keypoints")
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
            _column(label_list, 1)[:, 0].astype(np.int64), labels, counts, image_ids, "targets"
        ),
        "bbox": _boxes_xywh(boxes),
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


def _flat_points(keypoints: np.ndarray) -> np.ndarray:
    """``[n, K, 3]`` keypoints as COCO's flat ``[n, K * 3]`` rows (also for ``n = 0``)."""
    return keypoints.reshape(len(keypoints), keypoints.shape[1] * 3)
