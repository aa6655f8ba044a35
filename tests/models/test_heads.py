"""replace_heads on every torchvision detection family: shapes, training, predictions."""

from __future__ import annotations

import math

import pytest
import torch
from strategies import detection_batch
from torch import nn
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detkit.models import (
    fpn_backbone,
    keypointrcnn,
    maskrcnn,
    replace_classification_head,
    replace_heads,
    replace_keypoint_predictor,
)

SMALL = {"min_size": 96, "max_size": 96}
RCNN_SMALL = {
    **SMALL,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 16,
    "box_detections_per_img": 4,
}


def light_pyramid():
    """P3-P7 over MobileNetV3-Small, the layout of torchvision's RetinaNet and FCOS."""
    return fpn_backbone(
        "mobilenet_v3_small",
        returned_strides=(8, 16, 32),
        out_channels=64,
        extra_blocks=LastLevelP6P7(64, 64),
    )


def build(family: str) -> nn.Module:
    torch.manual_seed(0)
    if family == "retinanet":
        return RetinaNet(light_pyramid(), num_classes=91, **SMALL)
    if family == "fcos":
        return FCOS(light_pyramid(), num_classes=91, **SMALL)
    if family == "ssd":
        anchors = DefaultBoxGenerator([[2]] * 5)
        head = SSDHead([64] * 5, anchors.num_anchors_per_location(), 91)
        return SSD(light_pyramid(), anchors, (96, 96), num_classes=91, head=head)
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)


@pytest.fixture(scope="module", params=["retinanet", "fcos", "ssd", "ssdlite"])
def single_stage(request):
    model = build(request.param)
    kept = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not k.startswith("head.classification_head")
    }
    replace_heads(model, 4)
    return request.param, model, kept


def test_single_stage_heads_have_the_new_class_count(single_stage):
    family, model, kept = single_stage
    head = model.head.classification_head
    if family in ("retinanet", "fcos"):
        assert head.num_classes == 4
        assert head.cls_logits.out_channels == 4 * head.num_anchors
        # focal-loss prior: every class starts at probability 0.01
        torch.testing.assert_close(
            head.cls_logits.bias, torch.full_like(head.cls_logits.bias, -math.log(99))
        )
    else:
        assert head.num_columns == 4
        regression = model.head.regression_head
        for cls_block, reg_block in zip(head.module_list, regression.module_list):
            cls_conv = cls_block[-1] if family == "ssdlite" else cls_block
            reg_conv = reg_block[-1] if family == "ssdlite" else reg_block
            assert cls_conv.out_channels // 4 == reg_conv.out_channels // 4  # same anchors
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in kept.items())  # nothing else changed


def test_single_stage_train_step_reaches_every_parameter(single_stage):
    family, model, _ = single_stage
    size = 320 if family == "ssdlite" else 96
    images, targets = detection_batch(size=size)
    targets[1]["labels"] = torch.tensor([3, 2])
    model.train()
    model.zero_grad()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_single_stage_predictions_use_the_new_classes(single_stage):
    family, model, _ = single_stage
    size = 320 if family == "ssdlite" else 96
    images, _ = detection_batch(size=size, num_images=1)
    model.eval()
    model.score_thresh = 0.001  # untrained sigmoid heads sit at the 0.01 prior
    with torch.no_grad():
        (prediction,) = model(images)
    labels = prediction["labels"]
    assert len(labels) > 0
    # SSD's softmax output 0 is the background; RetinaNet / FCOS have no background output.
    low = 1 if family.startswith("ssd") else 0
    assert labels.min() >= low and labels.max() < 4


def test_state_dict_of_replaced_model_loads_into_a_fresh_one(single_stage):
    family, model, _ = single_stage
    fresh = replace_heads(build(family), 4)
    fresh.load_state_dict(model.state_dict())  # strict: same keys, same shapes


@pytest.fixture(scope="module")
def mask_model():
    return maskrcnn("mobilenet_v3_small", num_classes=91, **RCNN_SMALL)


def test_mask_rcnn_heads_keep_their_class_independent_layers(mask_model):
    predictor = mask_model.roi_heads.mask_predictor
    deconv, deconv_weight = predictor.conv5_mask, predictor.conv5_mask.weight.clone()
    keys = list(mask_model.state_dict())
    assert replace_heads(mask_model, 3) is mask_model
    assert mask_model.roi_heads.box_predictor.cls_score.out_features == 3
    assert mask_model.roi_heads.box_predictor.bbox_pred.out_features == 12
    assert predictor.mask_fcn_logits.out_channels == 3
    assert predictor.conv5_mask is deconv and torch.equal(deconv.weight, deconv_weight)
    assert list(mask_model.state_dict()) == keys  # torchvision's names stay


def test_keypoint_predictor_is_replaced_only_when_asked():
    model = keypointrcnn("mobilenet_v3_small", num_classes=91, **RCNN_SMALL)
    predictor = model.roi_heads.keypoint_predictor
    replace_heads(model, 2)
    assert model.roi_heads.keypoint_predictor is predictor
    replace_heads(model, 2, num_keypoints=5)
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels == 5
    replace_keypoint_predictor(model, 7)
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels == 7


def test_new_layers_follow_the_model_dtype():
    model = build("retinanet").double()
    replace_heads(model, 3)
    assert model.head.classification_head.cls_logits.weight.dtype == torch.float64


def test_unsupported_models_and_bad_counts_are_named(mask_model):
    with pytest.raises(
        TypeError, match=r"replace_heads supports torchvision's FasterRCNN.* not Linear"
    ):
        replace_heads(nn.Linear(2, 2), 3)
    with pytest.raises(
        ValueError, match=r"num_classes must be at least 2 \(it counts the background"
    ):
        replace_heads(mask_model, 1)
    with pytest.raises(TypeError, match="num_classes must be an int, got float"):
        replace_heads(mask_model, 2.0)
    with pytest.raises(
        ValueError, match="num_keypoints is only for KeypointRCNN models, not MaskRCNN"
    ):
        replace_heads(mask_model, 2, num_keypoints=3)
    with pytest.raises(TypeError, match="supports RetinaNet, FCOS, SSD and SSDlite, not MaskRCNN"):
        replace_classification_head(mask_model, 3)
    with pytest.raises(TypeError, match="needs a KeypointRCNN, got MaskRCNN"):
        replace_keypoint_predictor(mask_model, 3)
