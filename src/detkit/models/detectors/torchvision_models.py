"""Torchvision's named detection models, with weights from anywhere and heads for your classes.

The implementation of :func:`~detkit.models.detectors.detection_model` for torchvision's
names: the fine-tuning tutorial's first recipe ("start from a COCO-trained model, replace its
heads") for every detection model torchvision has, with weights from an enum, its name, or a
local file (torchvision's downloaded file, or your own checkpoint), which matters on machines
without network access.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model_builder, get_model_weights
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

from detkit.models.backbones.trunk import freeze_stages, trunk_from_blocks
from detkit.models.heads import (
    CLASS_KEY,
    KEYPOINT_KEY,
    check_num_classes,
    replace_heads,
    replace_keypoint_predictor,
)
from detkit.models.weights.loading import load_state, match_batchnorm_eps, read_state_dict
from detkit.models.weights.sources import WeightsSource, download_weights, resolve_weights

__all__: list[str] = []


def torchvision_detection_model(
    name: str,
    *,
    num_classes: int | None,
    weights: WeightsSource,
    weights_backbone: WeightsSource,
    num_keypoints: int | None,
    trainable_layers: int | None,
    progress: bool,
    kwargs: dict[str, Any],
) -> nn.Module:
    """Torchvision's detection model ``name`` (a known name), as ``detection_model`` builds it.

    The arguments are :func:`~detkit.models.detectors.detection_model`'s, documented there
    (``kwargs`` is its ``**kwargs``).
    """
    builder = get_model_builder(name)
    source = resolve_weights(weights, get_model_weights(name), "weights")
    backbone_source = resolve_weights(weights_backbone, _backbone_enum(builder), "weights_backbone")
    if source is not None and backbone_source is not None:
        raise ValueError(
            "pass either weights (a whole detector, backbone included) or weights_backbone"
        )
    if num_classes is not None:
        check_num_classes(num_classes)
    if num_keypoints is not None:
        if "keypoint" not in name:
            raise ValueError(f"num_keypoints is only for Keypoint R-CNN models, not {name}")
        kwargs = {**kwargs, "num_keypoints": num_keypoints}
    if isinstance(source, WeightsEnum):
        return _from_weights_enum(builder, source, num_classes, trainable_layers, progress, kwargs)
    if isinstance(backbone_source, WeightsEnum):
        download_weights(backbone_source, "weights_backbone", progress=progress)
        return builder(
            weights=None,
            weights_backbone=backbone_source,
            num_classes=_required(num_classes),
            progress=progress,
            trainable_backbone_layers=trainable_layers,
            **kwargs,
        )
    state = read_state_dict(source) if source is not None else None
    if state is None:
        num_classes = _required(num_classes)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if state is not None:
        if num_classes is None:
            _fit_heads_to(model, state)
        elif isinstance(model, KeypointRCNN) and num_keypoints is None and KEYPOINT_KEY in state:
            replace_keypoint_predictor(model, int(state[KEYPOINT_KEY].shape[1]))
        load_state(model, state, source=source, strict=True)
    elif backbone_source is not None:
        _load_backbone_file(model, backbone_source)
    _freeze_backbone(model, name, trainable_layers, pretrained=source or backbone_source)
    if source is not None:
        match_batchnorm_eps(model, source)  # after batch norm is frozen
    return model


def _from_weights_enum(
    builder: Any,
    source: WeightsEnum,
    num_classes: int | None,
    trainable_layers: int | None,
    progress: bool,
    kwargs: dict[str, Any],
) -> nn.Module:
    """Torchvision's builder with its own weights; heads replaced for other counts."""
    download_weights(source, "weights", progress=progress)
    num_keypoints = kwargs.pop("num_keypoints", None)
    model = builder(
        weights=source, progress=progress, trainable_backbone_layers=trainable_layers, **kwargs
    )
    if num_classes is not None and num_classes != len(source.meta["categories"]):
        replace_heads(model, num_classes)
    if num_keypoints is not None and num_keypoints != len(source.meta["keypoint_names"]):
        replace_keypoint_predictor(model, num_keypoints)
    return model


