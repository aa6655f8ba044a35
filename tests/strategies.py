"""Shared test factories and hypothesis strategies (one place, as the house style asks).

Keep data tiny: images of at most a few dozen pixels a side, unless a test needs more.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

# -- masks -------------------------------------------------------------------------------------


@st.composite
def binary_masks(draw, max_instances: int = 4, max_side: int = 24, min_instances: int = 0):
    """uint8 Tensor[N, H, W] of random binary masks (empty masks included)."""
    n = draw(st.integers(min_instances, max_instances))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    data = draw(arrays(np.uint8, (n, h, w), elements=st.integers(0, 1)))
    return torch.from_numpy(data)


@st.composite
def id_masks(draw, max_id: int = 300, max_side: int = 24, dtype=np.uint16):
    """An instance-id mask [H, W] with random, possibly non-contiguous, ids (0 = background)."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    ids = draw(st.lists(st.integers(1, max_id), min_size=0, max_size=5, unique=True))
    values = st.sampled_from([0, *ids])
    return draw(arrays(dtype, (h, w), elements=values))


# -- targets -----------------------------------------------------------------------------------


def make_target(boxes, labels=None, *, image_id: int = 0, height: int = 32, width: int = 32):
    """A valid target from a list of XYXY boxes (masks filled from the boxes)."""
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = boxes_t.shape[0]
    masks = torch.zeros((n, height, width), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes_t.round().to(torch.int64).tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return {
        "boxes": boxes_t,
        "labels": torch.tensor(labels if labels is not None else [1] * n, dtype=torch.int64),
        "masks": masks,
        "area": masks.flatten(1).sum(1).to(torch.float32),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "image_id": image_id,
    }


@st.composite
def integer_boxes(draw, height: int, width: int, max_instances: int = 4, min_instances: int = 0):
    """Lists of non-degenerate integer XYXY boxes inside a ``width x height`` canvas."""
    n = draw(st.integers(min_instances, max_instances))
    boxes = []
    for _ in range(n):
        x1 = draw(st.integers(0, width - 1))
        y1 = draw(st.integers(0, height - 1))
        x2 = draw(st.integers(x1 + 1, width))
        y2 = draw(st.integers(y1 + 1, height))
        boxes.append([x1, y1, x2, y2])
    return boxes


@st.composite
def targets(draw, height: int = 32, width: int = 32, max_instances: int = 4):
    """Valid targets (boxes, labels, masks, area, iscrowd, image_id) for a fixed canvas."""
    boxes = draw(integer_boxes(height, width, max_instances))
    labels = [draw(st.integers(1, 5)) for _ in boxes]
    image_id = draw(st.integers(0, 10_000))
    return make_target(boxes, labels, image_id=image_id, height=height, width=width)


# -- engine ------------------------------------------------------------------------------------
# A detector small enough to train for dozens of iterations in seconds on 2 CPU cores: three
# strided convolutions as backbone, one feature map, few anchors and proposals.


def tiny_detector(*, seed: int = 0, masks: bool = False, keypoints: int = 0, size: int = 96):
    """A randomly initialised Faster R-CNN (Mask R-CNN with ``masks``, Keypoint R-CNN with
    ``keypoints`` > 0) for 2 classes, built with ``seed`` without touching the global RNG."""
    from torch import nn
    from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.keypoint_rcnn import (
        KeypointRCNNHeads,
        KeypointRCNNPredictor,
    )
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1),
            nn.ReLU(),
        )
        backbone.out_channels = 32
        options = dict(
            min_size=size,
            max_size=size,
            rpn_anchor_generator=AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
            box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
            box_head=TwoMLPHead(32 * 7 * 7, 64),
            box_predictor=FastRCNNPredictor(64, 2),
            rpn_pre_nms_top_n_train=200,
            rpn_post_nms_top_n_train=100,
            rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=50,
            rpn_batch_size_per_image=64,
            box_batch_size_per_image=64,
        )
        if masks:
            return MaskRCNN(
                backbone,
                mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
                mask_head=MaskRCNNHeads(32, (32,), 1),
                mask_predictor=MaskRCNNPredictor(32, 16, 2),
                **options,
            )
        if keypoints:
            return KeypointRCNN(
                backbone,
                keypoint_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
                keypoint_head=KeypointRCNNHeads(32, (32,)),
                keypoint_predictor=KeypointRCNNPredictor(32, keypoints),
                **options,
            )
        return FasterRCNN(backbone, **options)


