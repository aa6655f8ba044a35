"""A detection model's predictions and its losses on the same batch, for validation.

torchvision's detection models return losses in training mode and detections in eval mode,
never both. :func:`detections_and_losses` gets both with the model's normalisation layers in
eval mode and nothing learned or updated:

* R-CNN models (torchvision's ``GeneralizedRCNN``: Faster, Mask and Keypoint R-CNN) run the
  transform and the backbone **once**; the region proposal network and the RoI heads then run
  twice on those features, once as in eval mode (the detections, exactly what ``model(images)``
  returns) and once as in training mode (the losses). The backbone, usually most of the cost,
  is shared.
* Other models (RetinaNet, FCOS, SSD, your own) take one extra forward pass for the losses,
  with the training flag set on the model object alone (see :func:`loss_mode`).

Either way the losses are those training would compute on these images at the evaluation
size (the transform stays in eval mode, so no random resize), with batch norm, dropout and
stochastic depth in eval mode: running statistics are not updated. The random sampling of
anchors and proposals the losses use draws from a generator seeded by the batch's image ids,
under ``torch.random.fork_rng``: the global random state is untouched (so a training run's
data order does not depend on whether losses were evaluated) and the same batch gives the
same losses every epoch.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from detkit.engine._failures import check_keypoint_counts, predicted_counts

__all__ = ["batch_seed", "detections_and_losses", "loss_mode"]

# The submodules whose own ``training`` flag (not their children's) selects the loss branch of
# torchvision's detectors: the region proposal network and the RoI heads of R-CNN models.
_LOSS_BRANCHES = ("rpn", "roi_heads")


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """Set the training flag of ``model`` itself and of its ``rpn``/``roi_heads``, nothing else.

    These flags are what make torchvision's detectors compute losses; every other submodule
    (the transform, which would pick a random size, batch norm, dropout, the box and mask
    heads' layers) keeps the mode it has (eval, inside :func:`~detkit.engine.evaluate`). The
    flags are restored on exit.

    >>> import torchvision
    >>> model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
    ...     weights=None, weights_backbone=None, num_classes=2).eval()
    >>> with loss_mode(model):
    ...     model.training, model.rpn.training, model.backbone.training
    (True, True, False)
    >>> model.training
    False
    """
    modules = [model] + [
        branch
        for branch in (getattr(model, name, None) for name in _LOSS_BRANCHES)
        if isinstance(branch, nn.Module)
    ]
    flags = [module.training for module in modules]
    try:
        for module in modules:
            module.training = True
        yield
    finally:
        for module, flag in zip(modules, flags):
            module.training = flag


def batch_seed(targets: Sequence[Mapping[str, Any]]) -> int:
    """A seed that depends only on the batch's ``image_id`` values (the same on every run).

    >>> batch_seed([{"image_id": 3}, {"image_id": 4}]) == batch_seed([{"image_id": 3}, {"image_id": 4}])
    True
    """
    ids = [int(t["image_id"]) if "image_id" in t else -1 for t in targets]
    return zlib.crc32(repr(ids).encode())


def _shares_backbone(model: nn.Module) -> bool:
    """Whether ``model`` runs torchvision's R-CNN forward (not one of its own)."""
    return isinstance(model, GeneralizedRCNN) and type(model).forward is GeneralizedRCNN.forward


def _check_boxes(targets: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """torchvision's own check of the training forward, which the shared path does not call."""
    for index, target in enumerate(targets):
        boxes = target["boxes"]
        degenerate = boxes[:, 2:] <= boxes[:, :2]
        if degenerate.any():
            box = boxes[torch.where(degenerate.any(dim=1))[0][0]].tolist()
            raise AssertionError(
                "All bounding boxes should have positive height and width. "
                f"Found invalid box {box} for target at index {index}."
            )


def _rcnn_detections_and_losses(
    model: GeneralizedRCNN,
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
    seed: int,
) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    # GeneralizedRCNN.forward, with the part after the backbone run in both modes.
    original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
    image_list, resized = model.transform(images, targets)
    _check_boxes(resized)
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    detections = model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
    with _seeded(images[0].device, seed), loss_mode(model):
        proposals, proposal_losses = model.rpn(image_list, features, resized)
        _, detector_losses = model.roi_heads(features, proposals, image_list.image_sizes, resized)
    return detections, {**detector_losses, **proposal_losses}


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    # Only the generators this batch draws from: torch.manual_seed would reseed every GPU's.
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def detections_and_losses(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The model's detections for ``images`` and its loss dict against ``targets``.

    ``model`` is in eval mode (as :func:`~detkit.engine.evaluate` puts it); see the module's
    text for what runs once and what twice. The detections are exactly ``model(images)``.
    """
    check_keypoint_counts(predicted_counts(model)[1], targets)  # fewer: the wrong heatmaps
    if _shares_backbone(model):
        return _rcnn_detections_and_losses(model, images, targets, batch_seed(targets))
    detections = model(images)
    with _seeded(images[0].device, batch_seed(targets)), loss_mode(model):
        losses = model(images, targets)
    return detections, losses
