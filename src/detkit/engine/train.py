"""One training epoch of a torchvision detection model."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from detkit.distributed import is_main_process, reduce_dict
from detkit.engine._failures import (
    check_images,
    forward_error,
    non_finite_error,
    non_finite_gradient_error,
)
from detkit.engine.logger import MetricLogger, SmoothedValue
from detkit.types import validate_target

__all__ = ["move_to_device", "train_one_epoch", "warmup_factor_at"]

ScalarHook = Callable[[str, float, int], Any]
_INTERVALS = ("iteration", "epoch")


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


def move_to_device(
    images: Sequence[torch.Tensor],
    targets: Sequence[Mapping[str, Any]] | None,
    device: torch.device | str,
) -> tuple[list[torch.Tensor], list[dict[str, Any]] | None]:
    """Move a batch's images and every tensor of its targets to ``device``.

    Non-tensor values (such as an ``int`` ``image_id``) are kept as they are; the inputs are
    not modified. Copies are non-blocking, which overlaps them with compute when the data
    loader pins memory.

    >>> images, targets = move_to_device([torch.zeros(3, 4, 4)],
    ...                                  [{"boxes": torch.zeros(0, 4), "image_id": 7}], "cpu")
    >>> targets[0]["image_id"], targets[0]["boxes"].device.type
    (7, 'cpu')
    """
    moved_images = [image.to(device, non_blocking=True) for image in images]
    if targets is None:
        return moved_images, None
    moved_targets = [
        {
            key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in target.items()
        }
        for target in targets
    ]
    return moved_images, moved_targets


def _check_options(
    *,
    epoch: int,
    print_freq: int,
    lr_scheduler: Any,
    lr_scheduler_interval: str | None,
    warmup_iters: int | None,
    warmup_factor: float,
    max_grad_norm: float | None,
    accumulation_steps: int,
) -> None:
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
    if print_freq < 1:
        raise ValueError(f"print_freq must be >= 1, got {print_freq}")
    if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be an int >= 1, got {accumulation_steps!r}")
    if warmup_iters is not None and (not isinstance(warmup_iters, int) or warmup_iters < 0):
        raise ValueError(f"warmup_iters must be an int >= 0 or None, got {warmup_iters!r}")
    if not 0.0 < warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor must lie in (0, 1], got {warmup_factor}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    if lr_scheduler is not None:
        if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(
                "ReduceLROnPlateau needs a validation metric: step it yourself after "
                "evaluate(), and pass lr_scheduler=None"
            )
        if lr_scheduler_interval not in _INTERVALS:
            raise ValueError(
                "lr_scheduler_interval must say when lr_scheduler steps: 'iteration' (after "
                f"every optimizer step) or 'epoch' (once, at the end); got {lr_scheduler_interval!r}"
            )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Iterable[tuple[Sequence[torch.Tensor], Sequence[Mapping[str, Any]]]],
    device: torch.device | str,
    epoch: int,
    *,
    print_freq: int = 10,
    lr_scheduler: Any = None,
    lr_scheduler_interval: str | None = None,
    warmup_iters: int | None = None,
    warmup_factor: float = 1e-3,
    max_grad_norm: float | None = None,
    accumulation_steps: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    autocast_dtype: torch.dtype | None = None,
    scalar_hook: ScalarHook | None = None,
    validate_targets: bool = False,
    progress: bool | None = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``data_loader``; return the epoch's average losses.

    Per batch: images and every tensor of the targets go to ``device``; the model's loss
    dict is summed and back-propagated (under ``torch.autocast`` when asked); losses are
    averaged over processes for logging; a non-finite loss, or finite losses with a NaN or
    infinite gradient, raise :class:`~detkit.engine.NonFiniteLossError` *before* the optimizer
    steps; then the gradients may be clipped and the optimizer steps (every
    ``accumulation_steps`` batches). The gradient check is one fused norm over all gradients
    per optimizer step, read in the same device-to-host copy as the logged losses (the norm
    that clipping computes, when ``max_grad_norm`` is set).

    **Errors name the batch.** An exception raised inside the model's forward pass (such as
    torchvision's *"All bounding boxes should have positive height and width ... for target
    at index 1"*) is raised again, chained and of the same type, with the batch's
    ``image_id`` values and, where detkit can tell, the cause (*"model has 5 keypoints,
    targets have 17"*, a label beyond the model's classes, a degenerate box in target index
    1 = image_id 42). The first batch's float images are checked to lie in ``0..1``
    (:func:`detkit.types.check_image_range`): ``ToDtype(torch.float32)`` without
    ``scale=True`` gives 0..255, which trains silently badly.

    **Warmup** is the reference scripts' linear warmup, applied as a multiplier on each
    parameter group's learning rate at optimizer step ``epoch * steps_per_epoch + k``: from
    ``warmup_factor`` up to 1 over ``warmup_iters`` optimizer steps, by default
    ``min(1000, steps_per_epoch - 1)``, i.e. within the first epoch. The multiplier is applied
    only around ``optimizer.step()``, so it composes with any scheduler (which keeps seeing
    and setting the un-warmed rates) and checkpoints hold the un-warmed rates. Pass
    ``warmup_iters=0`` to turn it off.

    **Gradient accumulation** sums the gradients of ``accumulation_steps`` consecutive
    batches, each loss divided by the number of batches in its group (a shorter last group
    included, when the loader has a length), and steps once per group; under
    ``DistributedDataParallel`` the gradient all-reduce runs only on a group's last batch.

    **Mixed precision:** ``autocast_dtype=torch.float16`` with a
    ``torch.amp.GradScaler("cuda")`` on CUDA; ``torch.bfloat16`` needs no scaler and also
    works on the CPU. A ``scaler`` without ``autocast_dtype`` means float16 (as in the
    reference scripts). With a scaler, gradients are unscaled before clipping, and a step
    with non-finite gradients is skipped by the scaler instead of raising.

    Args:
        model: a torchvision detection model (or one with its interface: ``model(images,
            targets)`` returns a dict of 0-d losses in training mode), on ``device``,
            possibly wrapped in ``DistributedDataParallel``. Put in training mode here.
        optimizer: the optimizer of the model's parameters.
        data_loader: yields ``(images, targets)`` batches (see
            :func:`detkit.data.collate_fn`); images float ``Tensor[3, H, W]`` in 0..1.
        device: where the model is.
        epoch: the epoch's number, from 0 (for warmup and the log header).
        print_freq: log a line every this many batches.
        lr_scheduler: any ``torch.optim.lr_scheduler`` (not ``ReduceLROnPlateau``), stepped
            after every optimizer step or once at the end, as ``lr_scheduler_interval`` says.
        lr_scheduler_interval: ``"iteration"`` or ``"epoch"``; required with
            ``lr_scheduler`` (stepping a per-epoch schedule per iteration, or the reverse,
            silently ruins a run, so detkit does not guess).
        warmup_iters: optimizer steps of linear warmup (see above; ``None``: the default).
        warmup_factor: the learning-rate multiplier at the first step.
        max_grad_norm: clip the gradients' total L2 norm to this value (``None``: no
            clipping). Clipping or not, without a scaler a non-finite norm raises
            :class:`~detkit.engine.NonFiniteLossError`.
        accumulation_steps: batches per optimizer step.
        scaler: a ``torch.amp.GradScaler`` (keep one for the whole run and checkpoint it).
        autocast_dtype: dtype for ``torch.autocast`` (``None``: no autocast unless a scaler
            is given).
        scalar_hook: called on the main process as ``scalar_hook(tag, value, step)`` for the
            total loss, each loss component and the learning rate after every batch, with
            tags ``"train/<name>"`` and ``step = epoch * len(data_loader) + iteration`` (the
            iteration alone for a loader without a length);
            ``SummaryWriter(...).add_scalar`` of TensorBoard fits as it is.
        validate_targets: check every sample with :func:`detkit.types.validate_target`
            before the forward pass, so a bad target (degenerate, non-finite or
            out-of-image box, label 0, ...) raises an error naming its ``image_id`` instead of
            surfacing as a NaN loss, torchvision's "All bounding boxes should have positive
            height and width", or worse (torchvision's ROI pooling can crash the process on
            non-finite boxes). Costs a few tensor operations per image.
        progress: progress bar (``None``: on a terminal, main process only).

    Returns:
        ``{"loss": ..., "loss_classifier": ..., ...}``: each loss averaged over the epoch's
        batches (and over processes), as Python floats.

    Raises:
        NonFiniteLossError: when a loss is NaN or infinite, or the losses are finite but a
            gradient is not (without a scaler); the message names each loss's value and the
            ``image_id`` values of the batches the step would have applied, per process (and,
            for gradients, the first parameters affected).
        detkit.types.InvalidTargetError: with ``validate_targets``, for a bad target; for
            float images outside ``0..1`` in the first batch.
        ValueError: for an option out of range or a loader that yields no batch.
        TypeError: when the model does not return a dict of loss tensors.

    Example:
        >>> import torch, torchvision
        >>> from detkit.data import collate_fn
        >>> model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        ...     weights=None, weights_backbone=None, num_classes=2, min_size=64, max_size=64)
        >>> sample = (torch.rand(3, 64, 64), {"boxes": torch.tensor([[8.0, 8.0, 40.0, 56.0]]),
        ...           "labels": torch.tensor([1]), "image_id": 0})
        >>> loader = torch.utils.data.DataLoader([sample] * 2, batch_size=2,
        ...                                      collate_fn=collate_fn)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        >>> losses = train_one_epoch(model, optimizer, loader, "cpu", epoch=0, progress=False)
        >>> sorted(losses)
        ['loss', 'loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg']
    """
    _check_options(
        epoch=epoch,
        print_freq=print_freq,
        lr_scheduler=lr_scheduler,
        lr_scheduler_interval=lr_scheduler_interval,
        warmup_iters=warmup_iters,
        warmup_factor=warmup_factor,
        max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps,
    )
    device = torch.device(device)
    if scaler is not None and autocast_dtype is None:
        autocast_dtype = torch.float16
    try:
        num_batches: int | None = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = None
    steps_per_epoch = math.ceil(num_batches / accumulation_steps) if num_batches else None
    if warmup_iters is None:
        warmup_iters = min(1000, steps_per_epoch - 1) if steps_per_epoch else 1000
    # Optimizer steps before this epoch, for warmup across epochs; unknown without a length,
    # in which case warmup can only happen in epoch 0.
    if steps_per_epoch is not None:
        first_step = epoch * steps_per_epoch
    else:
        first_step = 0 if epoch == 0 else warmup_iters

    model.train()
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    main = is_main_process()
    hook = scalar_hook if main else None
    metric_logger = MetricLogger(progress=progress)
    metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    loss_names: list[str] = []
    optimizer.zero_grad(set_to_none=True)
    steps_done = 0
    pending = 0  # batches whose gradients wait for an optimizer step

    batches = metric_logger.log_every(data_loader, print_freq, header=f"Epoch: [{epoch}]")
    group_targets: list[Any] = []  # the targets whose gradients the next step applies
    with contextlib.closing(batches):
        for iteration, batch in enumerate(batches):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    "data_loader must yield (images, targets) pairs (use detkit.data.collate_fn); "
                    f"got a {type(batch).__name__}"
                )
            if validate_targets:
                for image, target in zip(batch[0], batch[1]):
                    validate_target(image, target)
            images, targets = move_to_device(batch[0], batch[1], device)
            if iteration == 0:
                check_images(images, batch[1])  # float images in 0..255 train silently badly
            group_start = iteration - iteration % accumulation_steps
            group_size = accumulation_steps
            if num_batches is not None:
                group_size = min(accumulation_steps, num_batches - group_start)
            last_in_group = iteration - group_start == group_size - 1
            group_targets += batch[1]
            sync = model.no_sync() if ddp and not last_in_group else contextlib.nullcontext()
            with sync:
                try:
                    with (
                        torch.autocast(device.type, dtype=autocast_dtype)
                        if autocast_dtype is not None
                        else contextlib.nullcontext()
                    ):
                        loss_dict = model(images, targets)
                except Exception as error:  # name the batch (and the cause, where detkit can tell)
                    raise forward_error(error, model, batch[0], batch[1]) from error
                if not isinstance(loss_dict, Mapping) or not loss_dict:
                    raise TypeError(
                        "model(images, targets) must return a non-empty dict of losses in training "
                        f"mode, got {type(loss_dict).__name__}: is it a detection model?"
                    )
                total = sum(loss_dict.values())
                backward_loss = total / group_size if group_size > 1 else total
                if scaler is not None:
                    scaler.scale(backward_loss).backward()
                else:
                    backward_loss.backward()
            pending += 1
            reduced = reduce_dict(loss_dict)
            names = list(reduced)
            norms = _grad_norms(params, optimizer, scaler, max_grad_norm) if last_in_group else []
            # One device-to-host copy per batch: logged values, loss and gradient checks.
            with torch.no_grad():
                values = torch.stack([*reduced.values(), *norms]).float().tolist()
            norm_values = values[len(names) :]
            values = values[: len(names)]
            loss_value = math.fsum(values)
            if not math.isfinite(loss_value):
                raise non_finite_error(epoch, iteration, loss_dict, batch[1], "non-finite loss")
            if not loss_names:
                loss_names = ["loss", *names]

            factor = warmup_factor_at(first_step + steps_done, warmup_iters, warmup_factor)
            lr = float(optimizer.param_groups[0]["lr"]) * factor
            if last_in_group:
                if scaler is None and not all(map(math.isfinite, norm_values)):
                    raise non_finite_gradient_error(
                        model, epoch, iteration, loss_dict, group_targets, math.hypot(*norm_values)
                    )
                _optimizer_step(optimizer, scaler, factor)
                optimizer.zero_grad(set_to_none=True)
                if lr_scheduler is not None and lr_scheduler_interval == "iteration":
                    lr_scheduler.step()
                steps_done += 1
                pending = 0
                group_targets = []
                if max_grad_norm is not None:
                    metric_logger.update(grad_norm=norm_values[0])

            scalars = dict(zip(names, values))
            metric_logger.update(loss=loss_value, **scalars, lr=lr)
            if hook is not None:
                step = epoch * (num_batches or 0) + iteration
                hook("train/loss", loss_value, step)
                for name, value in scalars.items():
                    hook(f"train/{name}", value, step)
                hook("train/lr", lr, step)

    if not loss_names:
        raise ValueError(
            "data_loader yielded no batch: is the dataset empty, or drop_last=True with fewer "
            "samples than batch_size?"
        )
    if pending:
        # A loader without a length ends mid-group: step on what was accumulated.
        norms = _grad_norms(params, optimizer, scaler, max_grad_norm)
        norm_values = torch.stack(norms).float().tolist() if norms else []
        if scaler is None and not all(map(math.isfinite, norm_values)):
            raise non_finite_gradient_error(
                model, epoch, iteration, loss_dict, group_targets, math.hypot(*norm_values)
            )
        factor = warmup_factor_at(first_step + steps_done, warmup_iters, warmup_factor)
        _optimizer_step(optimizer, scaler, factor)
        optimizer.zero_grad(set_to_none=True)
        if lr_scheduler is not None and lr_scheduler_interval == "iteration":
            lr_scheduler.step()
    if lr_scheduler is not None and lr_scheduler_interval == "epoch":
        lr_scheduler.step()
    return {name: metric_logger[name].global_avg for name in loss_names}


def _grad_norms(
    params: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    max_grad_norm: float | None,
) -> list[torch.Tensor]:
    """Norms whose finiteness says whether the gradients are finite, still on the device.

    With clipping, the one total norm ``clip_grad_norm_`` computes (and logs); otherwise the
    per-tensor norms of one fused ``torch._foreach_norm``, which the caller reads with the
    losses, in one copy (stacking them into a total first would cost another kernel for
    nothing). Without clipping and with a scaler, none: the scaler finds non-finite gradients
    itself and skips the step.
    """
    if max_grad_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        return [torch.nn.utils.clip_grad_norm_(params, max_grad_norm)]
    if scaler is not None:
        return []
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return []
    first = grads[0]
    if all(g.device == first.device and g.dtype == first.dtype for g in grads):
        return list(torch._foreach_norm(grads))
    return [torch.nn.utils.get_total_norm(grads).to(first.device, torch.float32)]


def _optimizer_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, factor: float
) -> None:
    """Step with every group's learning rate multiplied by ``factor``, then restore the rates."""
    saved = None
    if factor != 1.0:
        saved = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
    try:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    finally:
        if saved is not None:
            for group, lr in zip(optimizer.param_groups, saved):
                group["lr"] = lr
