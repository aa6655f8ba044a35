"""Faster / Mask / Keypoint R-CNN around any torchvision classification backbone.

The fine-tuning tutorial's second recipe ("a different backbone") in one call::

    model = fasterrcnn(
        "mobilenet_v2", fpn=False, num_classes=2, weights_backbone="DEFAULT"
    )

The backbone is a single feature map (``fpn=False``,
:func:`~detkit.models.backbones.trunk_backbone`) or a feature pyramid (``fpn=True``,
:func:`~detkit.models.backbones.fpn_backbone`), and the anchors and RoI pooling follow the
feature maps it returns:

* one feature map: anchors of sizes 32, 64, 128, 256 and 512 with aspect ratios 0.5, 1 and 2
  at every position (the tutorial's choice); RoI pooling on that map;
* a pyramid of five or more levels: one anchor size per level, 8 x its stride (32 ... 512 for
  strides 4 ... 64, torchvision's ResNet FPN); fewer levels: all five sizes on every level
  (torchvision's MobileNet FPN); RoI pooling on the trunk levels (not on ``"pool"``).

Box RoI pooling is 7x7, mask and keypoint RoI pooling 14x14, with sampling ratio 2
(torchvision's values). Every keyword argument of torchvision's ``FasterRCNN`` /
``MaskRCNN`` / ``KeypointRCNN`` (``min_size``, ``box_detections_per_img``, your own
``rpn_anchor_generator`` ...) passes through. A ``box_head``, ``mask_head`` or
``keypoint_head`` of yours gets a predictor as wide as its output (torchvision's predictors
are sized for its own heads: 1024, 256 and 512 wide).

``weights`` are detector weights (see :mod:`detkit.models.weights`): a local file, e.g. your
own checkpoint of a model built by the same call. Heads whose class count differs from the
weights are re-initialised without complaint; anything else that does not fit is an error.
Torchvision's COCO weights fit ``backbone="resnet50"`` with ``fpn=True``, but that model is
torchvision's own ``maskrcnn_resnet50_fpn`` (or Faster / Keypoint): build it with
:func:`~detkit.models.detectors.detection_model`, the one route to torchvision's named
models (``weights="DEFAULT"`` here still works, with a ``DeprecationWarning``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN

from detkit.models.detectors.rcnn_assembly import assemble_rcnn
from detkit.models.weights.sources import WeightsSource

__all__ = ["fasterrcnn", "keypointrcnn", "maskrcnn"]


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

    Args:
        backbone: a torchvision classification model name (``"resnet50"``,
            ``"mobilenet_v3_large"``, ``"convnext_tiny"`` ...) or instance (copied), or a
            ready detection backbone (a module with ``out_channels``), used as it is.
        num_classes: your classes plus one for the background. May be left out when
            ``weights`` say it (a local file: its box predictor).
        fpn: a feature pyramid (default) or the trunk's last feature map alone.
        weights: detector weights: a local file (plain state dict or checkpoint). Heads of
            another class count than ``num_classes`` are re-initialised; other mismatches
            raise ``ValueError``.
        weights_backbone: classification weights for the backbone: enum, name such as
            ``"DEFAULT"``, or local file. Not together with ``weights``.
        trainable_layers: how many of the backbone's deepest stages train; default 3 when
            pretrained (``weights`` or ``weights_backbone``), else all. See
            :mod:`detkit.models.backbones`.
        returned_strides: with ``fpn=True``, the trunk strides the pyramid takes.
        progress: show a progress bar when downloading weights.
        **kwargs: passed to torchvision's model class (``min_size``, ``max_size``,
            ``box_score_thresh``, ``rpn_anchor_generator``, ``box_head`` ...).

    Returns:
        A torchvision :class:`~torchvision.models.detection.FasterRCNN`.

    >>> model = fasterrcnn(
    ...     "mobilenet_v3_small", fpn=False, num_classes=2, min_size=128
    ... )
    >>> model.backbone.out_channels, model.rpn.anchor_generator.sizes
    (576, ((32, 64, 128, 256, 512),))
    """
    return assemble_rcnn(
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

    Args:
        backbone: a torchvision classification model name (``"resnet50"``,
            ``"mobilenet_v3_large"``, ``"convnext_tiny"`` ...) or instance (copied), or a
            ready detection backbone (a module with ``out_channels``), used as it is.
        num_classes: your classes plus one for the background. May be left out when
            ``weights`` say it (a local file: its box predictor).
        fpn: a feature pyramid (default) or the trunk's last feature map alone.
        weights: detector weights: a local file (plain state dict or checkpoint). Heads of
            another class count than ``num_classes`` are re-initialised; other mismatches
            raise ``ValueError``.
        weights_backbone: classification weights for the backbone: enum, name such as
            ``"DEFAULT"``, or local file. Not together with ``weights``.
        trainable_layers: how many of the backbone's deepest stages train; default 3 when
            pretrained (``weights`` or ``weights_backbone``), else all. See
            :mod:`detkit.models.backbones`.
        returned_strides: with ``fpn=True``, the trunk strides the pyramid takes.
        progress: show a progress bar when downloading weights.
        **kwargs: passed to torchvision's model class (``min_size``, ``max_size``,
            ``box_score_thresh``, ``mask_head``, ``rpn_anchor_generator`` ...).

    Returns:
        A torchvision :class:`~torchvision.models.detection.MaskRCNN`.

    >>> model = maskrcnn("mobilenet_v3_small", num_classes=3, min_size=128)
    >>> model.rpn.anchor_generator.sizes
    ((32,), (64,), (128,), (256,), (512,))
    >>> model.roi_heads.mask_roi_pool.featmap_names
    ['0', '1', '2', '3']
    """
    return assemble_rcnn(
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

    Args:
        backbone: a torchvision classification model name (``"resnet50"``,
            ``"mobilenet_v3_large"``, ``"convnext_tiny"`` ...) or instance (copied), or a
            ready detection backbone (a module with ``out_channels``), used as it is.
        num_classes: your classes plus one for the background. May be left out when
            ``weights`` say it (a local file: its box predictor).
        num_keypoints: keypoints per instance; default from ``weights``, else 17.
        fpn: a feature pyramid (default) or the trunk's last feature map alone.
        weights: detector weights: a local file (plain state dict or checkpoint). Heads of
            another class or keypoint count are re-initialised; other mismatches raise
            ``ValueError``.
        weights_backbone: classification weights for the backbone: enum, name such as
            ``"DEFAULT"``, or local file. Not together with ``weights``.
        trainable_layers: how many of the backbone's deepest stages train; default 3 when
            pretrained (``weights`` or ``weights_backbone``), else all. See
            :mod:`detkit.models.backbones`.
        returned_strides: with ``fpn=True``, the trunk strides the pyramid takes.
        progress: show a progress bar when downloading weights.
        **kwargs: passed to torchvision's model class (``min_size``, ``max_size``,
            ``keypoint_head``, ``rpn_anchor_generator`` ...).

    Returns:
        A torchvision :class:`~torchvision.models.detection.KeypointRCNN`.

    >>> model = keypointrcnn("mobilenet_v3_small", num_classes=2, num_keypoints=5)
    >>> model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels
    5
    """
    return assemble_rcnn(
        KeypointRCNN,
        backbone,
        num_classes=num_classes,
        num_keypoints=num_keypoints,
        fpn=fpn,
        weights=weights,
        weights_backbone=weights_backbone,
        trainable_layers=trainable_layers,
        returned_strides=returned_strides,
        progress=progress,
        kwargs=kwargs,
    )
