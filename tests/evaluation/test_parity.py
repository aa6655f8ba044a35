"""CocoEvaluator's statistics equal pycocotools' COCOeval run directly, for every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coco_reference import STAT_NAMES, coco_dicts, pycocotools_eval
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import _detection_case, detection_cases

from detkit.evaluation import CocoEvaluator, available_backends

BACKENDS = available_backends()


def run(backend, iou_type, predictions, targets, batch_size=2, **options):
    evaluator = CocoEvaluator(iou_type, backend=backend, **options)
    for start in range(0, len(targets), batch_size):
        stop = start + batch_size
        evaluator.update(predictions[start:stop], targets[start:stop])
    return evaluator.compute()


def assert_equal_to_pycocotools(metrics, reference, iou_type):
    ours = [metrics[iou_type][name] for name in STAT_NAMES[iou_type]]
    assert ours == reference.stats.tolist()  # exactly: the difference is 0
    precision = reference.eval["precision"][:, :, :, 0, -1]
    expected = {}
    for k, category in enumerate(reference.params.catIds):
        defined = precision[:, :, k][precision[:, :, k] > -1]
        expected[category] = float(np.mean(defined)) if defined.size else -1.0
    assert metrics[iou_type]["per_class_AP"] == expected


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@settings(max_examples=int(__import__("os").environ.get("PARITY_EXAMPLES", 40)))
@given(data=st.data())
def test_boxes_and_masks_equal_pycocotools(iou_type, data):
    predictions, targets = data.draw(detection_cases(iou_type))
    reference = pycocotools_eval(*coco_dicts(predictions, targets, iou_type), iou_type)
    for backend in BACKENDS:
        metrics = run(backend, iou_type, predictions, targets)
        assert metrics["num_images"] == len(targets)
        assert_equal_to_pycocotools(metrics, reference, iou_type)


@settings(max_examples=int(__import__("os").environ.get("PARITY_EXAMPLES", 20)))
@given(data=st.data())
def test_inverted_predicted_boxes_equal_pycocotools(data):
    """Predicted boxes with x2 < x1 and/or y2 < y1 are evaluated (false positives, with a
    warning), and every backend must give pycocotools' numbers for them too."""
    predictions, targets = data.draw(detection_cases("bbox"))
    swaps = ([2, 1, 0, 3], [0, 3, 2, 1], [2, 3, 0, 1])
    flipped = []
    for prediction in predictions:
        boxes = prediction["boxes"].clone()
        inverted = torch.tensor(
            data.draw(st.lists(st.booleans(), min_size=len(boxes), max_size=len(boxes))),
            dtype=torch.bool,
        )
        boxes[inverted] = boxes[inverted][:, list(data.draw(st.sampled_from(swaps)))]
        flipped.append({**prediction, "boxes": boxes})
    reference = pycocotools_eval(*coco_dicts(flipped, targets, "bbox"), "bbox")
    for backend in BACKENDS:
        assert_equal_to_pycocotools(run(backend, "bbox", flipped, targets), reference, "bbox")


@pytest.mark.parametrize("num_keypoints", [17, 4])
@settings(max_examples=int(__import__("os").environ.get("PARITY_EXAMPLES", 25)))
@given(data=st.data())
def test_keypoints_equal_pycocotools(num_keypoints, data):
    predictions, targets = data.draw(detection_cases("keypoints", num_keypoints=num_keypoints))
    sigmas = None if num_keypoints == 17 else [0.05, 0.07, 0.1, 0.03]
    reference = pycocotools_eval(
        *coco_dicts(predictions, targets, "keypoints"), "keypoints", sigmas=sigmas
    )
    for backend in BACKENDS:
        metrics = run(backend, "keypoints", predictions, targets, kpt_oks_sigmas=sigmas)
        assert_equal_to_pycocotools(metrics, reference, "keypoints")


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_chunked_backends_equal_pycocotools(iou_type, monkeypatch):
    """Backends evaluate a chunk of images at a time; the merge must not change a number."""
    import detkit.evaluation.backends as backends

    monkeypatch.setattr(backends, "_CHUNK_IMAGES", 2)
    monkeypatch.setattr(backends, "_CHUNK_IMAGES_PYCOCOTOOLS", 2)
    for seed in range(3):
        predictions, targets = _detection_case(
            np.random.default_rng(seed), iou_type, 5, {"max_gt": 6, "empty_predictions": 0.2}
        )
        reference = pycocotools_eval(*coco_dicts(predictions, targets, iou_type), iou_type)
        for backend in BACKENDS:
            metrics = run(backend, iou_type, predictions, targets)
            assert_equal_to_pycocotools(metrics, reference, iou_type)


