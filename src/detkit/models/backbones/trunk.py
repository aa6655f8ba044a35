"""A classification model's feature trunk as an ordered list of blocks, grouped into stages.

The detection backbones of :mod:`detkit.models.backbones` are built from this: a classification
network is flattened into the blocks its ``forward`` runs one after the other up to the global
pooling, a dry run of one small image gives each block's output stride and channel count, and
the blocks are grouped into *stages*: a stage starts at every block that lowers the resolution.
``trainable_layers`` counts stages from the deepest one, which for ResNets and MobileNets is
exactly the unit torchvision's ``trainable_backbone_layers`` counts (ResNet: ``conv1`` + ``bn1``,
``layer1`` ... ``layer4``; MobileNet: the strided blocks, plus the final 1x1 convolution).

The functions here are the steps detkit's backbone builders share; the backbones themselves
are :func:`~detkit.models.backbones.trunk_backbone` and
:func:`~detkit.models.backbones.fpn_backbone`.

>>> import torchvision
>>> trunk = build_trunk(torchvision.models.resnet18())
>>> len(trunk.stages), trunk.strides[-1], trunk.channels[-1]
(5, 32, 512)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__: list[str] = []

#: Side of the zero image the dry runs measure strides and channels with.
PROBE_SIZE = 128

# Models whose features are not a convolutional map at any point we could cut.
_UNSUPPORTED = {
    "VisionTransformer": "a ViT has no spatial feature map (it classifies a token)",
    "MaxVit": "MaxViT only takes images whose sides are multiples of its window partition",
}
# Children that run only for an auxiliary training loss (GoogLeNet, Inception v3).
_AUX_TYPES = ("InceptionAux",)
# Where a classification network's ``forward`` leaves the feature map.
_HEAD_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear, nn.Dropout)


@dataclass(frozen=True)
class Trunk:
    """Blocks in execution order with what the dry run measured after each of them."""

    name: str
    blocks: list[tuple[str, nn.Module]]
    strides: list[int]
    channels: list[int]
    stages: list[list[int]]  # block indices; every stage holds parameters

    def describe_stages(self) -> str:
        """The stages, shallow to deep, for messages: ``"conv1, bn1, relu (stride 2) | ..."``."""
        return " | ".join(
            ", ".join(self.blocks[i][0] for i in stage) + f" (stride {self.strides[stage[-1]]})"
            for stage in self.stages
        )


class _InceptionInputTransform(nn.Module):
    """Maps ImageNet-normalised input to the [-1, 1] scaling Inception's weights expect.

    GoogLeNet and Inception v3 do this inside ``forward`` when ``transform_input=True`` (their
    pretrained weights set it); a trunk cut out of them would silently lose it.
    """

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        # x_pixel = x * std + mean, then rescaled from [0, 1] to [-1, 1].
        self.register_buffer("scale", std / 0.5, persistent=False)
        self.register_buffer("shift", (mean - 0.5) / 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.get_buffer("scale"), self.get_buffer("shift")
        return x * scale + shift


def trunk_blocks(model: nn.Module, *, for_fpn: bool = False) -> list[tuple[str, nn.Module]]:
    """The blocks ``model.forward`` runs in sequence before its classifier, with their names.

    Names are the child names torchvision uses, so a trunk's state dict matches torchvision's
    own detection backbones (``conv1``, ``layer1`` ... for ResNets, ``0``, ``1`` ... for models
    with a ``features`` sequence).
    """
    kind = type(model).__name__
    parts: Any = model  # torchvision classifiers, told apart by their attributes below
    if kind in _UNSUPPORTED:
        raise ValueError(f"{kind} cannot serve as a detection backbone: {_UNSUPPORTED[kind]}")
    if kind == "SwinTransformer":
        if for_fpn:
            raise ValueError(
                "SwinTransformer's stages return channels-last maps; detkit builds an FPN only "
                "over convolutional networks (use it as a single-feature-map trunk instead)"
            )
        return [*parts.features.named_children(), ("norm", parts.norm), ("permute", parts.permute)]
    if isinstance(getattr(model, "features", None), nn.Sequential):
        blocks = list(parts.features.named_children())
        if kind == "DenseNet":
            blocks.append(("relu", nn.ReLU()))  # DenseNet.forward applies it after `features`
        return blocks
    if isinstance(getattr(model, "layers", None), nn.Sequential):  # MNASNet
        return list(parts.layers.named_children())
    blocks = []
    if getattr(model, "transform_input", False):
        blocks.append(("transform_input", _InceptionInputTransform()))
    for name, child in model.named_children():
        if isinstance(child, _HEAD_TYPES):
            break
        if type(child).__name__ in _AUX_TYPES:
            continue
        if name == "trunk_output":  # RegNet keeps its four stages in one sequence
            blocks.extend(child.named_children())
        else:
            blocks.append((name, child))
    if not blocks:
        raise ValueError(f"found no feature blocks in {kind}")
    return blocks


@torch.no_grad()
def probe(blocks: Sequence[tuple[str, nn.Module]], kind: str) -> tuple[list[int], list[int]]:
    """Output stride and channel count after each block, from one small zero image.

    Runs in eval mode (batch norm must not see a batch of one) and restores every module's
    mode afterwards. A block lowers the resolution by ``2 ** round(log2((h_in + 1) / (h_out + 1)))``:
    the ``+ 1`` keeps unpadded convolutions (Inception) from reading as an extra factor.
    """
    modules = [m for _, block in blocks for m in block.modules()]
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.training = False
        first = next((p for _, b in blocks for p in b.parameters()), None)
        x = torch.zeros(
            1,
            3,
            PROBE_SIZE,
            PROBE_SIZE,
            dtype=first.dtype if first is not None else torch.float32,
            device=first.device if first is not None else None,
        )
        stride, strides, channels = 1, [], []
        in_nhwc = False
        for name, block in blocks:
            try:
                y = block(x)
            except Exception as error:
                raise ValueError(
                    f"could not run a {PROBE_SIZE}x{PROBE_SIZE} image through block {name!r} "
                    f"of {kind}'s feature trunk: {error}"
                ) from error
            if not isinstance(y, torch.Tensor) or y.dim() != 4:
                raise ValueError(
                    f"block {name!r} of {kind} returns {type(y).__name__} "
                    f"{tuple(y.shape) if isinstance(y, torch.Tensor) else ''}, not a feature map "
                    "[N, C, H, W]"
                )
            # Swin's stages run channels-last until its final permute.
            out_nhwc = kind == "SwinTransformer" and name != "permute"
            h_in = x.shape[1] if in_nhwc else x.shape[2]
            h_out = y.shape[1] if out_nhwc else y.shape[2]
            stride *= 2 ** max(0, round(math.log2((h_in + 1) / (h_out + 1))))
            strides.append(stride)
            channels.append(y.shape[3] if out_nhwc else y.shape[1])
            x, in_nhwc = y, out_nhwc
        return strides, channels
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


def group_stages(
    blocks: Sequence[tuple[str, nn.Module]],
    strides: Sequence[int],
    kind: str = "",
    whole: bool = True,
) -> list[list[int]]:
    """Block indices per stage; a stage without parameters joins its neighbour.

    MobileNets' final 1x1 convolution is a stage of its own, as torchvision counts it, so that
    ``trainable_layers`` means the same as torchvision's ``trainable_backbone_layers`` for the
    ResNet and MobileNet trunks its detection models use.
    """
    stages: list[list[int]] = []
    previous = 0
    for i, stride in enumerate(strides):
        if not stages or stride > previous:
            stages.append([i])
        else:
            stages[-1].append(i)
        previous = stride
    merged: list[list[int]] = []
    for stage in stages:
        has_params = any(p.numel() for i in stage for p in blocks[i][1].parameters())
        if merged and not has_params:
            merged[-1].extend(stage)  # e.g. VGG's last max-pool: nothing to train on its own
        elif merged and not any(p.numel() for i in merged[-1] for p in blocks[i][1].parameters()):
            merged[-1].extend(stage)  # a parameter-free first stage joins the next one
        else:
            merged.append(list(stage))
    if whole and kind in ("MobileNetV2", "MobileNetV3") and len(merged[-1]) > 1:
        merged.append([merged[-1].pop()])
    return merged


def build_trunk(model: nn.Module, *, for_fpn: bool = False) -> Trunk:
    """The trunk of a classification model (its blocks are the model's own modules)."""
    return trunk_from_blocks(trunk_blocks(model, for_fpn=for_fpn), type(model).__name__)


def trunk_from_blocks(blocks: list[tuple[str, nn.Module]], kind: str) -> Trunk:
    """A trunk of named blocks already taken apart (``kind``: the family, e.g. ``"ResNet"``)."""
    strides, channels = probe(blocks, kind)
    return Trunk(kind, blocks, strides, channels, group_stages(blocks, strides, kind))


def truncated(trunk: Trunk, last: int) -> Trunk:
    """The trunk up to block ``last`` (an FPN drops the blocks after its deepest level)."""
    blocks, strides = trunk.blocks[: last + 1], trunk.strides[: last + 1]
    whole = last == len(trunk.blocks) - 1
    stages = group_stages(blocks, strides, trunk.name, whole)
    return Trunk(trunk.name, blocks, strides, trunk.channels[: last + 1], stages)


@torch.no_grad()
def output_strides(backbone: nn.Module) -> dict[str, int]:
    """Name and stride of each feature map a detection backbone returns, from one dry run."""
    modes = [(m, m.training) for m in backbone.modules()]
    first = next(backbone.parameters(), None)
    like: dict[str, Any] = {} if first is None else {"dtype": first.dtype, "device": first.device}
    try:
        backbone.eval()
        out = backbone(torch.zeros((1, 3, PROBE_SIZE, PROBE_SIZE), **like))
    except Exception as error:
        raise ValueError(
            f"could not run a {PROBE_SIZE}x{PROBE_SIZE} image through the backbone "
            f"{type(backbone).__name__}: {error}"
        ) from error
    finally:
        for m, mode in modes:
            m.training = mode
    maps = {"0": out} if isinstance(out, torch.Tensor) else dict(out)
    strides = {}
    for name, value in maps.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 4:
            raise ValueError(
                f"backbone {type(backbone).__name__} must return a feature map [N, C, H, W] or "
                f"a dict of them; its output {name!r} is not one"
            )
        strides[str(name)] = 2 ** max(0, round(math.log2(PROBE_SIZE / value.shape[-2])))
    return strides


def freeze_stages(
    trunk: Trunk,
    trainable_layers: int | None,
    *,
    pretrained: bool,
    frozen_batchnorm: bool | None = None,
) -> None:
    """Torchvision's fine-tuning set-up on ``trunk``, in place: freeze its shallow stages.

    Args:
        trunk: the trunk; blocks that become frozen batch norm are replaced in its list.
        trainable_layers: how many of the deepest stages train; ``None``: 3 when
            ``pretrained``, else all (torchvision's defaults).
        pretrained: whether the trunk starts from trained weights.
        frozen_batchnorm: freeze the batch norm of the stages that train too; default
            ``pretrained`` (statistics from two images a step would ruin trained ones).
    """
    trainable = validate_trainable_layers(trunk, trainable_layers, pretrained)
    freeze(trunk, trainable, pretrained if frozen_batchnorm is None else frozen_batchnorm)


def validate_trainable_layers(trunk: Trunk, trainable_layers: int | None, pretrained: bool) -> int:
    """``trainable_layers`` checked against the trunk's stages; the default as torchvision's."""
    count = len(trunk.stages)
    if trainable_layers is None:
        # torchvision: 3 trainable stages when starting from pretrained weights, all otherwise.
        return min(3, count) if pretrained else count
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise TypeError(
            f"trainable_layers must be an int or None, got {type(trainable_layers).__name__}"
        )
    if not 0 <= trainable_layers <= count:
        raise ValueError(
            f"trainable_layers must be in [0, {count}] for {trunk.name}, got {trainable_layers}; "
            f"its {count} stages, shallow to deep: {trunk.describe_stages()}"
        )
    return trainable_layers


def freeze(trunk: Trunk, trainable_layers: int, frozen_batchnorm: bool) -> None:
    """Freeze all but the last ``trainable_layers`` stages, batch norm included.

    Batch norm in a frozen stage becomes :class:`~torchvision.ops.misc.FrozenBatchNorm2d`:
    with ``requires_grad=False`` alone its running statistics would still drift in train mode.
    """
    frozen = {i for stage in trunk.stages[: len(trunk.stages) - trainable_layers] for i in stage}
    for i, (name, block) in enumerate(trunk.blocks):
        if i in frozen:
            for parameter in block.parameters():
                parameter.requires_grad_(False)
        if i in frozen or frozen_batchnorm:
            if isinstance(block, (nn.BatchNorm2d, nn.SyncBatchNorm)):  # ResNet's bn1
                trunk.blocks[i] = (name, _frozen_copy(block))
            else:
                convert_frozen_batchnorm(block)


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every 2-D batch norm below ``module`` (in place) by a frozen copy of it."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            setattr(module, name, _frozen_copy(child))
        else:
            convert_frozen_batchnorm(child)
    return module


def _frozen_copy(bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    if bn.weight is not None:
        frozen.to(device=bn.weight.device, dtype=bn.weight.dtype)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.track_running_stats and bn.running_mean is not None:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


def has_trained_statistics(model: nn.Module) -> bool:
    """Whether any batch norm carries statistics other than a fresh layer's (0 mean, 1 var)."""
    for m in model.modules():
        if (
            isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d))
            and isinstance(m.running_mean, torch.Tensor)
            and isinstance(m.running_var, torch.Tensor)
            and (bool(m.running_mean.any()) or not bool((m.running_var == 1).all()))
        ):
            return True
    return False


def sequential(blocks: Sequence[tuple[str, nn.Module]]) -> nn.Sequential:
    """The blocks as one module whose children keep their names (and state-dict keys)."""
    return nn.Sequential(OrderedDict(blocks))
