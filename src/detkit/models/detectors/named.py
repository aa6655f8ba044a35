"""Any detector by name: :func:`detection_model`, the one call a configuration needs.

A name is either one of torchvision's detection models (``"maskrcnn_resnet50_fpn"``,
``"retinanet_resnet50_fpn_v2"``, ``"ssdlite320_mobilenet_v3_large"`` ...), built by
torchvision with weights from anywhere and heads for your classes, or one of detkit's R-CNN
families, ``"fasterrcnn"``, ``"maskrcnn"`` or ``"keypointrcnn"``, built by the function of
that name on the ``backbone`` you choose. A script or a configuration file can therefore
describe every model with a name and keyword arguments, and never chooses among builders
itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision
from torch import nn

from detkit.models.detectors.rcnn import fasterrcnn, keypointrcnn, maskrcnn
from detkit.models.detectors.torchvision_models import torchvision_detection_model
from detkit.models.names import check_model_name
from detkit.models.weights.sources import WeightsSource

__all__ = ["detection_model"]

#: detkit's R-CNN families by name: the builders ``detection_model`` calls with ``backbone``.
RCNN_FAMILIES = {"fasterrcnn": fasterrcnn, "maskrcnn": maskrcnn, "keypointrcnn": keypointrcnn}


def detection_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: WeightsSource = None,
    weights_backbone: WeightsSource = None,
    num_keypoints: int | None = None,
    trainable_layers: int | None = None,
    backbone: str | nn.Module | None = None,
    fpn: bool | None = None,
    returned_strides: Sequence[int] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a detection model by name, load its weights, fit the heads to your classes.

    Args:
        name: a torchvision detection model (``"fasterrcnn_resnet50_fpn"``,
            ``"maskrcnn_resnet50_fpn_v2"``, ``"keypointrcnn_resnet50_fpn"``,
            ``"retinanet_resnet50_fpn_v2"``, ``"fcos_resnet50_fpn"``, ``"ssd300_vgg16"``,
            ``"ssdlite320_mobilenet_v3_large"`` ...), or ``"fasterrcnn"``, ``"maskrcnn"``,
            ``"keypointrcnn"``: detkit's R-CNN on ``backbone`` (see
            :func:`~detkit.models.detectors.maskrcnn`).
        num_classes: your classes plus one (see :func:`~detkit.models.heads.replace_heads`
            for what it counts per family). Default: what ``weights`` have (91 for COCO);
            required without detector weights.
        weights: detector weights: enum, name (``"DEFAULT"``) or local file. The heads are
            replaced when ``num_classes`` (or ``num_keypoints``) differs from theirs.
        weights_backbone: classification weights for the backbone: enum, name or local
            file (a local file works for the R-CNN families, torchvision's ResNet /
            MobileNet FPN models and SSD300; SSDlite's trunk differs from the
            classification model's, so it takes an enum or name only).
        num_keypoints: Keypoint R-CNN only; default from ``weights``, else 17.
        trainable_layers: trainable backbone stages, as torchvision's
            ``trainable_backbone_layers`` (default 3 when pretrained). For torchvision's
            models with weights from a local file detkit applies it to the ResNet /
            MobileNet FPN models (frozen batch norm included); SSD models then train all
            layers and take no ``trainable_layers``.
        backbone: R-CNN families only: a classification model name or instance, or a
            ready detection backbone; default ``"resnet50"``.
        fpn: R-CNN families only: a feature pyramid (default) or one feature map.
        returned_strides: R-CNN families only, with ``fpn``: the strides the pyramid takes.
        progress: show a progress bar when downloading weights.
        **kwargs: passed to the model class (``min_size``, ``box_score_thresh`` ...).

    Returns:
        The torchvision model.

    Raises:
        ValueError: unknown ``name`` (the message suggests close ones), missing
            ``num_classes``, weights that do not fit, a family-only argument with a
            torchvision name.
        WeightsDownloadError: the weights cannot be downloaded (the message says how to
            pass a local file instead).

    >>> model = detection_model("fasterrcnn_mobilenet_v3_large_fpn", num_classes=3)
    >>> model.roi_heads.box_predictor.cls_score.out_features
    3
    >>> model = detection_model(
    ...     "maskrcnn", backbone="mobilenet_v3_small", num_classes=2
    ... )
    >>> model.roi_heads.mask_predictor.mask_fcn_logits.out_channels
    2
    """
    named = torchvision.models.list_models(module=torchvision.models.detection)
    what = "a torchvision detection model nor one of detkit's R-CNN families"
    check_model_name(name, [*named, *RCNN_FAMILIES], what)
    if name in RCNN_FAMILIES:
        family_only = {} if num_keypoints is None else {"num_keypoints": num_keypoints}
        if num_keypoints is not None and name != "keypointrcnn":
            raise ValueError(f"num_keypoints is only for Keypoint R-CNN models, not {name}")
        return RCNN_FAMILIES[name](
            "resnet50" if backbone is None else backbone,
            num_classes=num_classes,
            fpn=True if fpn is None else fpn,
            weights=weights,
            weights_backbone=weights_backbone,
            trainable_layers=trainable_layers,
            returned_strides=returned_strides,
            progress=progress,
            **family_only,
            **kwargs,
        )
    given = {"backbone": backbone, "fpn": fpn, "returned_strides": returned_strides}
    extra = [argument for argument, value in given.items() if value is not None]
    if extra:
        raise ValueError(
            f"{', '.join(extra)} apply only to detkit's R-CNN families "
            f"({', '.join(map(repr, RCNN_FAMILIES))}); torchvision's {name} has its own "
            "backbone"
        )
    return torchvision_detection_model(
        name,
        num_classes=num_classes,
        weights=weights,
        weights_backbone=weights_backbone,
        num_keypoints=num_keypoints,
        trainable_layers=trainable_layers,
        progress=progress,
        kwargs=kwargs,
    )
