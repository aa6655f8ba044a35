"""Pieces shared by the Penn-Fudan example's train.py and predict.py (detkit's public API only)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from detkit.data import DownloadError, download_file, extract_zip, write_synthetic_pennfudan
from detkit.data import transforms as T
from detkit.engine import load_checkpoint
from detkit.models import detection_model, fasterrcnn, fpn_backbone, load_weights, maskrcnn

logger = logging.getLogger("pennfudan")

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

#: ``--model`` choices. ``fpn:<name>`` builds Mask R-CNN on an FPN over any torchvision
#: classification model (``fpn:mobilenet_v3_large``, ``fpn:resnet18``, ...); ``lite:<name>`` is
#: the same made light enough to train on a CPU in minutes (the demo's model).
MODELS = (
    "maskrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn",
    "mobilenet_v2",
    "fpn:<backbone>",
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
LITE_BOX_WIDTH = 256


def weights_argument(value: str | None) -> str | None:
    """``--weights`` / ``--weights-backbone``: ``none`` means random initialisation."""
    if value is None or value.lower() == "none":
        return None
    return value


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm for ``channels`` channels: 8 groups, or fewer when 8 does not divide them."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def classifier(name: str, norm: str, weights_backbone: str | None) -> str | nn.Module:
    """The classification model an FPN backbone is cut from, with the ``--norm`` it asks for.

    ``batch`` is torchvision's model as it is (by name). ``group`` swaps every batch norm for
    GroupNorm, for training from random weights: batch norm's running statistics (momentum
    0.01 in MobileNetV3) lag far behind weights that change this fast, so the model evaluates
    with statistics of an older network, and batches of 4 small images give noisy ones.
    GroupNorm has no running statistics (He et al., "Rethinking ImageNet Pre-training", 2019).
    """
    if norm == "batch":
        return name
    if norm != "group":
        raise SystemExit(f"--norm must be batch or group; got {norm!r}")
    if weights_backbone is not None:
        raise SystemExit("--norm group trains from random weights: pass --weights-backbone none")
    return torchvision.models.get_model(name, weights=None, norm_layer=group_norm)


def lite_model(
    backbone_name: str,
    norm: str,
    weights: str | None,
    weights_backbone: str | None,
    size: dict[str, int],
) -> nn.Module:
    """``lite:<backbone>``: Mask R-CNN light enough to train on a CPU in minutes (see LITE)."""
    channels = 64
    backbone = fpn_backbone(
        classifier(backbone_name, norm, weights_backbone),
        weights=weights_backbone,
        out_channels=channels,
        returned_strides=(8, 16, 32),
    )
    model = maskrcnn(
        backbone,
        num_classes=NUM_CLASSES,
        box_head=TwoMLPHead(channels * 7 * 7, LITE_BOX_WIDTH),
        mask_head=MaskRCNNHeads(channels, [channels], 1),
        **LITE,
        **size,
    )
    # torchvision sizes the predictors for its own heads (1024 and 256 wide); detkit's
    # builders always pass num_classes, which torchvision refuses beside a predictor.
    model.roi_heads.box_predictor = FastRCNNPredictor(LITE_BOX_WIDTH, NUM_CLASSES)
    model.roi_heads.mask_predictor = MaskRCNNPredictor(channels, channels, NUM_CLASSES)
    if weights is not None:
        load_weights(model, weights)
    return model


def build_model(config: dict[str, Any]) -> nn.Module:
    """The detector a run's configuration asks for (train.py and predict.py agree on it)."""
    name = config["model"]
    weights = weights_argument(config.get("weights"))
    weights_backbone = weights_argument(config.get("weights_backbone"))
    size = {}
    if config.get("min_size"):
        size = {
            "min_size": config["min_size"],
            "max_size": config.get("max_size") or config["min_size"],
        }
    if name in ("maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn"):
        # The tutorial's first recipe: COCO-pretrained detector, heads replaced for 2 classes.
        return detection_model(
            name,
            num_classes=NUM_CLASSES,
            weights=weights,
            weights_backbone=weights_backbone,
            **size,
        )
    if name == "mobilenet_v2":
        # The tutorial's second recipe: Faster R-CNN on MobileNetV2's single feature map.
        return fasterrcnn(
            "mobilenet_v2",
            fpn=False,
            num_classes=NUM_CLASSES,
            weights=weights,
            weights_backbone=weights_backbone,
            **size,
        )
    if name.startswith("fpn:"):
        return maskrcnn(
            classifier(name[4:], config.get("norm", "batch"), weights_backbone),
            fpn=True,
            num_classes=NUM_CLASSES,
            weights=weights,
            weights_backbone=weights_backbone,
            **size,
        )
    if name.startswith("lite:"):
        return lite_model(name[5:], config.get("norm", "batch"), weights, weights_backbone, size)
    raise ValueError(f"--model must be one of {', '.join(MODELS)}; got {name!r}")


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
            write_synthetic_pennfudan(root, synthetic, seed=seed, size_range=size_range)
        return root
    if (root / "PNGImages").is_dir():
        return root
    if not download:
        raise SystemExit(
            f"no Penn-Fudan data at '{root}'. Pass --download to fetch it, --data-root to point at "
            "an extracted copy (the folder holding PNGImages/ and PedMasks/), or --demo / "
            "--synthetic N to train on generated data without a download."
        )
    archive = root.parent / "PennFudanPed.zip"
    if not archive.is_file():
        failures = []
        for url in PENNFUDAN_URLS:
            logger.info("downloading %s", url)
            try:
                download_file(url, archive, md5=PENNFUDAN_MD5)
                break
            except DownloadError as exc:
                logger.warning("%s", exc)
                failures.append(str(exc))
        else:
            raise SystemExit(
                "\n".join(failures) + "\n(Without network access, try --demo or --synthetic N.)"
            )
    try:
        extracted = extract_zip(archive, root.parent)
    except ValueError as exc:
        raise SystemExit(f"{exc}\nDelete '{archive}' and try again.") from None
    logger.info("extracted %s", ", ".join(str(p) for p in extracted))
    if not (root / "PNGImages").is_dir():
        raise SystemExit(
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
    target = batches if hasattr(batches, "set_epoch") else getattr(batches, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def load_trained(checkpoint: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a train.py checkpoint was trained with and load its weights."""
    state = load_checkpoint(checkpoint, restore_rng=False)
    config = dict(state.get("config") or {})
    if "model" not in config:
        raise SystemExit(
            f"'{checkpoint}' was not written by examples/pennfudan/train.py (no config)"
        )
    model = build_model({**config, "weights": None, "weights_backbone": None})
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config
