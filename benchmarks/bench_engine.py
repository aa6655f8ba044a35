"""Per-iteration overhead of ``train_one_epoch`` against a bare hand-written training loop.

Both loops train the same tiny Faster R-CNN (three strided convolutions as backbone) on the
same in-memory synthetic batches, on the CPU, alternately, round after round (the median is
kept, since these machines are shared and noisy). The bare loop does what every real loop
does at the least: move the batch, forward, sum the losses, zero the gradients, backward,
step, and read the loss value (``.item()``) to log it. ``train_one_epoch`` runs with its
defaults (``print_freq=10``, lines formatted and sent to a logging handler) plus what it
adds: loss reduction over processes (a no-op here), the finiteness check, meters, warmup
bookkeeping.

A second measurement isolates the engine's fixed cost per iteration: the same two loops
around a model that costs next to nothing (a linear layer returning four losses), where
everything but the loop machinery vanishes; that cost in microseconds, divided by the
detector's iteration time, estimates the overhead without the detector's run-to-run noise
(which, on a shared machine, can exceed the overhead itself).

A third measurement times what the engine's gradient check adds to each optimizer step (issue
13: a finite loss with an infinite gradient must not step): one fused ``torch._foreach_norm``
over the detector's gradients, read in the same copy as the losses, timed in a tight loop and
divided by the bare loop's iteration time.

Goal (issue 7): at most 3% slower per iteration.

Run: ``python benchmarks/bench_engine.py [--images 32] [--batch-size 4] [--rounds 9]``
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from detkit.data import InstanceMaskDataset, collate_fn, write_synthetic_pennfudan
from detkit.engine import train_one_epoch


def tiny_detector() -> nn.Module:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, 2, 1),
        nn.ReLU(),
    )
    backbone.out_channels = 32
    return FasterRCNN(
        backbone,
        min_size=96,
        max_size=96,
        rpn_anchor_generator=AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(32 * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, 2),
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=100,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
    )


def samples(num_images: int) -> list:
    root = write_synthetic_pennfudan(
        Path(tempfile.mkdtemp()) / "data",
        num_images=num_images,
        seed=0,
        size_range=(64, 112),
        thin_fraction=0.0,
    )
    images = sorted((root / "PNGImages").glob("*.png"))
    dataset = InstanceMaskDataset([(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images])
    out = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        target = {k: v for k, v in target.items() if k != "masks"}
        out.append((image.float() / 255, target))
    return out


def bare_epoch(model, optimizer, loader, device) -> None:
    model.train()
    for images, targets in loader:
        images = [image.to(device) for image in images]
        targets = [
            {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
            for t in targets
        ]
        loss_dict = model(images, targets)
        losses = sum(loss_dict.values())
        losses.item()
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()


class NearlyFree(nn.Module):
    """The detection models' training interface at almost no compute."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, images, targets):
        out = self.linear(torch.stack([image.mean(dim=(1, 2)) for image in images])).mean()
        return {"loss_a": out, "loss_b": 0.5 * out, "loss_c": 0.1 * out, "loss_d": 0.2 * out}


def fixed_cost(batch_size: int, rounds: int) -> tuple[float, float]:
    """Median seconds per iteration of the bare loop and train_one_epoch on NearlyFree."""
    data = [(torch.rand(3, 8, 8), {"image_id": i, "boxes": torch.zeros(1, 4)}) for i in range(800)]
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate_fn)
    model = NearlyFree()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    for r in range(rounds + 1):
        for name in ["bare", "engine"] if r % 2 == 0 else ["engine", "bare"]:
            start = time.perf_counter()
            if name == "bare":
                bare_epoch(model, optimizer, loader, torch.device("cpu"))
            else:
                train_one_epoch(model, optimizer, loader, "cpu", 1, progress=False)
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - start) / len(loader))
    return statistics.median(times["bare"]), statistics.median(times["engine"])


def gradient_check_cost(model: nn.Module, repeats: int = 2000) -> float:
    """Median seconds of the engine's per-step gradient check on ``model``'s gradients."""
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    grads = [p.grad for p in model.parameters()]
    losses = [torch.tensor(1.0) for _ in range(4)]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            # The engine stacks the losses alone without the check: time only the difference.
            torch.stack([*losses, *torch._foreach_norm(grads)]).tolist()
        with_check = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(repeats):
            torch.stack(losses).tolist()
        times.append((with_check - (time.perf_counter() - start)) / repeats)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # train_one_epoch's lines are formatted and handled as in a real run, into a sink.
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger("detkit.engine").addHandler(handler)
    logging.getLogger("detkit.engine").setLevel(logging.INFO)

    data = samples(args.images)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, collate_fn=collate_fn)
    iterations = len(loader)
    model = tiny_detector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    device = torch.device("cpu")

    def engine(epoch: int) -> None:
        train_one_epoch(model, optimizer, loader, device, epoch, progress=False)

    bare_epoch(model, optimizer, loader, device)  # warm-up round, not timed
    engine(1)
    wall: dict[str, list[float]] = {"bare": [], "engine": []}
    cpu: dict[str, list[float]] = {"bare": [], "engine": []}
    for r in range(args.rounds):
        # Alternate which loop runs first, so drift in machine load hits both alike.
        order = ["bare", "engine"] if r % 2 == 0 else ["engine", "bare"]
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            if name == "bare":
                bare_epoch(model, optimizer, loader, device)
            else:
                engine(r + 2)
            wall[name].append((time.perf_counter() - start) / iterations)
            cpu[name].append((time.process_time() - start_cpu) / iterations)

    print(
        f"{iterations} iterations per epoch, batch {args.batch_size}, {args.rounds} rounds, "
        f"{args.threads} threads"
    )
    # Wall time is what users feel; process CPU time is less disturbed by other processes
    # sharing the machine (unless their thread pools spin), so both are printed.
    for label, times in (("wall time", wall), ("CPU time", cpu)):
        bare, eng = statistics.median(times["bare"]), statistics.median(times["engine"])
        paired = statistics.median(e / b for e, b in zip(times["engine"], times["bare"]))
        print(f"-- tiny detector, {label} per iteration (median of {args.rounds} rounds)")
        print(f"   bare loop       : {bare * 1000:8.2f} ms")
        print(f"   train_one_epoch : {eng * 1000:8.2f} ms  ({(eng - bare) * 1000:+.3f} ms)")
        print(f"   ratio           : {eng / bare:.4f}  (median of per-round ratios {paired:.4f})")
    free_bare, free_engine = fixed_cost(args.batch_size, args.rounds)
    detector = statistics.median(wall["bare"])
    overhead = free_engine - free_bare
    print("-- fixed cost of the loop machinery, near-free model (wall time per iteration)")
    print(f"   bare loop       : {free_bare * 1e6:8.1f} us")
    print(f"   train_one_epoch : {free_engine * 1e6:8.1f} us  ({overhead * 1e6:+.1f} us)")
    print(
        f"   estimated ratio : {(detector + overhead) / detector:.4f}  (fixed cost over the tiny "
        f"detector's {detector * 1000:.1f} ms iteration; goal <= 1.03)"
    )
    check = gradient_check_cost(tiny_detector())
    print("-- gradient check per optimizer step (fused norm of every gradient, tight loop)")
    print(f"   cost            : {check * 1e6:8.1f} us")
    print(f"   share           : {check / detector:.4%} of the tiny detector's iteration")


if __name__ == "__main__":
    main()
