"""train.py's command line: its options with their defaults and help, and the checks of the
choices that need more than argparse (a checkpoint to resume, the metric that picks best.pt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import ArgumentParser, UserError, non_negative_int, positive_int, score_threshold
from detectors import MODELS


def train_parser(description: str) -> ArgumentParser:
    """Every option of train.py, with Penn-Fudan's defaults (``--demo`` changes some)."""
    parser = ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    add_output_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--audit",
        action="store_true",
        help="audit the train and test splits instead of training: print every bad sample "
        "(its file and what is wrong) and the box statistics against the model's anchors, "
        "draw audit.png (train) and audit_test.png; exit status 0 when no sample is bad, 1 "
        "when some are (one process: not under torchrun)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="offline demo: synthetic data, random init, small images, ~5 min on a CPU",
    )
    parser.set_defaults(synthetic_size=(250, 1000))
    return parser


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the images come from, the split and data loading."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data-root",
        type=Path,
        default=Path("data/PennFudanPed"),
        help="the folder holding PNGImages/ and PedMasks/ (default: %(default)s)",
    )
    group.add_argument(
        "--download",
        action="store_true",
        help="fetch and extract the official archive when --data-root has no data",
    )
    group.add_argument(
        "--synthetic",
        type=positive_int,
        metavar="N",
        help="write N synthetic Penn-Fudan-layout images to --data-root and train on them",
    )
    group.add_argument(
        "--synthetic-size",
        type=positive_int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="side lengths of the synthetic images (default: Penn-Fudan's, 250 1000)",
    )
    group.add_argument(
        "--test-size", type=positive_int, default=50, help="images held out for evaluation"
    )
    group.add_argument(
        "--aspect-ratio-group-factor",
        type=int,
        default=3,
        help="batch images of similar aspect ratio (k of the references; -1: off)",
    )
    group.add_argument("--workers", type=non_negative_int, default=2, help="data loading processes")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The detector: its name, weights, input size and normalisation."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default="maskrcnn_resnet50_fpn", help=f"one of {', '.join(MODELS)}"
    )
    group.add_argument(
        "--weights",
        default="DEFAULT",
        help="detector weights: DEFAULT (COCO, the tutorial's), none, or a file",
    )
    group.add_argument(
        "--weights-backbone",
        default=None,
        help="backbone weights when --weights is none: DEFAULT (ImageNet), or a file",
    )
    group.add_argument(
        "--min-size", type=int, help="the model's resize: shorter side (default 800)"
    )
    group.add_argument("--max-size", type=int, help="the model's resize: longer side at most")
    group.add_argument(
        "--norm",
        choices=("batch", "group"),
        default="batch",
        help="normalisation in the backbone of fpn: and lite: models: batch (torchvision's) or "
        "group (GroupNorm, steadier from random weights)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimizer, its schedule, and how steps run."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=positive_int, default=10)
    group.add_argument(
        "--batch-size", type=positive_int, default=2, help="images per process and step"
    )
    group.add_argument("--lr", type=float, default=0.005)
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=0.0005)
    group.add_argument(
        "--lr-step-size", type=positive_int, default=3, help="StepLR: epochs per decay"
    )
    group.add_argument("--lr-gamma", type=float, default=0.1, help="StepLR: decay factor")
    group.add_argument(
        "--warmup-iters",
        type=non_negative_int,
        help="linear warmup steps (default: the references')",
    )
    group.add_argument(
        "--clip-grad-norm", type=float, help="clip the gradients' total norm to this value"
    )
    group.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    group.add_argument("--seed", type=int, default=0, help="split, data order and initialisation")
    group.add_argument("--print-freq", type=positive_int, default=10)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the run writes, what it resumes from, the pictures."""
    group = parser.add_argument_group("output")
    group.add_argument("--output-dir", type=Path, default=Path("runs/pennfudan"))
    group.add_argument(
        "--resume", help="a checkpoint to continue from, or 'last' for the newest in --output-dir"
    )
    group.add_argument(
        "--num-pictures",
        type=non_negative_int,
        default=8,
        help="test images to draw predictions on",
    )
    group.add_argument(
        "--score-threshold", type=score_threshold, default=0.5, help="for the pictures (0..1)"
    )


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """train.py's options for validation losses, the checkpoints kept and early stopping."""
    group = parser.add_argument_group("validation and checkpoints")
    group.add_argument(
        "--no-val-loss",
        action="store_true",
        help="skip the validation loss (computed with the metrics by default)",
    )
    group.add_argument(
        "--no-intervals",
        action="store_true",
        help="skip the 95%% bootstrap intervals of AP and AP50 over the test images "
        "(computed by default: a few times the cost of the COCO statistics alone)",
    )
    group.add_argument(
        "--keep-last",
        type=positive_int,
        metavar="N",
        help="keep only the N most recent epoch checkpoints, besides best.pt (default: all)",
    )
    group.add_argument(
        "--best-metric",
        metavar="NAME",
        help="the metric that picks best.pt, as TYPE/NAME: bbox/AP, segm/AP50, losses/loss "
        "(validation loss: lower is better) ... (default: segm/AP for Mask R-CNN, else bbox/AP)",
    )
    group.add_argument(
        "--early-stop",
        type=positive_int,
        metavar="N",
        help="stop once --best-metric has not improved for N epochs (default: never)",
    )


def check_best_metric(name: str | None, iou_types: tuple[str, ...], val_loss: bool) -> None:
    """Refuse a ``--best-metric`` the evaluation cannot produce, before any training."""
    if name is None:
        return
    produced = ["num_images", *iou_types] + (["losses"] if val_loss else [])
    first = name.strip("/").split("/")[0]
    if first not in produced:
        hint = " (the validation loss is off: drop --no-val-loss)" if first == "losses" else ""
        raise UserError(
            f"--best-metric {name!r}: the evaluation gives {', '.join(produced)}, not "
            f"{first!r}{hint}; e.g. --best-metric {iou_types[-1]}/AP"
        )


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """``--resume``'s checkpoint file (``last``: the newest in ``output_dir``), or ``None``."""
    if resume is None:
        return None
    if resume == "last":
        found = sorted(output_dir.glob("checkpoint_*.pt"))
        if not found:
            raise UserError(f"--resume last: no checkpoint_*.pt in '{output_dir}'")
        return found[-1]
    path = Path(resume)
    if path.is_dir():
        raise UserError(f"--resume: '{path}' is a directory, not a checkpoint file")
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint file '{path}'")
    return path
