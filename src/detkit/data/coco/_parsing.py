"""Reading and checking COCO annotation files (the parsing half of :mod:`detkit.data.coco`).

The file is parsed once into flat arrays (one row per annotation, rows grouped by image), so
that ``__getitem__`` only slices them and a dataset of a million annotations stays compact.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data.coco._fields import (
    Problems,
    are_numbers,
    check_boxes,
    count_keypoints,
    keypoint_row,
    logger,
    usable_segmentation,
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


def _leaves_root(name: str) -> bool:
    """Whether ``file_name`` could name a file outside the folder it is relative to.

    Judged on the text alone, under both POSIX and Windows rules (``/`` and ``\\``
    separators, drive letters), so that a file checks the same on every system.
    """
    if name.startswith(("/", "\\")) or name[1:2] == ":":
        return True
    return ".." in name and ".." in name.replace("\\", "/").split("/")


def parse(
    data: dict[str, Any],
    path: Path,
    *,
    with_masks: bool | None,
    with_keypoints: bool | None,
    box_tolerance: float,
    drop_degenerate: bool,
    keep_negatives: bool,
    max_pixels: int | None = None,
    allow_paths_outside_root: bool = False,
) -> tuple[_Parsed, bool, bool]:
    """Check and index a COCO dict; returns the parsed file, with_masks and with_keypoints."""
    problems = Problems(path)

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
        elif "\x00" in name:
            problems.add(f"image id {iid}: 'file_name' {name!r} contains a NUL character")
        elif not allow_paths_outside_root and _leaves_root(name):
            problems.add(
                f"image id {iid}: 'file_name' {name!r} leads outside image_root (an absolute "
                "path, a drive or a '..' component); pass allow_paths_outside_root=True if the file "
                "is trusted"
            )
        elif max_pixels is not None and height * width > max_pixels:
            problems.add(
                f"image id {iid} ('{name}') is {width}x{height} (WxH) = {height * width:,} "
                f"pixels, over max_image_pixels={max_pixels:,}"
            )
        else:
            image_pos[iid] = len(image_ids)
            image_ids.append(iid)
            file_names.append(name)
            sizes.append((height, width))
    problems.raise_if_any()
    if len(set(file_names)) < len(file_names):  # legal, but more often an export's mistake
        seen: dict[str, int] = {}
        shared = [(seen.setdefault(n, iid), iid, n) for iid, n in zip(image_ids, file_names)]
        first, second, name = next(entry for entry in shared if entry[0] != entry[1])
        logger.warning(
            "'%s': %d image entries share a file with another, e.g. image ids %d and %d both "
            "read '%s'",
            path,
            len(file_names) - len(set(file_names)),
            first,
            second,
            name,
        )

    annotations = _section(data, "annotations", path, required=False)
    if with_masks is None:
        with_masks = any(isinstance(a, dict) and a.get("segmentation") for a in annotations)
    num_kp = count_keypoints(categories, annotations, with_keypoints, path)
    if with_keypoints is None:
        with_keypoints = num_kp > 0

    rows_image, ann_ids, labels, crowd, areas, raw_boxes = [], [], [], [], [], []
    segmentations: list[Any] = []
    dropped: list[str] = []  # annotations without a usable polygon (drop_degenerate)
    thin = 0  # annotations that lost a polygon of fewer than 3 points
    keypoints: list[Any] = []
    seen_ann_ids: set[int] = set()
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            problems.add(f"annotations[{i}] is a {type(ann).__name__}, not an object")
            continue
        aid = ann.get("id")
        where = f"annotation id {aid}" if _is_int(aid) else f"annotations[{i}]"
        if _is_int(aid):
            if aid in seen_ann_ids:  # pycocotools would keep only one of them
                problems.add(f"annotations[{i}]: annotation id {aid} appears twice")
                continue
            seen_ann_ids.add(aid)
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
        box = [float(v) for v in bbox] if are_numbers(bbox) else []
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            problems.add(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            problems.add(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        area = ann.get("area")
        if area is not None and (
            type(area) not in (int, float) or not math.isfinite(area) or area < 0
        ):
            problems.add(f"{where}: 'area' must be a finite number >= 0, got {area!r}")
            continue
        if with_masks:
            segm, message, degenerate = usable_segmentation(ann.get("segmentation"), sizes[pos])
            if message:
                if degenerate and drop_degenerate:
                    dropped.append(where)
                else:
                    problems.add(f"{where}: {message}")
                continue
            thin += len(segm) < len(ann["segmentation"]) if isinstance(segm, list) else 0
            segmentations.append(segm)
        if with_keypoints:
            kps = keypoint_row(ann.get("keypoints"), num_kp)
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
    if dropped:
        logger.warning(
            "'%s': dropped %d annotation(s) whose polygons all have fewer than 3 points, e.g. %s",
            path,
            len(dropped),
            dropped[0],
        )
    if thin:
        logger.warning(
            "'%s': ignored polygons of fewer than 3 points (no area) in %d annotation(s)",
            path,
            thin,
        )

    count = len(rows_image)
    xywh = np.asarray(raw_boxes, dtype=np.float64).reshape(count, 4)
    sizes_arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    rows = np.asarray(rows_image, dtype=np.int64)
    boxes, keep = check_boxes(
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
