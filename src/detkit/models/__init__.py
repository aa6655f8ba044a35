"""Torchvision detection models for your own classes: heads, backbones, weights, builders."""

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
    WeightsSource,
    load_weights,
    read_state_dict,
)

__all__ = [
    "LoadReport",
    "WeightsDownloadError",
    "WeightsSource",
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
