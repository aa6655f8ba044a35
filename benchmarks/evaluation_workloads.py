"""Synthetic evaluation workloads as tensors, shared by the evaluator benchmarks.

Every workload is a list of ``(target, prediction, (height, width))`` per image, COCO-val
shaped: ~7.3 ground-truth instances per image over 80 categories (1% crowd), detections that
are jittered copies of the ground truth plus random boxes, most of a class present in the image.
Masks are made lazily, per batch, by :func:`batches` (a whole run's float masks would not fit in
memory): ground-truth masks are filled ellipses inside their boxes, predicted masks are Mask
R-CNN-like probabilities, zero outside the (pasted) box and falling off from its centre, so
that thresholding at 0.5 gives an ellipse. :data:`GENERATION` counts the seconds spent making
them, which benchmarks subtract from their timings.
"""

from __future__ import annotations

import time

import numpy as np
import torch

#: Wall and CPU seconds spent making masks inside timed runs (to subtract).
GENERATION = {"seconds": 0.0, "cpu": 0.0}

#: The COCO person skeleton's 17 keypoints (what the keypoints workload uses).
NUM_KEYPOINTS = 17


def generate(
    num_images: int,
    *,
    iou_type: str = "bbox",
    detections: int = 100,
    size: tuple[int, int] | None = None,
    categories: int = 80,
    seed: int = 0,
) -> list:
    """Per image ``(target, prediction, (height, width))``; masks are made by :func:`batches`.

    ``size`` fixes every image's ``(height, width)`` (default: random COCO-like sizes, 360-640 x
    480-640); ``categories`` is the number of classes (1 for person keypoints).
    """
    rng = np.random.default_rng(seed)
    samples = []
    for image_id in range(1, num_images + 1):
        if size is not None:
            height, width = size
        else:
            height, width = int(rng.integers(360, 641)), int(rng.integers(480, 641))
        n_gt = int(rng.poisson(7.3))
        wh = rng.uniform(4, 0.6 * min(width, height), (n_gt, 2))
        xy = rng.uniform(0, 1, (n_gt, 2)) * ([width, height] - wh)
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        gt_labels = rng.integers(1, categories + 1, n_gt)
        crowd = (rng.random(n_gt) < 0.01).astype(np.int64)
        n_copy = min(n_gt, detections // 2)
        sides = np.tile(wh[:n_copy], 2)
        copies = gt_boxes[:n_copy] + rng.normal(0, 0.08, (n_copy, 4)) * sides
        n_rand = detections - n_copy
        rwh = rng.uniform(4, 0.5 * min(width, height), (n_rand, 2))
        rxy = rng.uniform(0, 1, (n_rand, 2)) * ([width, height] - rwh)
        boxes = np.concatenate([copies, np.concatenate([rxy, rxy + rwh], 1)])
        boxes = np.clip(boxes, 0, [width, height, width, height])
        present = gt_labels if n_gt else rng.integers(1, categories + 1, 3)
        labels = np.concatenate([gt_labels[:n_copy], rng.choice(present, n_rand)])
        wrong = rng.random(detections) < 0.1
        labels[wrong] = rng.integers(1, categories + 1, int(wrong.sum()))
        scores = rng.random(detections)
        target = {
            "boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(gt_labels, dtype=torch.int64),
            "area": torch.tensor(wh.prod(1), dtype=torch.float32),
            "iscrowd": torch.tensor(crowd),
            "image_id": image_id,
        }
        prediction = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32),
        }
        if iou_type == "keypoints":
            target["keypoints"] = _keypoints(rng, gt_boxes, labelled=True)
            prediction["keypoints"] = _keypoints(rng, boxes, labelled=False, like=target)
        samples.append((target, prediction, (height, width)))
    return samples


