"""Reading and checking COCO annotation files (the parsing half of :mod:`detkit.data.coco`).

The file is parsed once into flat arrays (one row per annotation, rows grouped by image), so
that ``__getitem__`` only slices them and a dataset of a million annotations stays compact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from detkit.data.coco._fields import (
    Problems,
    box_crowd_area,
    check_boxes,
    count_keypoints,
    keypoint_row,
    leaves_root,
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


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> int | None:
    """An int (or integral float, as some exporters write sizes) > 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value <= 0 or int(value) != value:
        return None
    return int(value)


@dataclass
class _Images:
    """The ``images`` section, checked: parallel lists and each image id's position."""

    ids: list[int] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    position: dict[int, int] = field(default_factory=dict)


@dataclass
class _Rows:
    """The annotations kept, one entry per row, in file order."""

    image: list[int] = field(default_factory=list)  # position in _Images
    ann_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    crowd: list[int] = field(default_factory=list)
    areas: list[float] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)  # XYWH as in the file
    segmentations: list[Any] = field(default_factory=list)
    keypoints: list[Any] = field(default_factory=list)


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
    """Check and index a COCO dict; returns the parsed file, with_masks and with_keypoints.

    Four steps: the categories, the images, the annotations (each section's problems are
    gathered and raised together), then the rows grouped by image.
    """
    problems = Problems(path)
    categories = _categories(data, path, problems)
    images = _images(data, path, problems, max_pixels, allow_paths_outside_root)
    annotations = _section(data, "annotations", path, required=False)
    if with_masks is None:
        with_masks = any(isinstance(a, dict) and a.get("segmentation") for a in annotations)
    num_kp = count_keypoints(categories, annotations, with_keypoints, path)
    if with_keypoints is None:
        with_keypoints = num_kp > 0
    rows = _annotations(
        annotations,
        path,
        problems,
        images,
        label_of={cid: label for label, cid in enumerate(sorted(categories), start=1)},
        with_masks=with_masks,
        num_kp=num_kp if with_keypoints else None,
        drop_degenerate=drop_degenerate,
    )
    parsed = _group(
        rows,
        images,
        path,
        categories=[categories[cid] for cid in sorted(categories)],
        num_kp=num_kp if with_keypoints else None,
        with_masks=with_masks,
        box_tolerance=box_tolerance,
        drop_degenerate=drop_degenerate,
        keep_negatives=keep_negatives,
    )
    return parsed, with_masks, with_keypoints


def _categories(data: dict[str, Any], path: Path, problems: Problems) -> dict[int, dict[str, Any]]:
    """The ``categories`` section by id (raises for missing or repeated ids)."""
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
    return categories


def _images(
    data: dict[str, Any],
    path: Path,
    problems: Problems,
    max_pixels: int | None,
    allow_paths_outside_root: bool,
) -> _Images:
    """The ``images`` section, checked (raises for every bad entry at once)."""
    images = _Images()
    for i, image in enumerate(_section(data, "images", path, required=True)):
        iid = image.get("id") if isinstance(image, dict) else None
        if not _is_int(iid):
            problems.add(f"images[{i}] has no integer 'id': {image!r:.80}")
            continue
        name = image.get("file_name")
        height, width = _positive_int(image.get("height")), _positive_int(image.get("width"))
        if iid in images.position:
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
        elif not allow_paths_outside_root and leaves_root(name):
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
            images.position[iid] = len(images.ids)
            images.ids.append(iid)
            images.file_names.append(name)
            images.sizes.append((height, width))
    problems.raise_if_any()
    _warn_shared_files(images, path)
    return images


def _warn_shared_files(images: _Images, path: Path) -> None:
    """Several image entries reading one file: legal, but more often an export's mistake."""
    names = images.file_names
    if len(set(names)) == len(names):
        return
    seen: dict[str, int] = {}
    shared = [(seen.setdefault(n, iid), iid, n) for iid, n in zip(images.ids, names)]
    first, second, name = next(entry for entry in shared if entry[0] != entry[1])
    logger.warning(
        "'%s': %d image entries share a file with another, e.g. image ids %d and %d both read '%s'",
        path,
        len(names) - len(set(names)),
        first,
        second,
        name,
    )


