"""Pieces shared by the Penn-Fudan example's train.py and predict.py (detkit's public API only)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from detkit.data import DownloadError, download_file, extract_zip, write_synthetic_pennfudan
from detkit.data import transforms as T
from detkit.engine import load_checkpoint
from detkit.files import atomic_write
from detkit.models import detection_model, fpn_backbone

logger = logging.getLogger("pennfudan")

# The system's reasons a write fails that are the machine's state, not a bug: a full disk,
# a quota, no permission, a read-only file system.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class UserError(Exception):
    """A mistake in the command line or in the files it names: one line, exit status 2.

    Raised where the scripts read what the user gave (``--data-root``, ``--output-dir``,
    ``--resume``, ``--weights`` ...); :func:`run_cli` prints it without a traceback, which
    stays for programming errors.
    """


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (not the whole usage) and status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def one_line(error: BaseException) -> str:
    """An error's message on one line (multi-line messages joined with '; ')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a script's ``main``; report ordinary mistakes in one line with exit status 2.

    :class:`UserError` and writes that fail because of the machine's state (a full disk, no
    permission: ``OSError`` with such an ``errno``) are printed as ``script: error: ...``.
    Anything else is a bug and keeps its traceback. Otherwise the status is 0, or the
    ``"exit_status"`` of the mapping ``main`` returns (``train.py --audit``: 1 for bad samples).
    """
    prog = Path(sys.argv[0]).name or "pennfudan"
    try:
        result = main(argv)
    except UserError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    return int(result.get("exit_status", 0)) if isinstance(result, Mapping) else 0


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


def check_output_dir(folder: Path, option: str = "--output-dir") -> None:
    """Create ``folder`` and make sure files can be written there, before any long work."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(
            f"{option} '{folder}' is not writable: {error.strerror or one_line(error)}"
        ) from error


def write_json(path: Path, data: Any, **kwargs: Any) -> None:
    """Write ``data`` as JSON atomically: a full disk never leaves a truncated file."""
    with atomic_write(path, "w") as file:
        json.dump(data, file, **kwargs)


