"""What the engine says when a batch fails: which images, and what detkit can tell is wrong.

Shared by :mod:`detkit.engine.train` and :mod:`detkit.engine.evaluate`; the public exception is
:class:`detkit.engine.NonFiniteLossError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detkit.distributed import all_gather, unwrap_model
from detkit.engine.errors import NonFiniteLossError
from detkit.files import plain_text
from detkit.types import InvalidTargetError, check_image_range, normalize_image_id, validate_target


def _image_ids(targets: Sequence[Mapping[str, Any]]) -> list[Any]:
    ids: list[Any] = []
    for target in targets:
        value = target.get("image_id") if isinstance(target, Mapping) else None
        try:
            ids.append(normalize_image_id(value))
        except TypeError:
            ids.append(value)
    return ids


def _format_losses(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.6g}" for name, value in values.items())


def non_finite_error(
    epoch: int,
    iteration: int,
    loss_dict: Mapping[str, torch.Tensor],
    targets: Sequence[Mapping[str, Any]],
    problem: str,
) -> NonFiniteLossError:
    """Build the error; collective under torch.distributed (every rank fails together).

    ``targets``: those of every batch whose losses or gradients are at fault (with gradient
    accumulation, the whole group's).
    """
    local = {name: float(value.detach().float().item()) for name, value in loss_dict.items()}
    local = {"loss": math.fsum(local.values()), **local}
    ids = _image_ids(targets)
    per_rank = all_gather((local, ids))
    if len(per_rank) == 1:
        where = f"losses: {_format_losses(local)}; batch image_ids: {ids}"
    else:
        where = "; ".join(
            f"rank {rank}: {_format_losses(losses)}, image_ids {rank_ids}"
            for rank, (losses, rank_ids) in enumerate(per_rank)
        )
    message = (
        f"{problem} at epoch {epoch}, iteration {iteration} ({where}). The optimizer did not "
        "step: the weights are those of the previous iteration. Usual causes: a degenerate "
        "box in one of these images' targets (train with validate_targets=True to find it), "
        "a learning rate too high for the batch size, float16 overflow without a GradScaler."
    )
    return NonFiniteLossError(
        message,
        epoch=epoch,
        iteration=iteration,
        losses=local,
        image_ids=ids,
        per_rank=per_rank,
    )


def non_finite_gradient_error(
    model: nn.Module,
    epoch: int,
    iteration: int,
    loss_dict: Mapping[str, torch.Tensor],
    targets: Sequence[Mapping[str, Any]],
    norm: float,
) -> NonFiniteLossError:
    """:func:`non_finite_error` for finite losses whose gradients are not finite."""
    problem = (
        f"non-finite gradient norm ({norm}) with finite losses; first parameters with NaN or "
        f"infinite gradients: {_non_finite_gradients(model)}"
    )
    return non_finite_error(epoch, iteration, loss_dict, targets, problem)


def _non_finite_gradients(model: nn.Module, limit: int = 3) -> str:
    """Names of the first parameters whose gradient holds NaN or inf, for a message."""
    names = [
        name
        for name, param in unwrap_model(model).named_parameters()
        if param.grad is not None and not torch.isfinite(param.grad).all()
    ]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none found"


def check_images(images: Sequence[Any], targets: Sequence[Mapping[str, Any]] | None) -> None:
    """:func:`detkit.types.check_image_range` on a batch's images, naming each one's image_id."""
    ids = _image_ids(targets) if targets is not None else [None] * len(images)
    for image, image_id in zip(images, ids):
        check_image_range(image, image_id=image_id)


def check_keypoint_counts(expected: int | None, targets: Sequence[Any]) -> None:
    """Refuse targets whose keypoints are not the ``expected`` number the model predicts.

    torchvision's keypoint loss indexes the model's heatmaps by the targets' keypoints: with
    fewer keypoints per instance than the model has, it reads other keypoints' heatmaps and
    trains on them without an error (with more, it fails with an index error).
    """
    if expected is None:
        return
    for i, target in enumerate(targets):
        points = target.get("keypoints") if isinstance(target, Mapping) else None
        if isinstance(points, torch.Tensor) and points.ndim == 3 and points.shape[1] != expected:
            image_id = _image_ids([target])[0]
            raise ValueError(
                f"target index {i} = image_id {image_id}: keypoints [N, {points.shape[1]}, 3] "
                f"but the model predicts {expected} keypoints: build it with "
                f"num_keypoints={points.shape[1]} (detkit.models.replace_heads), or give "
                f"targets of {expected} keypoints"
            )


def predicted_counts(model: nn.Module) -> tuple[int | None, int | None]:
    """(classes, keypoints) a torchvision detection model predicts, where it can be told."""
    model = unwrap_model(model)
    roi_heads = getattr(model, "roi_heads", None)
    classes = keypoints = None
    predictor: Any = getattr(roi_heads, "box_predictor", None)
    if isinstance(getattr(predictor, "cls_score", None), nn.Linear):
        classes = predictor.cls_score.out_features
    head: Any = getattr(getattr(model, "head", None), "classification_head", None)
    if isinstance(getattr(head, "num_classes", None), int):
        classes = head.num_classes
    elif isinstance(getattr(head, "num_columns", None), int):
        classes = head.num_columns  # SSD
    scores: Any = getattr(getattr(roi_heads, "keypoint_predictor", None), "kps_score_lowres", None)
    if isinstance(getattr(scores, "out_channels", None), int):
        keypoints = scores.out_channels
    return classes, keypoints


def _diagnose(
    model: nn.Module,
    images: Sequence[Any],
    targets: Sequence[Mapping[str, Any]] | None,
    ids: list[Any],
) -> str | None:
    """What detkit can tell is wrong with a batch the model failed on, or ``None``."""
    for i, image in enumerate(images):
        if isinstance(image, torch.Tensor) and not image.is_floating_point():
            return (
                f"image index {i} = image_id {ids[i]} is {image.dtype}; detection models take "
                "float images in 0..1: add ToDtype(torch.float32, scale=True)"
            )
    if targets is None:
        return None
    classes = predicted_counts(model)[0]  # keypoint counts are checked before each step
    roi_heads: Any = getattr(unwrap_model(model), "roi_heads", None)
    masks = callable(getattr(roi_heads, "has_mask", None)) and roi_heads.has_mask()
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping):
            continue
        where = f"target index {i} = image_id {ids[i]}"
        labels = target.get("labels")
        if (
            classes is not None
            and isinstance(labels, torch.Tensor)
            and labels.numel()
            and int(labels.max()) >= classes
        ):
            return (
                f"{where} has label {int(labels.max())}, but the model has {classes} classes "
                f"(labels 1..{classes - 1}; num_classes counts the background)"
            )
        if masks and "masks" not in target:
            return f"{where} has no 'masks', which Mask R-CNN needs in every target"
    if not isinstance(getattr(unwrap_model(model), "transform", None), GeneralizedRCNNTransform):
        return None  # not a torchvision detection model: the contract may not apply
    for i, (image, target) in enumerate(zip(images, targets)):
        try:
            validate_target(image, target)
        except InvalidTargetError as error:
            return f"target index {i}: {error}"
    return None


def forward_error(
    error: Exception,
    model: nn.Module,
    images: Sequence[Any],
    targets: Sequence[Mapping[str, Any]] | None,
    *,
    training: bool = True,
) -> Exception:
    """``error`` (raised inside the model) again, with the batch's image ids and what is wrong.

    The new exception has the same type where it can be built from a message (torchvision's
    ``AssertionError``, an ``IndexError`` ...), else it is a ``RuntimeError``; the caller
    chains the original (``raise ... from error``). Its ``image_ids`` attribute lists the
    batch's ids. Terminal escape codes in the original message are dropped. ``training``:
    whether the model was given ``targets`` (then they are examined too) or only images.
    """
    ids = _image_ids(targets) if targets is not None else [None] * len(images)
    try:
        cause = _diagnose(model, images, targets if training else None, ids)
    except Exception:  # diagnosing must never hide the original error
        cause = None
    original = plain_text(str(error)).strip() or type(error).__name__
    message = f"{original} [batch image_ids {ids}" + (f"; {cause}]" if cause else "]")
    try:
        wrapped = type(error)(message)
        wrapped.__dict__.update(error.__dict__)  # e.g. an InvalidTargetError's image_id
    except Exception:
        wrapped = RuntimeError(f"{type(error).__name__}: {message}")
    wrapped.image_ids = ids  # type: ignore[attr-defined]
    return wrapped
