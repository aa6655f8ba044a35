"""pycocotools run directly, the reference every evaluation test compares with."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = {
    "bbox": [
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"],
}
STAT_NAMES["segm"] = STAT_NAMES["bbox"]


def coco_dicts(predictions, targets, iou_type, *, label_to_category=None):
    """Ground truth and results the plain way: one dict per instance, encoded one by one."""
    lookup = (lambda v: v) if label_to_category is None else label_to_category.__getitem__
    images, annotations, results = [], [], []
    for target, prediction in zip(targets, predictions):
        image_id = int(target["image_id"])
        masks = target.get("masks")
        pred_masks = prediction.get("masks")
        height, width = (
            masks.shape[-2:]
            if masks is not None
            else pred_masks.shape[-2:]
            if pred_masks is not None
            else (0, 0)
        )
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for i in range(len(target["boxes"])):
            x1, y1, x2, y2 = target["boxes"][i].tolist()
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": lookup(int(target["labels"][i])),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(target["area"][i]),
                "iscrowd": int(target["iscrowd"][i]),
            }
            if iou_type == "segm":
                ann["segmentation"] = mask_utils.encode(np.asfortranarray(masks[i].numpy()))
            if iou_type == "keypoints":
                points = target["keypoints"][i]
                ann["keypoints"] = points.flatten().tolist()
                ann["num_keypoints"] = int((points[:, 2] > 0).sum())
            annotations.append(ann)
        for j in range(len(prediction["scores"])):
            result = {
                "image_id": image_id,
                "category_id": lookup(int(prediction["labels"][j])),
                "score": float(prediction["scores"][j]),
            }
            if iou_type == "bbox":
                x1, y1, x2, y2 = prediction["boxes"][j].tolist()
                result["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            elif iou_type == "segm":
                binary = (pred_masks[j, 0].numpy() > 0.5).astype(np.uint8)
                result["segmentation"] = mask_utils.encode(np.asfortranarray(binary))
            else:
                result["keypoints"] = prediction["keypoints"][j].flatten().tolist()
            results.append(result)
    return images, annotations, results


def pycocotools_eval(
    images, annotations, results, iou_type, *, categories=None, sigmas=None, configure=None
):
    """pycocotools' COCOeval after evaluate + accumulate (+ summarize for default params)."""
    if categories is None:
        categories = sorted({a["category_id"] for a in annotations})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in categories],
        }
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes([]) raises IndexError (cocoapi#450): build the empty result set by hand
            dt = COCO()
            dt.dataset = {
                "images": images,
                "annotations": [],
                "categories": gt.dataset["categories"],
            }
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if configure is not None:
            configure(evaluator.params)
        evaluator.evaluate()
        evaluator.accumulate()
        if configure is None:  # summarize() assumes the default parameters (and crashes)
            evaluator.summarize()
    return evaluator
