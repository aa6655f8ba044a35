"""COCO json files: a dataset's ground truth, and reading a ground truth given up front.

:func:`coco_ground_truth` turns any dataset (or iterable) of ``(image, target)`` samples into a
COCO ground-truth dict and :func:`write_coco_ground_truth` writes it; the evaluator itself never
needs them (it builds the ground truth from the targets it sees), they serve tools that want a
file. Annotation ids start at 1: pycocotools silently mis-scores an annotation with id 0.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from detkit.evaluation._batch import target_table
from detkit.evaluation._dicts import annotation_dicts, category_dicts
from detkit.evaluation._params import LabelMap
from detkit.evaluation._rle import string_totals
from detkit.evaluation._table import Annotations
from detkit.files import write_json
from detkit.types import check_targets, image_size, normalize_image_id, sample_name

__all__ = ["coco_ground_truth", "write_coco_ground_truth"]

logger = logging.getLogger(__name__)


def _samples(dataset: Any) -> Iterable:
    # Index map-style datasets explicitly: iterating relies on IndexError, which not all raise.
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        return (dataset[i] for i in range(len(dataset)))
    return dataset


def coco_ground_truth(
    dataset: Any,
    *,
    label_to_category: Mapping[int, int] | None = None,
    category_names: Mapping[int, str] | None = None,
) -> dict:
    """A COCO ground-truth dict from ``(image, target)`` samples.

    Args:
        dataset: any map-style dataset or iterable yielding ``(image, target)`` pairs in the
            target contract (:mod:`detkit.types`); each target needs ``image_id``, ``boxes``
            and ``labels``. ``masks`` become RLE segmentations, ``keypoints`` are kept with
            ``num_keypoints``; ``area`` defaults to the mask pixel count (else box area).
        label_to_category: maps labels to the dataset's category ids.
        category_names: names of the categories (default: the id as text).

    Returns:
        ``{"images", "annotations", "categories"}`` with annotation ids from 1.

    Raises:
        ValueError: naming the sample, for a target without ``image_id``, a repeated
            ``image_id`` or malformed fields.

    >>> import torch
    >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1]), "image_id": 4}
    >>> gt = coco_ground_truth([(torch.zeros(3, 8, 8), target)])
    >>> gt["images"], gt["annotations"][0]["bbox"], gt["annotations"][0]["id"]
    ([{'id': 4, 'height': 8, 'width': 8}], [0.0, 0.0, 2.0, 3.0], 1)
    """
    labels = LabelMap(label_to_category)
    images, annotations, seen = [], [], set()
    for n, sample in enumerate(_samples(dataset)):
        image, target = sample
        where = sample_name(position=f"dataset[{n}]")
        if not isinstance(target, Mapping) or "image_id" not in target:
            raise ValueError(f"{where}: target has no 'image_id'")
        image_id = normalize_image_id(target["image_id"], argument=f"{where}: image_id")
        if image_id in seen:
            raise ValueError(f"{where}: image_id {image_id} appears twice in the dataset")
        seen.add(image_id)
        height, width = image_size(image)
        iou_types = {"bbox"}
        if target.get("masks") is not None:
            iou_types.add("segm")
        if target.get("keypoints") is not None:
            iou_types.add("keypoints")
        check_targets([target], [image_id], iou_types=iou_types)
        table = target_table([target], [image_id], iou_types, labels=labels)[0]
        images.append({"id": image_id, "height": height, "width": width})
        annotations += annotation_dicts(table, None, json_safe=True)
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number
    categories = {ann["category_id"] for ann in annotations}
    if labels.mapping is not None:
        categories |= set(labels.mapping.values())
    entries = category_dicts(sorted(categories))
    for entry in entries:
        if category_names is not None and entry["id"] in category_names:
            entry["name"] = str(category_names[entry["id"]])
    return {"images": images, "annotations": annotations, "categories": entries}


def write_coco_ground_truth(dataset: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Write :func:`coco_ground_truth` of ``dataset`` as a json file; returns its path.

    >>> import tempfile, torch
    >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1]), "image_id": 1}
    >>> samples = [(torch.zeros(3, 8, 8), target)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_coco_ground_truth(samples, f"{tmp}/gt.json")
    ...     json.loads(path.read_text())["categories"]
    [{'id': 1, 'name': '1', 'supercategory': ''}]
    """
    return write_json(path, coco_ground_truth(dataset, **options))


