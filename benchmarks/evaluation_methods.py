"""The evaluation jobs the evaluator benchmarks time: detkit and the peers, from tensors.

Each runner takes the samples of :mod:`evaluation_workloads` and an iou type, does the whole
job (ground truth from the targets, batches of 2 predictions, final statistics) and returns
pycocotools' ``stats`` list:

* ``detkit``: :class:`detkit.evaluation.CocoEvaluator` (hotcoco backend);
  ``detkit-pycocotools``: the same with the pycocotools backend (the exactness reference);
* ``reference``: torchvision's reference pattern: the ground truth as a pycocotools ``COCO``
  (deep-copied, as its evaluator does); per batch result dicts (masks thresholded and encoded
  one by one), ``loadRes`` and ``evaluate``; at the end merged, accumulated, summarized;
* ``hotcoco-integration``: ``hotcoco.integrations.CocoEvaluator`` (the ground truth as a COCO
  object up front, built from the targets);
* ``hotcoco-stream``: hotcoco's raw ``StreamingEval`` fed per batch with the least user code:
  ground-truth dicts, detections as its ``(N, 7)`` array for boxes, result dicts for masks
  (thresholded per batch, encoded by hotcoco's encoder) and keypoints.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time

import numpy as np
import torch
from evaluation_workloads import GENERATION, batches, gt_masks

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


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _xywh(boxes: torch.Tensor) -> list:
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.tolist()]


def _categories(samples) -> list[dict]:
    ids = {int(c) for target, _, _ in samples for c in target["labels"].tolist()}
    ids |= {int(c) for _, prediction, _ in samples for c in prediction["labels"].tolist()}
    return [{"id": c, "name": str(c)} for c in sorted(ids)]


def _annotation(target, i, bbox, label, area, crowd, masks, encode, number) -> dict:
    ann = {
        "id": number,
        "image_id": target["image_id"],
        "category_id": label,
        "bbox": bbox,
        "area": area,
        "iscrowd": crowd,
    }
    if masks is not None:
        ann["segmentation"] = encode(np.asfortranarray(masks[i]))
    if "keypoints" in target:
        points = target["keypoints"][i]
        ann["keypoints"] = points.flatten().tolist()
        ann["num_keypoints"] = int((points[:, 2] > 0).sum())
    return ann


def _gt_anns(target, height, width, iou_type, encode, first_id) -> list[dict]:
    masks = None
    if iou_type == "segm":
        began, cpu = time.perf_counter(), time.process_time()
        masks = gt_masks(target["boxes"], height, width).numpy()
        GENERATION["seconds"] += time.perf_counter() - began
        GENERATION["cpu"] += time.process_time() - cpu
    rows = zip(
        _xywh(target["boxes"]),
        target["labels"].tolist(),
        target["area"].tolist(),
        target["iscrowd"].tolist(),
    )
    return [
        _annotation(target, i, bbox, label, area, crowd, masks, encode, first_id + i)
        for i, (bbox, label, area, crowd) in enumerate(rows)
    ]


def _gt_dicts(samples, iou_type, encode) -> dict:
    images, annotations = [], []
    for target, _, (height, width) in samples:
        images.append({"id": target["image_id"], "height": height, "width": width})
        annotations += _gt_anns(target, height, width, iou_type, encode, len(annotations) + 1)
    return {"images": images, "annotations": annotations, "categories": _categories(samples)}


def _results(predictions, targets, iou_type) -> list[dict]:
    """Result dicts the way torchvision's reference ``prepare`` builds them."""
    from pycocotools import mask as mask_utils

    rows = []
    for prediction, target in zip(predictions, targets):
        scores, labels = prediction["scores"].tolist(), prediction["labels"].tolist()
        if iou_type == "segm":
            masks = (prediction["masks"] > 0.5).numpy()
            payload = [
                {
                    "segmentation": mask_utils.encode(
                        np.array(m[0, :, :, None], dtype=np.uint8, order="F")
                    )[0]
                }
                for m in masks
            ]
        elif iou_type == "keypoints":
            payload = [{"keypoints": k} for k in prediction["keypoints"].flatten(1).tolist()]
        else:
            payload = [{"bbox": b} for b in _xywh(prediction["boxes"])]
        for extra, score, label in zip(payload, scores, labels):
            rows.append(
                {"image_id": target["image_id"], "category_id": label, "score": score, **extra}
            )
    return rows