def _keypoints(rng, boxes: np.ndarray, *, labelled: bool, like: dict | None = None):
    """``[N, 17, 3]`` keypoints inside the boxes; ground truth has ~30% unlabelled (0, 0, 0)."""
    n = len(boxes)
    u = rng.random((n, NUM_KEYPOINTS, 2))
    x = boxes[:, None, 0] + u[..., 0] * (boxes[:, None, 2] - boxes[:, None, 0])
    y = boxes[:, None, 1] + u[..., 1] * (boxes[:, None, 3] - boxes[:, None, 1])
    if labelled:
        v = np.where(rng.random((n, NUM_KEYPOINTS)) < 0.7, 2.0, 0.0)
        points = np.stack([x * (v > 0), y * (v > 0), v], -1)
    else:
        points = np.stack([x, y, np.ones_like(x)], -1)
        if like is not None:  # detections copying a ground truth land near its keypoints
            gt = like["keypoints"].numpy()
            k = min(len(gt), n // 2)
            noise = rng.normal(0, 2.0, (k, NUM_KEYPOINTS, 2))
            points[:k, :, :2] = np.where(
                gt[:k, :, 2:] > 0, gt[:k, :, :2] + noise, points[:k, :, :2]
            )
    return torch.tensor(points, dtype=torch.float32).reshape(n, NUM_KEYPOINTS, 3)


def _ellipse(box, height: int, width: int):
    """``(y slice, x slice, r²)``: the normalized squared distance from the box centre."""
    x1, y1, x2, y2 = box
    ya, yb = int(np.floor(y1)), min(int(np.ceil(y2)), height)
    xa, xb = int(np.floor(x1)), min(int(np.ceil(x2)), width)
    ys = (np.arange(ya, yb, dtype=np.float32) + 0.5 - (y1 + y2) / 2) / max((y2 - y1) / 2, 0.5)
    xs = (np.arange(xa, xb, dtype=np.float32) + 0.5 - (x1 + x2) / 2) / max((x2 - x1) / 2, 0.5)
    return slice(ya, yb), slice(xa, xb), ys[:, None] ** 2 + xs[None, :] ** 2


def gt_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``UInt8[N, H, W]``: the filled ellipse inscribed in each box."""
    # torch.zeros writes every page, as a model's output is written; numpy's calloc'd zeros
    # would leave the page faults to whoever reads the masks first.
    masks = torch.zeros((len(boxes), height, width), dtype=torch.uint8)
    for mask, box in zip(masks.numpy(), boxes.tolist()):
        ys, xs, r2 = _ellipse(box, height, width)
        mask[ys, xs] = r2 <= 1.0
    return masks


def probability_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``Float[N, 1, H, W]``: Mask R-CNN-like probabilities, 0 outside each (pasted) box."""
    masks = torch.zeros((len(boxes), 1, height, width), dtype=torch.float32)
    for mask, box in zip(masks.numpy(), boxes.tolist()):
        ys, xs, r2 = _ellipse(box, height, width)
        mask[0, ys, xs] = np.clip(1.0 - 0.5 * r2, 0.0, 1.0)
    return masks


def batches(samples, iou_type: str, batch_size: int = 2):
    """``(predictions, targets)`` per batch; segm masks are made here, their time counted
    in :data:`GENERATION`.

    A batch's lists are emptied when the next one is asked for, inside that count: freeing
    a batch's masks (tens of MB) belongs to the loop, not to the evaluator being timed.
    """
    previous: tuple[list, list] = ([], [])
    for start in range(0, len(samples) + batch_size, batch_size):
        began, cpu = time.perf_counter(), time.process_time()
        for items in previous:
            items.clear()
        if start >= len(samples):
            GENERATION["seconds"] += time.perf_counter() - began
            GENERATION["cpu"] += time.process_time() - cpu
            return
        targets, predictions = [], []
        for target, prediction, (height, width) in samples[start : start + batch_size]:
            if iou_type == "segm":
                target = {**target, "masks": gt_masks(target["boxes"], height, width)}
                prediction = {
                    **prediction,
                    "masks": probability_masks(prediction["boxes"], height, width),
                }
            targets.append(target)
            predictions.append(prediction)
        previous = (predictions, targets)
        GENERATION["seconds"] += time.perf_counter() - began
        GENERATION["cpu"] += time.process_time() - cpu
        yield predictions, targets
