"""COCO-style evaluation of a detection model over a data loader."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from detkit.distributed import all_gather, broadcast_buffers, is_main_process, unwrap_model
from detkit.engine._failures import check_images, forward_error
from detkit.engine._validation_loss import detections_and_losses
from detkit.engine.logger import MetricLogger
from detkit.engine.train import ScalarHook, move_to_device
from detkit.models import float32_decoding

_log = logging.getLogger("detkit.engine")

__all__ = ["Evaluator", "evaluate", "infer_iou_types"]


@runtime_checkable
class Evaluator(Protocol):
    """What :func:`evaluate` asks of an ``evaluator=``; :class:`detkit.evaluation.CocoEvaluator`
    is one. Under ``torch.distributed``, ``compute`` must gather every process's images (it is
    called on every process).

    >>> from detkit.evaluation import CocoEvaluator
    >>> isinstance(CocoEvaluator(["bbox"]), Evaluator)
    True
    """

    def reset(self) -> None:
        """Forget every image seen: :func:`evaluate` calls it first."""
        ...

    def update(
        self, predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        """Take one batch: the model's outputs and the batch's targets, in the same order."""
        ...

    def compute(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The metrics of every image seen, as data (``compute_kwargs`` are passed here)."""
        ...

    def summary(self) -> str:
        """The metrics as text, logged by :func:`evaluate` on the main process."""
        ...


def infer_iou_types(model: nn.Module) -> tuple[str, ...]:
    """The COCO iou types a detection model's predictions support.

    ``"bbox"`` always; ``"segm"`` for a model whose ROI heads predict masks (Mask R-CNN);
    ``"keypoints"`` for one whose ROI heads predict keypoints (Keypoint R-CNN). Wrapped
    models (``DistributedDataParallel``) are looked into.

    >>> import torchvision
    >>> model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
    ...     weights=None, weights_backbone=None, num_classes=2)
    >>> infer_iou_types(model)
    ('bbox',)
    """
    model = unwrap_model(model)
    roi_heads = getattr(model, "roi_heads", None)
    types = ["bbox"]
    if roi_heads is not None:
        if callable(getattr(roi_heads, "has_mask", None)) and roi_heads.has_mask():
            types.append("segm")
        if callable(getattr(roi_heads, "has_keypoint", None)) and roi_heads.has_keypoint():
            types.append("keypoints")
    return tuple(types)


def _flatten(metrics: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, float]]:
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}/{key}", float(value)


