"""One training epoch of a torchvision detection model.

:func:`train_one_epoch` is the reference scripts' loop, one named step per line: prepare the
batch, forward and loss (:func:`_forward`), backward with accumulation (:func:`_backward`),
one read of the values, the optimizer step (warmup, gradient scaler, clipping, non-finite
checks and scheduler: :class:`~detkit.engine._step.OptimizerStep`), and reporting
(:class:`_EpochReport`: the log lines, the meters and ``scalar_hook``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from detkit.distributed import is_main_process, reduce_dict
from detkit.engine._failures import (
    check_images,
    check_keypoint_counts,
    forward_error,
    non_finite_error,
    predicted_counts,
)
from detkit.engine._step import (
    OptimizerStep,
    StepOptions,
    accumulation_group,
    warmup_factor_at,
    warn_length,
)
from detkit.engine.logger import MetricLogger, SmoothedValue
from detkit.tv_tensors import to_xyxy
from detkit.types import validate_target

__all__ = ["move_to_device", "train_one_epoch", "warmup_factor_at"]

ScalarHook = Callable[[str, float, int], Any]


def move_to_device(
    images: Sequence[torch.Tensor],
    targets: Sequence[Mapping[str, Any]] | None,
    device: torch.device | str,
) -> tuple[list[torch.Tensor], list[dict[str, Any]] | None]:
    """Move a batch's images and every tensor of its targets to ``device``.

    Non-tensor values (such as an ``int`` ``image_id``) are kept as they are; ``boxes``
    carried as a :class:`~torchvision.tv_tensors.BoundingBoxes` in another format than XYXY
    (``XYWH``, ``CXCYWH``) are converted to XYXY, which torchvision's models read whatever
    the format says (:func:`detkit.tv_tensors.to_xyxy`). The inputs are not modified. Copies
    are non-blocking, which overlaps them with compute when the data loader pins memory.

    >>> targets = [{"boxes": torch.zeros(0, 4), "image_id": 7}]
    >>> images, targets = move_to_device([torch.zeros(3, 4, 4)], targets, "cpu")
    >>> targets[0]["image_id"], targets[0]["boxes"].device.type
    (7, 'cpu')
    """
    moved_images = [image.to(device, non_blocking=True) for image in images]
    if targets is None:
        return moved_images, None
    moved_targets = []
    for target in targets:
        moved = {
            key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in target.items()
        }
        if isinstance(moved.get("boxes"), torch.Tensor):
            moved["boxes"] = to_xyxy(moved["boxes"])
        moved_targets.append(moved)
    return moved_images, moved_targets


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

    Each batch, as in the reference scripts: move it to ``device``; forward and sum the
    losses (under ``torch.autocast`` when asked); back-propagate; every
    ``accumulation_steps`` batches, check the gradients, clip them (when asked) and step the
    optimizer with warmup; report. A NaN or infinite loss, or finite losses with a NaN or
    infinite gradient, raise :class:`~detkit.engine.NonFiniteLossError` *before* the
    optimizer steps. An error raised inside the model (such as torchvision's *"All bounding
    boxes should have positive height and width"*) is raised again, of the same type, naming
    the batch's ``image_id`` values and, where detkit can tell, the cause (a keypoint count,
    a label beyond the model's classes, a degenerate box). The first batch's float images
    must lie in ``0..1`` (:func:`detkit.types.check_image_range`).

    A log line every ``print_freq`` batches shows the losses and the learning rate that the
    batch's optimizer step applied; the lines are printed even without any :mod:`logging`
    configuration, and :func:`detkit.set_verbosity() <detkit.console.set_verbosity>` silences them. The training guide
    (``docs/guides/training.rst``) covers warmup, accumulation, mixed precision and
    multi-GPU runs.

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
        warmup_iters: optimizer steps of the reference scripts' linear warmup, counted from
            epoch 0's first step (``None``: ``min(1000, steps_per_epoch - 1)``, within the
            first epoch; ``0``: none). The multiplier is applied around ``optimizer.step()``
            only, so schedulers and checkpoints keep the un-warmed rates.
        warmup_factor: the learning-rate multiplier at the first step.
        max_grad_norm: clip the gradients' total L2 norm to this value (``None``: no
            clipping). Clipping or not, without a scaler a non-finite norm raises
            :class:`~detkit.engine.NonFiniteLossError`.
        accumulation_steps: batches per optimizer step: their gradients are summed, each
            loss divided by the number of batches in its group (a shorter last group
            included, when the loader has a length; batches beyond ``len(data_loader)`` are
            grouped as for a loader without one, with a warning); under
            ``DistributedDataParallel`` the all-reduce runs on a group's last batch only.
        scaler: a ``torch.amp.GradScaler`` (keep one for the whole run and checkpoint it).
            Gradients are unscaled before clipping, and a step with non-finite gradients is
            skipped by the scaler instead of raising.
        autocast_dtype: dtype for ``torch.autocast``: ``torch.float16`` with a scaler on
            CUDA (without one, a warning is logged: small gradients underflow to zero),
            ``torch.bfloat16`` (no scaler; CPU too). ``None``: none, or float16 with a
            scaler, as in the reference scripts.
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
        progress: a tqdm progress bar, main process only (``None``: on a terminal or in a
            notebook, while detkit's ``INFO`` lines are enabled; none without tqdm).

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
        ValueError: for an option out of range, a loader that yields no batch, or targets
            whose keypoints per instance are not the number the model predicts (fewer would
            train on other keypoints' heatmaps without an error in torchvision).
        TypeError: when the model does not return a dict of loss tensors.

    Example:
        >>> import torch, torchvision
        >>> from detkit.data import collate_fn
        >>> from torchvision.models.detection import (
        ...     fasterrcnn_mobilenet_v3_large_320_fpn as detector,
        ... )
        >>> model = detector(
        ...     weights=None, weights_backbone=None, num_classes=2,
        ...     min_size=64, max_size=64,
        ... )
        >>> boxes = torch.tensor([[8.0, 8.0, 40.0, 56.0]])
        >>> target = {"boxes": boxes, "labels": torch.tensor([1]), "image_id": 0}
        >>> samples = [(torch.rand(3, 64, 64), target)] * 2
        >>> loader = torch.utils.data.DataLoader(
        ...     samples, batch_size=2, collate_fn=collate_fn
        ... )
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        >>> losses = train_one_epoch(
        ...     model, optimizer, loader, "cpu", epoch=0, progress=False
        ... )
        >>> sorted(losses)
        ['loss', 'loss_box_reg', 'loss_classifier', 'loss_objectness',
         'loss_rpn_box_reg']
    """
    options = StepOptions(
        lr_scheduler=lr_scheduler,
        lr_scheduler_interval=lr_scheduler_interval,
        warmup_iters=warmup_iters,
        warmup_factor=warmup_factor,
        max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps,
        scaler=scaler,
        autocast_dtype=autocast_dtype,
        validate_targets=validate_targets,
    )
    device = torch.device(device)
    try:
        num_batches: int | None = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = None
    report = _EpochReport(epoch, num_batches, print_freq, scalar_hook, progress)
    steps_per_epoch = math.ceil(num_batches / accumulation_steps) if num_batches else None
    optimizer_step = OptimizerStep(
        model, optimizer, options, epoch=epoch, steps_per_epoch=steps_per_epoch
    )
    model.train()
    optimizer.zero_grad(set_to_none=True)
    keypoints = predicted_counts(model)[1]

    batches = report.log_every(data_loader)
    with contextlib.closing(batches):
        for iteration, batch in enumerate(batches):
            warn_length(iteration + 1, num_batches, ended=False)
            # The data: to change it, wrap the data loader (or its collate_fn).
            images, targets = _prepare(batch, device, options.validate_targets, iteration == 0)
            check_keypoint_counts(keypoints, targets)  # fewer would train on the wrong ones
            group_size, last_in_group = accumulation_group(
                iteration, accumulation_steps, num_batches
            )
            optimizer_step.accumulate(batch[1])
            # Under DistributedDataParallel, gradients are all-reduced on a group's last batch.
            with _no_sync(model, skip=not last_in_group):
                # The losses: to change them, wrap the model (it returns the dict of losses).
                loss_dict = _forward(model, batch, images, targets, device, options.autocast_dtype)
                _backward(loss_dict, group_size, options.scaler)
            # One device-to-host copy per batch: the losses (averaged over processes) and,
            # before a step, the gradient norms that say whether the gradients are finite.
            reduced = reduce_dict(loss_dict)
            norms = optimizer_step.gradient_norms() if last_in_group else []
            losses, norm_values = _read(reduced, norms)
            if not math.isfinite(losses["loss"]):
                raise non_finite_error(epoch, iteration, loss_dict, batch[1], "non-finite loss")
            lr = optimizer_step.lr  # the rate this group's step applies, warmup included
            if last_in_group:
                # The update: to change clipping, scaling or the schedule, see OptimizerStep.
                optimizer_step.step(norm_values, iteration=iteration, loss_dict=loss_dict)
            clipped = last_in_group and max_grad_norm is not None
            report.update(iteration, losses, lr, norm_values[0] if clipped else None)

    if not report.loss_names:
        raise ValueError(
            "data_loader yielded no batch: is the dataset empty, or drop_last=True with fewer "
            "samples than batch_size?"
        )
    warn_length(iteration + 1, num_batches, ended=True)
    optimizer_step.finish_epoch(iteration=iteration, loss_dict=loss_dict)
    return report.averages()


