"""New prediction heads for your classes on torchvision detection models, in place.

:func:`replace_heads` is the one call; the per-head functions exist for those who want one
head only. Every function keeps torchvision's attribute names (``roi_heads.box_predictor``,
``head.classification_head.cls_logits`` ...), so a state dict saved after replacement loads
into a model built the same way, and only the layers whose shape depends on the number of
classes (or keypoints) are re-created: the mask head's transposed convolution, RetinaNet's and
FCOS's convolution towers and SSDlite's depthwise convolutions keep their (pretrained) weights.
New layers are created on the device and with the dtype of the layers they replace.

What ``num_classes`` counts, per family (torchvision's conventions, which its COCO weights
follow with ``num_classes=91``):

* **Faster / Mask / Keypoint R-CNN**: your classes **plus the background**; labels run from
  ``1`` to ``num_classes - 1`` and ``0`` is never predicted.
* **SSD / SSDlite**: the same; output ``0`` is the background of the softmax.
* **RetinaNet / FCOS**: the same count, ``num_classes = your classes + 1``, so that labels
  ``1 ... num_classes - 1`` index the outputs directly. These use one sigmoid per class and no
  background output: output ``0`` is never a training target, so it only learns to stay low
  (it can appear in predictions with a near-zero score if ``score_thresh`` is 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

__all__ = [
    "replace_box_predictor",
    "replace_classification_head",
    "replace_heads",
    "replace_keypoint_predictor",
    "replace_mask_predictor",
]

_FAMILIES = "FasterRCNN, MaskRCNN, KeypointRCNN, RetinaNet, FCOS, SSD and SSDlite"
_PRIOR = 0.01  # focal-loss prior of RetinaNet and FCOS: every class starts at p = 0.01
#: The state-dict key whose first dimension is a saved R-CNN's class count.
CLASS_KEY = "roi_heads.box_predictor.cls_score.weight"
#: The state-dict key whose second dimension is a saved Keypoint R-CNN's keypoint count.
KEYPOINT_KEY = "roi_heads.keypoint_predictor.kps_score_lowres.weight"


def _check_count(value: object, argument: str, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argument} must be at least {minimum}{hint}, got {value}")
    return value


def check_num_classes(num_classes: object) -> int:
    """``num_classes`` checked as every detkit model function takes it: an int of at least 2.

    It counts the background (or the unused output 0; see the module docs), so one class of
    yours is 2. Returns the value; raises ``TypeError`` or ``ValueError`` naming the argument.

    >>> check_num_classes(1)
    Traceback (most recent call last):
    ...
    ValueError: num_classes must be at least 2 (it counts the background: ...), got 1
    """
    return _check_count(
        num_classes, "num_classes", 2, " (it counts the background: one class of yours is 2)"
    )


def _bias(layer: nn.Conv2d | nn.Linear) -> torch.Tensor:
    """A new layer's bias (every layer made here has one)."""
    if layer.bias is None:
        raise ValueError(f"{type(layer).__name__} was built without a bias")
    return layer.bias


def _like(layer: nn.Module) -> dict:
    weight = layer.weight
    return {"device": weight.device, "dtype": weight.dtype}


def replace_box_predictor(model: FasterRCNN, num_classes: int) -> FasterRCNN:
    """Give a Faster / Mask / Keypoint R-CNN a new box predictor for ``num_classes`` classes.

    Args:
        model: the model, changed in place.
        num_classes: your classes plus the background.

    Returns:
        ``model``, whose ``roi_heads.box_predictor`` is a fresh
        :class:`~torchvision.models.detection.faster_rcnn.FastRCNNPredictor`.

    >>> from detkit.models import fasterrcnn
    >>> model = fasterrcnn("mobilenet_v3_small", num_classes=91)
    >>> model = replace_box_predictor(model, num_classes=3)
    >>> model.roi_heads.box_predictor.cls_score
    Linear(in_features=1024, out_features=3, bias=True)
    """
    if not isinstance(model, FasterRCNN):
        raise TypeError(f"replace_box_predictor needs an R-CNN model, got {type(model).__name__}")
    num_classes = check_num_classes(num_classes)
    old = model.roi_heads.box_predictor
    cls_score = getattr(old, "cls_score", None)
    if not isinstance(cls_score, nn.Linear):
        raise TypeError(
            f"{type(model).__name__}.roi_heads.box_predictor is a {type(old).__name__} without a "
            "cls_score layer; set it yourself"
        )
    model.roi_heads.box_predictor = FastRCNNPredictor(cls_score.in_features, num_classes).to(
        **_like(cls_score)
    )
    return model


