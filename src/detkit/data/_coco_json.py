"""Reading and checking COCO annotation files (the parsing half of :mod:`detkit.data.coco`).

The file is parsed once into flat arrays (one row per annotation, rows grouped by image), so
that ``__getitem__`` only slices them and a dataset of a million annotations stays compact.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("detkit.data.coco")

_MAX_LISTED = 10


class _Problems:
    """Collects what is wrong with a file so that one error lists it all (up to a limit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < _MAX_LISTED:
            self.messages.append(message)

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - len(self.messages)
            tail = f"\n  ... and {more} more" if more else ""
            raise ValueError(
                f"{self.count} problem(s) in COCO annotation file '{self.path}':\n  "
                + "\n  ".join(self.messages)
                + tail
            )


@dataclass
class _Parsed:
    image_ids: list[int]
    file_names: list[str]
    sizes: np.ndarray  # int64 [I, 2]: (height, width)
    offsets: np.ndarray  # int64 [I + 1]: image i owns rows offsets[i]:offsets[i + 1]
    ann_ids: np.ndarray  # int64 [A]
    boxes: np.ndarray  # float32 [A, 4], XYXY, clipped to the image
    labels: np.ndarray  # int64 [A]
    area: np.ndarray  # float32 [A], NaN where the file has none
    iscrowd: np.ndarray  # int64 [A]
    keypoints: np.ndarray | None  # float32 [A, K, 3]
    segmentations: list[Any] | None  # [A], raw COCO objects
    categories: list[dict[str, Any]] = field(default_factory=list)  # sorted by id


def load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: '{path}'") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"COCO annotation file '{path}' is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"COCO annotation file '{path}' is not UTF-8 text: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"COCO annotation file '{path}' must hold a JSON object with 'images', "
            f"'annotations' and 'categories', got a {type(data).__name__}"
        )
    return data