def _prepare(
    batch: Any, device: torch.device, validate: bool, first: bool
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Check a batch's form (and targets, when asked), move it to ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            "data_loader must yield (images, targets) pairs (use detkit.data.collate_fn); "
            f"got a {type(batch).__name__}"
        )
    if validate:
        for image, target in zip(batch[0], batch[1]):
            validate_target(image, target)
    images, targets = move_to_device(batch[0], batch[1], device)
    if first:
        check_images(images, batch[1])  # float images in 0..255 train silently badly
    return images, targets  # type: ignore[return-value]


def _no_sync(model: nn.Module, *, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """DistributedDataParallel's ``no_sync()`` when ``skip``: no all-reduce in backward."""
    if skip and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _forward(
    model: nn.Module,
    batch: Sequence[Any],
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> Mapping[str, torch.Tensor]:
    """The model's dict of losses on ``batch`` (moved: ``images``, ``targets``), under
    autocast when asked; errors name the batch."""
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
    return loss_dict


def _backward(
    loss_dict: Mapping[str, torch.Tensor], group_size: int, scaler: torch.amp.GradScaler | None
) -> None:
    """Back-propagate the summed losses, divided by the accumulation group's size."""
    total = cast(torch.Tensor, sum(loss_dict.values()))  # the reference's sum, bit for bit
    if group_size > 1:
        total = total / group_size
    (scaler.scale(total) if scaler is not None else total).backward()


def _read(
    losses: Mapping[str, torch.Tensor], norms: list[torch.Tensor]
) -> tuple[dict[str, float], list[float]]:
    """``({"loss": total, **losses}, norms)`` as floats, in one device-to-host copy."""
    with torch.no_grad():
        values = torch.stack([*losses.values(), *norms]).float().tolist()
    count = len(losses)
    return {"loss": math.fsum(values[:count]), **dict(zip(losses, values))}, values[count:]


class _EpochReport:
    """The epoch's log lines and meters (main process), and calls of ``scalar_hook``."""

    def __init__(
        self,
        epoch: int,
        num_batches: int | None,
        print_freq: int,
        scalar_hook: ScalarHook | None,
        progress: bool | None,
    ) -> None:
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        if print_freq < 1:
            raise ValueError(f"print_freq must be >= 1, got {print_freq}")
        self.epoch, self.num_batches, self.print_freq = epoch, num_batches, print_freq
        self.hook = scalar_hook if is_main_process() else None
        self.metric_logger = MetricLogger(progress=progress)
        self.metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
        self.loss_names: list[str] = []

    def log_every(self, data_loader: Iterable[Any]) -> Generator[Any, None, None]:
        """The loader's batches, with a log line every ``print_freq`` (and a progress bar)."""
        return self.metric_logger.log_every(data_loader, self.print_freq, f"Epoch: [{self.epoch}]")

    def update(
        self, iteration: int, losses: dict[str, float], lr: float, grad_norm: float | None
    ) -> None:
        """Record a batch's losses, the learning rate its step used and the clipped norm."""
        if grad_norm is not None:
            self.metric_logger.update(grad_norm=grad_norm)
        self.metric_logger.update(**losses, lr=lr)
        if not self.loss_names:
            self.loss_names = list(losses)
        if self.hook is not None:
            step = self.epoch * (self.num_batches or 0) + iteration
            for name, value in losses.items():
                self.hook(f"train/{name}", value, step)
            self.hook("train/lr", lr, step)

    def averages(self) -> dict[str, float]:
        """Each loss averaged over the epoch's batches."""
        return {name: self.metric_logger[name].global_avg for name in self.loss_names}
