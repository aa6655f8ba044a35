"""Backbones from classification models: channels, strides, freezing, torchvision parity."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from detkit.models import fpn_backbone, trunk_backbone


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def classifier_in_features(model: nn.Module) -> int:
    """What the classification head consumes: an independent account of the trunk's channels."""
    if type(model).__name__ == "SqueezeNet":
        return model.classifier[1].in_channels
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].in_features


# out_channels must equal what the model's own classifier reads; stride is the trunk's total.
@pytest.mark.parametrize(
    ("name", "stride"),
    [
        ("mobilenet_v2", 32),
        ("resnet18", 32),
        ("efficientnet_b0", 32),
        ("regnet_x_400mf", 32),
        ("shufflenet_v2_x0_5", 32),
        ("mnasnet0_5", 32),
        ("squeezenet1_1", 16),
        ("googlenet", 32),
    ],
)
def test_trunk_channels_and_stride_come_from_the_model(name, stride):
    model = torchvision.models.get_model(
        name, **({"init_weights": False} if name == "googlenet" else {})
    )
    backbone = trunk_backbone(model)
    assert backbone.out_channels == classifier_in_features(model)
    assert backbone.feature_strides == {"0": stride}
    out = backbone.eval()(torch.rand(1, 3, 128, 128))
    assert out.shape[1] == backbone.out_channels
    assert abs(out.shape[-1] - 128 / stride) <= 1  # unpadded convolutions may lose a pixel


def test_swin_trunk_ends_channels_first():
    swin = torchvision.models.SwinTransformer([4, 4], 8, [1, 1], [1, 1], [2, 2])
    backbone = trunk_backbone(swin).eval()
    assert backbone.out_channels == 16 and backbone.feature_strides == {"0": 8}
    assert backbone(torch.rand(1, 3, 64, 64)).shape == (1, 16, 8, 8)


def test_trunk_state_dict_is_the_tutorials_mobilenet_v2_features():
    tutorial = torchvision.models.mobilenet_v2().features.eval()
    backbone = trunk_backbone("mobilenet_v2").eval()
    backbone.load_state_dict(tutorial.state_dict())  # strict: same names and shapes
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(backbone(x), tutorial(x))


# Trainable parameter counts obtained once from torchvision 0.29.1's own builders:
#   resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=k)
#   (FrozenBatchNorm2d, torchvision's pretrained set-up), and the same with
#   norm_layer=nn.BatchNorm2d; mobilenet_backbone(backbone_name="mobilenet_v3_large",
#   weights=None, fpn=False, trainable_layers=k)[0] (its trunk, FrozenBatchNorm2d).
RESNET18_FPN_FROZEN_BN = [2607104, 10995712, 13092864, 13617152, 13764608, 13774016]
RESNET18_FPN_BATCHNORM = [2607104, 11000832, 13100544, 13626112, 13774080, 13783616]
MOBILENET_V3_LARGE_TRUNK = [0, 153600, 2166216, 2888656, 2939480, 2946720, 2947552]


@pytest.mark.parametrize("k", range(6))
def test_fpn_trainable_counts_match_torchvision(k):
    frozen = fpn_backbone("resnet18", trainable_layers=k, frozen_batchnorm=True)
    assert trainable(frozen) == RESNET18_FPN_FROZEN_BN[k]


@pytest.mark.parametrize("k", [1, 4])
def test_fpn_trainable_counts_with_batchnorm_match_torchvision(k):
    # Batch norm trains in the trainable stages; in frozen ones it becomes FrozenBatchNorm2d,
    # which holds no parameters, so the trainable count is torchvision's.
    assert trainable(fpn_backbone("resnet18", trainable_layers=k)) == RESNET18_FPN_BATCHNORM[k]


@pytest.mark.parametrize("k", range(7))
def test_mobilenet_trainable_counts_match_torchvision(k):
    backbone = trunk_backbone("mobilenet_v3_large", trainable_layers=k, frozen_batchnorm=True)
    assert trainable(backbone) == MOBILENET_V3_LARGE_TRUNK[k]


def test_resnet_fpn_is_torchvisions_module_for_module():
    torch.manual_seed(0)
    reference = resnet_fpn_backbone(backbone_name="resnet18", weights=None).eval()
    backbone = fpn_backbone("resnet18", frozen_batchnorm=True).eval()
    backbone.load_state_dict(reference.state_dict())  # strict
    x = torch.rand(1, 3, 64, 64)
    ours, theirs = backbone(x), reference(x)
    assert list(ours) == list(theirs) == ["0", "1", "2", "3", "pool"]
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name])
    assert backbone.feature_strides == {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}


def test_torchvision_mobilenet_trunk_freezing_matches():
    ours = trunk_backbone("mobilenet_v3_large", trainable_layers=2, frozen_batchnorm=True)
    theirs = mobilenet_backbone(
        backbone_name="mobilenet_v3_large", weights=None, fpn=False, trainable_layers=2
    )[0]
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == [
        n for n, p in theirs.named_parameters() if p.requires_grad
    ]


