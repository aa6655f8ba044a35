"""Torchvision's named detection models, with weights from anywhere and heads for your classes.

The fine-tuning tutorial's first recipe ("start from a COCO-trained model, replace its heads")
in one call, for every detection model torchvision has::

    model = detection_model("maskrcnn_resnet50_fpn", weights="DEFAULT", num_classes=2)

The weights may also be a local file (torchvision's downloaded file, or your own checkpoint),
which matters on machines without network access; see :mod:`detkit.models.weights`.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model_builder, get_model_weights
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

from detkit.models import _trunk
from detkit.models._sources import (
    WeightsSource,
    ensure_downloaded,
    legacy_eps_zero,
    resolve,
)
from detkit.models.heads import (
    CLASS_KEY,
    KEYPOINT_KEY,
    _check_classes,
    replace_heads,
    replace_keypoint_predictor,
)
from detkit.models.weights import _load_state, _set_frozen_batchnorm_eps, read_state_dict

__all__ = ["detection_model"]


def detection_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: WeightsSource = None,
    weights_backbone: WeightsSource = None,
    num_keypoints: int | None = None,
    trainable_layers: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build one of torchvision's detection models by name, load weights, fit the heads.

    Args:
        name: a torchvision detection builder: ``"fasterrcnn_resnet50_fpn"``,
            ``"maskrcnn_resnet50_fpn_v2"``, ``"keypointrcnn_resnet50_fpn"``,
            ``"retinanet_resnet50_fpn_v2"``, ``"fcos_resnet50_fpn"``, ``"ssd300_vgg16"``,
            ``"ssdlite320_mobilenet_v3_large"`` ...
        num_classes: your classes plus one (see :func:`~detkit.models.replace_heads` for what
            it counts per family). Default: what ``weights`` have (91 for COCO); required
            without detector weights.
        weights: detector weights: enum, name (``"DEFAULT"``) or local file. The heads are
            replaced when ``num_classes`` (or ``num_keypoints``) differs from theirs.
        weights_backbone: classification weights for the backbone: enum, name or local file
            (a local file works for the ResNet / MobileNet FPN models and SSD300; SSDlite's
            trunk differs from the classification model's, so it takes an enum or name only).
        num_keypoints: Keypoint R-CNN only; default from ``weights``, else 17.
        trainable_layers: trainable backbone stages, as torchvision's
            ``trainable_backbone_layers`` (default 3 when pretrained). With weights from an
            enum, torchvision's builder applies it; with a local file detkit does the same for
            the ResNet / MobileNet FPN models (frozen batch norm included), while SSD models
            then train all layers and take no ``trainable_layers``.
        progress: show a progress bar when downloading weights.
        **kwargs: passed to torchvision's builder (``min_size``, ``box_score_thresh`` ...).

    Returns:
        The torchvision model.

    Raises:
        ValueError: unknown ``name``, missing ``num_classes``, weights that do not fit.
        WeightsDownloadError: the weights cannot be downloaded (the message says how to
            pass a local file instead).

    >>> model = detection_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3)
    >>> model.roi_heads.box_predictor.cls_score.out_features
    3
    """
    names = torchvision.models.list_models(module=torchvision.models.detection)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        raise ValueError(
            f"{name!r} is not a torchvision detection model"
            + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
            + f" Known: {', '.join(names)}"
        )
    builder = get_model_builder(name)
    source = resolve(weights, get_model_weights(name), "weights")
    backbone_source = resolve(weights_backbone, _backbone_enum(builder), "weights_backbone")
    if source is not None and backbone_source is not None:
        raise ValueError(
            "pass either weights (a whole detector, backbone included) or weights_backbone"
        )
    if num_classes is not None:
        _check_classes(num_classes)
    if num_keypoints is not None:
        if "keypoint" not in name:
            raise ValueError(f"num_keypoints is only for Keypoint R-CNN models, not {name}")
        kwargs["num_keypoints"] = num_keypoints

    if isinstance(source, WeightsEnum):
        ensure_downloaded(source, "weights", progress=progress)
        kwargs.pop("num_keypoints", None)
        model = builder(
            weights=source, progress=progress, trainable_backbone_layers=trainable_layers, **kwargs
        )
        if num_classes is not None and num_classes != len(source.meta["categories"]):
            replace_heads(model, num_classes)
        if num_keypoints is not None and num_keypoints != len(source.meta["keypoint_names"]):
            replace_keypoint_predictor(model, num_keypoints)
        return model
    if isinstance(backbone_source, WeightsEnum):
        ensure_downloaded(backbone_source, "weights_backbone", progress=progress)
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
        _load_state(model, state, source, strict=True)
    elif backbone_source is not None:
        _load_backbone_file(model, backbone_source)
    _freeze_backbone(model, name, trainable_layers, pretrained=source or backbone_source)
    if source is not None and legacy_eps_zero(source):
        _set_frozen_batchnorm_eps(model, 0.0)  # after batch norm is frozen
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
    backbone = model.backbone
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
            _load_state(trunk, {k: picked[k] for k in own}, path, strict=True)
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
    trunk = _trunk.trunk_from_blocks(list(body.named_children()), kind)
    trainable = _trunk.validate_trainable_layers(trunk, trainable_layers, bool(pretrained))
    _trunk.freeze(trunk, trainable, frozen_batchnorm=bool(pretrained))
    for block_name, block in trunk.blocks:
        if body[block_name] is not block:
            body[block_name] = block