def replace_mask_predictor(model: MaskRCNN, num_classes: int) -> MaskRCNN:
    """Give a Mask R-CNN a mask predictor for ``num_classes`` classes (background included).

    Only the last 1x1 convolution (``mask_fcn_logits``) depends on the class count and is
    re-created; the transposed convolution before it keeps its weights.

    Args:
        model: the model, changed in place.
        num_classes: your classes plus the background.

    Returns:
        ``model``.

    >>> from detkit.models import maskrcnn
    >>> model = maskrcnn("mobilenet_v3_small", num_classes=91)
    >>> replace_mask_predictor(model, 3).roi_heads.mask_predictor.mask_fcn_logits
    Conv2d(256, 3, kernel_size=(1, 1), stride=(1, 1))
    """
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"replace_mask_predictor needs a MaskRCNN, got {type(model).__name__}")
    num_classes = check_num_classes(num_classes)
    old = getattr(model.roi_heads.mask_predictor, "mask_fcn_logits", None)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(
            "roi_heads.mask_predictor has no mask_fcn_logits convolution; set it yourself"
        )
    new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1, **_like(old))
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(_bias(new))
    model.roi_heads.mask_predictor.mask_fcn_logits = new
    return model


def replace_keypoint_predictor(model: KeypointRCNN, num_keypoints: int) -> KeypointRCNN:
    """Give a Keypoint R-CNN a keypoint predictor for ``num_keypoints`` keypoints per instance.

    Args:
        model: the model, changed in place.
        num_keypoints: keypoints per instance (17 for COCO persons).

    Returns:
        ``model``, whose ``roi_heads.keypoint_predictor`` is a fresh
        :class:`~torchvision.models.detection.keypoint_rcnn.KeypointRCNNPredictor`.

    >>> from detkit.models import keypointrcnn
    >>> model = keypointrcnn("mobilenet_v3_small", num_classes=2)
    >>> model = replace_keypoint_predictor(model, 5)
    >>> model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels
    5
    """
    if not isinstance(model, KeypointRCNN):
        raise TypeError(
            f"replace_keypoint_predictor needs a KeypointRCNN, got {type(model).__name__}"
        )
    num_keypoints = _check_count(num_keypoints, "num_keypoints", 1, "")
    old = getattr(model.roi_heads.keypoint_predictor, "kps_score_lowres", None)
    if not isinstance(old, nn.ConvTranspose2d):
        raise TypeError(
            "roi_heads.keypoint_predictor has no kps_score_lowres layer; set it yourself"
        )
    model.roi_heads.keypoint_predictor = KeypointRCNNPredictor(old.in_channels, num_keypoints).to(
        **_like(old)
    )
    return model


def replace_classification_head(
    model: RetinaNet | FCOS | SSD, num_classes: int
) -> RetinaNet | FCOS | SSD:
    """Give a RetinaNet, FCOS, SSD or SSDlite classification outputs for ``num_classes``.

    Args:
        model: the model, changed in place.
        num_classes: your classes plus one (see the module docs: the background of SSD's
            softmax; an unused output for RetinaNet and FCOS, as in torchvision's weights).

    Returns:
        ``model``. RetinaNet / FCOS get a new ``cls_logits`` convolution, initialised to the
        focal-loss prior (every class at probability 0.01) as torchvision does; SSD gets new
        per-level convolutions; SSDlite new final 1x1 convolutions after its depthwise ones.

    >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    >>> model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    >>> replace_classification_head(model, 4).head.classification_head.num_columns
    4
    """
    num_classes = check_num_classes(num_classes)
    if isinstance(model, (RetinaNet, FCOS)):
        head = model.head.classification_head
        old = head.cls_logits
        new = nn.Conv2d(old.in_channels, head.num_anchors * num_classes, 3, padding=1, **_like(old))
        nn.init.normal_(new.weight, std=0.01)
        nn.init.constant_(_bias(new), -math.log((1 - _PRIOR) / _PRIOR))
        head.cls_logits = new
        head.num_classes = num_classes
    elif isinstance(model, SSD):
        head = model.head.classification_head
        lite = isinstance(model.head, SSDLiteHead)
        for i, block in enumerate(head.module_list):
            old = block[-1] if lite else block
            anchors = old.out_channels // head.num_columns
            new = nn.Conv2d(
                old.in_channels,
                anchors * num_classes,
                kernel_size=old.kernel_size,
                padding=old.padding,
                **_like(old),
            )
            if lite:  # torchvision initialises SSDlite heads N(0, 0.03), SSD heads Xavier
                nn.init.normal_(new.weight, std=0.03)
            else:
                nn.init.xavier_uniform_(new.weight)
            nn.init.zeros_(_bias(new))
            if lite:
                block[-1] = new
            else:
                head.module_list[i] = new
        head.num_columns = num_classes
    else:
        raise TypeError(
            f"replace_classification_head supports RetinaNet, FCOS, SSD and SSDlite, "
            f"not {type(model).__name__}"
        )
    return model


