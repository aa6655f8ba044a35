"""Mask R-CNN backbones on this CPU, against the tutorial's Mask R-CNN ResNet-50 FPN.

For every backbone of the docs' table ("Choosing a backbone") this builds a Mask R-CNN for
2 classes in the set-up used for fine-tuning (backbone pretrained: frozen batch norm, the 3
deepest stages trainable) and measures, interleaved over several rounds (the median is kept,
since these machines are shared and noisy):

* parameters, all and trainable;
* a training step (forward, backward, SGD step) on a batch of 2 images of 320x320 px;
* inference on one 320x320 image.

Times are the process's CPU time on one thread (``--threads 1``, the default), which on an idle
machine equals the wall time and on a shared one does not count the time other processes hold
the core; the wall-clock medians are printed beside them for comparison.

The baseline is the tutorial's model exactly as torchvision builds it,
``maskrcnn_resnet50_fpn(weights_backbone=ResNet50_Weights.IMAGENET1K_V1, num_classes=2)``.
No weights are downloaded: every "pretrained" backbone loads random tensors from a local file
(torch.hub's cache in a temporary folder for the baseline), which costs the same time.

With random weights, which proposals the RPN makes, how many survive NMS and how many overlap
the objects is noise, and it drives the cost of RoI pooling and of the box and mask heads (by up
to 4x between two runs of the same architecture). So that the heads do the same work for every
backbone and the table compares backbones:

* the RPN's output layers start at zero and stay there (they are left out of the optimizer): all
  anchors score alike, so every pyramid model proposes the same anchors;
* proposals are kept without NMS: 1000 in inference, 2000 in training;
* every ground-truth object appears 64 times in the targets, so each image has the full 128
  positive regions of its 512 sampled ones (as in fine-tuning, once the RPN proposes around the
  objects), and inference returns exactly 10 detections;
* subnormal floats, which random weights produce in places and trained ones hardly do, are
  flushed to zero (``torch.set_flush_denormal``): they slow matrix products down several times.

All models resize to 320 px.

Run: ``python benchmarks/bench_backbones.py [--rounds 3] [--threads 1] [--only resnet18,...]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torchvision.models import ResNet50_Weights
from torchvision.models.detection import maskrcnn_resnet50_fpn

from detkit.models import maskrcnn

# (label, backbone, fpn, returned_strides); the first row is detkit's build of the baseline's
# architecture, a check that detkit adds no cost of its own.
BACKBONES = [
    ("resnet50 FPN (detkit)", "resnet50", True, None),
    ("resnet18 FPN", "resnet18", True, None),
    ("convnext_tiny FPN", "convnext_tiny", True, None),
    ("efficientnet_b0 FPN", "efficientnet_b0", True, None),
    ("regnet_y_800mf FPN", "regnet_y_800mf", True, None),
    ("mobilenet_v3_large FPN", "mobilenet_v3_large", True, None),
    ("mobilenet_v3_large FPN 16/32", "mobilenet_v3_large", True, (16, 32)),
    ("mobilenet_v2, 1 map", "mobilenet_v2", False, None),
    ("mobilenet_v3_large, 1 map", "mobilenet_v3_large", False, None),
]
SETTINGS = {
    "min_size": 320,
    "max_size": 320,
    "rpn_nms_thresh": 1.0,
    "box_score_thresh": 0.0,
    "box_detections_per_img": 10,
}
COPIES = 64  # of each object: 2 x 64 >= the 128 positives the box sampler takes per image


def batch(size: int, count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(count):
        images.append(torch.rand(3, size, size, generator=generator))
        boxes = torch.tensor([[20.0, 30.0, 120.0, 300.0], [150.0, 40.0, 260.0, 310.0]])
        boxes = boxes * size / 320
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        targets.append(
            {
                "boxes": boxes.repeat(COPIES, 1),
                "labels": torch.ones(2 * COPIES, dtype=torch.int64),
                "masks": masks.repeat(COPIES, 1, 1),
            }
        )
    return images, targets


def baseline(hub: Path) -> torch.nn.Module:
    """The tutorial's model, built by torchvision from torch.hub's (temporary) cache."""
    url = ResNet50_Weights.IMAGENET1K_V1.url
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(
        torchvision.models.resnet50().state_dict(), hub / "checkpoints" / url.rsplit("/", 1)[1]
    )
    torch.hub.set_dir(str(hub))
    return maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=ResNet50_Weights.IMAGENET1K_V1, num_classes=2, **SETTINGS
    )


def detkit_model(name: str, fpn: bool, strides, folder: Path) -> torch.nn.Module:
    path = folder / f"{name}.pth"
    if not path.exists():
        torch.save(torchvision.models.get_model(name).state_dict(), path)
    return maskrcnn(
        name, fpn=fpn, returned_strides=strides, num_classes=2, weights_backbone=path, **SETTINGS
    )


def level_playing_field(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Zero the RPN's output layers; return the parameters the optimizer may change."""
    frozen = []
    for layer in (model.rpn.head.cls_logits, model.rpn.head.bbox_pred):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
        frozen += [id(layer.weight), id(layer.bias)]
    return [p for p in model.parameters() if p.requires_grad and id(p) not in frozen]