def _annotations(
    annotations: list[Any],
    path: Path,
    problems: Problems,
    images: _Images,
    *,
    label_of: dict[int, int],
    with_masks: bool,
    num_kp: int | None,
    drop_degenerate: bool,
) -> _Rows:
    """The ``annotations`` section, checked entry by entry (raises for every bad one at once)."""
    rows = _Rows()
    dropped: list[str] = []  # annotations without a usable polygon (drop_degenerate)
    thin = 0  # annotations that lost a polygon of fewer than 3 points or outside the image
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
        pos = images.position.get(iid) if _is_int(iid) else None
        if pos is None:
            problems.add(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        where += f" (image id {images.ids[pos]} '{images.file_names[pos]}')"
        cid = ann.get("category_id")
        label = label_of.get(cid) if _is_int(cid) else None
        if label is None:
            problems.add(
                f"{where}: category_id {ann.get('category_id')!r} is not in 'categories' "
                f"(known ids: {sorted(label_of)[:20]}{' ...' if len(label_of) > 20 else ''})"
            )
            continue
        numbers = box_crowd_area(ann)
        if isinstance(numbers, str):
            problems.add(f"{where}: {numbers}")
            continue
        box, iscrowd, area = numbers
        if with_masks:
            segm, message, degenerate = usable_segmentation(
                ann.get("segmentation"), images.sizes[pos]
            )
            if message:
                if degenerate and drop_degenerate:
                    dropped.append(where)
                else:
                    problems.add(f"{where}: {message}")
                continue
            thin += len(segm) < len(ann["segmentation"]) if isinstance(segm, list) else 0
            rows.segmentations.append(segm)
        if num_kp is not None:
            kps = keypoint_row(ann.get("keypoints"), num_kp)
            if isinstance(kps, str):
                problems.add(f"{where}: {kps}")
                continue
            rows.keypoints.append(kps)
        rows.image.append(pos)
        rows.ann_ids.append(aid if _is_int(aid) else -1)
        rows.labels.append(label)
        rows.crowd.append(iscrowd)
        rows.areas.append(area)
        rows.boxes.append(box)
    problems.raise_if_any()
    if dropped:
        logger.warning(
            "'%s': dropped %d annotation(s) whose polygons all have fewer than 3 points or lie "
            "outside the image, e.g. %s",
            path,
            len(dropped),
            dropped[0],
        )
    if thin:
        logger.warning(
            "'%s': ignored polygons of fewer than 3 points or outside the image (no area) in %d "
            "annotation(s)",
            path,
            thin,
        )
    return rows


def _group(
    rows: _Rows,
    images: _Images,
    path: Path,
    *,
    categories: list[dict[str, Any]],
    num_kp: int | None,
    with_masks: bool,
    box_tolerance: float,
    drop_degenerate: bool,
    keep_negatives: bool,
) -> _Parsed:
    """Boxes checked against their images, then rows grouped by image (file order kept)."""
    count = len(rows.image)
    sizes = np.asarray(images.sizes, dtype=np.int64).reshape(-1, 2)
    image_of = np.asarray(rows.image, dtype=np.int64)
    boxes, keep = check_boxes(
        np.asarray(rows.boxes, dtype=np.float64).reshape(count, 4),
        image_of,
        sizes,
        images.ids,
        images.file_names,
        rows.ann_ids,
        path,
        box_tolerance=box_tolerance,
        drop_degenerate=drop_degenerate,
    )
    order = np.argsort(image_of, kind="stable")
    order = order[keep[order]]
    counts = np.bincount(image_of[order], minlength=len(images.ids))
    kept_images = np.arange(len(images.ids))
    if not keep_negatives:
        kept_images = np.flatnonzero(counts > 0)
    offsets = np.zeros(len(kept_images) + 1, dtype=np.int64)
    np.cumsum(counts[kept_images], out=offsets[1:])
    keypoints = None
    if num_kp is not None:
        keypoints = np.asarray(rows.keypoints, dtype=np.float32).reshape(count, num_kp, 3)[order]
    return _Parsed(
        image_ids=[images.ids[i] for i in kept_images],
        file_names=[images.file_names[i] for i in kept_images],
        sizes=sizes[kept_images],
        offsets=offsets,
        ann_ids=np.asarray(rows.ann_ids, dtype=np.int64)[order],
        boxes=boxes[order].astype(np.float32),
        labels=np.asarray(rows.labels, dtype=np.int64)[order],
        area=np.asarray(rows.areas, dtype=np.float32)[order],
        iscrowd=np.asarray(rows.crowd, dtype=np.int64)[order],
        keypoints=keypoints,
        segmentations=[rows.segmentations[i] for i in order] if with_masks else None,
        categories=categories,
    )
