"""Faster / Mask / Keypoint R-CNN builders, and torchvision's named models with weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from strategies import detection_batch
from torch import nn
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
from torchvision.ops.misc import FrozenBatchNorm2d

from detkit.models import (
    detection_model,
    fasterrcnn,
    fpn_backbone,
    keypointrcnn,
    maskrcnn,
    replace_heads,
)

SMALL = {
    "min_size": 96,
    "max_size": 96,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 16,
    "box_detections_per_img": 4,
}
LOSSES = {
    "faster": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "mask": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
    "keypoint": {
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_keypoint",
    },
}


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "faster":  # the tutorial's single-feature-map recipe
        return fasterrcnn("mobilenet_v3_small", fpn=False, num_classes=3, **SMALL)
    if kind == "mask":
        return maskrcnn("mobilenet_v3_small", num_classes=3, **SMALL)
    # torchvision's keypoint head is heavy (eight 512-channel convolutions per RoI): one
    # positive RoI per image keeps the step short
    small = {**SMALL, "box_batch_size_per_image": 4}
    return keypointrcnn("mobilenet_v3_small", num_classes=3, num_keypoints=5, **small)


@pytest.fixture(scope="module", params=["faster", "mask", "keypoint"])
def rcnn(request):
    return request.param, build(request.param)


def test_rcnn_train_step_reaches_every_trainable_parameter(rcnn):
    kind, model = rcnn
    # The batch has large objects, so every head (mask and keypoint included) gets positive
    # proposals; torchvision also adds the ground-truth boxes to the proposals in training.
    images, targets = detection_batch(num_keypoints=5 if kind == "keypoint" else 0)
    model.train()
    model.zero_grad()
    losses = model(images, targets)
    assert set(losses) == LOSSES[kind]
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(p.requires_grad for p in model.parameters())  # from scratch: all stages train


def test_rcnn_predictions_use_the_new_classes(rcnn):
    kind, model = rcnn
    images, _ = detection_batch(num_images=1)
    model.eval()
    with torch.no_grad():
        (prediction,) = model(images)
    labels = prediction["labels"]
    assert 0 < len(labels) <= 4
    assert labels.min() >= 1 and labels.max() <= 2  # 3 classes: background + 2
    if kind == "mask":
        assert prediction["masks"].shape == (len(labels), 1, 96, 96)
    if kind == "keypoint":
        assert prediction["keypoints"].shape == (len(labels), 5, 3)


def test_anchors_and_pooling_follow_the_feature_maps(rcnn):
    kind, model = rcnn
    sizes = model.rpn.anchor_generator.sizes
    pools = model.roi_heads.box_roi_pool.featmap_names
    if kind == "faster":
        assert sizes == ((32, 64, 128, 256, 512),) and pools == ["0"]
        assert model.rpn.head.cls_logits.out_channels == 15
    else:
        assert sizes == ((32,), (64,), (128,), (256,), (512,))
        assert pools == ["0", "1", "2", "3"]
        assert model.rpn.head.cls_logits.out_channels == 3
    if kind == "mask":
        assert model.roi_heads.mask_roi_pool.featmap_names == pools
        assert model.roi_heads.mask_roi_pool.output_size == (14, 14)


def test_short_pyramid_gets_every_anchor_size_on_every_level():
    model = fasterrcnn("mobilenet_v3_small", num_classes=2, returned_strides=(16, 32))
    assert model.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),) * 3
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1"]


def test_replaced_head_model_round_trips_through_a_file(tmp_path):
    torch.manual_seed(1)
    trained = replace_heads(maskrcnn("mobilenet_v3_small", num_classes=91, **SMALL), 4)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": trained.state_dict(), "epoch": 7}, path)
    fresh = maskrcnn("mobilenet_v3_small", weights=path, **SMALL)  # classes read from the file
    assert fresh.roi_heads.box_predictor.cls_score.out_features == 4
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())
    images, _ = detection_batch(num_images=1)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        a, b = trained(images)[0], fresh(images)[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])


def test_ready_backbones_are_used_as_they_are():
    backbone = fpn_backbone("mobilenet_v3_small", returned_strides=(8, 16, 32))
    model = fasterrcnn(backbone, num_classes=2)
    assert model.backbone is backbone
    assert model.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),) * 4

    class Plain(nn.Module):  # no feature_strides: the builder measures them
        out_channels = 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=16, padding=1)

        def forward(self, x):
            return self.conv(x)

    model = maskrcnn(Plain(), num_classes=2)
    assert model.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),)
    with pytest.raises(ValueError, match="trainable_layers apply only to classification models"):
        fasterrcnn(backbone, num_classes=2, trainable_layers=2)


def test_builder_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"num_classes is required: your classes plus one"):
        fasterrcnn("mobilenet_v3_small")
    with pytest.raises(
        ValueError,
        match=r"weights='DEFAULT': torchvision has pretrained FasterRCNN weights for backbone='resnet50' with fpn=True only; .*detection_model",
    ):
        fasterrcnn("mobilenet_v3_small", num_classes=2, weights="DEFAULT")
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"pass either weights .* or weights_backbone"):
        fasterrcnn(
            "mobilenet_v3_small", weights=tmp_path / "w.pth", weights_backbone=tmp_path / "w.pth"
        )
    with pytest.raises(
        ValueError, match=r"num_classes must be at least 2 \(it counts the background"
    ):
        maskrcnn("mobilenet_v3_small", num_classes=1)
    with pytest.raises(TypeError, match="returned_strides must be a sequence of ints, got int"):
        fasterrcnn("mobilenet_v3_small", num_classes=2, returned_strides=32)
    with pytest.raises(ValueError, match="num_keypoints is only for Keypoint R-CNN models"):
        detection_model("fasterrcnn_mobilenet_v3_large_fpn", num_classes=2, num_keypoints=3)
    with pytest.raises(ValueError, match="returned_strides applies only with fpn=True"):
        fasterrcnn("mobilenet_v3_small", num_classes=2, fpn=False, returned_strides=(16, 32))
    with pytest.raises(
        ValueError,
        match=r"'fasterrcnn_resnet5_fpn' is not a torchvision detection model nor a detkit R-CNN "
        r"name \(<family>_<backbone>_fpn or <family>_<backbone>, <family> one of fasterrcnn, "
        r"maskrcnn, keypointrcnn\); did you mean 'fasterrcnn_resnet50_fpn'",
    ):
        detection_model("fasterrcnn_resnet5_fpn", num_classes=2)
    with pytest.raises(ValueError, match="num_classes is required without detector weights"):
        detection_model("ssdlite320_mobilenet_v3_large")


# -- torchvision's COCO weights, served from torch.hub's cache (no network) ---------------------


@pytest.fixture(scope="module")
def coco_like_hub(tmp_path_factory):
    """torch.hub's cache holding a (random) state dict under the COCO_V1 file name.

    torch.hub reads a cached file without checking its hash, which is how machines without
    network access use torchvision's weights; the tensors need not be the real ones.
    """
    torch.manual_seed(2)
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    )
    state = reference.state_dict()
    for key, value in state.items():  # trained-looking statistics, so eps matters
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    hub = tmp_path_factory.mktemp("hub")
    url = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url
    (hub / "checkpoints").mkdir()
    path = hub / "checkpoints" / url.rsplit("/", 1)[1]
    torch.save(state, path)
    return hub, path, state


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_torchvision_weights_three_ways_give_one_model(coco_like_hub, monkeypatch):
    hub, path, state = coco_like_hub
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    with pytest.warns(DeprecationWarning, match="detection_model"):  # the other route
        ours = fasterrcnn("resnet50", weights="DEFAULT", num_classes=3)
    theirs = detection_model("fasterrcnn_resnet50_fpn", weights="DEFAULT", num_classes=3)
    from_file = detection_model("fasterrcnn_resnet50_fpn", weights=path, num_classes=3)
    heads = "roi_heads.box_predictor."
    for model in (ours, theirs, from_file):
        assert model.roi_heads.box_predictor.cls_score.out_features == 3
        current = model.state_dict()
        compared = [k for k in state if not k.startswith(heads)]
        compared = [k for k in compared if not k.endswith("num_batches_tracked")]  # frozen BN
        assert len(compared) == len(current) - 4
        assert all(torch.equal(current[k], state[k]) for k in compared)
        # torchvision loads these legacy weights with eps=0 in its frozen batch norm
        frozen = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
        assert len(frozen) == 53 and all(m.eps == 0.0 for m in frozen)
    # the same three trainable stages (layer2-4) and frozen batch norm as torchvision's builder
    assert trainable_names(ours) == trainable_names(theirs) == trainable_names(from_file)
    assert not any(n.startswith("backbone.body.layer1") for n in trainable_names(ours))


def test_backbone_weights_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    classifier = torchvision.models.mobilenet_v3_large()
    classifier.features[1].block[0][1].running_var.fill_(2.0)  # a statistic to recognise
    torch.save(classifier.state_dict(), tmp_path / "mobilenet_v3_large.pth")
    ours = fasterrcnn(
        "mobilenet_v3_large", num_classes=2, weights_backbone=tmp_path / "mobilenet_v3_large.pth"
    )
    theirs = detection_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        num_classes=2,
        weights_backbone=str(tmp_path / "mobilenet_v3_large.pth"),
    )
    # torchvision's detection builders build MobileNet with BatchNorm2d's default eps (1e-5)
    # and freeze it as such; detkit keeps the classification model's own (0.001)
    for body, eps in ((ours.backbone.body, 0.001), (theirs.backbone.body, 1e-5)):
        assert torch.equal(body["3"].block[0][0].weight, classifier.features[3].block[0][0].weight)
        bn = body["1"].block[0][1]
        assert isinstance(bn, FrozenBatchNorm2d) and bn.eps == eps
        torch.testing.assert_close(bn.running_var, torch.full_like(bn.running_var, 2.0))
        # pretrained: the 3 deepest of MobileNet's 6 stages train (blocks 7 to 16)
        trained = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
        assert trained == {str(i) for i in range(7, 17)}


# -- one route: detection_model names every detector ------------------------------------------


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("name", "builder", "options"),
    [
        ("maskrcnn_mobilenet_v3_small_fpn", maskrcnn, {}),
        ("fasterrcnn_mobilenet_v3_small", fasterrcnn, {"fpn": False}),
        ("keypointrcnn_mobilenet_v3_small_fpn", keypointrcnn, {"num_keypoints": 5}),
    ],
)
def test_backbone_names_build_what_the_family_builders_build(name, builder, options):
    keypoints = {"num_keypoints": 5} if "num_keypoints" in options else {}
    torch.manual_seed(0)
    named = detection_model(name, num_classes=3, min_size=96, **keypoints)
    torch.manual_seed(0)
    built = builder("mobilenet_v3_small", num_classes=3, min_size=96, **options)
    assert type(named) is type(built)
    assert same_state(named, built)
    torch.manual_seed(0)
    family = detection_model(
        name.split("_")[0],
        backbone="mobilenet_v3_small",
        fpn=name.endswith("_fpn"),
        num_classes=3,
        min_size=96,
        **keypoints,
    )
    assert same_state(family, built)


def test_torchvision_names_stay_torchvisions_models():
    torch.manual_seed(0)
    named = detection_model("fasterrcnn_mobilenet_v3_large_fpn", num_classes=2)
    torch.manual_seed(0)
    theirs = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=2
    )
    assert same_state(named, theirs)


def test_backbone_kwargs_build_the_classification_model():
    def group_norm(channels):
        return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)

    torch.manual_seed(0)
    named = detection_model(
        "maskrcnn_mobilenet_v3_small_fpn",
        num_classes=2,
        backbone_kwargs={"norm_layer": group_norm},
        min_size=96,
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in named.backbone.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in named.backbone.body.modules()) > 0
    torch.manual_seed(0)
    classifier = torchvision.models.mobilenet_v3_small(norm_layer=group_norm)
    assert same_state(named, maskrcnn(classifier, num_classes=2, min_size=96))


def test_detection_model_name_errors_say_what_to_do():
    with pytest.raises(
        ValueError,
        match=r"'maskrcnn_resnt18_fpn' is not a torchvision detection model nor a detkit R-CNN "
        r"name .*; did you mean 'maskrcnn_resnet18_fpn'",
    ):
        detection_model("maskrcnn_resnt18_fpn", num_classes=2)
    with pytest.raises(ValueError, match=r"did you mean 'maskrcnn',"):
        detection_model("maskrnn", num_classes=2)
    with pytest.raises(ValueError, match=r"'maskrcnn_resnet18_fpn' already names the backbone"):
        detection_model("maskrcnn_resnet18_fpn", num_classes=2, backbone="resnet50")
    with pytest.raises(ValueError, match=r"backbone_kwargs apply only to detkit's R-CNNs"):
        detection_model("ssd300_vgg16", num_classes=2, backbone_kwargs={"norm_layer": None})
    with pytest.raises(ValueError, match="num_keypoints is only for Keypoint R-CNN models"):
        detection_model("maskrcnn_mobilenet_v3_small_fpn", num_classes=2, num_keypoints=3)
    with pytest.raises(ValueError, match="backbone_kwargs build a classification model by name"):
        detection_model(
            "maskrcnn", backbone=nn.Conv2d(3, 8, 3), num_classes=2, backbone_kwargs={"x": 1}
        )
    with pytest.raises(TypeError, match="the model name must be a str, got list"):
        detection_model(["maskrcnn"], num_classes=2)


@pytest.mark.parametrize(
    ("module", "name", "where"),
    [
        ("detkit.models.builders", "maskrcnn", "detectors.rcnn"),
        ("detkit.models.builders", "fasterrcnn", "detectors.rcnn"),
        ("detkit.models.pretrained", "detection_model", "detectors.named"),
    ],
)
def test_old_module_paths_still_work_with_a_warning(module, name, where):
    import importlib

    import detkit.models

    old = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"import it from detkit.models .*{where}") as w:
        found = getattr(old, name)
    assert found is getattr(detkit.models, name)
    assert w[0].filename == __file__  # the warning points at the caller's line
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        old.nothing