def synthetic_detection_samples(root, *, num_images: int = 16, seed: int = 0, masks: bool = False):
    """``(float image, target)`` pairs of a synthetic Penn-Fudan folder written under ``root``.

    Images of 64-112 px, no one-pixel-thin instances; ``masks`` keeps the instance masks.
    """
    from detkit.data import write_synthetic_pennfudan

    write_synthetic_pennfudan(
        root, num_images=num_images, seed=seed, size_range=(64, 112), thin_fraction=0.0
    )
    return load_detection_samples(root, masks=masks)


def load_detection_samples(root, *, masks: bool = False):
    """Decode a Penn-Fudan-layout folder once into ``(float image, target)`` pairs."""
    from pathlib import Path

    from detkit.data import InstanceMaskDataset

    root = Path(root)
    images = sorted((root / "PNGImages").glob("*.png"))
    dataset = InstanceMaskDataset([(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images])
    samples = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        if not masks:
            target = {k: v for k, v in target.items() if k != "masks"}
        samples.append((image.float() / 255, target))
    return samples


class RecordingEvaluator:
    """TEST DOUBLE for ``detkit.evaluation.CocoEvaluator`` (same reset / update / compute /
    summary interface). It computes no COCO metric: it records what ``evaluate`` hands it
    (the predictions per image id, every ``update`` call, resets) and, like the real one,
    gathers over processes in ``compute`` and keeps one entry per image id."""

    def __init__(self) -> None:
        self.resets = 0
        self.updates: list[tuple[int, list]] = []
        self.predictions: dict[int, dict] = {}

    def reset(self) -> None:
        self.resets += 1
        self.updates = []
        self.predictions = {}

    def update(self, predictions, targets) -> None:
        predictions, targets = list(predictions), list(targets)
        self.updates.append((len(predictions), [t["image_id"] for t in targets]))
        for prediction, target in zip(predictions, targets):
            self.predictions[int(target["image_id"])] = {
                k: v.detach().cpu().clone() for k, v in prediction.items()
            }

    def compute(self) -> dict:
        from detkit.distributed import all_gather

        merged: dict[int, dict] = {}
        for part in all_gather(self.predictions):
            merged.update(part)
        self.merged = dict(sorted(merged.items()))
        return {
            "num_images": len(merged),
            "bbox": {
                "num_detections": float(sum(len(p["boxes"]) for p in merged.values())),
                "score_sum": float(sum(float(p["scores"].sum()) for p in merged.values())),
            },
        }

    def summary(self) -> str:
        return f"RecordingEvaluator: {len(self.predictions)} images recorded"


# -- evaluation --------------------------------------------------------------------------------


def _detection_case(rng: np.random.Generator, iou_type: str, num_images: int, options: dict):
    """Targets and predictions for a few images, built from a seeded generator.

    Predictions are jittered copies of ground truth plus random boxes, with scores drawn from a
    small set so that ties (and pycocotools' tie-breaking order) occur.
    """
    num_keypoints = options.get("num_keypoints", 17)
    image_ids = rng.choice(10_000, size=num_images, replace=False).tolist()
    targets, predictions = [], []
    for image_id in image_ids:
        height, width = (int(v) for v in rng.integers(16, options.get("max_side", 128), size=2))
        n_gt = int(rng.integers(0, options.get("max_gt", 5) + 1))
        x1 = rng.integers(0, width - 1, n_gt)
        y1 = rng.integers(0, height - 1, n_gt)
        x2 = np.minimum(x1 + rng.integers(1, width, n_gt), width)
        y2 = np.minimum(y1 + rng.integers(1, height, n_gt), height)
        boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32).reshape(-1, 4)
        labels = rng.integers(1, options.get("num_classes", 3) + 1, n_gt)
        iscrowd = (rng.random(n_gt) < options.get("crowd", 0.15)).astype(np.int64)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "iscrowd": torch.from_numpy(iscrowd),
            "image_id": torch.tensor(image_id) if rng.random() < 0.5 else image_id,
        }
        masks = np.zeros((n_gt, height, width), dtype=np.uint8)
        for i, (a, b, c, d) in enumerate(boxes.astype(int).tolist()):
            masks[i, b:d, a:c] = rng.random((d - b, c - a)) < 0.8
        if iou_type == "segm":
            target["masks"] = torch.from_numpy(masks)
            target["area"] = torch.from_numpy(
                masks.reshape(n_gt, height * width).sum(1).astype(np.float32)
            )
        else:
            target["area"] = torch.from_numpy(((x2 - x1) * (y2 - y1)).astype(np.float32))
        gt_points = None
        if iou_type == "keypoints":
            px = x1[:, None] + rng.random((n_gt, num_keypoints)) * (x2 - x1)[:, None]
            py = y1[:, None] + rng.random((n_gt, num_keypoints)) * (y2 - y1)[:, None]
            vis = rng.integers(0, 3, (n_gt, num_keypoints)).astype(np.float32)
            gt_points = np.stack([px, py, vis], 2).astype(np.float32) * (vis > 0)[..., None]
            gt_points[..., 2] = vis
            target["keypoints"] = torch.from_numpy(gt_points)
        targets.append(target)

        copies = rng.random(n_gt) < options.get("recall", 0.8)
        n_random = int(rng.integers(0, options.get("max_random", 4) + 1))
        sides = np.tile((boxes[:, 2:] - boxes[:, :2])[copies], 2)
        jitter = rng.normal(0, options.get("jitter", 0.05), sides.shape) * sides
        rx1 = rng.uniform(0, width - 1, n_random)
        ry1 = rng.uniform(0, height - 1, n_random)
        random_boxes = np.stack(
            [
                rx1,
                ry1,
                rx1 + rng.uniform(1, width, n_random),
                ry1 + rng.uniform(1, height, n_random),
            ],
            1,
        )
        pred_boxes = np.concatenate([boxes[copies] + jitter, random_boxes.reshape(-1, 4)])
        pred_boxes = np.clip(pred_boxes, 0, [width, height, width, height]).astype(np.float32)
        n_dt = len(pred_boxes)
        pred_labels = np.concatenate(
            [labels[copies], rng.integers(1, options.get("num_classes", 3) + 2, n_random)]
        )
        flip = rng.random(n_dt) < 0.1
        pred_labels[flip] = rng.integers(1, options.get("num_classes", 3) + 2, int(flip.sum()))
        scores = rng.choice(np.array([0.2, 0.5, 0.5, 0.7, 0.9, 0.95], dtype=np.float32), n_dt)
        prediction = {
            "boxes": torch.from_numpy(pred_boxes.reshape(-1, 4)),
            "labels": torch.from_numpy(pred_labels.astype(np.int64)),
            "scores": torch.from_numpy(scores),
        }
        if iou_type == "segm":
            # Copies: high probability on the ground-truth mask, noise around it.
            shapes = np.concatenate([masks[copies], np.zeros((n_random, height, width), np.uint8)])
            for i, (a, b, c, d) in enumerate(random_boxes.round().astype(int).tolist()):
                shapes[int(copies.sum()) + i, b:d, a:c] = 1
            noise = rng.random((n_dt, 1, height, width)).astype(np.float32)
            near = np.zeros_like(shapes)
            for i, (a, b, c, d) in enumerate(pred_boxes.round().astype(int).tolist()):
                near[i, b:d, a:c] = 1
            probs = np.where(shapes[:, None] > 0, 0.4 + 0.6 * noise, 0.55 * noise * near[:, None])
            prediction["masks"] = torch.from_numpy(probs.astype(np.float32))
        if iou_type == "keypoints":
            base = np.concatenate(
                [
                    gt_points[copies] if gt_points is not None else np.zeros((0, num_keypoints, 3)),
                    rng.uniform(0, min(width, height), (n_random, num_keypoints, 3)),
                ]
            )
            base = base + rng.normal(0, 1.0, base.shape)
            base[..., 2] = 1.0
            prediction["keypoints"] = torch.from_numpy(base.astype(np.float32))
        if rng.random() < options.get("empty_predictions", 0.1):
            prediction = {key: value[:0] for key, value in prediction.items()}
        predictions.append(prediction)
    return predictions, targets