def _integer(value: Any, where: str) -> int:
    """A json id as ``int``: an integer, or a float with an integral value (``3.0``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(float(value))  # via float: numpy.float32 has no __trunc__ for math.trunc
    raise ValueError(f"{where} must be an integer, got {value!r}")


class GroundTruthIndex:
    """A ground truth given up front (json path, COCO-like object or dict), indexed by image.

    The annotations are read, never modified; their ids are not used (the evaluator numbers
    from 1), missing ``iscrowd`` counts as 0 and missing ``area`` as the box (or mask) area.
    """

    def __init__(self, coco_gt: Any):
        if isinstance(coco_gt, (str, os.PathLike)):
            with open(coco_gt) as file:
                dataset = json.load(file)
        elif isinstance(coco_gt, Mapping):
            dataset = coco_gt
        elif isinstance(getattr(coco_gt, "dataset", None), Mapping):
            dataset = coco_gt.dataset
        else:
            raise TypeError(
                "coco_gt must be a COCO json path, a pycocotools COCO object or a COCO dict, "
                f"got {type(coco_gt).__name__}"
            )
        if not isinstance(dataset.get("images"), list):
            raise ValueError("coco_gt has no 'images' list")
        self.sizes = {
            _integer(img.get("id"), f"coco_gt image {img}: 'id'"): (
                int(img.get("height") or 0),
                int(img.get("width") or 0),
            )
            for img in dataset["images"]
        }
        self._by_image: dict[int, list[dict]] = defaultdict(list)
        found = set()
        for ann in dataset.get("annotations") or []:
            where = f"coco_gt annotation {ann.get('id')}"
            image_id = _integer(ann.get("image_id"), f"{where}: 'image_id'")
            found.add(
                _integer(ann.get("category_id"), f"{where} (image_id {image_id}): 'category_id'")
            )
            self._by_image[image_id].append(ann)
        categories = dataset.get("categories")
        if categories:
            self.category_ids = sorted(
                {_integer(c.get("id"), f"coco_gt category {c}: 'id'") for c in categories}
            )
        else:
            self.category_ids = sorted(found)

    def __contains__(self, image_id: int) -> bool:
        return image_id in self.sizes

    def image_sizes(self, targets: Sequence[Any], image_ids: list[int]) -> np.ndarray:
        """The images' ``(H, W)`` ``[B, 2]`` from ``coco_gt``, after checking the targets'
        sizes against them (:meth:`check_target_sizes`)."""
        self.check_target_sizes(targets, image_ids)
        sizes = np.array([self.sizes[i] for i in image_ids], dtype=np.int64)
        return sizes.reshape(-1, 2)

    def check_target_sizes(self, targets: Sequence[Any], image_ids: list[int]) -> None:
        """Refuse targets whose image size (their masks', or their boxes' ``canvas_size``)
        is not the size ``coco_gt`` gives: predictions are in the frame of the image the
        model saw, so a resized image would be scored against boxes of another frame."""
        for position, (target, image_id) in enumerate(zip(targets, image_ids)):
            if not isinstance(target, Mapping):
                continue
            masks: Any = target.get("masks")
            canvas = getattr(target.get("boxes"), "canvas_size", None)
            if getattr(masks, "ndim", 0) == 3:
                size, source = tuple(int(v) for v in masks.shape[1:]), "its masks"
            elif canvas is not None:
                size, source = tuple(int(v) for v in canvas), "its boxes' canvas_size"
            else:
                continue
            expected = self.sizes[image_id]
            if 0 not in expected and size != expected:
                raise ValueError(
                    f"targets[{position}] (image_id {image_id}): the image is {size} (H, W) by "
                    f"{source}, but coco_gt gives {expected}: the model sees a resized image, "
                    "so its predictions are in another frame than coco_gt's annotations. "
                    "Evaluate on images at their size in coco_gt, or leave coco_gt out to "
                    "evaluate against the targets themselves"
                )

    def annotations(self, image_ids: list[int], iou_type: str) -> Annotations:
        """The ground truth of ``image_ids`` (in that order) as columns for ``iou_type``."""
        anns = [(i, ann) for i in image_ids for ann in self._by_image.get(i, ())]
        n = len(anns)
        image_id = np.array([i for i, _ in anns], dtype=np.int64)
        category_id = np.array([int(a["category_id"]) for _, a in anns], dtype=np.int64)
        rles = None
        if iou_type == "segm":
            rles = [self._rle(i, a) for i, a in anns]
            self._check_rles(anns, rles)
        bbox = np.zeros((n, 4))
        for row, (_, ann) in enumerate(anns):
            if ann.get("bbox") is not None and len(ann["bbox"]) == 4:
                bbox[row] = ann["bbox"]
            elif rles is not None:
                bbox[row] = mask_utils.toBbox(rles[row])
            else:
                raise ValueError(
                    f"coco_gt annotation {ann.get('id')} (image_id {ann['image_id']}) has no 'bbox'"
                )
        no_area = [row for row, (_, a) in enumerate(anns) if a.get("area") is None]
        area = np.array([a.get("area") or 0.0 for _, a in anns], dtype=np.float64).reshape(n)
        if no_area:
            logger.warning(
                "%d coco_gt annotations have no 'area'; using their %s area",
                len(no_area),
                "mask" if rles is not None else "box",
            )
            for row in no_area:
                area[row] = (
                    mask_utils.area(rles[row]) if rles is not None else bbox[row, 2] * bbox[row, 3]
                )
        iscrowd = np.array([int(a.get("iscrowd") or 0) != 0 for _, a in anns], dtype=np.int64)
        keypoints = num_keypoints = None
        if iou_type == "keypoints":
            keypoints, num_keypoints = self._keypoints(anns)
        return Annotations(
            image_id=image_id,
            category_id=category_id,
            bbox=bbox,
            area=area,
            iscrowd=iscrowd.reshape(n),
            rle_counts=None if rles is None else [r["counts"] for r in rles],
            rle_sizes=None if rles is None else np.array([r["size"] for r in rles]).reshape(n, 2),
            keypoints=keypoints,
            num_keypoints=num_keypoints,
        )

    def _rle(self, image_id: int, ann: dict) -> dict:
        segmentation = ann.get("segmentation")
        if not segmentation:
            raise ValueError(
                f"coco_gt annotation {ann.get('id')} (image_id {image_id}) has no segmentation; "
                "segm evaluation needs a polygon or RLE for every ground-truth instance"
            )
        height, width = self.sizes[image_id]
        if isinstance(segmentation, Mapping):
            size, counts = segmentation.get("size"), segmentation.get("counts")
            where = f"coco_gt annotation {ann.get('id')} (image_id {image_id})"
            if not (isinstance(size, (list, tuple)) and len(size) == 2):
                raise ValueError(f"{where}: an RLE segmentation needs 'size' [height, width]")
            size = [_integer(v, f"{where}: RLE 'size'") for v in size]
            if isinstance(counts, list):  # uncompressed runs
                runs = [_integer(v, f"{where}: RLE 'counts'") for v in counts]
                if min(runs, default=0) < 0 or sum(runs) != size[0] * size[1]:
                    raise ValueError(
                        f"{where}: its RLE runs must be non-negative and cover {size[0]} x "
                        f"{size[1]} = {size[0] * size[1]} pixels, got {sum(runs)} pixels"
                    )
                return mask_utils.frPyObjects({"size": size, "counts": runs}, *size)
            if isinstance(counts, str) and counts.isascii():
                counts = counts.encode("ascii")
            if not isinstance(counts, bytes):
                raise ValueError(
                    f"{where}: RLE 'counts' must be a list of run lengths or a compressed "
                    f"ASCII string, got {type(counts).__name__}"
                )
            return {"size": size, "counts": counts}
        if not height or not width:
            raise ValueError(
                f"coco_gt image {image_id} has no height/width, needed to rasterize the "
                f"polygon of annotation {ann.get('id')}"
            )
        rle = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.merge(rle) if isinstance(rle, list) else rle

    def _check_rles(self, anns: list, rles: list[dict]) -> None:
        """Every RLE must be well formed, of its image's size, and its runs cover exactly
        height x width pixels: pycocotools decodes any other into uninitialised (or
        out-of-bounds) memory, and never matches masks of another size."""
        totals, valid = string_totals([r["counts"] for r in rles])
        for row in np.flatnonzero(
            ~valid | (totals != [h * w for h, w in (r["size"] for r in rles)])
        ):
            image_id, ann = anns[row]
            height, width = rles[row]["size"]
            problem = (
                "is malformed (not pycocotools' compressed counts)"
                if not valid[row]
                else f"covers {totals[row]} pixels, not {height} x {width} = {height * width}"
            )
            raise ValueError(
                f"coco_gt annotation {ann.get('id')} (image_id {image_id}): its RLE {problem}"
            )
        for (image_id, ann), rle in zip(anns, rles):
            if all(self.sizes[image_id]) and tuple(rle["size"]) != self.sizes[image_id]:
                raise ValueError(
                    f"coco_gt annotation {ann.get('id')} (image_id {image_id}): its RLE is "
                    f"{tuple(rle['size'])} (height, width) but the image is "
                    f"{self.sizes[image_id]}; masks of another size never match"
                )

    @staticmethod
    def _keypoints(anns: list) -> tuple[np.ndarray, np.ndarray]:
        lengths = {len(a.get("keypoints") or []) for _, a in anns}
        if len(lengths) > 1 or (lengths and lengths.pop() % 3):
            raise ValueError(
                "coco_gt keypoints must be flat lists of K * 3 values, the same K for every "
                f"annotation; got lengths {sorted({len(a.get('keypoints') or []) for _, a in anns})}"
            )
        k3 = len(anns[0][1].get("keypoints") or []) if anns else 0
        keypoints = np.array([a.get("keypoints") or [] for _, a in anns], dtype=np.float64)
        keypoints = keypoints.reshape(len(anns), k3)
        counted = (keypoints[:, 2::3] > 0).sum(1)
        num = np.array(
            [a.get("num_keypoints", c) for (_, a), c in zip(anns, counted.tolist())],
            dtype=np.int64,
        ).reshape(len(anns))
        return keypoints, num
