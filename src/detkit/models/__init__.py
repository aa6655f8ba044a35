"""Torchvision detection models for your own classes: detectors, heads, backbones, weights.

Every detector by name, with :func:`detection_model` (the fine-tuning tutorial's two recipes,
then any backbone)::

    from detkit.models import detection_model

    # 1. a COCO-trained model with new heads for your classes
    #    (background included)
    model = detection_model(
        "maskrcnn_resnet50_fpn", weights="DEFAULT", num_classes=2
    )

    # 2. another backbone: MobileNetV2's features as one feature map,
    #    sizes derived
    model = detection_model(
        "fasterrcnn_mobilenet_v2", num_classes=2, weights_backbone="DEFAULT"
    )

    # 3. a feature pyramid over any classification model
    model = detection_model("maskrcnn_convnext_tiny_fpn", num_classes=2)

:func:`fasterrcnn`, :func:`maskrcnn` and :func:`keypointrcnn` build detkit's R-CNNs in code,
also on a model instance or a backbone of yours. ``weights`` and ``weights_backbone`` also
take local files, for machines without network access and for your own checkpoints.
:func:`~detkit.models.heads.replace_heads` adapts a model you already have.

The package reads as the architecture, from whole detectors down to their parts::

    detectors/   whole models
      named.py               any detector by name: detection_model
      torchvision_models.py  torchvision's named models, weights from anywhere
      rcnn.py                Faster / Mask / Keypoint R-CNN on any backbone
      rcnn_assembly.py       anchors, RoI pooling and predictors fitted to it
    heads.py     new predictors for your classes
    backbones/
      trunk.py     a classification model cut into blocks and stages
      builders.py  the single-map and FPN backbones made of a trunk
    weights/
      sources.py   where weights come from (enums, names, files, downloads)
      loading.py   loading them into a model
    precision.py float32 decoding under autocast
    names.py     the "did you mean" check of model names
    builders.py, pretrained.py: the old module paths (deprecated aliases)
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
from detkit.models.precision import float32_decoding
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
    "float32_decoding",
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