def _required(num_classes: int | None) -> int:
    if num_classes is None:
        raise ValueError(
            "num_classes is required without detector weights: your classes plus one "
            "(2 for one class)"
        )
    return num_classes


def _backbone_enum(builder: Any) -> type[WeightsEnum] | None:
    """The classification weights enum a torchvision detection builder takes."""
    annotation = typing.get_type_hints(builder).get("weights_backbone")
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, WeightsEnum):
            return arg
    return None


def _fit_heads_to(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give ``model`` the class (and keypoint) count of the heads stored in ``state``."""
    classes = None
    if isinstance(model, FasterRCNN):
        weight = state.get(CLASS_KEY)
        classes = None if weight is None else int(weight.shape[0])
    elif isinstance(model, (RetinaNet, FCOS)):
        weight = state.get("head.classification_head.cls_logits.weight")
        head = model.head.classification_head
        classes = None if weight is None else int(weight.shape[0]) // head.num_anchors
    elif isinstance(model, SSD):
        head = model.head.classification_head
        lite = isinstance(model.head, SSDLiteHead)
        weight = state.get(f"head.classification_head.module_list.0.{'1.' if lite else ''}weight")
        first = head.module_list[0][-1] if lite else head.module_list[0]
        anchors = first.out_channels // head.num_columns
        classes = None if weight is None else int(weight.shape[0]) // anchors
    if classes is not None and classes >= 2:
        replace_heads(model, classes)
    if isinstance(model, KeypointRCNN) and KEYPOINT_KEY in state:
        replace_keypoint_predictor(model, int(state[KEYPOINT_KEY].shape[1]))


def _load_backbone_file(model: nn.Module, path: Path) -> None:
    """Load a classification model's state dict into a torchvision detector's trunk."""
    backbone: Any = model.backbone
    trunk = getattr(backbone, "body", None)
    if trunk is None and isinstance(model, SSD) and not isinstance(model.head, SSDLiteHead):
        trunk = backbone.features
    if trunk is None:
        raise ValueError(
            f"weights_backbone as a local file is not supported for {type(model).__name__} "
            f"with a {type(backbone).__name__} backbone; pass the torchvision enum or its name"
        )
    state = read_state_dict(path)
    own = [k for k in trunk.state_dict() if not k.endswith("num_batches_tracked")]
    for prefix in ("", "features."):
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if all(k in picked for k in own):
            load_state(trunk, {k: picked[k] for k in own}, source=path, strict=True)
            return
    missing = [k for k in own if k not in state and f"features.{k}" not in state]
    raise ValueError(
        f"weights file {str(path)!r} does not fit the backbone of {type(model).__name__}: "
        f"it lacks {len(missing)} of its tensors, e.g. {', '.join(map(repr, missing[:5]))}"
    )


def _freeze_backbone(
    model: nn.Module, name: str, trainable_layers: int | None, pretrained: object
) -> None:
    """Torchvision's pretrained set-up for models whose weights came from a local file."""
    body = getattr(model.backbone, "body", None)
    if body is None:
        if trainable_layers is not None:
            raise ValueError(
                f"trainable_layers is not supported for {name} without weights from an enum; "
                "set requires_grad on model.backbone yourself"
            )
        return
    if not pretrained and trainable_layers is None:
        return  # torchvision trains everything of a model that starts from scratch
    kind = "MobileNetV3" if "mobilenet" in name else "ResNet"
    trunk = trunk_from_blocks(list(body.named_children()), kind)
    freeze_stages(trunk, trainable_layers, pretrained=bool(pretrained))
    for block_name, block in trunk.blocks:
        if body[block_name] is not block:
            body[block_name] = block