def train_step(model, optimizer, images, targets) -> tuple[float, float]:
    model.train()
    cpu, wall = time.process_time(), time.perf_counter()
    losses = model(images, targets)
    sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.process_time() - cpu, time.perf_counter() - wall


@torch.no_grad()
def inference(model, image) -> tuple[float, float]:
    model.eval()
    cpu, wall = time.process_time(), time.perf_counter()
    model([image])
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--only", default="", help="comma-separated labels or backbone names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    warnings.simplefilter("ignore", UserWarning)
    chosen = [
        row
        for row in BACKBONES
        if not args.only or row[0] in args.only.split(",") or row[1] in args.only.split(",")
    ]
    images, targets = batch(args.size, 2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = {"tutorial: resnet50 FPN (torchvision)": baseline(folder / "hub")}
        for label, name, fpn, strides in chosen:
            models[label] = detkit_model(name, fpn, strides, folder)
    optimizers = {
        label: torch.optim.SGD(level_playing_field(m), lr=1e-4) for label, m in models.items()
    }
    times: dict[str, dict[str, list[float]]] = {
        label: {"train": [], "infer": []} for label in models
    }
    for label, model in models.items():  # warm-up: first calls allocate and pick kernels
        train_step(model, optimizers[label], images, targets)
        inference(model, images[0])
    for _ in range(args.rounds):
        for label, model in models.items():
            times[label]["train"].append(train_step(model, optimizers[label], images, targets))
            times[label]["infer"].append(inference(model, images[0]))

    base = next(iter(models))
    cpu = {
        k: {part: statistics.median(c for c, _ in v) for part, v in t.items()}
        for k, t in times.items()
    }
    wall = {
        k: {part: statistics.median(w for _, w in v) for part, v in t.items()}
        for k, t in times.items()
    }
    print(
        f"Mask R-CNN, 2 classes, {args.size}x{args.size} px, {args.threads} thread(s), "
        f"median of {args.rounds} rounds; CPU seconds, ratios against the first row, wall "
        "seconds in brackets"
    )
    header = (
        f"{'backbone':36s} {'params':>8s} {'trainable':>9s} {'train step':>10s} {'ratio':>5s} "
        f"{'(wall)':>8s} {'inference':>9s} {'ratio':>5s} {'(wall)':>8s}"
    )
    print(header)
    print("-" * len(header))
    for label, model in models.items():
        total = sum(p.numel() for p in model.parameters()) / 1e6
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        train, infer = cpu[label]["train"], cpu[label]["infer"]
        print(
            f"{label:36s} {total:7.1f}M {trainable:8.1f}M {train:9.2f}s "
            f"{train / cpu[base]['train']:5.2f} {'(' + format(wall[label]['train'], '.2f') + 's)':>8s} "
            f"{infer:8.3f}s {infer / cpu[base]['infer']:5.2f} "
            f"{'(' + format(wall[label]['infer'], '.2f') + 's)':>8s}"
        )


if __name__ == "__main__":
    main()
