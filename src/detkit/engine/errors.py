"""Exceptions raised by the training engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
