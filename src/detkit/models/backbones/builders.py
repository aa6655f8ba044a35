"""The two detection backbones of :mod:`detkit.models.backbones`, and the builders' choice.

:func:`trunk_backbone` and :func:`fpn_backbone` are the API; :func:`detection_backbone` is the
one home of what the R-CNN builders do with their ``backbone`` argument.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from detkit.models.backbones.trunk import (
    Trunk,
    build_trunk,
    freeze_stages,
    has_trained_statistics,
    output_strides,
    sequential,
    truncated,
)
from detkit.models.names import check_model_name
from detkit.models.weights.loading import load_weights
from detkit.models.weights.sources import WeightsSource, download_weights, resolve_weights

__all__ = ["fpn_backbone", "trunk_backbone"]


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
    trunk, pretrained = _classification_trunk(model, weights, progress, for_fpn=False)
    return _single_map(trunk, trainable_layers, pretrained, frozen_batchnorm)


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
    _check_out_channels(out_channels)
    trunk, pretrained = _classification_trunk(model, weights, progress, for_fpn=True)
    return _pyramid(
        trunk,
        trainable_layers,
        pretrained,
        frozen_batchnorm,
        returned_strides,
        out_channels,
        extra_blocks,
    )


def detection_backbone(
    backbone: str | nn.Module,
    *,
    fpn: bool,
    weights_backbone: WeightsSource,
    trainable_layers: int | None,
    returned_strides: Sequence[int] | None,
    pretrained: bool,
    progress: bool,
) -> nn.Module:
    """The backbone an R-CNN builder makes of its ``backbone`` argument.

    A module with ``out_channels`` is a ready detection backbone, used as it is (then the
    other arguments, which shape a backbone cut from a classification model, must be left
    out). A classification model's name or instance becomes :func:`fpn_backbone` or
    :func:`trunk_backbone` with their defaults; the weights argument is ``weights_backbone``
    in messages. ``pretrained`` (whether the detector starts from trained weights, its own
    or the backbone's) chooses the fine-tuning defaults: frozen batch norm, 3 trainable
    stages.

    >>> backbone = detection_backbone(
    ...     "mobilenet_v3_small", fpn=False, weights_backbone=None,
    ...     trainable_layers=None, returned_strides=None, pretrained=False, progress=False,
    ... )
    >>> backbone.out_channels
    576
    """
    if isinstance(backbone, nn.Module) and hasattr(backbone, "out_channels"):
        given = {
            "weights_backbone": weights_backbone,
            "trainable_layers": trainable_layers,
            "returned_strides": returned_strides,
        }
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ValueError(
                f"backbone is a ready detection backbone ({type(backbone).__name__} with "
                f"out_channels); {', '.join(extra)} apply only to classification models"
            )
        return backbone
    if not fpn and returned_strides is not None:
        raise ValueError("returned_strides applies only with fpn=True")
    # The builder knows better than the backbone's own state whether the model starts from
    # trained weights: detector weights are loaded after the backbone is built.
    trunk, _ = _classification_trunk(
        backbone, weights_backbone, progress, for_fpn=fpn, argument="weights_backbone"
    )
    if fpn:
        return _pyramid(trunk, trainable_layers, pretrained, None, returned_strides, 256, None)
    return _single_map(trunk, trainable_layers, pretrained, None)


def _classification_trunk(
    model: str | nn.Module,
    weights: WeightsSource,
    progress: bool,
    *,
    for_fpn: bool,
    argument: str = "weights",
) -> tuple[Trunk, bool]:
    """The trunk of a private classification model with ``weights`` loaded; whether trained.

    ``argument``: the name the caller's user gave the weights under (``weights`` for the
    backbone functions, ``weights_backbone`` for the detector builders), for messages.
    """
    if isinstance(model, str):
        check_model_name(
            model,
            torchvision.models.list_models(module=torchvision.models),
            "a torchvision classification model",
        )
        source = resolve_weights(weights, get_model_weights(model), argument)
        if isinstance(source, WeightsEnum):
            download_weights(source, argument, progress=progress)
            classifier = get_model(model, weights=source, progress=progress)
        else:
            classifier = get_model(model, weights=None)
            if source is not None:
                load_weights(classifier, source)
        return build_trunk(classifier, for_fpn=for_fpn), source is not None
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torchvision classification model name or an nn.Module, "
            f"got {type(model).__name__}"
        )
    classifier = copy.deepcopy(model)  # building a backbone never changes the caller's model
    source = resolve_weights(weights, None, argument)
    if source is not None:
        if isinstance(source, WeightsEnum):
            download_weights(source, argument, progress=progress)
        load_weights(classifier, source, progress=progress)
    trained = source is not None or has_trained_statistics(classifier)
    return build_trunk(classifier, for_fpn=for_fpn), trained


def _single_map(
    trunk: Trunk, trainable_layers: int | None, pretrained: bool, frozen_batchnorm: bool | None
) -> nn.Sequential:
    freeze_stages(trunk, trainable_layers, pretrained=pretrained, frozen_batchnorm=frozen_batchnorm)
    backbone: Any = sequential(trunk.blocks)  # torchvision's detectors read these attributes
    backbone.out_channels = trunk.channels[-1]
    backbone.feature_strides = {"0": trunk.strides[-1]}
    return backbone


def _pyramid(
    full: Trunk,
    trainable_layers: int | None,
    pretrained: bool,
    frozen_batchnorm: bool | None,
    returned_strides: Sequence[int] | None,
    out_channels: int,
    extra_blocks: ExtraFPNBlock | None,
) -> BackboneWithFPN:
    levels = _levels(full, returned_strides)
    trunk = truncated(full, levels[-1])
    freeze_stages(trunk, trainable_layers, pretrained=pretrained, frozen_batchnorm=frozen_batchnorm)
    backbone = BackboneWithFPN(
        sequential(trunk.blocks),
        return_layers={trunk.blocks[i][0]: str(n) for n, i in enumerate(levels)},
        in_channels_list=[trunk.channels[i] for i in levels],
        out_channels=out_channels,
        extra_blocks=extra_blocks,
    )
    if extra_blocks is None or type(extra_blocks) is LastLevelMaxPool:
        strides = {str(n): trunk.strides[i] for n, i in enumerate(levels)}
        strides["pool"] = 2 * trunk.strides[levels[-1]]
    else:
        strides = output_strides(backbone)
    backbone.feature_strides = strides
    return backbone


def _check_out_channels(out_channels: object) -> None:
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")


def _levels(trunk: Trunk, returned_strides: Sequence[int] | None) -> list[int]:
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
