"""Faster / Mask / Keypoint R-CNN around any torchvision classification backbone.

The fine-tuning tutorial's second recipe ("a different backbone") in one call::

    model = fasterrcnn("mobilenet_v2", fpn=False, num_classes=2, weights_backbone="DEFAULT")

The backbone is a single feature map (``fpn=False``, :func:`~detkit.models.trunk_backbone`) or a
feature pyramid (``fpn=True``, :func:`~detkit.models.fpn_backbone`), and the anchors and RoI
pooling follow the feature maps it returns:

* one feature map: anchors of sizes 32, 64, 128, 256 and 512 with aspect ratios 0.5, 1 and 2 at
  every position (the tutorial's choice); RoI pooling on that map;
* a pyramid of five or more levels: one anchor size per level, 8 x its stride (32 ... 512 for
  strides 4 ... 64, torchvision's ResNet FPN); fewer levels: all five sizes on every level
  (torchvision's MobileNet FPN); RoI pooling on the trunk levels (not on ``"pool"``).

Box RoI pooling is 7x7, mask and keypoint RoI pooling 14x14, with sampling ratio 2 (torchvision's
values). Every keyword argument of torchvision's ``FasterRCNN`` / ``MaskRCNN`` / ``KeypointRCNN``
(``min_size``, ``box_detections_per_img``, your own ``rpn_anchor_generator`` ...) passes through.

``weights`` are detector weights (see :mod:`detkit.models.weights`): a local file, e.g. your own
checkpoint of a model built by the same call, or torchvision's COCO weights when they fit the
architecture (``backbone="resnet50"``, ``fpn=True``: ``weights="DEFAULT"`` is then the tutorial's
first recipe, with the heads replaced for ``num_classes``). Heads whose class count differs from
the weights are re-initialised without complaint; anything else that does not fit is an error.
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
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN
from torchvision.ops import MultiScaleRoIAlign

from detkit.models import _trunk
from detkit.models._sources import (
    WeightsSource,
    fetch,
    legacy_eps_zero,
    looks_like_name,
    resolve,
)
from detkit.models.backbones import _make_fpn_backbone, _make_trunk_backbone
from detkit.models.heads import CLASS_KEY, KEYPOINT_KEY, _check_classes
from detkit.models.weights import _load_state, _set_frozen_batchnorm_eps, read_state_dict

__all__ = ["fasterrcnn", "keypointrcnn", "maskrcnn"]

_TORCHVISION_WEIGHTS = {
    FasterRCNN: FasterRCNN_ResNet50_FPN_Weights,
    MaskRCNN: MaskRCNN_ResNet50_FPN_Weights,
    KeypointRCNN: KeypointRCNN_ResNet50_FPN_Weights,
}
_SIZES = (32, 64, 128, 256, 512)
_RATIOS = (0.5, 1.0, 2.0)


def _anchor_generator(feature_strides: Mapping[str, int]) -> AnchorGenerator:
    """Anchors matched to a backbone's feature maps (rule in the module docs)."""
    strides = list(feature_strides.values())
    if len(strides) >= len(_SIZES):
        sizes = tuple((8 * s,) for s in strides)
    else:
        sizes = (_SIZES,) * len(strides)
    return AnchorGenerator(sizes, (_RATIOS,) * len(strides))


def _roi_feature_names(feature_strides: Mapping[str, int]) -> list[str]:
    """The maps RoI pooling reads: the trunk levels, not the ones extra FPN blocks add."""
    names = [n for n in feature_strides if n.isdigit()]
    return names or [n for n in feature_strides if n not in ("pool", "p6", "p7")]


def _resolve_detector(
    family: type[FasterRCNN], backbone: object, fpn: bool, returned: object, weights: WeightsSource
) -> WeightsEnum | Path | None:
    fits = backbone == "resnet50" and fpn and returned in (None, (4, 8, 16, 32))
    enum_class = _TORCHVISION_WEIGHTS[family] if fits else None
    try:
        return resolve(weights, enum_class, "weights")
    except FileNotFoundError:
        if enum_class is None and isinstance(weights, str) and looks_like_name(weights):
            raise ValueError(
                f"weights={weights!r}: torchvision has pretrained {family.__name__} weights for "
                "backbone='resnet50' with fpn=True only; for its other detectors use "
                "detkit.models.detection_model(name, weights=...), or pass a local file"
            ) from None
        raise


