"""COCO evaluation engines behind :class:`~detkit.evaluation.CocoEvaluator`.

Each backend turns the same columns of ground truth and detections into pycocotools'
accumulated ``precision`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]`` arrays; the
statistics are then computed from those arrays in one place, so every backend gives the same
numbers. One exception: with COCO's standard parameters, hotcoco's own summary gives the same
statistics to the last bit (``tests/evaluation/test_parity.py`` compares both with
pycocotools), and taking them from it spares building the three 8 MB arrays. The backends:

* ``"pycocotools"``: the reference, always installed; single-threaded Python loops.
* ``"hotcoco"``: a Rust port (MIT) with bit-identical arrays; by far the fastest
  (``pip install detkit[fast]``). Fed through its ``StreamingEval``, with boxes as one
  numpy array (no Python dict per detection).

``"auto"`` picks hotcoco when it is installed, else pycocotools.

faster-coco-eval is not offered: its accumulated precision is 1.0 where pycocotools' is
``1 / (1 + eps)`` (the first detection of a curve being a true positive), so its statistics
can differ from pycocotools' in the last bit, and detkit promises a difference of exactly 0.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib.util
import io
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from detkit.evaluation._dicts import annotation_dicts, category_dicts, image_dicts
from detkit.evaluation._params import (
    DEFAULT_AREA_RANGES,
    DEFAULT_IOU_THRESHOLDS,
    DEFAULT_MAX_DETS,
    EvalParams,
)
from detkit.evaluation._stats import compute_stats, metrics_for
from detkit.evaluation._table import Annotations, Images

__all__ = ["BACKENDS", "available_backends"]

#: Every backend name, fastest first (``"auto"`` takes the first one installed).
BACKENDS = ("hotcoco", "pycocotools")

# Images per chunk; the per-image results are kept either way. Small chunks let each chunk
# reuse the memory the previous one freed: 500 bbox images in one chunk touched 23 MB of
# fresh pages (5,900 page faults), in chunks of 64 images 4 MB, and on a virtual machine that
# hands freed memory back to its host, each fresh page costs 10 µs or more.
_CHUNK_IMAGES = 64
_CHUNK_IMAGES_PYCOCOTOOLS = 64


def available_backends() -> list[str]:
    """Names of the installed backends, fastest first.

    >>> "pycocotools" in available_backends()
    True
    """
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


def resolve_backend(backend: str) -> str:
    """The backend an evaluator uses for ``backend`` (``"auto"`` or a name)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    name = backend.lower()
    if name == "auto":
        return available_backends()[0]
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if name not in available_backends():
        raise ValueError(
            f"backend {backend!r} is not installed (installed: {available_backends()}); "
            f"pip install {name}, or use backend='auto'"
        )
    return name


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Silence the backends' prints and warnings unless ``verbose``."""
    if verbose:
        yield
        return
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the evaluation builds its many dicts.

    Each allocation burst triggers full collections that walk every object of the process
    (a few hundred thousand with torch loaded): building 4,000 dicts took 12 ms instead of
    1 ms. Nothing built here forms reference cycles; collection resumes afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def statistics(
    backend: str, images: Images, gt: Annotations, dt: Annotations, params: EvalParams
) -> dict[str, float | dict[int, float]]:
    """Run one backend; the named statistics and per-class AP (:func:`compute_stats`)."""
    with garbage_collection_paused():
        if backend == "hotcoco":
            return _hotcoco(images, gt, dt, params)
        precision, recall = _pycocotools(images, gt, dt, params)
        return compute_stats(precision, recall, params)


