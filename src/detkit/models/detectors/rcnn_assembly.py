"""How :mod:`detkit.models.detectors.rcnn`'s builders put an R-CNN together.

In order: resolve the detector weights and read the class (and keypoint) count from them,
build the backbone, match the anchors and RoI pooling to its feature maps, let torchvision
build the model, size the predictors to the heads passed in, load the weights. The rules
for anchors, pooling and predictors are in :mod:`detkit.models.detectors.rcnn`'s docs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from detkit.models.backbones.builders import detection_backbone
from detkit.models.backbones.trunk import output_strides
from detkit.models.deprecation import warn_deprecated
from detkit.models.heads import CLASS_KEY, KEYPOINT_KEY, check_num_classes
from detkit.models.weights.loading import load_state, match_batchnorm_eps, read_state_dict
from detkit.models.weights.sources import (
    WeightsSource,
    fetch_state_dict,
    looks_like_weights_name,
    resolve_weights,
)

__all__: list[str] = []

# torchvision's COCO weights and the name of the model they belong to, per family: they fit
# detkit's ResNet-50 FPN R-CNNs key for key.
_TORCHVISION = {
    FasterRCNN: (FasterRCNN_ResNet50_FPN_Weights, "fasterrcnn_resnet50_fpn"),
    MaskRCNN: (MaskRCNN_ResNet50_FPN_Weights, "maskrcnn_resnet50_fpn"),
    KeypointRCNN: (KeypointRCNN_ResNet50_FPN_Weights, "keypointrcnn_resnet50_fpn"),
}
_SIZES = (32, 64, 128, 256, 512)
_RATIOS = (0.5, 1.0, 2.0)
# The widths torchvision sizes its default predictors for: the output of its own heads.
_BOX_WIDTH, _MASK_WIDTH, _KEYPOINT_WIDTH = 1024, 256, 512


def assemble_rcnn(
    family: type[FasterRCNN],
    backbone: str | nn.Module,
    *,
    num_classes: int | None,
    fpn: bool,
    weights: WeightsSource,
    weights_backbone: WeightsSource,
    trainable_layers: int | None,
    returned_strides: Sequence[int] | None,
    progress: bool,
    num_keypoints: int | None = None,
    kwargs: dict[str, Any],
) -> FasterRCNN:
    """Build a ``family`` model (FasterRCNN, MaskRCNN or KeypointRCNN) as the builders do.

    The arguments are the builders' (``kwargs`` is their ``**kwargs``), documented there.
    """
    returned = returned_strides
    if isinstance(returned_strides, Sequence) and not isinstance(returned_strides, str):
        returned = tuple(returned_strides)
    source = _resolve_detector_weights(family, backbone, fpn, returned, weights)
    if source is not None and weights_backbone is not None:
        raise ValueError(
            "pass either weights (a whole detector, backbone included) or weights_backbone"
        )
    state, num_classes, num_keypoints = _read_detector_weights(
        source, num_classes, num_keypoints, progress
    )
    if num_classes is None:
        raise ValueError(
            "num_classes is required: your classes plus one for the background (2 for one class)"
        )
    check_num_classes(num_classes)
    if family is KeypointRCNN and "keypoint_predictor" not in kwargs:
        kwargs = {"num_keypoints": 17 if num_keypoints is None else num_keypoints, **kwargs}

    body = detection_backbone(
        backbone,
        fpn=fpn,
        weights_backbone=weights_backbone,
        trainable_layers=trainable_layers,
        returned_strides=returned,
        pretrained=state is not None or weights_backbone is not None,
        progress=progress,
    )
    strides = getattr(body, "feature_strides", None) or output_strides(body)
    defaults = {"rpn_anchor_generator": anchor_generator(strides), **roi_pools(family, strides)}
    model = family(body, num_classes=num_classes, **{**defaults, **kwargs})
    fit_predictors_to_heads(model, kwargs, num_classes)
    if state is not None:
        load_state(model, state, source=source, strict=True)
        match_batchnorm_eps(model, source)
    return model


def _resolve_detector_weights(
    family: type[FasterRCNN], backbone: object, fpn: bool, returned: object, weights: WeightsSource
) -> WeightsEnum | Path | None:
    enum_class, name = _TORCHVISION[family]
    fits = backbone == "resnet50" and fpn and returned in (None, (4, 8, 16, 32))
    try:
        source = resolve_weights(weights, enum_class if fits else None, "weights")
    except FileNotFoundError:
        if not fits and isinstance(weights, str) and looks_like_weights_name(weights):
            raise ValueError(
                f"weights={weights!r}: torchvision has pretrained {family.__name__} weights for "
                "backbone='resnet50' with fpn=True only; for its other detectors use "
                "detkit.models.detection_model(name, weights=...), or pass a local file"
            ) from None
        raise
    if fits and isinstance(source, WeightsEnum):
        builder = name.split("_")[0]
        warn_deprecated(
            f"{builder}('resnet50', weights={weights!r}) is torchvision's {name}: build it with "
            f"detection_model({name!r}, weights=..., num_classes=...), the one route to "
            "torchvision's named models and their weights (this one will be removed)"
        )
    return source


def _read_detector_weights(
    source: WeightsEnum | Path | None,
    num_classes: int | None,
    num_keypoints: int | None,
    progress: bool,
) -> tuple[Mapping[str, torch.Tensor] | None, int | None, int | None]:
    """The detector's state dict, and the class and keypoint counts it implies by default."""
    if isinstance(source, WeightsEnum):
        state = fetch_state_dict(source, "weights", progress=progress)
        if num_classes is None:
            num_classes = len(source.meta["categories"])
        if num_keypoints is None and "keypoint_names" in source.meta:
            num_keypoints = len(source.meta["keypoint_names"])
        return state, num_classes, num_keypoints
    if source is None:
        return None, num_classes, num_keypoints
    state = read_state_dict(source)
    if num_classes is None and CLASS_KEY in state:
        num_classes = int(state[CLASS_KEY].shape[0])
    if num_keypoints is None and KEYPOINT_KEY in state:
        num_keypoints = int(state[KEYPOINT_KEY].shape[1])
    return state, num_classes, num_keypoints


