"""Synthetic COCO-format data: images plus an annotation file, written without a download."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

__all__ = ["write_synthetic_coco"]

_CATEGORIES = ((2, "triangle"), (5, "box"), (9, "kite"))  # non-contiguous ids, as in COCO


def write_synthetic_coco(
    root: str | os.PathLike,
    num_images: int = 8,
    *,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] | None = None,
    size_range: tuple[int, int] = (32, 64),
    max_instances: int = 3,
    negative_fraction: float = 0.2,
    rle_fraction: float = 0.2,
    crowd_fraction: float = 0.1,
    num_keypoints: int = 3,
    compress_level: int = 1,
) -> Path:
    """Write ``root/images/*.png`` and ``root/annotations.json`` in COCO format; return ``root``.

    Every object is a filled polygon (a triangle, a box or a four-sided kite, the three
    categories, with ids 2, 5 and 9) painted into the image; its annotation carries the
    polygon (or, by chance, the same mask as compressed RLE, or as uncompressed RLE with
    ``iscrowd = 1``), the tight ``bbox`` and the ``area`` pycocotools computes for that mask,
    and ``num_keypoints`` keypoints on the polygon's vertices (some not labelled, ``v = 0``).
    Image ids (``1, 3, 5, ...``) and annotation ids (from 1) are not positions, so code that
    confuses them fails. The same ``seed`` writes the same files.

    Args:
        root: folder to write into (created if needed).
        num_images: how many images.
        seed: seed of the random generator.
        sizes: ``(height, width)`` of the images, cycled; default: random sides in
            ``size_range``.
        size_range: ``(min, max)`` side length when ``sizes`` is not given.
        max_instances: most objects per image.
        negative_fraction: probability that an image has no object.
        rle_fraction: probability that a non-crowd object is stored as compressed RLE.
        crowd_fraction: probability that an object is a crowd region (uncompressed RLE).
        num_keypoints: keypoints per object (``0`` for none); categories list their names.
        compress_level: PNG compression level (0-9); low is fast.

    Returns:
        ``Path(root)``.

    Raises:
        ValueError: for arguments out of range.

    >>> import json, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> root = write_synthetic_coco(folder, num_images=2, sizes=[(20, 30)])
    >>> data = json.loads((root / "annotations.json").read_text())
    >>> [(image["id"], image["height"], image["width"]) for image in data["images"]]
    [(1, 20, 30), (3, 20, 30)]
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    low, high = size_range
    if sizes is None and not 8 <= low <= high:
        raise ValueError(f"size_range must be (min, max) with 8 <= min <= max, got {size_range}")
    if sizes is not None and (not sizes or any(h < 8 or w < 8 for h, w in sizes)):
        raise ValueError(f"sizes must be a non-empty list of (height, width) >= 8, got {sizes}")
    if max_instances < 1 or num_keypoints < 0:
        raise ValueError("max_instances must be >= 1 and num_keypoints >= 0")
    for name, value in (
        ("negative_fraction", negative_fraction),
        ("rle_fraction", rle_fraction),
        ("crowd_fraction", crowd_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(num_images):
        if sizes is not None:
            height, width = (int(v) for v in sizes[index % len(sizes)])
        else:
            height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
        image_id = 2 * index + 1
        pixels = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
        count = 0 if rng.random() < negative_fraction else int(rng.integers(1, max_instances + 1))
        for _ in range(count):
            label = int(rng.integers(len(_CATEGORIES)))
            polygon = _polygon(rng, label, height, width)
            rle = mask_utils.merge(
                mask_utils.frPyObjects([polygon.ravel().tolist()], height, width)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2
                mask = mask_utils.decode(rle).astype(bool)
            if not mask.any():
                continue  # too thin to cover a pixel centre
            pixels[mask] = rng.integers(150, 256, size=3, dtype=np.uint8)
            crowd = bool(rng.random() < crowd_fraction)
            if crowd:
                segmentation: Any = _uncompressed_rle(mask)
            elif rng.random() < rle_fraction:
                segmentation = {"size": [height, width], "counts": rle["counts"].decode()}
            else:
                segmentation = [polygon.ravel().tolist()]
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": _CATEGORIES[label][0],
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                "area": float(mask_utils.area(rle)),
                "iscrowd": int(crowd),
                "segmentation": segmentation,
            }
            if num_keypoints:
                annotation["keypoints"] = _keypoints(rng, polygon, num_keypoints)
                annotation["num_keypoints"] = sum(v > 0 for v in annotation["keypoints"][2::3])
            annotations.append(annotation)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels, "RGB").save(
            root / "images" / file_name, compress_level=compress_level
        )
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [
        {"id": cid, "name": name, "supercategory": "shape"}
        | ({"keypoints": [f"point{k}" for k in range(num_keypoints)]} if num_keypoints else {})
        for cid, name in _CATEGORIES
    ]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def _polygon(rng: np.random.Generator, label: int, height: int, width: int) -> np.ndarray:
    """Vertices ``[P, 2]`` (x, y) of a shape of category ``label``, sometimes cut by the border."""
    w = rng.uniform(0.2, 0.7) * width
    h = rng.uniform(0.2, 0.7) * height
    x = rng.uniform(-0.15 * w, width - 0.85 * w)
    y = rng.uniform(-0.15 * h, height - 0.85 * h)
    if label == 0:
        corners = [(x, y + h), (x + w * rng.uniform(0.2, 0.8), y), (x + w, y + h)]
    elif label == 1:
        corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    else:
        corners = [(x + w / 2, y), (x + w, y + h * 0.4), (x + w / 2, y + h), (x, y + h * 0.4)]
    points = np.asarray(corners, dtype=np.float64)
    np.clip(points[:, 0], 0, width, out=points[:, 0])
    np.clip(points[:, 1], 0, height, out=points[:, 1])
    return np.round(points, 2)  # as exporters write them; the mask is made from these


def _keypoints(rng: np.random.Generator, polygon: np.ndarray, count: int) -> list[float]:
    values: list[float] = []
    for k in range(count):
        x, y = polygon[k % len(polygon)]
        visibility = int(rng.choice([0, 1, 2], p=[0.2, 0.2, 0.6]))
        values += [round(float(x), 2), round(float(y), 2), visibility] if visibility else [0, 0, 0]
    return values


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}