def read_history(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    """The epochs of ``metrics.json`` before ``before_epoch``, to continue it on resume.

    A missing file gives an empty history with a warning. A damaged one (invalid JSON, say,
    from a disk that filled up while an older version wrote it in place) is moved aside to
    ``metrics.json.corrupt-<time>``, with a warning, and the history starts afresh: losing
    the old curve must not stop the run from resuming.
    """
    if not path.is_file():
        logger.warning("%s not found: starting a fresh metrics history", path)
        return []
    try:
        epochs = json.loads(path.read_text(encoding="utf-8"))["epochs"]
        history = [e for e in epochs if int(e["epoch"]) < before_epoch]
        if not all(isinstance(e, dict) for e in history):
            raise TypeError("an epoch entry is not an object")
    except (ValueError, KeyError, TypeError, IndexError) as error:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        if aside.exists():
            aside = aside.with_name(f"{aside.name}-{os.getpid()}")
        os.replace(path, aside)
        logger.warning(
            "%s is damaged (%s): moved it to %s; starting a fresh metrics history",
            path,
            one_line(error),
            aside,
        )
        return []
    return history


#: The official archive, then the Internet Archive's raw copy of it ("id_": the bytes, no
#: page around them) for when the university's server is down. Its publishers give no
#: checksum; this MD5 is the one the Avalanche library pins for the official URL
#: (avalanche/benchmarks/datasets/penn_fudan), and it guards the mirror as well.
PENNFUDAN_URLS = (
    "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
    "https://web.archive.org/web/2023id_/https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
)
PENNFUDAN_MD5 = "5aaa3dee905cef73325923716e38fc6d"

CLASS_NAMES = ["background", "person"]
NUM_CLASSES = len(CLASS_NAMES)

#: ``--model`` examples: any name :func:`detkit.models.detection_model` builds. torchvision's
#: detectors (``maskrcnn_resnet50_fpn``, the tutorial's first recipe), detkit's R-CNN on an FPN
#: over any torchvision classification model (``maskrcnn_resnet18_fpn``) or on its last
#: feature map (``fasterrcnn_mobilenet_v2``, the tutorial's second recipe); ``lite:<backbone>``
#: is the demo's Mask R-CNN, light enough to train on a CPU in minutes (see LITE).
MODELS = (
    "maskrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v2",
    "maskrcnn_<backbone>_fpn",
    "lite:<backbone>",
)

#: The light model's settings: a 64-channel pyramid on strides 8-32, a 256-wide box head, a
#: one-layer 64-channel mask head, 64 sampled RoIs a image and fewer proposals. Mask R-CNN's
#: defaults (256 channels from stride 4, 1024-wide box head, four 256-channel mask
#: convolutions, 512 RoIs) cost over 10x more per step on a CPU, most of it in the RoI heads,
#: which do not shrink with the image.
LITE = {
    "box_batch_size_per_image": 64,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_detections_per_img": 50,
}
LITE_CHANNELS = 64
LITE_BOX_WIDTH = 256


def weights_argument(value: str | None) -> str | None:
    """``--weights`` / ``--weights-backbone``: ``none`` means random initialisation."""
    if value is None or value.lower() == "none":
        return None
    return value


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm for ``channels`` channels: 8 groups, or fewer when 8 does not divide them."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def backbone_options(norm: str, weights_backbone: str | None) -> dict[str, Any]:
    """The classification model's options for ``--norm``: none for ``batch``.

    ``batch`` is torchvision's model as it is. ``group`` swaps every batch norm for
    GroupNorm, for training from random weights: batch norm's running statistics (momentum
    0.01 in MobileNetV3) lag far behind weights that change this fast, so the model evaluates
    with statistics of an older network, and batches of 4 small images give noisy ones.
    GroupNorm has no running statistics (He et al., "Rethinking ImageNet Pre-training", 2019).
    """
    if norm == "batch":
        return {}
    if norm != "group":
        raise SystemExit(f"--norm must be batch or group; got {norm!r}")
    if weights_backbone is not None:
        raise SystemExit("--norm group trains from random weights: pass --weights-backbone none")
    return {"backbone_kwargs": {"norm_layer": group_norm}}


def lite_options(backbone: str, norm: str, weights_backbone: str | None) -> dict[str, Any]:
    """``lite:<backbone>``: what makes detkit's Mask R-CNN light (see LITE).

    The slim pyramid is built here and passed as ``backbone``; the builder sizes the box and
    mask predictors to the narrower heads.
    """
    classifier: str | nn.Module = backbone
    if options := backbone_options(norm, weights_backbone):
        classifier = torchvision.models.get_model(backbone, **options["backbone_kwargs"])
    pyramid = fpn_backbone(
        classifier,
        weights=weights_backbone,
        out_channels=LITE_CHANNELS,
        returned_strides=(8, 16, 32),
    )
    return {
        "backbone": pyramid,
        "box_head": TwoMLPHead(LITE_CHANNELS * 7 * 7, LITE_BOX_WIDTH),
        "mask_head": MaskRCNNHeads(LITE_CHANNELS, [LITE_CHANNELS], 1),
        **LITE,
    }


def model_name(name: str) -> str:
    """The :func:`~detkit.models.detection_model` name of a ``--model`` value.

    ``fpn:<backbone>`` and ``mobilenet_v2`` are this example's earlier spellings, still in
    the configuration of older checkpoints.
    """
    if name.startswith("fpn:"):
        return f"maskrcnn_{name[4:]}_fpn"
    return "fasterrcnn_mobilenet_v2" if name == "mobilenet_v2" else name


def build_model(config: dict[str, Any]) -> nn.Module:
    """The detector a run's configuration asks for (train.py and predict.py agree on it)."""
    name = config["model"]
    weights_backbone = weights_argument(config.get("weights_backbone"))
    norm = config.get("norm", "batch")
    options: dict[str, Any] = {}
    if config.get("min_size"):
        max_size = config.get("max_size") or config["min_size"]
        options = {"min_size": config["min_size"], "max_size": max_size}
    if name.startswith("lite:"):
        name = "maskrcnn"
        options.update(lite_options(config["model"][5:], norm, weights_backbone))
        weights_backbone = None  # in the pyramid already
    else:
        options.update(backbone_options(norm, weights_backbone))
    return detection_model(
        model_name(name),
        num_classes=NUM_CLASSES,
        weights=weights_argument(config.get("weights")),
        weights_backbone=weights_backbone,
        **options,
    )


def train_transforms() -> T.Compose:
    """Random horizontal flips, then a float image (the tutorial's training transform)."""
    return T.hflip_preset()


def eval_transforms() -> T.Compose:
    """A float image, nothing random."""
    return T.eval_preset()


def prepare_data(
    root: Path,
    *,
    download: bool = False,
    synthetic: int | None = None,
    seed: int = 0,
    size_range: tuple[int, int] = (250, 1000),
) -> Path:
    """Make sure ``root`` holds a Penn-Fudan-layout dataset and return it.

    ``synthetic``: write that many synthetic images there (once). ``download``: fetch and
    extract the official archive into ``root``'s parent when ``root`` has no images yet.
    """
    if synthetic:
        if not (root / "PNGImages").is_dir():
            logger.info("writing %d synthetic Penn-Fudan-layout images to %s", synthetic, root)
            # Written beside root and renamed once complete: a run killed half-way leaves no
            # folder that a later run would take for the whole dataset.
            partial = root.with_name(f".{root.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_synthetic_pennfudan(partial, synthetic, seed=seed, size_range=size_range)
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(root / "PedMasks", ignore_errors=True)  # left by a killed rename
            for folder in ("PedMasks", "PNGImages"):  # PNGImages last: it marks completion
                os.replace(partial / folder, root / folder)
            shutil.rmtree(partial, ignore_errors=True)
        return root
    if (root / "PNGImages").is_dir():
        return root
    if not download:
        raise UserError(
            f"no Penn-Fudan data at '{root}'. Pass --download to fetch it, --data-root to point at "
            "an extracted copy (the folder holding PNGImages/ and PedMasks/), or --demo / "
            "--synthetic N to train on generated data without a download."
        )
    archive = root.parent / "PennFudanPed.zip"
    failures = []
    for url in PENNFUDAN_URLS:
        # An archive already in place is checked against the pinned MD5 like a download, and
        # replaced by a fresh download when it does not match.
        if archive.is_file():
            logger.info("checking %s against its pinned MD5", archive)
        else:
            logger.info("downloading %s", url)
        try:
            download_file(url, archive, md5=PENNFUDAN_MD5)
            break
        except DownloadError as exc:
            logger.warning("%s", exc)
            failures.append(str(exc))
    else:
        raise UserError(
            "; ".join(failures) + " (Without network access, try --demo or --synthetic N.)"
        )
    try:
        extracted = extract_zip(archive, root.parent)
    except ValueError as exc:
        raise UserError(f"{exc}. Delete '{archive}' and try again.") from None
    logger.info("extracted %s", ", ".join(str(p) for p in extracted))
    if not (root / "PNGImages").is_dir():
        raise UserError(
            f"the archive extracted {[p.name for p in extracted]} into '{root.parent}', but "
            f"'{root}' has no PNGImages/: pass --data-root {root.parent / 'PennFudanPed'}"
        )
    return root


def set_epoch(batches: Any, epoch: int) -> None:
    """Tell the batch sampler, or the sampler inside it, which epoch starts (reshuffling).

    GroupedBatchSampler passes the epoch on; torch's BatchSampler has no ``set_epoch``, so
    without grouping the DistributedSampler inside it needs the call directly, or every
    epoch would see the same order.
    """
    target: Any = batches if hasattr(batches, "set_epoch") else getattr(batches, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def load_trained(checkpoint: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a train.py checkpoint was trained with and load its weights."""
    try:
        state = load_checkpoint(checkpoint, restore_rng=False)
    except (OSError, ValueError) as error:
        raise UserError(f"--checkpoint: {error}") from error
    config = dict(state.get("config") or {})
    if "model" not in config:
        raise UserError(
            f"--checkpoint: '{checkpoint}' was not written by examples/pennfudan/train.py "
            "(no config)"
        )
    model = build_model({**config, "weights": None, "weights_backbone": None})
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise UserError(
            f"--checkpoint: '{checkpoint}' does not fit the model its config describes: "
            f"{one_line(error)}"
        ) from error
    return model.to(device).eval(), config