def _section(data: dict[str, Any], key: str, path: Path, *, required: bool) -> list[Any]:
    if key not in data:
        if required:
            raise ValueError(f"COCO annotation file '{path}' has no '{key}' list")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise ValueError(
            f"COCO annotation file '{path}': '{key}' must be a list, got {type(value).__name__}"
        )
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> int | None:
    """An int (or integral float, as some exporters write sizes) > 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value <= 0 or int(value) != value:
        return None
    return int(value)


def parse(
    data: dict[str, Any],
    path: Path,
    *,
    with_masks: bool | None,
    with_keypoints: bool | None,
    box_tolerance: float,
    drop_degenerate: bool,
    keep_negatives: bool,
) -> tuple[_Parsed, bool, bool]:
    """Check and index a COCO dict; returns the parsed file, with_masks and with_keypoints."""
    problems = _Problems(path)

    categories: dict[int, dict[str, Any]] = {}
    for i, cat in enumerate(_section(data, "categories", path, required=False)):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not _is_int(cid):
            problems.add(f"categories[{i}] has no integer 'id': {cat!r:.80}")
        elif cid in categories:
            problems.add(f"categories[{i}]: category id {cid} appears twice")
        else:
            categories[cid] = cat
    problems.raise_if_any()
    cat_ids = sorted(categories)
    label_of = {cid: label for label, cid in enumerate(cat_ids, start=1)}

    image_pos: dict[int, int] = {}
    image_ids, file_names, sizes = [], [], []
    for i, image in enumerate(_section(data, "images", path, required=True)):
        iid = image.get("id") if isinstance(image, dict) else None
        if not _is_int(iid):
            problems.add(f"images[{i}] has no integer 'id': {image!r:.80}")
            continue
        name = image.get("file_name")
        height, width = _positive_int(image.get("height")), _positive_int(image.get("width"))
        if iid in image_pos:
            problems.add(f"images[{i}]: image id {iid} appears twice")
        elif not isinstance(name, str) or not name:
            problems.add(f"image id {iid} (images[{i}]) has no 'file_name'")
        elif height is None or width is None:
            problems.add(
                f"image id {iid} ('{name}') needs positive integer 'height' and 'width', got "
                f"{image.get('height')!r} and {image.get('width')!r}"
            )
        else:
            image_pos[iid] = len(image_ids)
            image_ids.append(iid)
            file_names.append(name)
            sizes.append((height, width))
    problems.raise_if_any()

    annotations = _section(data, "annotations", path, required=False)
    if with_masks is None:
        with_masks = any(isinstance(a, dict) and a.get("segmentation") for a in annotations)
    num_kp = _num_keypoints(categories, annotations, with_keypoints, path)
    if with_keypoints is None:
        with_keypoints = num_kp > 0

    rows_image, ann_ids, labels, crowd, areas, raw_boxes = [], [], [], [], [], []
    segmentations: list[Any] = []
    keypoints: list[Any] = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            problems.add(f"annotations[{i}] is a {type(ann).__name__}, not an object")
            continue
        aid = ann.get("id")
        where = f"annotation id {aid}" if _is_int(aid) else f"annotations[{i}]"
        iid = ann.get("image_id")
        pos = image_pos.get(iid) if _is_int(iid) else None
        if pos is None:
            problems.add(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        where += f" (image id {image_ids[pos]} '{file_names[pos]}')"
        cid = ann.get("category_id")
        label = label_of.get(cid) if _is_int(cid) else None
        if label is None:
            problems.add(
                f"{where}: category_id {ann.get('category_id')!r} is not in 'categories' "
                f"(known ids: {cat_ids[:20]}{' ...' if len(cat_ids) > 20 else ''})"
            )
            continue
        bbox = ann.get("bbox")
        try:
            box = [float(v) for v in bbox]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            box = []
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            problems.add(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            problems.add(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        area = ann.get("area")
        if area is not None and (isinstance(area, bool) or not isinstance(area, (int, float))):
            problems.add(f"{where}: 'area' must be a number, got {area!r}")
            continue
        if with_masks:
            message = _segmentation_problem(ann.get("segmentation"), sizes[pos])
            if message:
                problems.add(f"{where}: {message}")
                continue
            segmentations.append(ann["segmentation"])
        if with_keypoints:
            kps = _keypoints(ann.get("keypoints"), num_kp)
            if isinstance(kps, str):
                problems.add(f"{where}: {kps}")
                continue
            keypoints.append(kps)
        rows_image.append(pos)
        ann_ids.append(aid if _is_int(aid) else -1)
        labels.append(label)
        crowd.append(int(iscrowd))
        areas.append(math.nan if area is None else float(area))
        raw_boxes.append(box)
    problems.raise_if_any()

    count = len(rows_image)
    xywh = np.asarray(raw_boxes, dtype=np.float64).reshape(count, 4)
    sizes_arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    rows = np.asarray(rows_image, dtype=np.int64)
    boxes, keep = _check_boxes(
        xywh,
        rows,
        sizes_arr,
        image_ids,
        file_names,
        ann_ids,
        path,
        box_tolerance=box_tolerance,
        drop_degenerate=drop_degenerate,
    )

    # Group rows by image (stable: annotations keep their file order within an image).
    order = np.argsort(rows, kind="stable")
    order = order[keep[order]]
    rows = rows[order]
    counts = np.bincount(rows, minlength=len(image_ids))
    kept_images = np.arange(len(image_ids))
    if not keep_negatives:
        kept_images = np.flatnonzero(counts > 0)
    offsets = np.zeros(len(kept_images) + 1, dtype=np.int64)
    np.cumsum(counts[kept_images], out=offsets[1:])
    parsed = _Parsed(
        image_ids=[image_ids[i] for i in kept_images],
        file_names=[file_names[i] for i in kept_images],
        sizes=sizes_arr[kept_images],
        offsets=offsets,
        ann_ids=np.asarray(ann_ids, dtype=np.int64)[order],
        boxes=boxes[order].astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64)[order],
        area=np.asarray(areas, dtype=np.float32)[order],
        iscrowd=np.asarray(crowd, dtype=np.int64)[order],
        keypoints=(
            np.asarray(keypoints, dtype=np.float32).reshape(count, num_kp, 3)[order]
            if with_keypoints
            else None
        ),
        segmentations=[segmentations[i] for i in order] if with_masks else None,
        categories=[categories[cid] for cid in cat_ids],
    )
    return parsed, with_masks, with_keypoints


def _num_keypoints(
    categories: dict[int, dict[str, Any]],
    annotations: list[Any],
    with_keypoints: bool | None,
    path: Path,
) -> int:
    """K, from the categories' keypoint names or else the first annotation with keypoints."""
    if with_keypoints is False:
        return 0
    declared = {len(c["keypoints"]) for c in categories.values() if c.get("keypoints")}
    if len(declared) > 1:
        raise ValueError(
            f"COCO annotation file '{path}': categories declare different keypoint counts "
            f"{sorted(declared)}; detkit's targets need one K for all instances"
        )
    if declared:
        return declared.pop()
    for ann in annotations:
        kps = ann.get("keypoints") if isinstance(ann, dict) else None
        if isinstance(kps, list) and kps:
            return len(kps) // 3
    if with_keypoints:
        raise ValueError(
            f"with_keypoints=True, but COCO annotation file '{path}' has no keypoints (no "
            "category lists keypoint names and no annotation has 'keypoints')"
        )
    return 0


