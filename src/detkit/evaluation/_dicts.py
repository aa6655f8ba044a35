"""COCO's per-annotation dicts, written from the table only for the APIs that need them.

pycocotools' ``COCO`` / ``COCOeval``, hotcoco's dict updates and results json files take one
dict per annotation; everything else in the evaluator reads the columns of
:class:`~detkit.evaluation._table.Annotations`.
"""

from __future__ import annotations

from detkit.evaluation._table import Annotations, Images


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
        "area": anns.required("area").tolist(),
        "iscrowd": anns.required("iscrowd").tolist(),
    }
    if anns.score is not None:
        columns["score"] = anns.score.tolist()
    if anns.rle_counts is not None and iou_type in (None, "segm"):
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
    rows = annotation_dicts(detections.results(iou_type), iou_type, json_safe=True)
    payload = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    keep = ("image_id", "category_id", payload, "score")
    return [{key: row[key] for key in keep} for row in rows]