def test_hundreds_of_masks_in_one_image():
    """pycocotools' area() overflows a uint8 counter beyond 255 masks per call (numpy 2)."""
    rng = np.random.default_rng(0)
    masks = torch.from_numpy((rng.random((300, 1, 12, 12)) < 0.5).astype(np.float32))
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 12.0, 12.0]] * 2),
        "labels": torch.tensor([1, 2]),
        "masks": masks[:2, 0].to(torch.uint8),
        "area": masks[:2, 0].sum((1, 2)),
        "iscrowd": torch.zeros(2, dtype=torch.int64),
        "image_id": 3,
    }
    prediction = {
        "boxes": torch.zeros(300, 4),
        "labels": torch.from_numpy(rng.integers(1, 3, 300)),
        "scores": torch.from_numpy(rng.random(300).astype(np.float32)),
        "masks": masks,
    }
    reference = pycocotools_eval(*coco_dicts([prediction], [target], "segm"), "segm")
    for backend in BACKENDS:
        metrics = run(backend, "segm", [prediction], [target], max_dets=(1, 10, 100))
        assert_equal_to_pycocotools(metrics, reference, "segm")


@pytest.mark.skipif("hotcoco" not in BACKENDS, reason="needs hotcoco (pip install detkit[fast])")
@pytest.mark.parametrize("iou_type", ["bbox", "keypoints"])
def test_hotcoco_summary_equals_pycocotools_at_scale(iou_type):
    """With COCO's standard parameters the hotcoco backend takes its statistics from
    hotcoco's own summary, not from the precision arrays. Over many classes and images a
    mean adds thousands of values, and the order of the additions decides its last bit: the
    summary's must still be pycocotools', class by class."""
    options = {"max_gt": 12, "num_classes": 25, "max_side": 400, "empty_predictions": 0.1}
    predictions, targets = _detection_case(np.random.default_rng(7), iou_type, 300, options)
    reference = pycocotools_eval(*coco_dicts(predictions, targets, iou_type), iou_type)
    metrics = run("hotcoco", iou_type, predictions, targets, batch_size=16)
    assert_equal_to_pycocotools(metrics, reference, iou_type)
    assert sum(ap > 0 for ap in metrics[iou_type]["per_class_AP"].values()) >= 20


@pytest.mark.skipif("hotcoco" not in BACKENDS, reason="needs hotcoco (pip install detkit[fast])")
def test_hotcoco_summary_only_for_standard_params(monkeypatch):
    """hotcoco's summary holds COCO's standard statistics only: with other max_dets, area
    ranges or IoU thresholds the statistics come from the arrays, and still equal the
    pycocotools backend's."""
    import detkit.evaluation.backends as backends

    routes = []
    summary = backends._hotcoco_summary
    monkeypatch.setattr(
        backends,
        "_hotcoco_summary",
        lambda result, params: (
            routes.append(backends.standard_params(params)) or summary(result, params)
        ),
    )
    predictions, targets = _detection_case(np.random.default_rng(3), "bbox", 8, {})
    for options in (
        {},
        {"max_dets": (1, 10, 300)},
        {"iou_thresholds": [0.5, 0.75]},
        {"area_ranges": {"all": (0, 1e10), "tiny": (0, 16**2)}},
    ):
        expected = run("pycocotools", "bbox", predictions, targets, **options)
        assert run("hotcoco", "bbox", predictions, targets, **options) == expected
    assert routes == [True, False, False, False]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 6), max_size=30),
    st.permutations(list(range(7))),
    st.integers(1, 4),
    st.integers(1, 7),
)
def test_backend_chunks_hold_each_images_rows_once(rows, order, size, num_images):
    # Rows grouped or not, in the images' order or not: each chunk holds exactly the rows of
    # its images, in their order, and rows of images not evaluated are in no chunk.
    from detkit.evaluation._table import Annotations, Images
    from detkit.evaluation.backends import _chunks

    ids = np.array(order[:num_images], dtype=np.int64)
    table = Annotations(
        image_id=np.array(rows, dtype=np.int64),
        category_id=np.arange(len(rows)),
        bbox=np.zeros((len(rows), 4)),
        area=None,
        iscrowd=None,
    )
    seen = []
    for image_rows, gt_rows, dt_rows in _chunks(Images(ids, ids, ids), table, table, size):
        chunk = set(ids[image_rows].tolist())
        got = table.take(gt_rows).category_id.tolist()
        assert got == table.take(dt_rows).category_id.tolist()
        assert sorted(got) == [i for i, image in enumerate(rows) if image in chunk]
        for image in chunk:  # an image's rows keep their order
            mine = [i for i in got if rows[i] == image]
            assert mine == sorted(mine)
        seen += got
    assert sorted(seen) == [i for i, image in enumerate(rows) if image in set(ids.tolist())]
