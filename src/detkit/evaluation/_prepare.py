"""From the stored images to what a backend takes: one iou type's images, ground truth,
detections and parameters, and the statistics computed from them.

:class:`Selection` holds what the evaluator's options fix (parameters, categories, a ground
truth given up front, OKS sigmas); the evaluator keeps the images, this decides what of them
is evaluated and how.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.distributed as dist

from detkit.distributed import get_world_size, is_main_process
from detkit.evaluation import backends
from detkit.evaluation._analyses import ap_intervals, empty_columns, undefined_intervals
from detkit.evaluation._matching import MATCHED_IOU_TYPES, match
from detkit.evaluation._params import EvalParams, LabelMap, check_sigmas
from detkit.evaluation._stats import undefined_stats
from detkit.evaluation._store import Block, gather_to_main
from detkit.evaluation._table import Annotations
from detkit.evaluation.ground_truth import GroundTruthIndex
from detkit.types import normalize_image_id

# The evaluator's log: what is left out of an evaluation is the evaluator's to say.
logger = logging.getLogger("detkit.evaluation.evaluator")


def on_main(local: Block | None, work: Callable[[Block | None], Any]) -> Any:
    """Gather every process's images to rank 0, run ``work`` there, send the result (or
    the exception) to every rank; collective under torch.distributed."""
    block = gather_to_main(local)
    outcome: Any = None
    if is_main_process():
        try:
            with backends.garbage_collection_paused():
                outcome = work(block)
        except Exception as error:  # sent to every rank, raised there too
            outcome = error
    if get_world_size() > 1:
        box = [outcome]
        dist.broadcast_object_list(box, src=0)
        outcome = box[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


#: The largest category id looked up in a table by :func:`member` (beyond it, ``np.isin``).
_TABLE_IDS = 1 << 20


def member(ids: np.ndarray, categories: list[int]) -> np.ndarray:
    """``np.isin(ids, categories)`` for a whole dataset's category ids (integers).

    A table indexed by the ids themselves: one boolean array made, where ``np.isin`` makes
    several arrays the size of ``ids`` (fresh memory, each page a fault on a virtual machine).
    """
    if not len(ids) or not categories:
        return np.zeros(len(ids), dtype=bool)
    top = max(categories)
    if min(categories) < 0 or top >= _TABLE_IDS or ids.min() < 0:
        return np.isin(ids, categories)
    table = np.zeros(top + 2, dtype=bool)  # the last entry: every id above ``top``
    table[categories] = True
    return table.take(ids, mode="clip")


@dataclass
class Selection:
    """What is evaluated, as the evaluator's options fix it.

    Attributes:
        params: the parameters of each iou type, in the evaluator's order.
        labels: model labels to category ids.
        gt_index: a ground truth given up front (``coco_gt``), or ``None``.
        category_ids: the categories asked for, or ``None``.
        sigmas: the OKS sigmas given, or ``None`` (COCO's for 17 keypoints).
    """

    params: dict[str, EvalParams]
    labels: LabelMap
    gt_index: GroundTruthIndex | None
    category_ids: list[int] | None
    sigmas: np.ndarray | None

    def image_id(self, target: Any, position: int) -> int:
        """The image id of the target at ``position`` of a batch (a dict's ``image_id``, or
        the id itself), checked against ``coco_gt``."""
        raw = target.get("image_id") if isinstance(target, Mapping) else target
        if raw is None:
            raise ValueError(f"targets[{position}] has no 'image_id'")
        image_id = normalize_image_id(raw, argument=f"targets[{position}]['image_id']")
        if self.gt_index is not None and image_id not in self.gt_index:
            raise ValueError(
                f"targets[{position}]: image_id {image_id} is not in coco_gt "
                f"({len(self.gt_index.sizes)} images)"
            )
        return image_id

    def check_keypoints(
        self, gt: Annotations, dt: Annotations, ids: list[int], known: int | None
    ) -> int | None:
        """The number of keypoints per instance after a batch (``known`` before it), checked
        against earlier batches and the sigmas."""
        for what, table in (("targets", gt), ("predictions", dt)):
            if table.keypoints is None or not len(table):  # K of an empty batch means nothing
                continue
            k = table.keypoints.shape[1] // 3
            where = f"{what} of image_ids {ids}"
            if known is not None and k != known:
                raise ValueError(f"{where}: instances have {k} keypoints, earlier ones {known}")
            check_sigmas(self.sigmas, k, where)
            known = k
        return known

    def prepare(
        self,
        block: Block | None,
        iou_type: str,
        num_keypoints: int | None = None,
        *,
        areas: bool = True,
    ):
        """``(images, gt, dt, params)`` of one iou type, as the backends take them; without
        ``areas``, bbox detections have none (hotcoco's array path derives its own)."""
        if block is None:
            categories = self.fixed_categories() or []
            return empty_columns(
                dataclasses.replace(self.params[iou_type], category_ids=categories)
            )
        gt = self.ground_truth(block, iou_type)
        fixed = self.fixed_categories()
        if fixed is None:
            categories = sorted(set(gt.category_id.tolist()))
        else:  # ground truth of other categories takes no part (as in pycocotools)
            categories = fixed
            gt = gt.take(member(gt.category_id, categories))
        params = dataclasses.replace(
            self.params[iou_type],
            category_ids=categories,
            image_ids=sorted(set(block.images.ids.tolist())),
        )
        if iou_type == "keypoints":
            params.keypoint_sigmas = self.evaluated_sigmas(gt, num_keypoints)
        dt = self.detections(block, iou_type, categories, areas=areas)
        return block.images, gt, dt, params

    def evaluate(
        self,
        block: Block | None,
        *,
        backend: str,
        verbose: bool,
        num_keypoints: int | None,
        bootstrap: dict | None = None,
    ) -> dict[str, Any]:
        """The statistics of every iou type (with bootstrap intervals when asked)."""
        result: dict[str, Any] = {"num_images": 0 if block is None else len(block)}
        for iou_type in self.params:
            params = self.params[iou_type]
            if block is None:
                categories = self.fixed_categories() or []
                result[iou_type] = undefined_stats(
                    dataclasses.replace(params, category_ids=categories)
                )
                if bootstrap is not None and iou_type in MATCHED_IOU_TYPES:
                    result[iou_type].update(undefined_intervals(params))
                continue
            # hotcoco's bbox path takes each box's area from the box: none made for it here.
            areas = backend != "hotcoco" or iou_type != "bbox" or bootstrap is not None
            images, gt, dt, params = self.prepare(block, iou_type, num_keypoints, areas=areas)
            if not params.category_ids:
                result[iou_type] = undefined_stats(params)
            else:
                with backends.quiet(verbose):
                    result[iou_type] = backends.statistics(backend, images, gt, dt, params)
            if bootstrap is not None and iou_type in MATCHED_IOU_TYPES:
                matching = match(images, gt, dt, params) if params.category_ids else None
                result[iou_type].update(
                    ap_intervals(matching, params, result[iou_type], **bootstrap)
                )
        return result

    def evaluated_sigmas(self, gt: Annotations, num_keypoints: int | None) -> np.ndarray:
        """The OKS sigmas for the ground truth's number of keypoints."""
        k = gt.required("keypoints").shape[1] // 3 if len(gt) else num_keypoints
        if len(gt) and num_keypoints not in (None, k):
            raise ValueError(
                f"predictions have {num_keypoints} keypoints per instance, the ground truth {k}"
            )
        if k is None:  # no instance anywhere: nothing to match, any sigmas do
            return self.sigmas if self.sigmas is not None else check_sigmas(None, 17, "")
        return check_sigmas(self.sigmas, k, "ground truth")

    def fixed_categories(self) -> list[int] | None:
        """The categories given up front (``None``: those of the ground truth seen)."""
        if self.category_ids is not None:
            return self.category_ids
        if self.gt_index is not None:
            return self.gt_index.category_ids
        if self.labels.mapping is not None:
            return sorted(set(self.labels.mapping.values()))
        return None

    def ground_truth(self, block: Block, iou_type: str) -> Annotations:
        """The ground truth of the block's images: from ``coco_gt``, else their targets'."""
        if self.gt_index is not None:
            return self.gt_index.annotations(block.images.ids.tolist(), iou_type)
        return block.gt

    def detections(
        self, block: Block, iou_type: str, categories: list[int], *, areas: bool = True
    ) -> Annotations:
        """The block's detections of ``categories`` as results of ``iou_type``."""
        dt = block.dt.results(iou_type, areas=areas)
        known = member(dt.category_id, categories)
        if not known.all():
            others = sorted(set(dt.category_id[~known].tolist()))
            log = logger.warning if self.gt_index is not None else logger.debug
            log(
                "%d %s detections have category ids %s%s outside the evaluated categories; "
                "they are left out (pass label_to_category= if labels and category ids differ)",
                int((~known).sum()),
                iou_type,
                others[:10],
                "..." if len(others) > 10 else "",
            )
            dt = dt.take(known)
        return dt
