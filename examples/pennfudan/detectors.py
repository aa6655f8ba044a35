"""The detectors train.py and predict.py build: the ``--model`` names, the demo's light Mask
R-CNN, and the model a saved checkpoint was trained with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torchvision
from common import NUM_CLASSES, UserError, one_line
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from detkit.engine import load_checkpoint
from detkit.models import detection_model, fpn_backbone

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
