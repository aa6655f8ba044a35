"""Any detector by name: :func:`detection_model`, the one call a configuration needs.

A name is one of:

* torchvision's detection models (``"maskrcnn_resnet50_fpn"``,
  ``"retinanet_resnet50_fpn_v2"``, ``"ssdlite320_mobilenet_v3_large"`` ...), built by
  torchvision with weights from anywhere and heads for your classes;
* ``<family>_<backbone>_fpn`` or ``<family>_<backbone>``, torchvision's naming extended to
  every classification backbone: detkit's ``fasterrcnn``, ``maskrcnn`` or ``keypointrcnn``
  on a feature pyramid over ``<backbone>`` (``"maskrcnn_convnext_tiny_fpn"``) or on its last
  feature map alone (``"fasterrcnn_mobilenet_v2"``, the tutorial's second recipe). A name
  torchvision has (``"fasterrcnn_mobilenet_v3_large_fpn"``) is always torchvision's model;
* the family alone (``"maskrcnn"``), with the ``backbone`` argument: a name, a classification
  model instance or a ready detection backbone.

A script or a configuration file can therefore describe every model with one name and
keyword arguments, and never chooses among builders itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torchvision
from torch import nn
from torchvision.models import get_model_weights

from detkit.models.detectors.rcnn import fasterrcnn, keypointrcnn, maskrcnn
from detkit.models.detectors.torchvision_models import torchvision_detection_model
from detkit.models.names import check_model_name
from detkit.models.weights.sources import WeightsSource, resolve_weights

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
    backbone_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a detection model by name, load its weights, fit the heads to your classes.

    Args:
        name: a torchvision detection model (``"fasterrcnn_resnet50_fpn"``,
            ``"maskrcnn_resnet50_fpn_v2"``, ``"keypointrcnn_resnet50_fpn"``,
            ``"retinanet_resnet50_fpn_v2"``, ``"fcos_resnet50_fpn"``, ``"ssd300_vgg16"``,
            ``"ssdlite320_mobilenet_v3_large"`` ...); detkit's R-CNN over any classification
            backbone, ``"maskrcnn_resnet18_fpn"`` (a pyramid) or ``"fasterrcnn_mobilenet_v2"``
            (one feature map); or ``"fasterrcnn"``, ``"maskrcnn"``, ``"keypointrcnn"`` with
            ``backbone`` (see :func:`~detkit.models.detectors.maskrcnn`).
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
        backbone: with a family name alone: a classification model name or instance, or a
            ready detection backbone; default ``"resnet50"``.
        fpn: with a family name alone: a feature pyramid (default) or one feature map.
        returned_strides: detkit's R-CNNs only, with a pyramid: the strides it takes.
        backbone_kwargs: detkit's R-CNNs only: keyword arguments of the classification model
            the backbone is cut from, e.g. ``{"norm_layer": ...}`` (it is built by
            :func:`torchvision.models.get_model`; ``weights_backbone`` then loads into it).
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
    >>> model = detection_model("maskrcnn_mobilenet_v3_small_fpn", num_classes=2)
    >>> model.roi_heads.mask_predictor.mask_fcn_logits.out_channels
    2
    >>> model = detection_model("fasterrcnn_mobilenet_v3_small", num_classes=2)
    >>> model.backbone.feature_strides
    {'0': 32}
    """
    named = torchvision.models.list_models(module=torchvision.models.detection)
    if name not in named:
        family, backbone, fpn = _rcnn_parts(name, backbone, fpn, named)
        if num_keypoints is not None and family != "keypointrcnn":
            raise ValueError(f"num_keypoints is only for Keypoint R-CNN models, not {name}")
        if backbone_kwargs:
            backbone, weights_backbone = _classifier(backbone, backbone_kwargs, weights_backbone)
        family_only = {} if num_keypoints is None else {"num_keypoints": num_keypoints}
        return RCNN_FAMILIES[family](
            backbone,
            num_classes=num_classes,
            fpn=fpn,
            weights=weights,
            weights_backbone=weights_backbone,
            trainable_layers=trainable_layers,
            returned_strides=returned_strides,
            progress=progress,
            **family_only,
            **kwargs,
        )
    given = {
        "backbone": backbone,
        "fpn": fpn,
        "returned_strides": returned_strides,
        "backbone_kwargs": backbone_kwargs,
    }
    extra = [argument for argument, value in given.items() if value is not None]
    if extra:
        raise ValueError(
            f"{', '.join(extra)} apply only to detkit's R-CNNs ({', '.join(RCNN_FAMILIES)}, "
            f"or names such as 'maskrcnn_resnet18_fpn'); torchvision's {name} has its own "
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


def _rcnn_parts(
    name: str, backbone: str | nn.Module | None, fpn: bool | None, named: Sequence[str]
) -> tuple[str, str | nn.Module, bool]:
    """(family, backbone, fpn) of a name that is not torchvision's, or a ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"the model name must be a str, got {type(name).__name__}")
    if name in RCNN_FAMILIES:
        return name, "resnet50" if backbone is None else backbone, True if fpn is None else fpn
    family = next((f for f in RCNN_FAMILIES if name.startswith(f"{f}_")), None)
    rest = name[len(family) + 1 :] if family else ""
    has_fpn = rest.endswith("_fpn")
    classifier = rest.removesuffix("_fpn")
    classifiers = torchvision.models.list_models(module=torchvision.models)
    if classifier not in classifiers:
        ours = [f"{f}_{c}{end}" for f in RCNN_FAMILIES for c in classifiers for end in ("_fpn", "")]
        what = (
            "a torchvision detection model nor a detkit R-CNN name (<family>_<backbone>_fpn or "
            f"<family>_<backbone>, <family> one of {', '.join(RCNN_FAMILIES)})"
        )
        check_model_name(name, sorted({*named, *RCNN_FAMILIES, *ours}), what)
    if family is None:  # check_model_name raised for it: no family prefix, no classifier
        raise ValueError(f"unknown model name {name!r}")
    if backbone is not None or fpn is not None:
        raise ValueError(
            f"{name!r} already names the backbone and whether it has a pyramid: pass "
            f"backbone= and fpn= with the family name {family!r} only"
        )
    return family, classifier, has_fpn


def _classifier(
    backbone: str | nn.Module, options: Mapping[str, Any], weights_backbone: WeightsSource
) -> tuple[nn.Module, WeightsSource]:
    """The classification model ``backbone`` names, built with ``options``, and its weights.

    A weights name (``"DEFAULT"``) is resolved against that model's weights here, since the
    builders see an instance, whose weights they cannot name.
    """
    if not isinstance(backbone, str):
        raise ValueError(
            "backbone_kwargs build a classification model by name: pass backbone as a name, "
            "or build the model yourself and pass it as backbone"
        )
    known = torchvision.models.list_models(module=torchvision.models)
    check_model_name(backbone, known, "a torchvision classification model")
    weights = resolve_weights(weights_backbone, get_model_weights(backbone), "weights_backbone")
    return torchvision.models.get_model(backbone, weights=None, **options), weights