def _pycocotools(images, gt, dt, params):
    """pycocotools' API, a chunk of images at a time, then one ``accumulate``.

    COCO objects are built from dicts (``loadRes`` copies the ground truth and crashes on an
    empty list). Evaluating in chunks keeps only one chunk's dicts alive; the per-image
    results of every chunk are merged in image-id order, as one ``evaluate`` would leave them.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    categories = category_dicts(params.category_ids)
    chunks, ids = [], []
    evaluator = None
    for image_rows, gt_rows, dt_rows in _chunks(images, gt, dt, _CHUNK_IMAGES_PYCOCOTOOLS):
        chunk = images.take(image_rows)
        cocos = []
        for anns in (gt.take(gt_rows), dt.take(dt_rows)):
            coco = COCO()
            coco.dataset = {
                "images": image_dicts(chunk),
                "categories": categories,
                "annotations": annotation_dicts(anns, params.iou_type),
            }
            coco.createIndex()
            cocos.append(coco)
        evaluator = COCOeval(*cocos, params.iou_type)
        _set_params(evaluator.params, params, image_ids=chunk.ids.tolist())
        evaluator.evaluate()
        p = evaluator.params
        per_image = np.empty(len(evaluator.evalImgs), dtype=object)
        per_image[:] = evaluator.evalImgs
        chunks.append(per_image.reshape(len(p.catIds), len(p.areaRng), len(p.imgIds)))
        ids += list(p.imgIds)
    order = np.argsort(ids, kind="stable")
    evaluator.evalImgs = list(np.concatenate(chunks, axis=2)[:, :, order].ravel())
    evaluator.params.imgIds = [ids[i] for i in order]
    evaluator._paramsEval = copy.deepcopy(evaluator.params)
    evaluator.accumulate()
    return evaluator.eval["precision"], evaluator.eval["recall"]


def _set_params(p, params: EvalParams, *, image_ids: list[int]) -> None:
    p.imgIds = list(image_ids)
    p.catIds = list(params.category_ids)
    p.iouThrs = params.iou_thresholds.copy()
    p.maxDets = list(params.max_dets)
    p.areaRng = [list(r) for r in params.area_ranges]
    p.areaRngLbl = list(params.area_labels)
    if params.keypoint_sigmas is not None:
        p.kpt_oks_sigmas = params.keypoint_sigmas.copy()


def _chunks(images: Images, gt: Annotations, dt: Annotations, size: int):
    """``(image rows, gt rows, dt rows)`` of consecutive images, ``size`` at a time.

    Where each image's annotations are one run of rows (as the store keeps them), a chunk's
    rows are one slice (views: nothing copied, no column touched that the backend does not
    read) or the positions of its images' runs.
    """
    gt_runs, dt_runs = _runs(gt.image_id, images.ids), _runs(dt.image_id, images.ids)
    for start in range(0, max(len(images.ids), 1), size):
        rows = slice(start, start + size)
        yield rows, _rows(*gt_runs, rows), _rows(*dt_runs, rows)


def _runs(row_ids: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(starts, stops, order)``: the rows of each image (in ``image_ids``' order) given each
    row's image id, as ranges of the rows in ``order`` (``None``: as they are; else the
    stable sort by image id, when the rows of an image are not contiguous)."""
    n, order = len(row_ids), None
    empty = np.zeros(len(image_ids), dtype=np.int64)
    if not n:
        return empty, empty, order
    bounds = np.flatnonzero(row_ids[1:] != row_ids[:-1]) + 1
    run_ids = row_ids[np.r_[0, bounds]]
    by_id = np.argsort(run_ids, kind="stable")
    sorted_ids = run_ids[by_id]
    if (sorted_ids[1:] == sorted_ids[:-1]).any():  # an image in several runs
        order = np.argsort(row_ids, kind="stable")
        return (*_runs(row_ids[order], image_ids)[:2], order)
    starts, stops = np.r_[0, bounds], np.r_[bounds, n]
    at = np.minimum(np.searchsorted(sorted_ids, image_ids), len(run_ids) - 1)
    run = by_id[at]
    found = run_ids[run] == image_ids
    return np.where(found, starts[run], 0), np.where(found, stops[run], 0), order


def _rows(starts: np.ndarray, stops: np.ndarray, order: Any, images: slice) -> Any:
    """The rows of the images at ``images``: a slice where they are consecutive."""
    begin, end = starts[images], stops[images]
    filled = end > begin
    begin, end = begin[filled], end[filled]
    if not len(begin):
        rows: slice | np.ndarray = slice(0, 0)
    elif np.array_equal(begin[1:], end[:-1]):
        rows = slice(int(begin[0]), int(end[-1]))
    else:
        rows = np.concatenate([np.arange(b, e) for b, e in zip(begin.tolist(), end.tolist())])
    return rows if order is None else order[rows]


