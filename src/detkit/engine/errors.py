"""Exceptions raised by the training engine."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from detkit.distributed import all_gather
from detkit.types import normalize_image_id

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss (or, with clipping, the gradient norm) became NaN or infinite during training.

    Raised by :func:`detkit.engine.train_one_epoch` *before* the optimizer steps, so the
    model's weights (and any checkpoint written earlier) are the last good ones. The message
    names every loss component's value and the ``image_id`` of every image in the batch, per
    process under ``torch.distributed``, so the offending sample can be found. It subclasses
    :class:`FloatingPointError`, as detectron2 raises, where torchvision's reference scripts
    call ``sys.exit(1)``.

    Usual causes: a degenerate box in a target (validate with
    :func:`detkit.types.validate_target`), a learning rate too high for the batch size (no
    warmup), or float16 overflow without a gradient scaler.

    Attributes:
        epoch: the epoch of the failing iteration.
        iteration: the iteration (batch index) within the epoch.
        losses: ``{name: value}`` of this process's batch, before averaging over processes.
        image_ids: ``image_id`` of each image in this process's batch.
        per_rank: ``[(losses, image_ids), ...]`` of every process, in rank order (one entry
            in a single process).
    """

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        iteration: int,
        losses: Mapping[str, float],
        image_ids: Sequence[object],
        per_rank: Sequence[tuple[Mapping[str, float], Sequence[object]]] = (),
    ) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.iteration = iteration
        self.losses = dict(losses)
        self.image_ids = list(image_ids)
        self.per_rank = [(dict(rank_losses), list(ids)) for rank_losses, ids in per_rank] or [
            (self.losses, self.image_ids)
        ]


def _image_ids(targets: Sequence[Mapping[str, Any]]) -> list[Any]:
    ids = []
    for target in targets:
        value = target.get("image_id") if isinstance(target, Mapping) else None
        try:
            ids.append(normalize_image_id(value))
        except TypeError:
            ids.append(value)
    return ids


def _format_losses(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.6g}" for name, value in values.items())


def _non_finite_error(
    epoch: int,
    iteration: int,
    loss_dict: Mapping[str, torch.Tensor],
    targets: Sequence[Mapping[str, Any]],
    problem: str,
) -> NonFiniteLossError:
    """Build the error; collective under torch.distributed (every rank fails together)."""
    local = {name: float(value.detach().float().item()) for name, value in loss_dict.items()}
    local = {"loss": math.fsum(local.values()), **local}
    image_ids = _image_ids(targets)
    per_rank = all_gather((local, image_ids))
    if len(per_rank) == 1:
        where = f"losses: {_format_losses(local)}; batch image_ids: {image_ids}"
    else:
        where = "; ".join(
            f"rank {rank}: {_format_losses(losses)}, image_ids {ids}"
            for rank, (losses, ids) in enumerate(per_rank)
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
        image_ids=image_ids,
        per_rank=per_rank,
    )
