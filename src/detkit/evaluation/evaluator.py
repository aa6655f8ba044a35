"""The COCO evaluator: model outputs in, pycocotools' exact numbers out, as plain data."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detkit.distributed import is_main_process
from detkit.evaluation import backends
from detkit.evaluation._analyses import (
    analysis_type,
    check_bootstrap,
    check_iou,
    matrix_from,
    points_from,
)
from detkit.evaluation._batch import InvertedBoxes
from detkit.evaluation._dicts import result_dicts
from detkit.evaluation._lane import BoxLane, full_tables
from detkit.evaluation._params import (
    LabelMap,
    build_params,
    category_list,
    iou_types_tuple,
    keypoint_sigmas,
)
from detkit.evaluation._prepare import Selection, on_main
from detkit.evaluation._stats import format_table
from detkit.evaluation._store import Block, Store, gather_to_main
from detkit.evaluation._table import Images
from detkit.evaluation.analysis import ConfusionMatrix, OperatingPoints
from detkit.evaluation.ground_truth import GroundTruthIndex
from detkit.files import write_json
from detkit.types import check_predictions, check_targets

__all__ = ["CocoEvaluator"]

logger = logging.getLogger(__name__)


class CocoEvaluator:
    """COCO detection metrics (bbox, segm, keypoints) from model outputs, returned as data.

    Feed it batches with :meth:`update`; :meth:`compute` returns pycocotools' statistics, equal
    to those of pycocotools' ``COCOeval`` on the same ground truth and detections whatever the
    backend. The ground truth is built from the targets seen in :meth:`update` (no pass over the
    dataset), or given up front with ``coco_gt``.

    Args:
        iou_types: any of ``"bbox"``, ``"segm"``, ``"keypoints"`` (a string or a sequence).
        coco_gt: the ground truth up front: a COCO json path, a pycocotools ``COCO`` object or a
            COCO dict; then targets only need ``image_id``. Its annotation ids are ignored
            (numbered from 1: pycocotools mis-scores id 0), a missing ``iscrowd`` is 0 and a
            missing ``area`` the box (or mask) area.
        label_to_category: ``{model label: dataset category id}``, applied to predictions (and
            to the targets' labels when no ``coco_gt`` is given).
        backend: ``"auto"`` (hotcoco when installed, else pycocotools) or a
            name from :data:`~detkit.evaluation.BACKENDS`.
        max_dets: detections per image for the recall statistics, e.g. ``(1, 10, 300)`` (one
            sequence for every iou type, or ``{iou_type: sequence}``); AP uses the largest.
            Default: pycocotools' ``(1, 10, 100)``, ``(20,)`` for keypoints.
        iou_thresholds: IoU (OKS) thresholds; default ``0.50:0.05:0.95``.
        area_ranges: ``{label: (min_area, max_area)}`` with an ``"all"`` entry; default
            pycocotools' all/small/medium/large (all/medium/large for keypoints). Labels other
            than those add ``AP_<label>`` / ``AR_<label>`` statistics.
        kpt_oks_sigmas: per-keypoint OKS sigmas; required when instances do not have COCO's
            17 keypoints.
        category_ids: evaluate only these dataset category ids.
        mask_threshold: probability above which a predicted mask pixel is set.
        verbose: let the backend print its progress, and log the summary after each
            :meth:`compute`.

    **Categories.** With ``coco_gt``, its categories; else those of ``label_to_category``'s
    values, else the categories of the ground truth seen. Detections of other categories cannot
    match anything and are left out (as pycocotools does when its category ids come from the
    ground truth). **Repeated images:** an image id updated again with identical ground truth
    and predictions is skipped; with different content it raises :class:`ValueError`. Under
    ``torch.distributed`` the copies that ``DistributedSampler`` pads in count once (the first
    rank's).

    >>> import torch
    >>> target = {"boxes": torch.tensor([[2.0, 2.0, 12.0, 10.0]]), "labels": torch.tensor([1]),
    ...           "image_id": 1}
    >>> prediction = {"boxes": torch.tensor([[2.0, 2.0, 12.0, 10.0]]),
    ...               "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    >>> evaluator = CocoEvaluator("bbox")
    >>> evaluator.update([prediction], [target])
    >>> metrics = evaluator.compute()
    >>> metrics["num_images"], round(metrics["bbox"]["AP"], 6), list(metrics["bbox"]["per_class_AP"])
    (1, 1.0, [1])
    >>> print(evaluator.summary().splitlines()[1])
     Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000
    """

    def __init__(
        self,
        iou_types: str | Sequence[str] = ("bbox",),
        *,
        coco_gt: Any = None,
        label_to_category: Mapping[int, int] | None = None,
        backend: str = "auto",
        max_dets: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        iou_thresholds: Sequence[float] | None = None,
        area_ranges: Mapping[str, tuple[float, float]] | None = None,
        kpt_oks_sigmas: Sequence[float] | None = None,
        category_ids: Sequence[int] | None = None,
        mask_threshold: float = 0.5,
        verbose: bool = False,
    ):
        self.iou_types = iou_types_tuple(iou_types)
        self.backend = backends.resolve_backend(backend)
        self.verbose = bool(verbose)
        self._labels = LabelMap(label_to_category)
        self._gt_index = None if coco_gt is None else GroundTruthIndex(coco_gt)
        self._params = {
            t: build_params(
                t, max_dets=max_dets, iou_thresholds=iou_thresholds, area_ranges=area_ranges
            )
            for t in self.iou_types
        }
        self._sigmas = keypoint_sigmas(kpt_oks_sigmas)
        self._selection = Selection(
            params=self._params,
            labels=self._labels,
            gt_index=self._gt_index,
            category_ids=category_list(category_ids),
            sigmas=self._sigmas,
        )
        if not isinstance(mask_threshold, (int, float)) or not 0 <= mask_threshold < 1:
            raise ValueError(f"mask_threshold must be in [0, 1), got {mask_threshold!r}")
        self._mask_threshold = float(mask_threshold)
        self._store = Store()
        self._num_keypoints: int | None = None
        self._last: dict | None = None
        self._inverted = InvertedBoxes()
        self._lane = BoxLane(
            self._labels, self._store, self._inverted, with_targets=self._gt_index is None
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(iou_types={self.iou_types!r}, backend={self.backend!r}, "
            f"num_images={self.num_images})"
        )

    @property
    def num_images(self) -> int:
        """Distinct images updated in this process so far."""
        return self._store.num_images + len(self._lane)

    def reset(self) -> None:
        """Forget every image, ground truth and prediction seen so far."""
        self._store.reset()
        self._num_keypoints = None
        self._last = None
        self._inverted = InvertedBoxes()
        self._lane = BoxLane(
            self._labels, self._store, self._inverted, with_targets=self._gt_index is None
        )

    def update(self, predictions: Sequence[Mapping[str, Any]], targets: Sequence[Any]) -> None:
        """Add one batch.

        Args:
            predictions: torchvision model outputs in eval mode, one dict per image, tensors on
                any device: ``boxes`` ``Tensor[N, 4]`` XYXY, ``scores`` ``Tensor[N]``, ``labels``
                ``Tensor[N]``; ``masks`` ``Tensor[N, 1, H, W]`` for segm (probabilities, or
                integer / boolean masks); ``keypoints`` ``Tensor[N, K, 3]`` for keypoints.
            targets: the batch's targets, aligned with ``predictions``: dicts in the target
                contract (:mod:`detkit.types`), or with ``coco_gt`` dicts with just ``image_id``
                (an int or 0-d tensor, which also works alone in place of the dict).

        Raises:
            ValueError: naming the image, for misaligned or malformed inputs, missing fields
                (``masks`` for segm, ``keypoints`` for keypoints), NaN or infinite values,
                ground-truth boxes with ``x2 < x1`` or ``y2 < y1`` (XYWH boxes, say; such
                predicted boxes count as false positives, and :meth:`compute` logs a
                warning), negative areas, mask logits or 0..255 values instead of
                probabilities, labels absent from ``label_to_category``, an image id absent
                from ``coco_gt`` or a target whose image size differs from it (a resized
                image), masks whose size differs from the image's, or an image id already
                seen with other content.
        """
        if isinstance(predictions, Mapping) or isinstance(targets, Mapping):
            raise TypeError(
                "predictions and targets must be sequences aligned by position (one model "
                "output and one target per image), not dicts keyed by image id"
            )
        if len(predictions) != len(targets):
            raise ValueError(
                f"got {len(predictions)} predictions but {len(targets)} targets; they must align"
            )
        ids = [self._selection.image_id(target, n) for n, target in enumerate(targets)]
        types = set(self.iou_types)
        # The batch's shapes, checked once, first; the values are checked as columns.
        if self._gt_index is None:
            check_targets(targets, ids, iou_types=types)
        check_predictions(predictions, ids, iou_types=types)
        known_sizes = None if self._gt_index is None else self._gt_index.image_sizes(targets, ids)
        if self.iou_types == ("bbox",) and self._lane.offer(predictions, targets, ids, known_sizes):
            return
        self._flush()  # the batches before this one first
        gt, dt, sizes = full_tables(
            predictions, targets, ids, types, known_sizes, self._labels, self._mask_threshold
        )
        if "keypoints" in self.iou_types:
            self._num_keypoints = self._selection.check_keypoints(
                gt[0], dt[0], ids, self._num_keypoints
            )
        images = Images(np.asarray(ids, dtype=np.int64), sizes[:, 0].copy(), sizes[:, 1].copy())
        skipped = self._store.add(Block(images, gt[0], dt[0], gt[1], dt[1]))
        if "bbox" in types:  # counted once the batch is taken
            self._inverted.add(dt[0], dt[1], ids)
        if skipped:
            logger.debug("skipped %d images already updated with identical content", skipped)

    def _flush(self) -> Store:
        """The store, with the fast lane's pending batches in it."""
        self._lane.flush()
        return self._store

    def compute(
        self, *, confidence: float | None = None, resamples: int = 200, seed: int = 0
    ) -> dict[str, Any]:
        """The metrics of every image updated so far (on every process).

        Under ``torch.distributed`` every rank must call it: each rank's images are
        de-duplicated against lower ranks, gathered to rank 0, evaluated there and the
        result sent to every rank.

        Args:
            confidence: also give bootstrap confidence intervals of ``AP`` and ``AP50`` (bbox
                and segm) at this level, e.g. ``0.95``: the images are resampled with
                replacement and each resample's AP re-accumulated from one matching. The
                interval is the central range of the resampled APs, placed so that their
                median falls on the measured AP (the evaluation guide, "How sure is the
                number", says why).
            resamples: how many resamples (at least 10).
            seed: the resampling's seed: the same seed gives the same interval.

        Returns:
            ``{"num_images": int, <iou_type>: {"AP": float, ..., "per_class_AP": {category_id:
            float}}}`` with pycocotools' statistics (``AP, AP50, AP75, APs, APm, APl, AR1, AR10,
            AR100, ARs, ARm, ARl``; for keypoints ``AP, AP50, AP75, APm, APl, AR, AR50, AR75,
            ARm, ARl``), ``-1.0`` where undefined (no ground truth in range). With
            ``confidence``, bbox and segm also hold ``"AP_interval"`` and ``"AP50_interval"``:
            ``(low, high)``, ``(-1.0, -1.0)`` when undefined.
        """
        bootstrap = check_bootstrap(confidence, resamples, seed)
        self._flush()
        self._inverted.warn(logger)
        outcome = self._on_main(
            lambda block: self._selection.evaluate(
                block,
                backend=self.backend,
                verbose=self.verbose,
                num_keypoints=self._num_keypoints,
                bootstrap=bootstrap,
            )
        )
        self._last = outcome
        if self.verbose and is_main_process():
            logger.info("COCO evaluation (%s backend):\n%s", self.backend, self.summary())
        return outcome

    def _on_main(self, work: Callable[[Block | None], Any]) -> Any:
        return on_main(self._flush().merged(), work)

    def operating_points(self, iou_type: str | None = None, *, iou: float = 0.5) -> OperatingPoints:
        """Per class: the precision-recall curve at IoU ``iou`` and the score threshold that
        maximises F1, with precision, recall and F1 there, AP at ``iou`` and COCO's AR.

        The curves are pycocotools' (same matching: crowd regions, area range ``"all"``, the
        largest ``max_dets``). Collective under ``torch.distributed``, like :meth:`compute`.

        Args:
            iou_type: ``"bbox"`` or ``"segm"`` (default: the first of ``iou_types``).
            iou: the IoU a detection needs to count as found, in ``(0, 1]``.

        Returns:
            :class:`~detkit.evaluation.OperatingPoints` (``points.thresholds()`` gives
            ``{category_id: score}`` for :meth:`confusion_matrix` or a predictor).

        >>> import torch
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
        >>> target = {"boxes": boxes, "labels": torch.tensor([1, 1]), "image_id": 1}
        >>> found = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
        >>> prediction = {"boxes": found,
        ...               "scores": torch.tensor([0.9, 0.8]),
        ...               "labels": torch.tensor([1, 1])}
        >>> evaluator = CocoEvaluator("bbox")
        >>> evaluator.update([prediction], [target])
        >>> points = evaluator.operating_points(iou=0.5)
        >>> points.thresholds(), points.precision_at.tolist()
        ({1: 0.8999999761581421}, [1.0])
        >>> points.recall_at.tolist(), points.f1.round(3).tolist()
        ([0.5], [0.667])
        """
        iou_type = analysis_type(self._result_type(iou_type))
        iou = check_iou(iou)

        return self._on_main(
            lambda block: points_from(
                *self._selection.prepare(block, iou_type, self._num_keypoints), iou=iou
            )
        )

    def confusion_matrix(
        self, iou_type: str | None = None, *, thresholds: Any = None, iou: float = 0.5
    ) -> ConfusionMatrix:
        """Ground-truth classes against predicted classes (and the background) for the
        detections kept at per-class score thresholds (see
        :class:`~detkit.evaluation.ConfusionMatrix`). Collective under ``torch.distributed``.

        Args:
            iou_type: ``"bbox"`` or ``"segm"`` (default: the first of ``iou_types``).
            thresholds: a score for every class, ``{category_id: score}`` (a class left out
                keeps nothing), a sequence aligned with the categories, or
                :class:`~detkit.evaluation.OperatingPoints`; default: the F1-best thresholds
                of :meth:`operating_points` at ``iou``.
            iou: the IoU a detection needs with an instance, in ``(0, 1]``.

        >>> import torch
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
        >>> target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "image_id": 1}
        >>> prediction = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8]),
        ...               "labels": torch.tensor([1, 1])}
        >>> evaluator = CocoEvaluator("bbox")
        >>> evaluator.update([prediction], [target])
        >>> evaluator.confusion_matrix(thresholds=0.5).matrix.tolist()
        [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
        """
        iou_type = analysis_type(self._result_type(iou_type))
        iou = check_iou(iou)
        if thresholds is None:
            thresholds = self.operating_points(iou_type, iou=iou)

        return self._on_main(
            lambda block: matrix_from(
                *self._selection.prepare(block, iou_type, self._num_keypoints),
                iou=iou,
                thresholds=thresholds,
            )
        )

    def summary(self) -> str:
        """pycocotools' table of the last :meth:`compute`, one block per iou type.

        Raises:
            RuntimeError: when :meth:`compute` has not been called since the last reset.
        """
        if self._last is None:
            raise RuntimeError("call compute() before summary()")
        blocks = [
            f"IoU metric: {t}\n{format_table(self._params[t], self._last[t])}"
            for t in self.iou_types
        ]
        return "\n".join(blocks)

    def results(self, iou_type: str | None = None) -> list[dict]:
        """This process's predictions as COCO result dicts (what a results json holds).

        Args:
            iou_type: which payload (default: the first of ``iou_types``).
        """
        return _result_rows(self._flush().merged(), self._result_type(iou_type))

    def write_results(self, path: str | os.PathLike, iou_type: str | None = None) -> Path | None:
        """Write every process's predictions as a COCO results json (collective).

        Under ``torch.distributed`` every rank must call it; rank 0 writes the file.

        Returns:
            the path on the main process, ``None`` elsewhere.
        """
        iou_type = self._result_type(iou_type)
        block = gather_to_main(self._flush().merged())
        if not is_main_process():
            return None
        return write_json(path, _result_rows(block, iou_type))

    def _result_type(self, iou_type: str | None) -> str:
        iou_type = self.iou_types[0] if iou_type is None else iou_type
        if iou_type not in self.iou_types:
            raise ValueError(
                f"iou_type {iou_type!r} is not among this evaluator's {self.iou_types}"
            )
        return iou_type


def _result_rows(block: Block | None, iou_type: str) -> list[dict]:
    return [] if block is None else result_dicts(block.dt, iou_type)