def run_reference(samples, iou_type):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = _gt_dicts(samples, iou_type, mask_utils.encode)
        coco_gt.createIndex()
        coco_gt = copy.deepcopy(coco_gt)  # the reference evaluator keeps its own copy
        all_ids, all_evals = [], []
        evaluator = None
        for predictions, targets in batches(samples, iou_type):
            ids = [t["image_id"] for t in targets]
            results = _results(predictions, targets, iou_type)
            coco_dt = coco_gt.loadRes(results) if results else COCO()
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = ids
            evaluator.evaluate()
            p = evaluator.params
            per_image = np.asarray(evaluator.evalImgs).reshape(
                len(p.catIds), len(p.areaRng), len(p.imgIds)
            )
            all_ids.extend(p.imgIds)
            all_evals.append(per_image)
        merged = np.concatenate(all_evals, axis=2)
        unique, index = np.unique(np.array(all_ids), return_index=True)
        evaluator.evalImgs = list(merged[..., index].flatten())
        evaluator.params.imgIds = list(unique)
        evaluator._paramsEval = copy.deepcopy(evaluator.params)
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats.tolist()


def run_detkit(samples, iou_type, backend="hotcoco"):
    from detkit.evaluation import CocoEvaluator

    evaluator = CocoEvaluator(iou_type, backend=backend)
    for predictions, targets in batches(samples, iou_type):
        evaluator.update(predictions, targets)
    metrics = evaluator.compute()[iou_type]
    return [metrics[name] for name in STAT_NAMES[iou_type]]


def run_hotcoco_integration(samples, iou_type):
    import hotcoco
    from hotcoco import mask as hotcoco_mask

    ground_truth = hotcoco.COCO(_gt_dicts(samples, iou_type, hotcoco_mask.encode))
    evaluator = hotcoco.integrations.CocoEvaluator(ground_truth, [iou_type])
    for predictions, targets in batches(samples, iou_type):
        evaluator.update({t["image_id"]: p for p, t in zip(predictions, targets)})
    with _quiet():
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.coco_eval[iou_type].stats)


def run_hotcoco_stream(samples, iou_type):
    import hotcoco
    from hotcoco import mask as hotcoco_mask

    stream = hotcoco.StreamingEval(_categories(samples), iou_type)
    next_id = 1
    for predictions, targets in batches(samples, iou_type):
        images, gt = [], []
        for target, (_, _, (height, width)) in zip(
            targets, (samples[t["image_id"] - 1] for t in targets)
        ):
            images.append({"id": target["image_id"], "height": height, "width": width})
            gt += _gt_anns(target, height, width, iou_type, hotcoco_mask.encode, next_id)
            next_id += len(target["labels"])
        if iou_type == "bbox":
            rows = []
            for prediction, target in zip(predictions, targets):
                boxes = prediction["boxes"].to(torch.float64)
                boxes[:, 2:] -= boxes[:, :2]
                n = len(boxes)
                rows.append(
                    torch.cat(
                        [
                            torch.full((n, 1), float(target["image_id"]), dtype=torch.float64),
                            boxes,
                            prediction["scores"].to(torch.float64)[:, None],
                            prediction["labels"].to(torch.float64)[:, None],
                        ],
                        1,
                    ).numpy()
                )
            stream.update(images, gt, np.concatenate(rows))
        elif iou_type == "segm":
            results = []
            for prediction, target in zip(predictions, targets):
                binary = (prediction["masks"][:, 0] > 0.5).permute(1, 2, 0).numpy()
                rles = hotcoco_mask.encode(np.asfortranarray(binary.view(np.uint8)))
                for score, label, rle in zip(
                    prediction["scores"].tolist(), prediction["labels"].tolist(), rles
                ):
                    results.append(
                        {
                            "image_id": target["image_id"],
                            "category_id": label,
                            "score": score,
                            "segmentation": rle,
                        }
                    )
            stream.update(images, gt, results)
        else:
            stream.update(images, gt, _results(predictions, targets, iou_type))
    with _quiet():
        evaluator = stream.finalize()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def run_batches_only(samples, iou_type):
    """The loop without an evaluator: what every method's peak memory holds of the batches
    themselves (a segm batch's float masks are tens of MB). No statistics (all zero)."""
    for _ in batches(samples, iou_type):
        pass
    return [0.0] * len(STAT_NAMES[iou_type])


RUNNERS = {
    "detkit": run_detkit,
    "batches-only": run_batches_only,
    "detkit-pycocotools": lambda samples, iou_type: run_detkit(samples, iou_type, "pycocotools"),
    "reference": run_reference,
    "hotcoco-integration": run_hotcoco_integration,
    "hotcoco-stream": run_hotcoco_stream,
}
