"""Detection backbones from any torchvision classification model: one feature map, or an FPN.

Both builders take a classification model, by name (``"mobilenet_v2"``, ``"resnet50"``,
``"convnext_tiny"`` ...) or as an instance, cut its feature trunk out (everything its
``forward`` runs before global pooling), and measure each block's output stride and channel
count with one dry run of a small image, so nothing is typed by hand (no ``out_channels = 1280``).

* :func:`trunk_backbone` -- the tutorial's ``mobilenet_v2().features`` recipe for any model:
  the deepest feature map alone, ``out_channels`` set. Works for every torchvision
  classification model except ViT and MaxViT (whose features are not a convolutional map).
* :func:`fpn_backbone` -- a feature pyramid over the trunk's stages (``returned_strides``,
  by default the last four: 4, 8, 16, 32 for most models) plus a max-pooled top level, as
  :class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`. For ResNets the module
  and its state-dict keys are those of torchvision's ``resnet_fpn_backbone``, so torchvision's
  COCO detector weights load into detkit's ResNet-50 FPN models.

**Stages and** ``trainable_layers``. The trunk's blocks are grouped into stages, a new stage at
every block that lowers the resolution. ``trainable_layers=k`` trains the ``k`` deepest stages
and freezes the rest; the default is 3 when the backbone starts from pretrained weights and all
stages otherwise (torchvision's defaults). For ResNets (5 stages) and MobileNets (6: the final
1x1 convolution counts as one) this is the same unit as torchvision's
``trainable_backbone_layers``. An out-of-range value raises a ``ValueError`` listing the stages.

**Batch norm.** When the backbone is pretrained (``weights`` given, or an instance whose batch
norm layers carry trained statistics) every batch norm becomes
:class:`~torchvision.ops.misc.FrozenBatchNorm2d`, as in torchvision's detection models (batch
statistics of 2 images would ruin them). Batch norm inside a frozen stage is frozen in any case.
``frozen_batchnorm=True/False`` overrides the default.

Each backbone has ``out_channels`` (what torchvision's detectors need) and ``feature_strides``,
``{name: stride}`` of the maps it returns, from which detkit's builders derive anchors and RoI
pooling.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from detkit.models import _trunk
from detkit.models._sources import WeightsSource, ensure_downloaded, resolve
from detkit.models.weights import load_weights

__all__ = ["fpn_backbone", "trunk_backbone"]


def _classifier(
    model: str | nn.Module, weights: WeightsSource, progress: bool, argument: str
) -> tuple[nn.Module, bool]:
    """A private classification model with ``weights`` loaded, and whether it is pretrained.

    ``argument``: the name the caller's user gave the weights under (``weights`` for the
    backbone functions, ``weights_backbone`` for the detector builders), for messages.
    """
    if isinstance(model, str):
        names = torchvision.models.list_models(module=torchvision.models)
        if model not in names:
            close = difflib.get_close_matches(model, names, n=3)
            raise ValueError(
                f"{model!r} is not a torchvision classification model"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
            )
        source = resolve(weights, get_model_weights(model), argument)
        if isinstance(source, WeightsEnum):
            ensure_downloaded(source, argument, progress=progress)
            return get_model(model, weights=source, progress=progress), True
        built = get_model(model, weights=None)
        if source is not None:
            load_weights(built, source)
        return built, source is not None
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torchvision classification model name or an nn.Module, "
            f"got {type(model).__name__}"
        )
    built = _trunk.copy_model(model)
    source = resolve(weights, None, argument)
    if source is not None:
        if isinstance(source, WeightsEnum):
            ensure_downloaded(source, argument, progress=progress)
        load_weights(built, source, progress=progress)
        return built, True
    return built, _trunk.has_trained_statistics(built)


def _prepare(
    model: str | nn.Module,
    weights: WeightsSource,
    pretrained: bool | None,
    progress: bool,
    for_fpn: bool,
    argument: str,
) -> tuple[_trunk.Trunk, bool]:
    classifier, loaded = _classifier(model, weights, progress, argument)
    # Builders pass pretrained=True when detector weights will overwrite the backbone later.
    return _trunk.build_trunk(
        classifier, for_fpn=for_fpn
    ), loaded if pretrained is None else pretrained


def trunk_backbone(
    model: str | nn.Module = "mobilenet_v2",
    *,
    weights: WeightsSource = None,
    trainable_layers: int | None = None,
    frozen_batchnorm: bool | None = None,
    progress: bool = True,
) -> nn.Sequential:
    """A classification model's feature trunk as a single-feature-map detection backbone.

    Args:
        model: a torchvision classification model name or instance (the instance is copied,
            never changed).
        weights: its weights: an enum, a name such as ``"DEFAULT"``, or a local file (see
            :mod:`detkit.models.weights`). With an instance, weights load into its copy.
        trainable_layers: how many of the deepest stages train (see the module docs).
        frozen_batchnorm: force batch norm frozen (``True``) or trainable (``False``) in the
            stages that train; by default frozen when the backbone is pretrained.
        progress: show a progress bar when downloading weights.

    Returns:
        An :class:`~torch.nn.Sequential` of the trunk's blocks (named as in the classification
        model, so the tutorial's ``mobilenet_v2().features`` state dict loads into it), with
        ``out_channels`` and ``feature_strides = {"0": stride}``.

    >>> backbone = trunk_backbone("mobilenet_v3_small")
    >>> backbone.out_channels, backbone.feature_strides
    (576, {'0': 32})
    """
    return _make_trunk_backbone(model, weights, trainable_layers, frozen_batchnorm, None, progress)


def _make_trunk_backbone(
    model: str | nn.Module,
    weights: WeightsSource,
    trainable_layers: int | None,
    frozen_batchnorm: bool | None,
    pretrained: bool | None,
    progress: bool,
    argument: str = "weights",
) -> nn.Sequential:
    trunk, pretrained = _prepare(model, weights, pretrained, progress, False, argument)
    trainable = _trunk.validate_trainable_layers(trunk, trainable_layers, pretrained)
    _trunk.freeze(trunk, trainable, pretrained if frozen_batchnorm is None else frozen_batchnorm)
    backbone = _trunk.sequential(trunk.blocks)
    backbone.out_channels = trunk.channels[-1]
    backbone.feature_strides = {"0": trunk.strides[-1]}
    return backbone


def fpn_backbone(
    model: str | nn.Module = "resnet50",
    *,
    weights: WeightsSource = None,
    trainable_layers: int | None = None,
    returned_strides: Sequence[int] | None = None,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    frozen_batchnorm: bool | None = None,
    progress: bool = True,
) -> BackboneWithFPN:
    """A feature pyramid network over a classification model's trunk.

    Args:
        model: a torchvision classification model name or instance (copied, never changed).
            ResNet, ResNeXt, Wide ResNet, MobileNet v2/v3, EfficientNet (v1/v2), ConvNeXt,
            RegNet, DenseNet, MNASNet, ShuffleNet v2, VGG, GoogLeNet and Inception v3 work;
            Swin, ViT and MaxViT do not (their maps are channels-last or not maps at all).
        weights: the classification weights: enum, name or local file.
        trainable_layers: how many of the deepest stages train (see the module docs); the
            stages after the deepest returned level are dropped and not counted.
        returned_strides: output strides of the trunk levels the FPN takes, increasing, e.g.
            ``(8, 16, 32)``; each level is the last block at that stride. Default: the last
            four strides of at least 4 (``4, 8, 16, 32`` for most models).
        out_channels: channels of every pyramid level.
        extra_blocks: torchvision's extra FPN block; default
            :class:`~torchvision.ops.feature_pyramid_network.LastLevelMaxPool` (a ``"pool"``
            level at twice the deepest stride), as torchvision's R-CNN backbones.
        frozen_batchnorm: force batch norm frozen or not; by default frozen when pretrained.
        progress: show a progress bar when downloading weights.

    Returns:
        A :class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN` returning
        levels ``"0"``, ``"1"``, ... (shallow to deep) and the extra levels, with
        ``out_channels`` and ``feature_strides``.

    >>> backbone = fpn_backbone("mobilenet_v3_small")
    >>> backbone.feature_strides
    {'0': 4, '1': 8, '2': 16, '3': 32, 'pool': 64}
    """
    return _make_fpn_backbone(
        model,
        weights,
        trainable_layers,
        frozen_batchnorm,
        None,
        progress,
        returned_strides=returned_strides,
        out_channels=out_channels,
        extra_blocks=extra_blocks,
    )


def _make_fpn_backbone(
    model: str | nn.Module,
    weights: WeightsSource,
    trainable_layers: int | None,
    frozen_batchnorm: bool | None,
    pretrained: bool | None,
    progress: bool,
    *,
    returned_strides: Sequence[int] | None = None,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    argument: str = "weights",
) -> BackboneWithFPN:
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
    full, pretrained = _prepare(model, weights, pretrained, progress, True, argument)
    levels = _levels(full, returned_strides)
    trunk = _trunk.truncated(full, levels[-1])
    trainable = _trunk.validate_trainable_layers(trunk, trainable_layers, pretrained)
    _trunk.freeze(trunk, trainable, pretrained if frozen_batchnorm is None else frozen_batchnorm)
    backbone = BackboneWithFPN(
        _trunk.sequential(trunk.blocks),
        return_layers={trunk.blocks[i][0]: str(n) for n, i in enumerate(levels)},
        in_channels_list=[trunk.channels[i] for i in levels],
        out_channels=out_channels,
        extra_blocks=extra_blocks,
    )
    if extra_blocks is None or type(extra_blocks) is LastLevelMaxPool:
        strides = {str(n): trunk.strides[i] for n, i in enumerate(levels)}
        strides["pool"] = 2 * trunk.strides[levels[-1]]
    else:
        strides = _trunk.output_strides(backbone)
    backbone.feature_strides = strides
    return backbone


def _levels(trunk: _trunk.Trunk, returned_strides: Sequence[int] | None) -> list[int]:
    """Index of the last block at each returned stride."""
    last_at = {stride: i for i, stride in enumerate(trunk.strides)}
    available = sorted(last_at)
    if returned_strides is None:
        chosen = [s for s in available if s >= 4][-4:] or available[-1:]
    else:
        if isinstance(returned_strides, (str, bytes)) or not isinstance(returned_strides, Sequence):
            raise TypeError(
                f"returned_strides must be a sequence of ints, got {type(returned_strides).__name__}"
            )
        chosen = list(returned_strides)
        if (
            not chosen
            or any(isinstance(s, bool) or not isinstance(s, int) for s in chosen)
            or any(s not in last_at for s in chosen)
            or chosen != sorted(set(chosen))
        ):
            raise ValueError(
                f"returned_strides must be increasing strides that {trunk.name}'s trunk has "
                f"({', '.join(map(str, available))}), got {returned_strides!r}"
            )
    return [last_at[s] for s in chosen]
