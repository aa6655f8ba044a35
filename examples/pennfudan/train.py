"""Fine-tune a detector on Penn-Fudan pedestrians with detkit: TorchVision's tutorial as a script.

The tutorial's run (downloads the data and COCO weights)::

    python examples/pennfudan/train.py --download --weights DEFAULT

Offline, in about five minutes on a laptop CPU (synthetic pedestrians, random initialisation)::

    python examples/pennfudan/train.py --demo

Several processes (CPU: gloo; GPUs: nccl)::

    torchrun --nproc_per_node=2 examples/pennfudan/train.py --demo

Writes to ``--output-dir``: a checkpoint per epoch (``--keep-last N`` keeps the newest N),
``best.pt`` (the epoch with the best ``--best-metric``), ``metrics.json`` (per epoch: training
and validation losses, the learning rate, COCO statistics with 95% bootstrap intervals of AP
and AP50, per-class operating points; the best epoch), ``curves.png`` (those curves; needs
matplotlib), ``operating_points.json`` (the best epoch's per-class score thresholds, for
``predict.py --thresholds``), ``pr_curves.png`` and ``confusion.png`` (the best epoch's
precision-recall curves and confusion matrix of the boxes; need matplotlib) and
``predictions/`` (pictures of predictions on test images). ``--early-stop N`` ends the run
once the metric has not improved for N epochs; ``--no-intervals`` skips the bootstrap.

Check the data first, without training (every bad sample at once, box sizes against the
model's anchors; exit status 0 when no sample is bad, 1 when some are)::

    python examples/pennfudan/train.py --demo --audit
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    CLASS_NAMES,
    UserError,
    check_output_dir,
    eval_transforms,
    prepare_data,
    read_history,
    run_cli,
    set_epoch,
    train_transforms,
)
from dataset import PennFudanDataset
from detectors import build_model
from reports import (
    AnalysisPlots,
    NamedSubset,
    TrainingCurves,
    audit_splits,
    best_record,
    draw_pictures,
    log_epoch,
    write_best_analysis,
)
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler
from train_options import check_best_metric, resolve_resume, train_parser

from detkit.data import (
    GroupedBatchSampler,
    InferenceSampler,
    collate_fn,
    create_aspect_ratio_groups,
)
from detkit.distributed import barrier, init_distributed, is_main_process, unwrap_model, wrap_ddp
from detkit.engine import (
    CheckpointKeeper,
    evaluate,
    infer_iou_types,
    load_checkpoint,
    train_one_epoch,
)
from detkit.evaluation import CocoEvaluator
from detkit.files import write_json

logger = logging.getLogger("pennfudan")

#: The level of the AP intervals train.py reports (bootstrap over the test images).
CONFIDENCE = 0.95

#: What ``--demo`` changes; any flag given explicitly still wins.
DEMO = {
    "synthetic": 160,
    "synthetic_size": (128, 224),
    "data_root": Path("runs/demo/data"),
    "output_dir": Path("runs/demo"),
    "model": "lite:mobilenet_v3_large",
    "weights": "none",
    "norm": "group",
    "min_size": 160,
    "max_size": 224,
    "epochs": 8,
    "batch_size": 4,
    "lr": 0.02,
    "warmup_iters": 100,
    "clip_grad_norm": 10.0,
    "lr_step_size": 6,
    "test_size": 30,
    "workers": 0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = train_parser(__doc__ or "")
    args = parser.parse_args(argv)
    if args.demo:
        parser.set_defaults(**DEMO)
        args = parser.parse_args(argv)
    return args


def make_datasets(
    args: argparse.Namespace, root: Path, *, augment: bool = True
) -> tuple[NamedSubset, NamedSubset]:
    """The tutorial's split: a seeded permutation, the last ``--test-size`` images for testing.

    ``augment=False`` gives the training images without random flips (for the audit).
    """
    try:
        train_set = PennFudanDataset(
            root, transforms=train_transforms() if augment else eval_transforms()
        )
        test_set = PennFudanDataset(root, transforms=eval_transforms())
    except (OSError, ValueError) as error:
        raise UserError(f"--data-root: {error}") from error
    if not 0 < args.test_size < len(train_set):
        raise UserError(
            f"--test-size must be between 1 and {len(train_set) - 1} for {len(train_set)} images"
        )
    order = torch.randperm(
        len(train_set), generator=torch.Generator().manual_seed(args.seed)
    ).tolist()
    return (
        NamedSubset(train_set, order[: -args.test_size], CLASS_NAMES),
        NamedSubset(test_set, order[-args.test_size :], CLASS_NAMES),
    )


def make_loaders(args: argparse.Namespace, root: Path, distributed: bool):
    train_set, test_set = make_datasets(args, root)
    generator = torch.Generator().manual_seed(args.seed)
    sampler: Sampler[int]
    batches: Sampler[list[int]]
    if distributed:
        sampler = DistributedSampler(train_set, seed=args.seed)
    else:
        sampler = RandomSampler(train_set, generator=generator)
    if args.aspect_ratio_group_factor >= 0:
        groups = create_aspect_ratio_groups(train_set, k=args.aspect_ratio_group_factor)
        batches = GroupedBatchSampler(sampler, groups, args.batch_size)
    else:
        batches = BatchSampler(sampler, args.batch_size, drop_last=False)
    train_loader = DataLoader(
        train_set, batch_sampler=batches, num_workers=args.workers, collate_fn=collate_fn
    )
    test_loader = DataLoader(
        test_set,
        batch_size=args.batch_size,
        sampler=InferenceSampler(test_set),
        num_workers=args.workers,
        collate_fn=collate_fn,
    )
    return train_loader, test_loader, batches, generator


def make_model(config: dict[str, Any]) -> torch.nn.Module:
    try:
        return build_model(config)
    except (OSError, ValueError) as error:  # an unknown --model, a bad --weights file, offline
        raise UserError(f"cannot build the model ({config['model']}): {error}") from error


def run_audit(args: argparse.Namespace) -> dict[str, Any]:
    """``--audit``: read every sample of both splits once, report, draw; no training."""
    check_output_dir(args.output_dir)
    root = prepare_data(
        args.data_root,
        download=args.download,
        synthetic=args.synthetic,
        seed=args.seed,
        size_range=tuple(args.synthetic_size),
    )
    train_set, test_set = make_datasets(args, root, augment=False)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # Only the anchors and the input size are read: no weights to load (or download).
    model = make_model({**config, "weights": None, "weights_backbone": None})
    reports = audit_splits({"train": train_set, "test": test_set}, model, args.output_dir)
    bad = sum(len(report.problems) for report in reports.values())
    if bad:
        logger.info("%d problem(s) found: fix or remove those samples before training", bad)
    return {"audit": reports, "exit_status": 1 if bad else 0}


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO if is_main_process() else logging.WARNING,
        format="%(message)s",
        force=True,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.audit:
        configure_logging()
        return run_audit(args)
    info = init_distributed()
    configure_logging()
    torch.manual_seed(args.seed)
    device = torch.device(args.device) if args.device else info.device

    output_dir = args.output_dir
    resume = resolve_resume(args.resume, output_dir)  # a bad --resume fails before any work
    root = args.data_root
    if is_main_process():
        # Before any long work: an unwritable folder must not surface after the first epoch.
        check_output_dir(output_dir)
        root = prepare_data(
            root,
            download=args.download,
            synthetic=args.synthetic,
            seed=args.seed,
            size_range=tuple(args.synthetic_size),
        )
    barrier()
    train_loader, test_loader, batches, generator = make_loaders(args, root, info.distributed)

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    model = make_model(config).to(device)
    val_loss = not args.no_val_loss  # validation losses, in the evaluation's pass
    iou_types = infer_iou_types(model)
    check_best_metric(args.best_metric, iou_types, val_loss)
    # Our own evaluator: after evaluate it still holds the epoch's detections, for the
    # operating points and the confusion matrix.
    evaluator = CocoEvaluator(iou_types)
    confidence = None if args.no_intervals else CONFIDENCE
    keeper = CheckpointKeeper(
        output_dir, keep_last=args.keep_last, metric=args.best_metric, patience=args.early_stop
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma
    )
    scaler = torch.amp.GradScaler(device.type) if args.amp and device.type == "cuda" else None

    metrics_path = output_dir / "metrics.json"
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume is not None:
        try:
            state = load_checkpoint(
                resume,
                model=model,
                optimizer=optimizer,
                lr_scheduler=scheduler,
                scaler=scaler,
                generators={"train": generator},
            )
        except (OSError, ValueError) as error:
            raise UserError(f"--resume: {error}") from error
        start_epoch = state["epoch"] + 1
        if not keeper.restore(state, resume):
            logger.info("%s holds no best-checkpoint state: ranking epochs afresh", resume)
        if is_main_process():
            history = read_history(metrics_path, start_epoch)
        logger.info("resumed from %s: continuing at epoch %d", resume, start_epoch)
    model = wrap_ddp(model, device)

    metrics: dict[str, Any] = {}
    end_epoch = args.epochs
    if keeper.should_stop:  # resumed from the epoch an early stop ended on
        logger.info(
            "this run stopped early at epoch %d (best: epoch %s); raise --early-stop to go on",
            start_epoch - 1,
            keeper.best_epoch,
        )
        end_epoch = start_epoch
    curves = TrainingCurves(output_dir / "curves.png")
    plots = AnalysisPlots(output_dir)
    logged: dict[str, float] = {}  # the last value train_one_epoch reported per tag
    for epoch in range(start_epoch, end_epoch):
        started = time.perf_counter()
        set_epoch(batches, epoch)
        # metrics.json's lr: the rate the last step applied (warmup included), as
        # train_one_epoch logs it. After the epoch, the optimizer holds the next
        # epoch's rate: its scheduler has stepped.
        logged.clear()
        losses = train_one_epoch(
            model,
            optimizer,
            train_loader,
            device,
            epoch,
            print_freq=args.print_freq,
            lr_scheduler=scheduler,
            lr_scheduler_interval="epoch",
            warmup_iters=args.warmup_iters,
            max_grad_norm=args.clip_grad_norm,
            scaler=scaler,
            scalar_hook=lambda tag, value, step: logged.__setitem__(tag, value),
        )
        metrics = evaluate(
            model,
            test_loader,
            device,
            evaluator=evaluator,
            losses=val_loss,
            compute_kwargs=None if confidence is None else {"confidence": confidence},
        )
        # Collective under torch.distributed: every process asks.
        points: dict[str, Any] = {
            t: evaluator.operating_points(t) for t in ("bbox", "segm") if t in iou_types
        }
        try:
            keeper.value_of(metrics)
        except ValueError as error:  # a --best-metric the metrics lack
            raise UserError(f"--best-metric: {error}") from error
        # Evaluated first, so that the checkpoint holds the keeper's decision on this epoch.
        keeper.save(
            epoch,
            metrics,
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            scaler=scaler,
            config=config,
            generators={"train": generator},
        )
        val_losses = metrics.pop("losses", None)
        history.append(
            {
                "epoch": epoch,
                "lr": logged.get("train/lr"),  # the epoch's last step (main process)
                "seconds": round(time.perf_counter() - started, 1),
                "losses": losses,
                **({"val_losses": val_losses} if val_losses is not None else {}),
                **metrics,
                "operating_points": {t: p.to_dict() for t, p in points.items()},
            }
        )
        if keeper.best_epoch == epoch:
            write_best_analysis(evaluator, points, history[-1], output_dir, plots)
        stopped = epoch if keeper.should_stop else None
        if is_main_process():
            record = {"config": config, "best": best_record(keeper), "stopped_early_at": stopped}
            write_json(metrics_path, {**record, "epochs": history}, indent=2)
            curves.write(history)
            log_epoch(history[-1], keeper, confidence)
        if stopped is not None:
            logger.info(
                "early stop: %s has not improved for %d epochs; best.pt is epoch %s",
                keeper.metric,
                keeper.patience,
                keeper.best_epoch,
            )
            break
    if is_main_process():
        grid = draw_pictures(
            unwrap_model(model),
            test_loader,
            device,
            output_dir,
            args.num_pictures,
            args.score_threshold,
        )
        logger.info("metrics: %s", metrics_path)
        if curves.available and history:
            logger.info("curves: %s", curves.path)
        if keeper.best_epoch is not None and (output_dir / "operating_points.json").is_file():
            logger.info(
                "operating points of the best epoch: %s", output_dir / "operating_points.json"
            )
        if plots.available and plots.pr_curves.is_file():
            logger.info("pr curves, confusion matrix: %s, %s", plots.pr_curves, plots.confusion)
        if grid is not None:
            logger.info("pictures: %s and %s", grid, output_dir / "predictions")
    return {"epochs": history, "metrics": metrics, "best": best_record(keeper)}


if __name__ == "__main__":
    sys.exit(run_cli(main))