@st.composite
def detection_cases(draw, iou_type: str = "bbox", **options):
    """``(predictions, targets)`` for 1-4 images: crowds, empty images, ties, absent labels."""
    seed = draw(st.integers(0, 2**32 - 1))
    num_images = draw(st.integers(1, 4))
    # The first choice is where hypothesis starts and shrinks to: a case with real matches.
    options.setdefault("max_gt", draw(st.sampled_from([6, 0, 2, 10])))
    options.setdefault("crowd", draw(st.sampled_from([0.1, 0.0, 0.5])))
    options.setdefault("empty_predictions", draw(st.sampled_from([0.0, 0.2, 1.0])))
    options.setdefault("max_side", draw(st.sampled_from([200, 40])))
    return _detection_case(np.random.default_rng(seed), iou_type, num_images, options)


# -- transforms --------------------------------------------------------------------------------


def random_image(seed: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """A reproducible random uint8 image Tensor[C, H, W]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=generator)


@st.composite
def keypoint_targets(
    draw,
    height: int = 24,
    width: int = 32,
    max_instances: int = 3,
    num_keypoints: int = 3,
    with_masks: bool = True,
    min_instances: int = 0,
):
    """Valid targets with keypoints and an extra per-instance field ``track_ids``.

    Keypoint coordinates are multiples of 0.25 inside their instance's box (exact in
    float32, so mirror arithmetic is exact); each point is visible (2), occluded (1) or not
    labelled (the row (0, 0, 0)). Without masks, ``area`` is the box area.
    """
    boxes = draw(integer_boxes(height, width, max_instances, min_instances))
    labels = [draw(st.integers(1, 5)) for _ in boxes]
    target = make_target(
        boxes, labels, image_id=draw(st.integers(0, 10_000)), height=height, width=width
    )
    rows = []
    for x1, y1, x2, y2 in boxes:
        points = []
        for _ in range(num_keypoints):
            visibility = draw(st.sampled_from([0, 1, 2]))
            if visibility == 0:
                points.append([0.0, 0.0, 0.0])
            else:
                x = draw(st.integers(4 * x1, 4 * x2)) / 4
                y = draw(st.integers(4 * y1, 4 * y2)) / 4
                points.append([x, y, float(visibility)])
        rows.append(points)
    target["keypoints"] = torch.tensor(rows, dtype=torch.float32).reshape(
        len(boxes), num_keypoints, 3
    )
    target["track_ids"] = torch.arange(len(boxes), dtype=torch.int64) + 100
    if not with_masks:
        del target["masks"]
        b = target["boxes"]
        target["area"] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return target


# -- models ------------------------------------------------------------------------------------


def detection_batch(
    *, size: int = 96, num_images: int = 2, num_keypoints: int = 0, seed: int = 0
) -> tuple[list[torch.Tensor], list[dict]]:
    """Random images with two large objects each (labels 1 and 2) for model smoke tests.

    The boxes are big enough to be matched by anchors of size 32 on any backbone, so every
    loss, the mask and keypoint heads included, sees positive samples. Keypoints, when asked
    for, lie inside their boxes and are all visible.
    """
    generator = torch.Generator().manual_seed(seed)
    s = size / 96
    boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0], [30.0, 6.0, 90.0, 52.0]]) * s
    images, batch = [], []
    for i in range(num_images):
        images.append(torch.rand(3, size, size, generator=generator))
        target = make_target(boxes.tolist(), [1, 2], image_id=i, height=size, width=size)
        if num_keypoints:
            offsets = torch.rand(2, num_keypoints, 2, generator=generator)
            xy = boxes[:, None, :2] + offsets * (boxes[:, None, 2:] - boxes[:, None, :2])
            target["keypoints"] = torch.cat([xy, torch.full((2, num_keypoints, 1), 2.0)], dim=2)
        batch.append(target)
    return images, batch


def run_gloo_ranks(worker_module: str, run, tmp_path, world_size: int = 2) -> None:
    """Run ``run(rank, world_size, port, tmp_path)`` of ``worker_module`` in ``world_size``
    processes forked from a fork server; fail with the rank's ``rank{r}.error`` text.

    A fork server imports torch and detkit once, then forks clean ranks: spawning imports
    them once per rank (most of a minute on a loaded two-core machine), and forking this
    process would copy thread pools (hotcoco's) whose threads do not survive a fork.
    """
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "detkit.evaluation", worker_module])
    ranks = [
        context.Process(target=run, args=(r, world_size, port, tmp_path)) for r in range(world_size)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=180)
    for rank, process in enumerate(ranks):
        error = tmp_path / f"rank{rank}.error"
        assert process.exitcode == 0, error.read_text() if error.exists() else process.exitcode