def _keypoints(value: Any, num_kp: int) -> list[float] | str:
    """3K floats with v = 0 points zeroed, or a message saying what is wrong."""
    if value is None or (isinstance(value, list) and not value):
        return [0.0] * (3 * num_kp)  # an instance without keypoints: all "not labelled"
    try:
        flat = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return f"'keypoints' must be a list of numbers, got {value!r:.80}"
    if flat.shape != (3 * num_kp,):
        return f"'keypoints' must hold {3 * num_kp} numbers ({num_kp} x (x, y, v)), got {flat.size}"
    triples = flat.reshape(num_kp, 3)
    if not np.isin(triples[:, 2], (0, 1, 2)).all() or not np.isfinite(triples).all():
        return f"keypoint visibilities must be 0, 1 or 2, got {triples[:, 2].tolist()}"
    triples[triples[:, 2] == 0] = 0.0  # COCO exports leave coordinates on unlabelled points
    return triples.ravel().tolist()


def _segmentation_problem(segm: Any, size: tuple[int, int]) -> str | None:
    if not segm:
        return (
            "has no 'segmentation', but masks are requested (pass with_masks=False to load "
            "boxes only)"
        )
    if isinstance(segm, list):
        for j, polygon in enumerate(segm):
            if not isinstance(polygon, list) or len(polygon) % 2 or len(polygon) < 6:
                shown = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
                return (
                    f"polygon {j} of 'segmentation' must be a flat list of at least 3 (x, y) "
                    f"points, got {shown} values"
                )
        return None
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != list(size):
            return (
                f"RLE 'segmentation' has size {segm['size']} but the image is "
                f"{list(size)} (height, width)"
            )
        counts = segm["counts"]
        if isinstance(counts, list) and sum(counts) != size[0] * size[1]:
            return (
                f"uncompressed RLE counts sum to {sum(counts)}, not height * width = "
                f"{size[0] * size[1]}"
            )
        if not isinstance(counts, (list, str, bytes)):
            return f"RLE 'counts' must be a list or a string, got {type(counts).__name__}"
        return None
    return f"'segmentation' must be a list of polygons or an RLE dict, got {segm!r:.80}"


def _check_boxes(
    xywh: np.ndarray,
    rows: np.ndarray,
    sizes: np.ndarray,
    image_ids: list[int],
    file_names: list[str],
    ann_ids: list[int],
    path: Path,
    *,
    box_tolerance: float,
    drop_degenerate: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """XYXY boxes clipped to their image, and which rows to keep; raises for bad boxes."""
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    height = sizes[rows, 0].astype(np.float64)
    width = sizes[rows, 1].astype(np.float64)
    outside = (
        (xyxy[:, 0] < -box_tolerance)
        | (xyxy[:, 1] < -box_tolerance)
        | (xyxy[:, 2] > width + box_tolerance)
        | (xyxy[:, 3] > height + box_tolerance)
    )
    clipped = xyxy.copy()
    np.clip(clipped[:, 0::2], 0, width[:, None], out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height[:, None], out=clipped[:, 1::2])
    degenerate = ~outside & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    problems = _Problems(path)

    def describe(r: int) -> str:
        pos = rows[r]
        return (
            f"annotation id {ann_ids[r]} (image id {image_ids[pos]} '{file_names[pos]}', "
            f"{sizes[pos, 1]}x{sizes[pos, 0]} WxH): bbox [x, y, w, h] = {xywh[r].tolist()}"
        )

    for r in np.flatnonzero(outside):
        problems.add(
            f"{describe(r)} reaches outside the image by more than box_tolerance={box_tolerance} px"
        )
    if drop_degenerate and degenerate.any():
        dropped = np.flatnonzero(degenerate)
        logger.warning(
            "'%s': dropped %d annotation(s) with an empty box (w <= 0 or h <= 0 inside the "
            "image), e.g. %s",
            path,
            len(dropped),
            describe(dropped[0]),
        )
    else:
        for r in np.flatnonzero(degenerate):
            problems.add(
                f"{describe(r)} is degenerate (zero or negative width or height inside the "
                "image); pass drop_degenerate=True to skip such annotations"
            )
    problems.raise_if_any()
    return clipped, ~degenerate
