"""Torchvision detection models for your own classes: detectors, heads, backbones, weights.

The fine-tuning tutorial's two recipes, one call each::

    from detkit.models import detection_model, fasterrcnn

    # 1. a COCO-trained model with new heads for your classes
    #    (background included)
    model = detection_model(
        "maskrcnn_resnet50_fpn", weights="DEFAULT", num_classes=2
    )

    # 2. another backbone: MobileNetV2's features as one feature map,
    #    sizes derived
    model = fasterrcnn(
        "mobilenet_v2", fpn=False, num_classes=2, weights_backbone="DEFAULT"
    )

``weights`` and ``weights_backbone`` also take local files, for machines without network
access and for your own checkpoints. :func:`~detkit.models.heads.replace_heads` adapts a
model you already have.

The package reads as the architecture, from whole detectors down to their parts::

    detectors/   whole models: by name (named.py), torchvision's (torchvision_models.py),
                 R-CNNs on any backbone (rcnn.py, rcnn_assembly.py)
    heads.py     new predictors for your classes
    backbones/   a classification model cut into stages (trunk.py), made a single-map or
                 FPN backbone (builders.py)
    weights/     where weights come from (sources.py), loading them (loading.py)
    names.py     the "did you mean" check of model names
"""

from detkit.models.backbones import fpn_backbone, trunk_backbone
from detkit.models.detectors import detection_model, fasterrcnn, keypointrcnn, maskrcnn
from detkit.models.heads import (
    replace_box_predictor,
    replace_classification_head,
    replace_heads,
    replace_keypoint_predictor,
    replace_mask_predictor,
)
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
