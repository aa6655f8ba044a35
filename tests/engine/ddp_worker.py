"""Worker of tests/test_distributed.py, run as ``torchrun --nproc_per_node=2 ddp_worker.py``.

Each process: joins the gloo group from torchrun's environment, trains the tiny detector for
a few steps under DistributedDataParallel (with gradient accumulation), evaluates it on an
odd number of images (DistributedSampler pads one duplicate) with CocoEvaluator and with a
recording test double, saves a checkpoint (a
collective call), then provokes a NaN loss on one rank only, and writes what it saw to
``<out>/rank<r>.pt`` for the test to check.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler


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
    torch.save(report, args.out / f"rank{info.rank}.pt")
    distributed.barrier()
    distributed.destroy_distributed()


if __name__ == "__main__":
    main()