def anchor_generator(feature_strides: Mapping[str, int]) -> AnchorGenerator:
    """Anchors matched to a backbone's feature maps ``{name: stride}``.

    >>> anchor_generator({"0": 32}).sizes
    ((32, 64, 128, 256, 512),)
    >>> anchor_generator({"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}).sizes
    ((32,), (64,), (128,), (256,), (512,))
    """
    strides = list(feature_strides.values())
    sizes: tuple[tuple[int, ...], ...]
    if len(strides) >= len(_SIZES):
        sizes = tuple((8 * s,) for s in strides)
    else:
        sizes = (_SIZES,) * len(strides)
    return AnchorGenerator(sizes, (_RATIOS,) * len(strides))


def roi_pools(family: type[FasterRCNN], feature_strides: Mapping[str, int]) -> dict[str, Any]:
    """The RoI pooling keyword arguments of a ``family`` model over these feature maps.

    Pooling reads the trunk levels, not the ones extra FPN blocks add (``"pool"``).

    >>> pools = roi_pools(MaskRCNN, {"0": 8, "1": 16, "pool": 32})
    >>> pools["mask_roi_pool"].featmap_names, pools["mask_roi_pool"].output_size
    (['0', '1'], (14, 14))
    """
    names = [n for n in feature_strides if n.isdigit()]
    names = names or [n for n in feature_strides if n not in ("pool", "p6", "p7")]
    pools = {"box_roi_pool": MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)}
    if family is MaskRCNN:
        pools["mask_roi_pool"] = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
    if family is KeypointRCNN:
        pools["keypoint_roi_pool"] = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
    return pools


def fit_predictors_to_heads(model: FasterRCNN, kwargs: Mapping[str, Any], num_classes: int) -> None:
    """Predictors as wide as the ``box_head`` / ``mask_head`` / ``keypoint_head`` passed in.

    Torchvision sizes its default predictors for its own heads (1024, 256 and 512 wide) and
    refuses ``num_classes`` beside a predictor of yours; so a narrower head of yours gets a
    predictor of its width here (the mask predictor keeps that width inside, as torchvision's
    keeps 256). Only predictors whose width differs are replaced, after torchvision built
    its own, so that a model with torchvision's heads is initialised exactly as before.
    """
    heads = model.roi_heads
    width = _last_width(kwargs.get("box_head"), nn.Linear, "out_features")
    if "box_predictor" not in kwargs and width not in (None, _BOX_WIDTH):
        heads.box_predictor = FastRCNNPredictor(width, num_classes)
    if isinstance(model, MaskRCNN) and "mask_predictor" not in kwargs:
        width = _last_width(kwargs.get("mask_head"), nn.Conv2d, "out_channels")
        if width not in (None, _MASK_WIDTH):
            heads.mask_predictor = MaskRCNNPredictor(width, width, num_classes)
    if isinstance(model, KeypointRCNN) and "keypoint_predictor" not in kwargs:
        width = _last_width(kwargs.get("keypoint_head"), nn.Conv2d, "out_channels")
        if width not in (None, _KEYPOINT_WIDTH):
            count = heads.keypoint_predictor.kps_score_lowres.out_channels
            heads.keypoint_predictor = KeypointRCNNPredictor(width, count)


def _last_width(head: nn.Module | None, kind: type[nn.Module], attribute: str) -> int | None:
    """The output width of ``head``'s last ``kind`` layer (``None``: no head, or none found)."""
    if head is None:
        return None
    layers = [m for m in head.modules() if isinstance(m, kind)]
    return int(getattr(layers[-1], attribute)) if layers else None
