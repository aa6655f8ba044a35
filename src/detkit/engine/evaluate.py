"""COCO-style evaluation of a detection model over a data loader."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from detkit.distributed import is_main_process, unwrap_model
from detkit.engine._failures import check_images, forward_error
from detkit.engine.logger import MetricLogger
from detkit.engine.train import ScalarHook, move_to_device

__all__ = ["evaluate", "infer_iou_types"]


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
    evaluator: Any = None,
    iou_types: Sequence[str] | None = None,
    print_freq: int = 50,
    autocast_dtype: torch.dtype | None = None,
    num_threads: int | None = None,
    scalar_hook: ScalarHook | None = None,
    step: int = 0,
    progress: bool | None = None,
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
    length cannot dead-lock on its collectives.

    Args:
        model: a torchvision detection model (``model(images)`` returns one dict of
            ``boxes``/``labels``/``scores`` (+ ``masks``, ``keypoints``) per image).
        data_loader: yields ``(images, targets)`` batches; targets need ``image_id`` and
            the ground truth fields the evaluator reads.
        device: where the model is.
        evaluator: a :class:`detkit.evaluation.CocoEvaluator` (or an object with its
            ``reset``/``update``/``compute``/``summary`` interface); it is reset first.
            Default: a ``CocoEvaluator`` for ``iou_types``.
        iou_types: iou types of the default evaluator (default:
            :func:`infer_iou_types` of the model). Not together with ``evaluator``.
        print_freq: log a line every this many batches.
        autocast_dtype: run the model under ``torch.autocast`` with this dtype.
        num_threads: torch's CPU thread count during evaluation. Whether or not it is
            given, the count in force before the call is restored afterwards.
        scalar_hook: called on the main process as ``scalar_hook(tag, value, step)`` for
            every number of the metrics, with tags like ``"val/bbox/AP"``.
        step: the ``step`` passed to ``scalar_hook`` (e.g. the epoch).
        progress: progress bar (``None``: on a terminal, main process only).

    Returns:
        The evaluator's metrics: ``{"num_images": ..., "bbox": {"AP": ..., ...}, ...}``.

    Raises:
        ValueError: for both ``evaluator`` and ``iou_types``, or ``num_threads < 1``.
        detkit.types.InvalidTargetError: when the first batch's float images are not in
            ``0..1`` (see :func:`detkit.types.check_image_range`).

    An exception raised inside the model is raised again (chained, same type) with the
    batch's ``image_id`` values.

    Example:
        >>> import torch, torchvision
        >>> from detkit.data import collate_fn
        >>> model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        ...     weights=None, weights_backbone=None, num_classes=2, min_size=64, max_size=64)
        >>> samples = [(torch.rand(3, 64, 64), {"boxes": torch.tensor([[8.0, 8.0, 40.0, 56.0]]),
        ...             "labels": torch.tensor([1]), "image_id": i}) for i in range(2)]
        >>> loader = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate_fn)
        >>> metrics = evaluate(model, loader, "cpu", progress=False)
        >>> metrics["num_images"], "AP50" in metrics["bbox"]
        (2, True)
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
        evaluator.reset()
    model = unwrap_model(model)
    # Per module: a model may train with some parts in eval mode (frozen batch norm, say).
    modes = [(module, module.training) for module in model.modules()]
    threads = torch.get_num_threads()
    metric_logger = MetricLogger(progress=progress)
    cuda = device.type == "cuda"
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        model.eval()
        with torch.inference_mode():
            batches = metric_logger.log_every(data_loader, print_freq, "Test:")
            with contextlib.closing(batches):
                for index, (images, targets) in enumerate(batches):
                    images, _ = move_to_device(images, None, device)
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
                            outputs = model(images)
                    except Exception as error:  # name the batch's images
                        raise forward_error(
                            error, model, images, targets, training=False
                        ) from error
                    if cuda:
                        torch.cuda.synchronize(device)
                    model_time = time.perf_counter() - start
                    start = time.perf_counter()
                    evaluator.update(outputs, targets)
                    metric_logger.update(
                        model_time=model_time, evaluator_time=time.perf_counter() - start
                    )
            start = time.perf_counter()
            metrics = evaluator.compute()
            compute_time = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
        for module, training in modes:
            module.training = training
    metric_logger.log(
        "Averaged stats: model_time: %.4f s/batch  evaluator_time: %.4f s/batch  compute: %.3f s",
        metric_logger["model_time"].global_avg if "model_time" in metric_logger.meters else 0.0,
        metric_logger["evaluator_time"].global_avg
        if "evaluator_time" in metric_logger.meters
        else 0.0,
        compute_time,
    )
    if metric_logger.main_process:
        metric_logger.log("%s", evaluator.summary())
    if scalar_hook is not None and is_main_process():
        for tag, value in _flatten(metrics, "val"):
            scalar_hook(tag, value, step)
    return metrics