def replace_heads(model: nn.Module, num_classes: int, *, num_keypoints: int | None = None):
    """Adapt a torchvision detection model to your classes, in place; returns the model.

    * Faster R-CNN: new box predictor. Mask R-CNN: new box predictor and mask logits.
      Keypoint R-CNN: new box predictor, and a new keypoint predictor when ``num_keypoints``
      is given (``None`` keeps the current one, which does not depend on the classes).
    * RetinaNet, FCOS, SSD, SSDlite: new classification outputs
      (:func:`replace_classification_head`).

    Args:
        model: a torchvision detection model (subclasses included).
        num_classes: your classes **plus one**: the background for the R-CNN family and SSD,
            an output never trained for RetinaNet and FCOS (torchvision's convention; see the
            module docs). Labels in your targets run from ``1`` to ``num_classes - 1``.
        num_keypoints: keypoints per instance, Keypoint R-CNN only.

    Returns:
        ``model`` (the same object).

    Raises:
        TypeError: ``model`` is not one of the supported families (the message names its type).
        ValueError: ``num_classes`` < 2, or ``num_keypoints`` for a model without keypoints.

    >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    >>> model = fasterrcnn_mobilenet_v3_large_fpn(
    ...     weights=None, weights_backbone=None
    ... )
    >>> model = replace_heads(model, num_classes=2)  # pedestrians + background
    >>> model.roi_heads.box_predictor.bbox_pred.out_features
    8
    """
    if isinstance(model, FasterRCNN):
        check_num_classes(num_classes)
        if num_keypoints is not None and not isinstance(model, KeypointRCNN):
            raise ValueError(
                f"num_keypoints is only for KeypointRCNN models, not {type(model).__name__}"
            )
        if isinstance(model, KeypointRCNN) and num_keypoints is not None:
            _check_count(num_keypoints, "num_keypoints", 1, "")
        replace_box_predictor(model, num_classes)
        if isinstance(model, MaskRCNN):
            replace_mask_predictor(model, num_classes)
        if isinstance(model, KeypointRCNN) and num_keypoints is not None:
            replace_keypoint_predictor(model, num_keypoints)
        return model
    if isinstance(model, (RetinaNet, FCOS, SSD)):
        if num_keypoints is not None:
            raise ValueError(
                f"num_keypoints is only for KeypointRCNN models, not {type(model).__name__}"
            )
        return replace_classification_head(model, num_classes)
    raise TypeError(
        f"replace_heads supports torchvision's {_FAMILIES} models, not {type(model).__name__}"
    )


def replaced_head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the layers :func:`replace_heads` re-creates for ``model``.

    Weights loading lets exactly these keys differ in shape from a file (another class count).

    >>> from detkit.models import maskrcnn
    >>> replaced_head_prefixes(maskrcnn("mobilenet_v3_small", num_classes=2))
    ('roi_heads.box_predictor.', 'roi_heads.mask_predictor.mask_fcn_logits.')
    """
    if isinstance(model, FasterRCNN):
        prefixes = ["roi_heads.box_predictor."]
        if isinstance(model, MaskRCNN):
            prefixes.append("roi_heads.mask_predictor.mask_fcn_logits.")
        if isinstance(model, KeypointRCNN):
            prefixes.append("roi_heads.keypoint_predictor.")
        return tuple(prefixes)
    if isinstance(model, (RetinaNet, FCOS)):
        return ("head.classification_head.cls_logits.",)
    if isinstance(model, SSD):
        return ("head.classification_head.module_list.",)
    return ()
