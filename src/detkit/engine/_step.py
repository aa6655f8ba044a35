"""The optimizer step of :func:`detkit.engine.train_one_epoch`, and the options that shape it.

Kept apart from the loop so that the loop reads like the reference scripts': what happens
between ``loss.backward()`` and the next batch (warmup, the gradient scaler, clipping, the
non-finite gradient check, the scheduler) is one object with one ``step`` method, and which
batches make up each step's accumulation group is :func:`accumulation_group`'s to say.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from detkit.engine._failures import non_finite_gradient_error

_INTERVALS = ("iteration", "epoch")
_log = logging.getLogger("detkit.engine.train")


def warmup_factor_at(step: int, warmup_iters: int, warmup_factor: float = 1e-3) -> float:
    """The learning-rate multiplier of linear warmup at optimizer step ``step`` (0-based).

    It rises linearly from ``warmup_factor`` at step 0 to 1 at step ``warmup_iters`` and stays
    1 afterwards, as ``torch.optim.lr_scheduler.LinearLR(start_factor=warmup_factor,
    total_iters=warmup_iters)`` does in torchvision's reference scripts.

    >>> [round(warmup_factor_at(s, 4, 0.2), 2) for s in range(6)]
    [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    """
    if step >= warmup_iters:
        return 1.0
    return warmup_factor + (1.0 - warmup_factor) * step / warmup_iters


def warn_length(batches: int, num_batches: int | None, *, ended: bool) -> None:
    """Warn at the first batch beyond ``len(data_loader)``, or at the end when there were fewer."""
    if num_batches is None:
        return
    if ended and batches < num_batches:
        how = f"{batches} batches, fewer than"
    elif not ended and batches == num_batches + 1:
        how = "more than"
    else:
        return
    _log.warning(
        "data_loader yielded %s the %d batches its len() announces: accumulation groups, warmup, "
        "per-iteration schedules and scalar_hook steps were planned for those (further batches "
        "are grouped as for a loader without a length). An IterableDataset split between "
        "workers ends with a short batch per worker; one not split yields every sample once "
        "per worker (get_worker_info)",
        how,
        num_batches,
    )


def accumulation_group(
    iteration: int, accumulation_steps: int, num_batches: int | None
) -> tuple[int, bool]:
    """(batches in the accumulation group of ``iteration``, whether it is the group's last).

    A shorter last group counts its own batches, when the loader has a length. Batches beyond
    that length are grouped from there as for a loader without one.
    """
    if num_batches is not None and iteration >= num_batches:
        beyond = iteration - num_batches
        return accumulation_steps, beyond % accumulation_steps == accumulation_steps - 1
    start = iteration - iteration % accumulation_steps
    size = accumulation_steps
    if num_batches is not None:
        size = min(accumulation_steps, num_batches - start)
    return size, iteration - start == size - 1


@dataclass
class StepOptions:
    """The keyword options of ``train_one_epoch`` that shape a step, checked once.

    See :func:`detkit.engine.train_one_epoch` for each field. A ``scaler`` without an
    ``autocast_dtype`` means float16, as in the reference scripts.

    Raises:
        ValueError: naming the option that is out of range.
    """

    lr_scheduler: Any = None
    lr_scheduler_interval: str | None = None
    warmup_iters: int | None = None
    warmup_factor: float = 1e-3
    max_grad_norm: float | None = None
    accumulation_steps: int = 1
    scaler: torch.amp.GradScaler | None = None
    autocast_dtype: torch.dtype | None = None
    validate_targets: bool = False

    def __post_init__(self) -> None:
        steps = self.accumulation_steps
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"accumulation_steps must be an int >= 1, got {steps!r}")
        warmup = self.warmup_iters
        if warmup is not None and (not isinstance(warmup, int) or warmup < 0):
            raise ValueError(f"warmup_iters must be an int >= 0 or None, got {warmup!r}")
        if not 0.0 < self.warmup_factor <= 1.0:
            raise ValueError(f"warmup_factor must lie in (0, 1], got {self.warmup_factor}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(
                "ReduceLROnPlateau needs a validation metric: step it yourself after "
                "evaluate(), and pass lr_scheduler=None"
            )
        if self.lr_scheduler is not None and self.lr_scheduler_interval not in _INTERVALS:
            raise ValueError(
                "lr_scheduler_interval must say when lr_scheduler steps: 'iteration' (after "
                "every optimizer step) or 'epoch' (once, at the end); got "
                f"{self.lr_scheduler_interval!r}"
            )
        if self.scaler is not None and self.autocast_dtype is None:
            self.autocast_dtype = torch.float16
        if self.autocast_dtype == torch.float16 and self.scaler is None:
            _log.warning(
                "autocast_dtype=torch.float16 without a scaler: gradients below float16's "
                "smallest value (about 6e-8) become zero and those weights silently stop "
                "learning; pass scaler=torch.amp.GradScaler(device_type) (keep it for the "
                "whole run), or use torch.bfloat16"
            )


class OptimizerStep:
    """Applies the gradients of one accumulation group: the step's checks and its schedule.

    Per step, in this order: the gradient norms are computed (unscaled and clipped when
    ``max_grad_norm`` is set) for the caller to read with the losses; then :meth:`step`
    raises :class:`~detkit.engine.NonFiniteLossError` on a non-finite norm (without a
    scaler, which skips such steps itself), steps the optimizer with the warmup multiplier,
    zeroes the gradients and steps a per-iteration scheduler.

    Args:
        model: the model being trained (named in errors).
        optimizer: its optimizer.
        options: the checked options.
        epoch: the epoch's number.
        steps_per_epoch: optimizer steps in an epoch (``None``: the loader has no length).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        options: StepOptions,
        *,
        epoch: int,
        steps_per_epoch: int | None,
    ) -> None:
        self.model, self.optimizer, self.options, self.epoch = model, optimizer, options, epoch
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        warmup_iters = options.warmup_iters
        if warmup_iters is None:
            warmup_iters = min(1000, steps_per_epoch - 1) if steps_per_epoch else 1000
        self.warmup_iters = warmup_iters
        # Optimizer steps before this epoch, for warmup across epochs; unknown without a
        # length, in which case warmup can only happen in epoch 0.
        if steps_per_epoch is not None:
            self.first_step = epoch * steps_per_epoch
        else:
            self.first_step = 0 if epoch == 0 else warmup_iters
        self.steps_done = 0
        self.pending = 0  # batches whose gradients wait for the next step
        self.targets: list[Any] = []  # theirs, to name them in errors

    def accumulate(self, targets: Sequence[Any]) -> None:
        """Record a batch whose gradients the next step applies (its targets name it in errors)."""
        self.pending += 1
        self.targets += targets

    @property
    def factor(self) -> float:
        """The warmup multiplier of the next step."""
        return warmup_factor_at(
            self.first_step + self.steps_done, self.warmup_iters, self.options.warmup_factor
        )

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group that the next step applies."""
        return float(self.optimizer.param_groups[0]["lr"]) * self.factor

    def gradient_norms(self) -> list[torch.Tensor]:
        """Norms whose finiteness says whether the gradients are finite, still on the device.

        With clipping, the one total norm ``clip_grad_norm_`` computes (and logs); otherwise
        the per-tensor norms of one fused ``torch._foreach_norm``, which the caller reads
        with the losses, in one copy (stacking them into a total first would cost another
        kernel for nothing). Without clipping and with a scaler, none: the scaler finds
        non-finite gradients itself and skips the step.
        """
        scaler = self.options.scaler
        if self.options.max_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            return [torch.nn.utils.clip_grad_norm_(self.params, self.options.max_grad_norm)]
        if scaler is not None:
            return []
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return []
        first = grads[0]
        if all(g.device == first.device and g.dtype == first.dtype for g in grads):
            return list(torch._foreach_norm(grads))
        return [torch.nn.utils.get_total_norm(grads).to(first.device, torch.float32)]

    def step(
        self, norms: list[float], *, iteration: int, loss_dict: Mapping[str, torch.Tensor]
    ) -> None:
        """Check the gradient ``norms`` (read on the host), step, zero the gradients, schedule.

        Raises:
            NonFiniteLossError: for a non-finite norm without a scaler, before the step.
        """
        scaler = self.options.scaler
        if scaler is None and not all(map(math.isfinite, norms)):
            raise non_finite_gradient_error(
                self.model, self.epoch, iteration, loss_dict, self.targets, math.hypot(*norms)
            )
        # Warmup multiplies the rates around the step only: a scheduler keeps seeing and
        # setting the un-warmed rates, and checkpoints hold them.
        factor = self.factor
        saved = [group["lr"] for group in self.optimizer.param_groups]
        if factor != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * factor
        try:
            if scaler is not None:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
        finally:
            if factor != 1.0:
                for group, lr in zip(self.optimizer.param_groups, saved):
                    group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self._schedule("iteration")
        self.steps_done += 1
        self.pending = 0
        self.targets = []

    def _schedule(self, interval: str) -> None:
        scheduler = self.options.lr_scheduler
        if scheduler is not None and self.options.lr_scheduler_interval == interval:
            scheduler.step()

    def finish_epoch(self, *, iteration: int, loss_dict: Mapping[str, torch.Tensor]) -> None:
        """Step on gradients still waiting (a loader without length ends mid-group), then
        step a per-epoch scheduler."""
        if self.pending:
            norms = self.gradient_norms()
            self.step(
                torch.stack(norms).float().tolist() if norms else [],
                iteration=iteration,
                loss_dict=loss_dict,
            )
        self._schedule("epoch")
