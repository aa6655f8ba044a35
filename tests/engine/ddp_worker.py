"""Worker of tests/test_distributed.py, run as ``torchrun --nproc_per_node=2 ddp_worker.py``.

Each process: joins the gloo group from torchrun's environment, trains the tiny detector for
a few steps under DistributedDataParallel (with gradient accumulation), evaluates it on an
odd number of images (DistributedSampler pads one duplicate) with CocoEvaluator and with a
recording test double, saves a checkpoint (a
collective call), then provokes a NaN loss on one rank only, and writes what it saw to
``<out>/rank<r>.pt`` for the test to check.

Then a detector whose backbone has trainable batch norm trains on each rank's own images,
so that the ranks' running statistics drift apart; it is evaluated (with validation losses),
checkpointed, trained one more step and checkpointed again, and a CheckpointKeeper saves
three epochs with made-up metrics.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler


def batchnorm_detector(seed: int = 0):
    """The tiny detector with a batch norm after each backbone convolution (trainable, as in
    the demo's from-scratch backbones), built with ``seed`` without touching the global RNG."""
    from strategies import tiny_detector
    from torch import nn

    model = tiny_detector(seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers = []
        channels = 3
        for width in (16, 32, 32):
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        backbone = nn.Sequential(*layers)
    backbone.out_channels = 32
    model.backbone = backbone
    return model


def buffers_of(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.named_buffers()}


def batchnorm_part(samples, out: Path, report: dict, info) -> None:
    """Evaluate and save a model whose ranks hold different batch norm statistics."""
    from detkit import distributed
    from detkit.data import InferenceSampler, collate_fn
    from detkit.engine import evaluate, save_checkpoint, train_one_epoch

    model = batchnorm_detector(seed=0)
    # broadcast_buffers=False: each rank's statistics follow its own data all along (with
    # the default, they differ by the last step's update only).
    ddp_model = distributed.wrap_ddp(model, info.device, broadcast_buffers=False)
    train = samples[:8]
    sampler = DistributedSampler(train, shuffle=True, seed=1)
    loader = DataLoader(train, batch_size=2, sampler=sampler, collate_fn=collate_fn)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.01, momentum=0.9)
    # Epochs 2 and 3: the log lines of epoch 0 are counted by the tests.
    train_one_epoch(ddp_model, optimizer, loader, info.device, 2, print_freq=10)
    report["bn_trained"] = distributed.all_gather(buffers_of(model))
    eval_samples = samples[8:15]
    eval_loader = DataLoader(
        eval_samples, batch_size=1, sampler=InferenceSampler(eval_samples), collate_fn=collate_fn
    )
    report["bn_coco"] = evaluate(ddp_model, eval_loader, info.device, losses=True)
    report["bn_evaluated"] = buffers_of(model)
    save_checkpoint(out / "batchnorm.pt", model=ddp_model, optimizer=optimizer, epoch=0)
    # One more epoch drifts the statistics apart again; saving brings every rank to rank 0's.
    sampler.set_epoch(1)
    train_one_epoch(ddp_model, optimizer, loader, info.device, 3, print_freq=10)
    report["bn_before_save"] = buffers_of(model)
    save_checkpoint(out / "batchnorm_1.pt", model=ddp_model, optimizer=optimizer, epoch=1)
    report["bn_after_save"] = buffers_of(model)


def keeper_part(out: Path, report: dict, info) -> None:
    """CheckpointKeeper under torchrun: rank 0 writes, every rank agrees on the decisions."""
    from torch import nn

    from detkit.engine import CheckpointKeeper

    model = nn.Linear(2, 1)
    keeper = CheckpointKeeper(out / "kept", keep_last=1, patience=1)
    decisions = []
    # Rank 1 is told other numbers: the decisions must still be rank 0's.
    offset = 0.5 * info.rank
    for epoch, ap in enumerate([0.2, 0.3, 0.25]):
        keeper.save(epoch, {"bbox": {"AP": ap + offset}}, model=model)
        decisions.append((keeper.best_epoch, keeper.best_value, keeper.should_stop))
    report["keeper"] = decisions


def main() -> None:
    from strategies import RecordingEvaluator, load_detection_samples, tiny_detector

    from detkit import distributed
    from detkit.data import collate_fn
    from detkit.engine import (
        NonFiniteLossError,
        SmoothedValue,
        evaluate,
        save_checkpoint,
        train_one_epoch,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    info = distributed.init_distributed()
    torch.set_num_threads(1)
    samples = load_detection_samples(args.data)
    report: dict = {"info": (info.rank, info.world_size, info.local_rank, info.backend)}

    model = tiny_detector(seed=0)
    ddp_model = distributed.wrap_ddp(model, info.device)
    report["wrapped"] = type(ddp_model).__name__
    sampler = DistributedSampler(samples[:8], shuffle=True, seed=0)
    sampler.set_epoch(0)
    loader = DataLoader(samples[:8], batch_size=2, sampler=sampler, collate_fn=collate_fn)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.01, momentum=0.9)
    report["losses"] = train_one_epoch(
        ddp_model, optimizer, loader, info.device, 0, accumulation_steps=2, print_freq=1
    )
    report["params"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    report["all_params"] = distributed.all_gather(report["params"])
    report["mean"] = distributed.reduce_dict({"rank": torch.tensor(float(info.rank))})
    report["sum"] = distributed.reduce_dict(
        {"one": torch.tensor(1.0), "rank": torch.tensor(float(info.rank))}, average=False
    )

    meter = SmoothedValue()
    for value in range(info.rank + 1):  # rank 0 sees [0], rank 1 sees [0, 1]
        meter.update(float(value))
    meter.synchronize_between_processes()
    report["meter"] = (meter.count, meter.global_avg, meter.median)

    eval_samples = samples[8:15]  # 7 images: the sampler pads rank 1 with a duplicate
    eval_loader = DataLoader(
        eval_samples,
        batch_size=2,
        sampler=DistributedSampler(eval_samples, shuffle=False),
        collate_fn=collate_fn,
    )
    # The real evaluator (default, iou types inferred), then the recording double, which
    # shows what each rank handed over.
    report["coco"] = evaluate(ddp_model, eval_loader, info.device)
    evaluator = RecordingEvaluator()
    report["metrics"] = evaluate(ddp_model, eval_loader, info.device, evaluator=evaluator)
    report["merged"] = evaluator.merged
    report["updates"] = evaluator.updates
    save_checkpoint(args.out / "checkpoint.pt", model=ddp_model, optimizer=optimizer, epoch=0)

    # A NaN loss on rank 1's batch only: every rank must raise (no dead-lock), naming it.
    bad_id = int(samples[1][1]["image_id"]) if info.rank == 1 else -1
    original_forward = model.forward

    def nan_on_rank_1(images, targets=None):
        losses = original_forward(images, targets)
        if any(int(t["image_id"]) == bad_id for t in targets):
            losses["loss_classifier"] = losses["loss_classifier"] * float("nan")
        return losses

    model.forward = nan_on_rank_1
    shard = [samples[0], samples[1]] if info.rank == 1 else [samples[2], samples[3]]
    try:
        train_one_epoch(
            ddp_model, optimizer, DataLoader(shard, batch_size=2, collate_fn=collate_fn),
            info.device, 1,
        )  # fmt: skip
        report["nan_error"] = None
    except NonFiniteLossError as error:
        report["nan_error"] = (str(error), error.per_rank)
    model.forward = original_forward

    batchnorm_part(samples, args.out, report, info)
    keeper_part(args.out, report, info)
    torch.save(report, args.out / f"rank{info.rank}.pt")
    distributed.barrier()
    distributed.destroy_distributed()


if __name__ == "__main__":
    main()
