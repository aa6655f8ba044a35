"""Torchvision detection models for your own classes: heads, backbones, weights, builders.

The fine-tuning tutorial's two recipes, one call each::

    from detkit.models import detection_model, fasterrcnn

    # 1. a COCO-trained model with new heads for your classes (background included)
    model = detection_model("maskrcnn_resnet50_fpn", weights="DEFAULT", num_classes=2)

    # 2. another backbone: MobileNetV2's features as one feature map, sizes derived
    model = fasterrcnn("mobilenet_v2", fpn=False, num_classes=2, weights_backbone="DEFAULT")

``weights`` and ``weights_backbone`` also take local files, for machines without network
access and for your own checkpoints. :func:`replace_heads` adapts a model you already have.
"""

from detkit.models.backbones import fpn_backbone, trunk_backbone
from detkit.models.builders import fasterrcnn, keypointrcnn, maskrcnn
from detkit.models.heads import (
    replace_box_predictor,
    replace_classification_head,
    replace_heads,
    replace_keypoint_predictor,
    replace_mask_predictor,
)
from detkit.models.pretrained import detection_model
from detkit.models.weights import (
    LoadReport,
    WeightsDownloadError,
    load_weights,
    read_state_dict,
)

__all__ = [
    "LoadReport",
    "WeightsDownloadError",
    "detection_model",
    "fasterrcnn",
    "fpn_backbone",
    "keypointrcnn",
    "load_weights",
    "maskrcnn",
    "read_state_dict",
    "replace_box_predictor",
    "replace_classification_head",
    "replace_heads",
    "replace_keypoint_predictor",
    "replace_mask_predictor",
    "trunk_backbone",
]
