"""Column-oriented COCO data handed to the backends, and the dicts pycocotools-style APIs need.

Ground truth and detections travel as numpy columns (one row per annotation); per-annotation
Python dicts are built only for backends that cannot take columns, at ``compute()`` time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

#: pycocotools' default OKS sigmas, for the 17 COCO person keypoints.
COCO_KEYPOINT_SIGMAS = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ]
    )
    / 10.0
)

#: pycocotools' defaults, built the way it builds them (linspace, not arange).
DEFAULT_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10, endpoint=True)
DEFAULT_AREA_RANGES = {
    "bbox": {
        "all": (0.0, 1e10),
        "small": (0.0, 1024.0),
        "medium": (1024.0, 9216.0),
        "large": (9216.0, 1e10),
    },
    "keypoints": {"all": (0.0, 1e10), "medium": (1024.0, 9216.0), "large": (9216.0, 1e10)},
}
DEFAULT_AREA_RANGES["segm"] = DEFAULT_AREA_RANGES["bbox"]
DEFAULT_MAX_DETS = {"bbox": (1, 10, 100), "segm": (1, 10, 100), "keypoints": (20,)}


@dataclass
class EvalParams:
    """Evaluation parameters of one iou type (pycocotools' ``Params``, validated)."""

    iou_type: str
    iou_thresholds: np.ndarray
    max_dets: list[int]
    area_labels: list[str]
    area_ranges: list[list[float]]
    keypoint_sigmas: np.ndarray | None = None
    category_ids: list[int] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)


@dataclass
class Images:
    """Evaluated images: ids and sizes (``0`` where unknown, which only segm needs)."""

    ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray


@dataclass
class Annotations:
    """Ground truth or detections as columns.

    ``bbox`` is XYWH float64. ``rles`` holds compressed RLE dicts (segm only), ``keypoints``
    is ``[n, K * 3]`` float64 (keypoints only). ``score`` is set for detections,
    ``num_keypoints`` for keypoint ground truth.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    score: np.ndarray | None = None
    rles: list[dict] | None = None
    keypoints: np.ndarray | None = None
    num_keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_id)

    def required_score(self) -> np.ndarray:
        """``score``, which detections always have.

        Raises:
            ValueError: when these annotations have no scores (ground truth).
        """
        if self.score is None:
            raise ValueError("these annotations have no 'score' column (ground truth has none)")
        return self.score

    def required_rles(self) -> list[dict]:
        """``rles``, which segm annotations always have.

        Raises:
            ValueError: when these annotations have no RLEs (not segm).
        """
        if self.rles is None:
            raise ValueError("these annotations have no RLEs (only segm annotations do)")
        return self.rles

    def required_keypoints(self) -> np.ndarray:
        """``keypoints``, which keypoint annotations always have.

        Raises:
            ValueError: when these annotations have no keypoints (not keypoints).
        """
        if self.keypoints is None:
            raise ValueError("these annotations have no keypoints (only keypoint annotations do)")
        return self.keypoints

    def take(self, rows: np.ndarray) -> Annotations:
        """The annotations at integer positions (or a boolean mask) ``rows``."""
        rows = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Annotations(
            image_id=self.image_id[rows],
            category_id=self.category_id[rows],
            bbox=self.bbox[rows],
            area=self.area[rows],
            iscrowd=self.iscrowd[rows],
            score=pick(self.score),
            rles=None if self.rles is None else [self.rles[i] for i in rows.tolist()],
            keypoints=pick(self.keypoints),
            num_keypoints=pick(self.num_keypoints),
        )


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Pixel counts of RLEs as float64.

    In pieces of 255: pycocotools 2.0.11's ``area`` builds an array with
    ``np.array((n,), dtype=np.uint8)``, which numpy 2 rejects for ``n > 255``.
    """
    pieces = [mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(pieces).astype(np.float64) if pieces else np.zeros(0)


def detections_like_load_res(
    iou_type: str,
    image_id: np.ndarray,
    category_id: np.ndarray,
    score: np.ndarray,
    *,
    bbox: np.ndarray | None = None,
    rles: list[dict] | None = None,
    keypoints: np.ndarray | None = None,
) -> Annotations:
    """Detections with the ``area`` and ``bbox`` pycocotools' ``loadRes`` would derive.

    bbox: area ``w * h``. segm: area and box of the RLE. keypoints: the box spanned by all
    keypoints (whatever their visibility) and its area.
    """
    n = len(image_id)
    if iou_type == "bbox":
        if bbox is None:
            raise ValueError("bbox detections need 'bbox'")
        area = bbox[:, 2] * bbox[:, 3]
    elif iou_type == "segm":
        if n:
            if rles is None:
                raise ValueError("segm detections need 'rles'")
            area = rle_areas(rles)
            bbox = np.asarray(mask_utils.toBbox(rles), dtype=np.float64)
        else:
            area, bbox = np.zeros(0), np.zeros((0, 4))
    else:
        if keypoints is None:
            raise ValueError("keypoint detections need 'keypoints'")
        x, y = keypoints[:, 0::3], keypoints[:, 1::3]
        if n:
            x0, x1, y0, y1 = x.min(1), x.max(1), y.min(1), y.max(1)
        else:
            x0 = x1 = y0 = y1 = np.zeros(0)
        bbox = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
        area = (x1 - x0) * (y1 - y0)
    return Annotations(
        image_id=image_id,
        category_id=category_id,
        bbox=bbox,
        area=area,
        iscrowd=np.zeros(n, dtype=np.int64),
        score=score,
        rles=rles if iou_type == "segm" else None,
        keypoints=keypoints if iou_type == "keypoints" else None,
    )


def annotation_dicts(
    anns: Annotations, iou_type: str | None, *, json_safe: bool = False
) -> list[dict]:
    """One COCO annotation (or result) dict per row, ids numbered from 1.

    ``iou_type`` picks the payload added beside ``bbox`` (``None``: every payload present).
    ``json_safe`` turns RLE counts into ``str`` for :mod:`json`.
    """
    n = len(anns)
    columns = {
        "id": range(1, n + 1),
        "image_id": anns.image_id.tolist(),
        "category_id": anns.category_id.tolist(),
        "bbox": anns.bbox.tolist(),
        "area": anns.area.tolist(),
        "iscrowd": anns.iscrowd.tolist(),
    }
    if anns.score is not None:
        columns["score"] = anns.score.tolist()
    if anns.rles is not None and iou_type in (None, "segm"):
        rles = anns.rles
        if json_safe:
            rles = [{"size": r["size"], "counts": _text(r["counts"])} for r in rles]
        columns["segmentation"] = rles
    if anns.keypoints is not None and iou_type in (None, "keypoints"):
        columns["keypoints"] = anns.keypoints.tolist()
        if anns.num_keypoints is not None:
            columns["num_keypoints"] = anns.num_keypoints.tolist()
    keys = list(columns)
    return [dict(zip(keys, row)) for row in zip(*columns.values())]


def image_dicts(images: Images) -> list[dict]:
    """COCO ``images`` entries."""
    return [
        {"id": i, "height": h, "width": w}
        for i, h, w in zip(images.ids.tolist(), images.heights.tolist(), images.widths.tolist())
    ]


def category_dicts(category_ids: list[int]) -> list[dict]:
    """COCO ``categories`` entries (names are the ids: the evaluator never needs names)."""
    return [{"id": c, "name": str(c), "supercategory": ""} for c in category_ids]


def _text(counts: bytes | str) -> str:
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def result_dicts(detections: Annotations, iou_type: str) -> list[dict]:
    """COCO result dicts (what ``loadRes`` reads) for detections of one iou type."""
    rows = annotation_dicts(detections, iou_type, json_safe=True)
    payload = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    keep = ("image_id", "category_id", payload, "score")
    return [{key: row[key] for key in keep} for row in rows]