def _build(
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
    is_sequence = isinstance(returned_strides, Sequence) and not isinstance(returned_strides, str)
    returned = tuple(returned_strides) if is_sequence else returned_strides
    source = _resolve_detector(family, backbone, fpn, returned, weights)
    if source is not None and weights_backbone is not None:
        raise ValueError(
            "pass either weights (a whole detector, backbone included) or weights_backbone"
        )
    state: Mapping[str, torch.Tensor] | None = None
    if isinstance(source, WeightsEnum):
        state = fetch(source, "weights", progress=progress)
        num_classes = num_classes if num_classes is not None else len(source.meta["categories"])
        if num_keypoints is None and "keypoint_names" in source.meta:
            num_keypoints = len(source.meta["keypoint_names"])
    elif source is not None:
        state = read_state_dict(source)
        if num_classes is None and CLASS_KEY in state:
            num_classes = int(state[CLASS_KEY].shape[0])
        if num_keypoints is None and KEYPOINT_KEY in state:
            num_keypoints = int(state[KEYPOINT_KEY].shape[1])
    if num_classes is None:
        raise ValueError(
            "num_classes is required: your classes plus one for the background (2 for one class)"
        )
    _check_classes(num_classes)
    if family is KeypointRCNN and "keypoint_predictor" not in kwargs:
        kwargs = {"num_keypoints": 17 if num_keypoints is None else num_keypoints, **kwargs}

    pretrained = state is not None or weights_backbone is not None
    body = _backbone(
        backbone, fpn, weights_backbone, trainable_layers, returned, pretrained, progress
    )
    strides = getattr(body, "feature_strides", None) or _trunk.output_strides(body)
    pools = _roi_feature_names(strides)
    defaults: dict[str, Any] = {
        "rpn_anchor_generator": _anchor_generator(strides),
        "box_roi_pool": MultiScaleRoIAlign(pools, output_size=7, sampling_ratio=2),
    }
    if family is MaskRCNN:
        defaults["mask_roi_pool"] = MultiScaleRoIAlign(pools, output_size=14, sampling_ratio=2)
    if family is KeypointRCNN:
        defaults["keypoint_roi_pool"] = MultiScaleRoIAlign(pools, output_size=14, sampling_ratio=2)
    model = family(body, num_classes=num_classes, **{**defaults, **kwargs})
    if state is not None:
        _load_state(model, state, source, strict=True)
        if legacy_eps_zero(source):
            _set_frozen_batchnorm_eps(model, 0.0)
    return model


def _backbone(
    backbone: str | nn.Module,
    fpn: bool,
    weights_backbone: WeightsSource,
    trainable_layers: int | None,
    returned: tuple[int, ...] | None,
    pretrained: bool,
    progress: bool,
) -> nn.Module:
    if isinstance(backbone, nn.Module) and hasattr(backbone, "out_channels"):
        # A ready detection backbone: used as it is.
        given = {
            "weights_backbone": weights_backbone,
            "trainable_layers": trainable_layers,
            "returned_strides": returned,
        }
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ValueError(
                f"backbone is a ready detection backbone ({type(backbone).__name__} with "
                f"out_channels); {', '.join(extra)} apply only to classification models"
            )
        return backbone
    if fpn:
        return _make_fpn_backbone(
            backbone,
            weights_backbone,
            trainable_layers,
            None,
            pretrained,
            progress,
            returned_strides=returned,
            argument="weights_backbone",
        )
    if returned is not None:
        raise ValueError("returned_strides applies only with fpn=True")
    return _make_trunk_backbone(
        backbone, weights_backbone, trainable_layers, None, pretrained, progress, "weights_backbone"
    )


_ARGS = """
    Args:
        backbone: a torchvision classification model name (``"resnet50"``,
            ``"mobilenet_v3_large"``, ``"convnext_tiny"`` ...) or instance (copied), or a ready
            detection backbone (a module with ``out_channels``), used as it is.
        num_classes: your classes plus one for the background. May be left out when
            ``weights`` say it (torchvision's weights: 91; a local file: its box predictor).
        fpn: a feature pyramid (default) or the trunk's last feature map alone.
        weights: detector weights: a local file (plain state dict or checkpoint), or
            torchvision's COCO weights (enum or name) when ``backbone="resnet50"`` and
            ``fpn=True``. Heads of another class count than ``num_classes`` are
            re-initialised; other mismatches raise ``ValueError``.
        weights_backbone: classification weights for the backbone: enum, name such as
            ``"DEFAULT"``, or local file. Not together with ``weights``.
        trainable_layers: how many of the backbone's deepest stages train; default 3 when
            pretrained (``weights`` or ``weights_backbone``), else all. See
            :mod:`detkit.models.backbones`.
        returned_strides: with ``fpn=True``, the trunk strides the pyramid takes.
        progress: show a progress bar when downloading weights.{keypoints}
        **kwargs: passed to torchvision's model class (``min_size``, ``max_size``,
            ``box_score_thresh``, ``rpn_anchor_generator`` ...).
"""


def fasterrcnn(
    backbone: str | nn.Module = "resnet50",
    *,
    num_classes: int | None = None,
    fpn: bool = True,
    weights: WeightsSource = None,
    weights_backbone: WeightsSource = None,
    trainable_layers: int | None = None,
    returned_strides: Sequence[int] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with any torchvision classification backbone.
    {args}
    Returns:
        A torchvision :class:`~torchvision.models.detection.FasterRCNN`.

    >>> model = fasterrcnn("mobilenet_v3_small", fpn=False, num_classes=2, min_size=128)
    >>> model.backbone.out_channels, model.rpn.anchor_generator.sizes
    (576, ((32, 64, 128, 256, 512),))
    """
    return _build(
        FasterRCNN,
        backbone,
        num_classes=num_classes,
        fpn=fpn,
        weights=weights,
        weights_backbone=weights_backbone,
        trainable_layers=trainable_layers,
        returned_strides=returned_strides,
        progress=progress,
        kwargs=kwargs,
    )


def maskrcnn(
    backbone: str | nn.Module = "resnet50",
    *,
    num_classes: int | None = None,
    fpn: bool = True,
    weights: WeightsSource = None,
    weights_backbone: WeightsSource = None,
    trainable_layers: int | None = None,
    returned_strides: Sequence[int] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN with any torchvision classification backbone.
    {args}
    Returns:
        A torchvision :class:`~torchvision.models.detection.MaskRCNN`.

    >>> model = maskrcnn("mobilenet_v3_small", num_classes=3, min_size=128)
    >>> model.rpn.anchor_generator.sizes
    ((32,), (64,), (128,), (256,), (512,))
    >>> model.roi_heads.mask_roi_pool.featmap_names
    ['0', '1', '2', '3']
    """
    return _build(
        MaskRCNN,
        backbone,
        num_classes=num_classes,
        fpn=fpn,
        weights=weights,
        weights_backbone=weights_backbone,
        trainable_layers=trainable_layers,
        returned_strides=returned_strides,
        progress=progress,
        kwargs=kwargs,
    )


def keypointrcnn(
    backbone: str | nn.Module = "resnet50",
    *,
    num_classes: int | None = None,
    num_keypoints: int | None = None,
    fpn: bool = True,
    weights: WeightsSource = None,
    weights_backbone: WeightsSource = None,
    trainable_layers: int | None = None,
    returned_strides: Sequence[int] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> KeypointRCNN:
    """Keypoint R-CNN with any torchvision classification backbone.
    {args}

    Returns:
        A torchvision :class:`~torchvision.models.detection.KeypointRCNN`.

    >>> model = keypointrcnn("mobilenet_v3_small", num_classes=2, num_keypoints=5)
    >>> model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels
    5
    """
    return _build(
        KeypointRCNN,
        backbone,
        num_classes=num_classes,
        fpn=fpn,
        weights=weights,
        weights_backbone=weights_backbone,
        trainable_layers=trainable_layers,
        returned_strides=returned_strides,
        progress=progress,
        num_keypoints=num_keypoints,
        kwargs=kwargs,
    )


_KEYPOINTS = """
        num_keypoints: keypoints per instance; default from ``weights``, else 17."""
for _builder in (fasterrcnn, maskrcnn, keypointrcnn):
    _args = _ARGS.rstrip("\n").format(keypoints=_KEYPOINTS if _builder is keypointrcnn else "")
    _builder.__doc__ = _builder.__doc__.replace("    {args}", _args, 1)