# FPN over each family the issue names: levels, channels and map sizes on a 64-px image.
@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("resnet18", [64, 128, 256, 512]),
        ("mobilenet_v3_small", [16, 24, 48, 576]),
        ("efficientnet_b0", [24, 40, 112, 1280]),
        ("regnet_x_400mf", [32, 64, 160, 400]),
        ("convnext_tiny", [96, 192, 384, 768]),
    ],
)
def test_fpn_over_classification_families(name, channels):
    backbone = fpn_backbone(name).eval()
    assert [b[0].in_channels for b in backbone.fpn.inner_blocks] == channels
    with torch.no_grad():
        out = backbone(torch.rand(1, 3, 64, 64))
    assert {k: v.shape[-1] for k, v in out.items()} == {
        k: 64 // s for k, s in backbone.feature_strides.items()
    }
    assert all(v.shape[1] == 256 for v in out.values())


def test_fpn_resnext_and_returned_strides():
    backbone = fpn_backbone("resnext50_32x4d", returned_strides=(8, 16, 32), out_channels=64)
    assert backbone.feature_strides == {"0": 8, "1": 16, "2": 32, "pool": 64}
    assert [b[0].in_channels for b in backbone.fpn.inner_blocks] == [512, 1024, 2048]
    assert backbone.out_channels == 64


def test_fpn_drops_stages_after_its_deepest_level():
    backbone = fpn_backbone("resnet18", returned_strides=(4, 8))
    assert list(backbone.body) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"]
    assert backbone.feature_strides == {"0": 4, "1": 8, "pool": 16}
    with pytest.raises(ValueError, match=r"must be in \[0, 3\] for ResNet"):
        fpn_backbone("resnet18", returned_strides=(4, 8), trainable_layers=4)


def test_instance_is_copied_not_changed():
    model = torchvision.models.resnet18()
    before = copy.deepcopy(model.state_dict())
    backbone = fpn_backbone(model, trainable_layers=1)
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(model.bn1, nn.BatchNorm2d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert backbone.body.conv1 is not model.conv1


def test_pretrained_instance_gets_frozen_batchnorm_and_three_stages():
    model = torchvision.models.resnet18()
    model.bn1.running_mean.fill_(0.5)  # statistics only training (or loaded weights) give
    backbone = trunk_backbone(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    torch.testing.assert_close(backbone.bn1.running_mean, torch.full((64,), 0.5))
    trained = {n.split(".")[0] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trained == {"layer2", "layer3", "layer4"}
    fresh = trunk_backbone(torchvision.models.resnet18())
    assert all(p.requires_grad for p in fresh.parameters())
    assert isinstance(fresh.bn1, nn.BatchNorm2d)


def test_frozen_stages_keep_their_statistics_in_train_mode():
    backbone = trunk_backbone("resnet18", trainable_layers=2).train()
    assert isinstance(backbone.layer2[0].bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.layer3[0].bn1, nn.BatchNorm2d)  # trainable, from scratch
    frozen_before = backbone.layer2[0].bn1.running_mean.clone()
    live_before = backbone.layer3[0].bn1.running_mean.clone()
    backbone(torch.rand(2, 3, 64, 64) * 5)
    assert torch.equal(backbone.layer2[0].bn1.running_mean, frozen_before)
    assert not torch.equal(backbone.layer3[0].bn1.running_mean, live_before)


def test_bad_arguments_are_named():
    with pytest.raises(
        ValueError,
        match=r"'resnet5' is not a torchvision classification model; did you mean 'resnet50'",
    ):
        trunk_backbone("resnet5")
    with pytest.raises(ValueError, match="VisionTransformer cannot serve as a detection backbone"):
        trunk_backbone(
            torchvision.models.VisionTransformer(
                32, 16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8
            )
        )
    with pytest.raises(ValueError, match="channels-last"):
        fpn_backbone(torchvision.models.SwinTransformer([4, 4], 8, [1, 1], [1, 1], [2, 2]))
    with pytest.raises(
        ValueError,
        match=r"trainable_layers must be in \[0, 5\] for ResNet, got 6; its 5 stages, shallow "
        r"to deep: conv1, bn1, relu \(stride 2\) \| maxpool, layer1 \(stride 4\) \| layer2",
    ):
        trunk_backbone("resnet18", trainable_layers=6)
    with pytest.raises(TypeError, match="trainable_layers must be an int or None, got bool"):
        trunk_backbone("resnet18", trainable_layers=True)
    with pytest.raises(
        ValueError, match=r"strides that ResNet's trunk has \(2, 4, 8, 16, 32\), got \(8, 4\)"
    ):
        fpn_backbone("resnet18", returned_strides=(8, 4))
    with pytest.raises(ValueError, match="got \\(64,\\)"):
        fpn_backbone("resnet18", returned_strides=(64,))
    with pytest.raises(
        TypeError,
        match=r"model must be a torchvision classification model name or an nn\.Module, got int",
    ):
        trunk_backbone(3)
