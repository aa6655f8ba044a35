"""Field checks for COCO annotation files: boxes, segmentations, keypoints.

Each check says what is wrong in words that name the annotation, so that
:mod:`detkit.data.coco._parsing` can gather every problem of a file into one error.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

logger = logging.getLogger("detkit.data.coco")

_MAX_LISTED = 10
_NUMBER_TYPES = frozenset({int, float})  # bool is neither: ``true`` is not a coordinate


def are_numbers(values: Any) -> TypeGuard[list[int | float]]:
    """Whether ``values`` is a list of JSON numbers (no strings, booleans or nulls)."""
    return isinstance(values, list) and set(map(type, values)) <= _NUMBER_TYPES


class Problems:
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


def box_crowd_area(ann: dict[str, Any]) -> tuple[list[float], int, float] | str:
    """An annotation's ``bbox`` (XYWH), ``iscrowd`` and ``area`` (NaN when absent), or what is
    wrong with them."""
    bbox = ann.get("bbox")
    box = [float(v) for v in bbox] if are_numbers(bbox) else []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        return f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}"
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1):
        return f"'iscrowd' must be 0 or 1, got {iscrowd!r}"
    area = ann.get("area")
    if area is not None and (type(area) not in (int, float) or not math.isfinite(area) or area < 0):
        return f"'area' must be a finite number >= 0, got {area!r}"
    return box, int(iscrowd), math.nan if area is None else float(area)


def leaves_root(name: str) -> bool:
    """Whether ``file_name`` could name a file outside the folder it is relative to.

    Judged on the text alone, under both POSIX and Windows rules (``/`` and ``\\``
    separators, drive letters), so that a file checks the same on every system.
    """
    if name.startswith(("/", "\\")) or name[1:2] == ":":
        return True
    return ".." in name and ".." in name.replace("\\", "/").split("/")


def count_keypoints(
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


def keypoint_row(value: Any, num_kp: int) -> list[float] | str:
    """3K floats with v = 0 points zeroed, or a message saying what is wrong."""
    if value is None or (isinstance(value, list) and not value):
        return [0.0] * (3 * num_kp)  # an instance without keypoints: all "not labelled"
    if not are_numbers(value):
        return f"'keypoints' must be a list of numbers, got {value!r:.80}"
    try:
        flat = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return f"'keypoints' must be a list of numbers, got {value!r:.80}"
    if flat.shape != (3 * num_kp,):
        return f"'keypoints' must hold {3 * num_kp} numbers ({num_kp} x (x, y, v)), got {flat.size}"
    triples = flat.reshape(num_kp, 3)
    if not np.isfinite(triples).all():
        return f"'keypoints' must be finite numbers, got {value!r:.80}"
    if not np.isin(triples[:, 2], (0, 1, 2)).all():
        return f"keypoint visibilities must be 0, 1 or 2, got {triples[:, 2].tolist()}"
    triples[triples[:, 2] == 0] = 0.0  # COCO exports leave coordinates on unlabelled points
    return triples.ravel().tolist()


def usable_segmentation(segm: Any, size: tuple[int, int]) -> tuple[Any, str | None, bool]:
    """``(usable segmentation, problem, whether the problem is a degenerate shape)``.

    Polygons of fewer than 3 points cover nothing (and pycocotools would read a 4-number one
    as a box), so they are left out, as detectron2 does; so are polygons beyond an edge of
    the image, which cover none of its pixels. An annotation left with none is degenerate.
    """
    problem = _segmentation_problem(segm, size)
    if problem:
        return None, problem, False
    if isinstance(segm, list):
        height, width = size
        usable = [
            polygon
            for polygon in segm
            if len(polygon) >= 6
            and min(polygon[0::2]) < width
            and max(polygon[0::2]) > 0
            and min(polygon[1::2]) < height
            and max(polygon[1::2]) > 0
        ]
        if not usable:
            message = (
                "every polygon of 'segmentation' has fewer than 3 points or lies outside the "
                "image (no area); pass drop_degenerate=True to skip such annotations"
            )
            return None, message, True
        return usable, None, False
    return segm, None, False


def _segmentation_problem(segm: Any, size: tuple[int, int]) -> str | None:
    if not segm:
        return (
            "has no 'segmentation', but masks are requested (pass with_masks=False to load "
            "boxes only)"
        )
    if isinstance(segm, list):
        for j, polygon in enumerate(segm):
            if not isinstance(polygon, list) or len(polygon) % 2:
                shown = f"{len(polygon)} values" if isinstance(polygon, list) else repr(polygon)
                return (
                    f"polygon {j} of 'segmentation' must be a flat list of (x, y) pairs, got "
                    f"{shown:.80}"
                )
            problem = _polygon_problem(polygon, size)
            if problem:
                return f"polygon {j} of 'segmentation' {problem}"
        return None
    if not (isinstance(segm, dict) and "counts" in segm and "size" in segm):
        return f"'segmentation' must be a list of polygons or an RLE dict, got {segm!r:.80}"
    if list(segm["size"]) != list(size):
        return (
            f"RLE 'segmentation' has size {segm['size']} but the image is {list(size)} "
            "(height, width)"
        )
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(type(c) is int and c >= 0 for c in counts):
            return "uncompressed RLE counts must be non-negative integers"
        if sum(counts) != size[0] * size[1]:
            return (
                f"uncompressed RLE counts sum to {sum(counts)}, not height * width = "
                f"{size[0] * size[1]}"
            )
    elif not isinstance(counts, (str, bytes)) or not counts:
        return f"RLE 'counts' must be a list or a non-empty string, got {counts!r:.40}"
    return None


def _polygon_problem(polygon: list[Any], size: tuple[int, int]) -> str | None:
    """What is wrong with a polygon's coordinates, or None.

    pycocotools rasterizes a polygon by walking its edges pixel by pixel, so a coordinate of
    1e8 or NaN makes it allocate without bound or crash the process: coordinates must be
    finite and within one image size of the image.
    """
    if not polygon:
        return None
    if not are_numbers(polygon):
        return f"must hold numbers only, got {polygon!r:.80}"
    reach = max(size)
    if not math.isfinite(sum(polygon)):
        return "has a NaN or infinite coordinate"
    if min(polygon) < -reach or max(polygon) > 2 * reach:
        return (
            f"has coordinates from {min(polygon)} to {max(polygon)}, more than an image size "
            f"({reach} px) outside the {size[1]}x{size[0]} (WxH) image"
        )
    return None


def rle_string_problem(counts: str | bytes, size: tuple[int, int]) -> str | None:
    """What is wrong with a compressed RLE string for an image of ``size`` (H, W), or None.

    pycocotools decodes a string whose runs cover fewer than H * W pixels into a mask whose
    remaining pixels are whatever memory held (different on every read), so the runs are
    decoded here (pycocotools' ``rleFrString``, vectorized) and must cover exactly H * W
    pixels, with none negative.
    """
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    chars = np.frombuffer(raw, dtype=np.uint8)
    if not chars.size or chars.min() < 48 or chars.max() > 111:
        return "compressed RLE 'counts' holds characters outside '0'..'o'"
    values = chars.astype(np.int64) - 48
    last = values < 32  # no continuation bit: the last character of a run length
    if not last[-1]:
        return "compressed RLE 'counts' ends in the middle of a run length"
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 35 bits: more than any image has pixels
        return "compressed RLE 'counts' holds a run length too large for any image"
    shift = 5 * (np.arange(values.size) - np.repeat(starts, lengths))
    deltas = np.add.reduceat((values & 0x1F) << shift, starts)
    negative = (values[ends] & 0x10) != 0
    deltas[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = deltas.copy()  # from the fourth on, a run is stored as a difference to run i - 2
    runs[1::2] = np.cumsum(deltas[1::2])
    runs[2::2] = np.cumsum(deltas[2::2])
    height, width = size
    if runs.min() < 0:
        return "compressed RLE 'counts' decodes to a negative run length"
    if int(runs.sum()) != height * width:
        return (
            f"compressed RLE 'counts' covers {int(runs.sum())} pixels, not height * width = "
            f"{height * width}"
        )
    return None


def _looks_normalized(xyxy: np.ndarray) -> bool:
    """Whether every box lies in the image's top-left pixel, one at least with fractional
    corners: fractions of the image's size, not pixels (a box of a whole pixel is a box)."""
    return bool(xyxy.size) and xyxy.min() >= 0 and xyxy.max() <= 1 and bool((xyxy % 1).any())


def _fit_as_corners(xywh: np.ndarray, width: np.ndarray, height: np.ndarray, tol: float) -> bool:
    """Whether every box, read as ``[x1, y1, x2, y2]``, is a box inside its image."""
    x1, y1, x2, y2 = xywh.T
    inside = (x1 >= -tol) & (y1 >= -tol) & (x2 <= width + tol) & (y2 <= height + tol)
    return bool((inside & (x2 > x1) & (y2 > y1)).all())


def check_boxes(
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
    problems = Problems(path)

    def describe(r: int | np.integer) -> str:
        pos = rows[r]
        return (
            f"annotation id {ann_ids[r]} (image id {image_ids[pos]} '{file_names[pos]}', "
            f"{sizes[pos, 1]}x{sizes[pos, 0]} WxH): bbox [x, y, w, h] = {xywh[r].tolist()}"
        )

    if _looks_normalized(xyxy):
        problems.add(
            f"every bbox lies within [0, 1] x [0, 1] pixels, e.g. {describe(0)}: these look "
            "like normalized coordinates (fractions of the image's size, as YOLO files have "
            "them); COCO boxes are in pixels: multiply x and w by the image's width, y and h "
            "by its height"
        )
    if outside.any() and _fit_as_corners(xywh, width, height, box_tolerance):
        problems.add(
            "every bbox would fit its image if read as corners [x1, y1, x2, y2]: was the file "
            "written with corners? COCO's bbox is [x, y, width, height]"
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