def _hotcoco(images, gt, dt, params):
    import hotcoco

    p = hotcoco.Params(params.iou_type)
    p.img_ids = list(params.image_ids)
    p.cat_ids = list(params.category_ids)
    p.iou_thrs = params.iou_thresholds.tolist()
    p.max_dets = list(params.max_dets)
    p.area_rng = [list(r) for r in params.area_ranges]
    p.area_rng_lbl = list(params.area_labels)
    if params.keypoint_sigmas is not None:
        p.kpt_oks_sigmas = params.keypoint_sigmas.tolist()
    stream = hotcoco.StreamingEval(category_dicts(params.category_ids), params.iou_type, params=p)
    # In chunks of images: hotcoco holds a call's annotations at once, and a whole dataset's
    # detections as its structs cost several times our columns.
    for image_rows, gt_rows, dt_rows in _chunks(images, gt, dt, _CHUNK_IMAGES):
        _hotcoco_update(stream, images, image_rows, gt.take(gt_rows), dt.take(dt_rows), params)
    result = stream.finalize()
    result.accumulate()
    summary = _hotcoco_summary(result, params)
    if summary is not None:
        return summary
    accumulated = result.eval
    precision, recall = np.asarray(accumulated["precision"]), np.asarray(accumulated["recall"])
    return compute_stats(precision, recall, params)


def standard_params(params: EvalParams) -> bool:
    """Whether ``params`` are COCO's defaults, the parameters hotcoco's summary is for."""
    areas = DEFAULT_AREA_RANGES[params.iou_type]
    return (
        list(params.max_dets) == list(DEFAULT_MAX_DETS[params.iou_type])
        and list(params.area_labels) == list(areas)
        and [list(r) for r in params.area_ranges] == [list(r) for r in areas.values()]
        and np.array_equal(params.iou_thresholds, DEFAULT_IOU_THRESHOLDS)
    )


def _hotcoco_summary(result, params: EvalParams) -> dict[str, float | dict[int, float]] | None:
    """The statistics from hotcoco's own summary, or ``None`` when it does not hold them.

    Only for COCO's standard parameters: there its means are pycocotools', bit for bit, and
    its per-class AP leaves out only the undefined classes (``-1``).
    """
    if not standard_params(params) or not hasattr(result, "get_results"):
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # its table; detkit logs its own
        result.summarize()
    values = result.get_results(per_class=True)
    names = [metric.name for metric in metrics_for(params)]
    if not all(name in values for name in names):  # another hotcoco's summary: the arrays
        return None
    stats: dict[str, float | dict[int, float]] = {name: float(values[name]) for name in names}
    stats["per_class_AP"] = {
        category: float(values.get(f"AP/{category}", -1.0)) for category in params.category_ids
    }
    return stats


def _hotcoco_update(stream, images, image_rows, gt, dt, params) -> None:
    chunk = images.take(image_rows)
    gt_anns = annotation_dicts(gt, params.iou_type)
    if params.iou_type == "bbox":
        # hotcoco's array fast path: [image_id, x, y, w, h, score, category_id] per row.
        rows = np.empty((len(dt), 7), dtype=np.float64)
        rows[:, 0] = dt.image_id
        rows[:, 1:5] = dt.bbox
        rows[:, 5] = dt.score
        rows[:, 6] = dt.category_id
        stream.update(image_dicts(chunk), gt_anns, rows)
    elif params.iou_type == "segm":
        # Not the array path: there hotcoco takes a mask's area from its box, pycocotools
        # from the mask (which decides the area range of unmatched detections).
        results = [
            {"image_id": i, "category_id": c, "score": s, "segmentation": r}
            for i, c, s, r in zip(
                dt.image_id.tolist(), dt.category_id.tolist(), dt.score.tolist(), dt.rles
            )
        ]
        stream.update(image_dicts(chunk), gt_anns, results)
    else:
        stream.update(image_dicts(chunk), gt_anns, annotation_dicts(dt, "keypoints"))