def evaluate(
    model: nn.Module,
    data_loader: Iterable[tuple[Sequence[torch.Tensor], Sequence[Mapping[str, Any]]]],
    device: torch.device | str,
    *,
    evaluator: Evaluator | None = None,
    iou_types: Sequence[str] | None = None,
    print_freq: int = 50,
    autocast_dtype: torch.dtype | None = None,
    num_threads: int | None = None,
    scalar_hook: ScalarHook | None = None,
    step: int = 0,
    progress: bool | None = None,
    losses: bool = False,
    compute_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``model`` over ``data_loader`` and return the COCO metrics of its predictions.

    The model runs in eval mode under ``torch.inference_mode`` (every submodule's previous
    mode is restored afterwards); each batch's predictions and targets go to the evaluator's ``update``, and
    its ``compute`` gives the result. Model and evaluator time are logged per batch and in
    total, with the evaluator's summary table.

    Under ``torch.distributed``, every process calls it with its own shard of the data
    (e.g. through ``DistributedSampler``); the evaluator gathers the predictions and drops
    images seen twice (the sampler's padding), and every process gets the same metrics.
    A ``DistributedDataParallel`` model is unwrapped for inference, so shards of unequal
    length cannot dead-lock on its collectives. Its buffers (batch norm statistics, which
    each process updated from its own batches) are first broadcast from rank 0
    (:func:`detkit.distributed.broadcast_buffers`): the metrics are exactly those of the
    model :func:`~detkit.engine.save_checkpoint` saves, evaluated in one process.

    With ``losses=True`` the loss dict of the model on the validation data is computed too,
    as training would compute it but with batch norm and dropout in eval mode and nothing
    updated. R-CNN models (Faster, Mask, Keypoint) run their backbone once per batch for both
    (only the proposal network and RoI heads run a second time, in training mode); other
    models take one extra forward pass. The sampling of anchors and proposals in the losses
    is seeded by each batch's image ids, so the numbers repeat from epoch to epoch and the
    global random state is untouched. Each batch's losses count once per image; under
    ``torch.distributed`` they are averaged over all processes' images (a sampler's padded
    duplicates count twice here: use :class:`detkit.data.InferenceSampler` for exact
    numbers).

    Args:
        model: a torchvision detection model (``model(images)`` returns one dict of
            ``boxes``/``labels``/``scores`` (+ ``masks``, ``keypoints``) per image).
        data_loader: yields ``(images, targets)`` batches; targets need ``image_id`` and
            the ground truth fields the evaluator reads.
        device: where the model is.
        evaluator: a :class:`detkit.evaluation.CocoEvaluator`, or any :class:`Evaluator`
            (``reset``/``update``/``compute``/``summary``); it is reset first.
            Default: a ``CocoEvaluator`` for ``iou_types``.
        iou_types: iou types of the default evaluator (default:
            :func:`infer_iou_types` of the model). Not together with ``evaluator``.
        print_freq: log a line every this many batches.
        autocast_dtype: run the model under ``torch.autocast`` with this dtype. The
            heads' outputs are decoded into boxes, masks and keypoints in float32
            (:func:`detkit.models.float32_decoding`): bfloat16 coordinates would fall on a
            grid of several pixels. A model of another layout whose boxes still come back
            in low precision gets a warning.
        num_threads: torch's CPU thread count during evaluation. Whether or not it is
            given, the count in force before the call is restored afterwards.
        scalar_hook: called on the main process as ``scalar_hook(tag, value, step)`` for
            every number of the metrics, with tags like ``"val/bbox/AP"``.
        step: the ``step`` passed to ``scalar_hook`` (e.g. the epoch).
        progress: progress bar (``None``: on a terminal, main process only).
        losses: also compute the model's losses against the targets (which then need the
            fields training needs: ``masks`` for Mask R-CNN, ``keypoints`` for Keypoint
            R-CNN). Costs one pass of the heads (R-CNN) or of the model (others) more.
        compute_kwargs: keyword arguments for the evaluator's ``compute``, e.g.
            ``{"confidence": 0.95}`` for bootstrap intervals of AP and AP50 over the images
            (:meth:`detkit.evaluation.CocoEvaluator.compute`; several times the cost of the
            plain computation). Default: none (no intervals).

    Returns:
        The evaluator's metrics: ``{"num_images": ..., "bbox": {"AP": ..., ...}, ...}``;
        with ``losses``, also ``"losses": {"loss": ..., "loss_classifier": ..., ...}``
        (per-image averages; ``"loss"`` is their sum, as in training's logs). With
        ``compute_kwargs={"confidence": ...}``, bbox and segm also hold ``"AP_interval"`` and
        ``"AP50_interval"`` (``(low, high)``). The evaluator (pass your own to keep it) still
        holds the images afterwards, for its ``operating_points`` or ``confusion_matrix``.

    Raises:
        ValueError: for both ``evaluator`` and ``iou_types``, or ``num_threads < 1``.
        TypeError: before any batch, for ``compute_kwargs`` the evaluator's ``compute``
            does not take (a misspelt name, say).
        detkit.types.InvalidTargetError: when the first batch's float images are not in
            ``0..1`` (see :func:`detkit.types.check_image_range`).

    An exception raised inside the model is raised again (chained, same type) with the
    batch's ``image_id`` values.

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
        >>> samples = [
        ...     (torch.rand(3, 64, 64), {"boxes": boxes, "labels": torch.tensor([1]),
        ...                              "image_id": i})
        ...     for i in range(2)
        ... ]
        >>> loader = torch.utils.data.DataLoader(
        ...     samples, batch_size=2, collate_fn=collate_fn
        ... )
        >>> metrics = evaluate(model, loader, "cpu", progress=False, losses=True)
        >>> metrics["num_images"], "AP50" in metrics["bbox"]
        (2, True)
        >>> list(metrics["losses"])
        ['loss', 'loss_classifier', 'loss_box_reg', 'loss_objectness',
         'loss_rpn_box_reg']

        With a 95% bootstrap interval of AP over the images:

        >>> metrics = evaluate(model, loader, "cpu", progress=False,
        ...                    compute_kwargs={"confidence": 0.95, "resamples": 20})
        >>> low, high = metrics["bbox"]["AP_interval"]
        >>> low <= high
        True
    """
    if evaluator is not None and iou_types is not None:
        raise ValueError("pass either evaluator or iou_types, not both (the evaluator has its own)")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    device = torch.device(device)
    if evaluator is None:
        from detkit.evaluation import CocoEvaluator

        evaluator = CocoEvaluator(tuple(iou_types) if iou_types else infer_iou_types(model))
    else:
        missing = [
            m
            for m in ("reset", "update", "compute", "summary")
            if not callable(getattr(evaluator, m, None))
        ]
        if missing:
            raise TypeError(
                f"evaluator: a {type(evaluator).__name__} has no {', '.join(missing)} method "
                "(detkit.engine.Evaluator lists what evaluate calls)"
            )
        evaluator.reset()
    _check_compute_kwargs(evaluator, compute_kwargs)
    model = unwrap_model(model)
    # Every process evaluates what rank 0 holds (and what save_checkpoint saves).
    broadcast_buffers(model)
    # Per module: a model may train with some parts in eval mode (frozen batch norm, say).
    modes = [(module, module.training) for module in model.modules()]
    threads = torch.get_num_threads()
    metric_logger = MetricLogger(progress=progress)
    loss_sums: dict[str, float] | None = {} if losses else None
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        model.eval()
        with torch.inference_mode():
            counted = _run(
                model,
                data_loader,
                device,
                evaluator,
                metric_logger,
                print_freq=print_freq,
                autocast_dtype=autocast_dtype,
                loss_sums=loss_sums,
            )
            start = time.perf_counter()
            metrics = evaluator.compute(**(compute_kwargs or {}))
            compute_time = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
        for module, training in modes:
            module.training = training
    if loss_sums is not None:
        metrics = {**metrics, "losses": _average_losses(loss_sums, counted)}
    metric_logger.log(
        "Averaged stats: model_time: %.4f s/batch  evaluator_time: %.4f s/batch  compute: %.3f s",
        metric_logger["model_time"].global_avg if "model_time" in metric_logger.meters else 0.0,
        metric_logger["evaluator_time"].global_avg
        if "evaluator_time" in metric_logger.meters
        else 0.0,
        compute_time,
    )
    if metric_logger.main_process:
        if loss_sums is not None:
            metric_logger.log(
                "Validation losses: %s",
                "  ".join(f"{k}: {v:.4f}" for k, v in metrics["losses"].items()),
            )
        metric_logger.log("%s", evaluator.summary())
    if scalar_hook is not None and is_main_process():
        for tag, value in _flatten(metrics, "val"):
            scalar_hook(tag, value, step)
    return metrics


def _check_compute_kwargs(evaluator: Evaluator, kwargs: Mapping[str, Any] | None) -> None:
    """Refuse, before any image is read, keyword arguments ``compute`` cannot take (a typo
    would otherwise surface after the whole data set has run through the model)."""
    if not kwargs:
        return
    try:
        inspect.signature(evaluator.compute).bind(**kwargs)
    except TypeError as error:
        raise TypeError(
            f"compute_kwargs: {type(evaluator).__name__}.compute() cannot take "
            f"{sorted(kwargs)}: {error}"
        ) from None
    except ValueError:  # no signature to read (a builtin): compute itself will tell
        return


def _run(
    model: nn.Module,
    data_loader: Iterable[tuple[Sequence[torch.Tensor], Sequence[Mapping[str, Any]]]],
    device: torch.device,
    evaluator: Evaluator,
    metric_logger: MetricLogger,
    *,
    print_freq: int,
    autocast_dtype: torch.dtype | None,
    loss_sums: dict[str, float] | None,
) -> int:
    """Feed every batch's predictions to ``evaluator``; add each loss times the batch's image
    count to ``loss_sums`` when it is given. Returns the number of images seen."""
    cuda = device.type == "cuda"
    counted = 0
    batches = metric_logger.log_every(data_loader, print_freq, "Test:")
    decoding = float32_decoding(model) if autocast_dtype is not None else contextlib.nullcontext()
    with contextlib.closing(batches), decoding:
        for index, (images, targets) in enumerate(batches):
            images, moved = move_to_device(
                images, targets if loss_sums is not None else None, device
            )
            if index == 0:
                check_images(images, targets)  # float images in 0..255, say
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            try:
                with (
                    torch.autocast(device.type, dtype=autocast_dtype)
                    if autocast_dtype is not None
                    else contextlib.nullcontext()
                ):
                    if moved is None:
                        outputs = model(images)
                    else:
                        outputs, loss_dict = detections_and_losses(model, images, moved)
            except Exception as error:  # name the batch's images
                raise forward_error(
                    error, model, images, targets, training=moved is not None
                ) from error
            if cuda:
                torch.cuda.synchronize(device)
            model_time = time.perf_counter() - start
            if index == 0 and autocast_dtype is not None:
                warn_low_precision(outputs)
            counted += len(images)
            if loss_sums is not None:
                values = {name: float(value) for name, value in loss_dict.items()}
                for name, value in values.items():
                    loss_sums[name] = loss_sums.get(name, 0.0) + value * len(images)
                metric_logger.update(loss=math.fsum(values.values()), **values)
            start = time.perf_counter()
            evaluator.update(outputs, targets)
            metric_logger.update(model_time=model_time, evaluator_time=time.perf_counter() - start)
    return counted


def warn_low_precision(outputs: Sequence[Mapping[str, Any]]) -> None:
    """A warning when autocast left the predicted boxes in float16 or bfloat16."""
    dtypes = {o["boxes"].dtype for o in outputs if isinstance(o.get("boxes"), torch.Tensor)}
    low = sorted(str(d) for d in dtypes & {torch.float16, torch.bfloat16})
    if low:
        _log.warning(
            "evaluate: the model returned %s boxes under autocast, decoded in low precision "
            "(bfloat16 keeps 8 significant bits: coordinates on a grid of several pixels), "
            "which lowers AP; detkit casts the outputs of torchvision's heads to float32, "
            "do the same for this model's last layers, or pass autocast_dtype=None",
            " and ".join(low),
        )


def _average_losses(sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Per-image averages of the losses over every process's images, ``loss`` (their sum) first.

    Gathered as Python numbers, so a process whose shard was empty (no loss names) takes part.
    """
    totals: dict[str, float] = {}
    images = 0
    for rank_sums, rank_count in all_gather((dict(sums), count)):
        images += rank_count
        for name, value in rank_sums.items():
            totals[name] = totals.get(name, 0.0) + value
    if images == 0:
        return {}
    averages = {name: value / images for name, value in totals.items()}
    return {"loss": math.fsum(averages.values()), **averages}
