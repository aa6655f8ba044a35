"""Confusion matrices (hand-built cases and invariants) and bootstrap AP intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import _detection_case, detection_cases

from detkit.evaluation import CocoEvaluator, ConfusionMatrix
from detkit.evaluation._curves import accumulate, bootstrap, layout, mean_defined
from detkit.evaluation._matching import match


def box_case(gt, predicted, *, crowd=None, image_id=1):
    """``(prediction, target)``: gt ``[(box, label)]``, predicted ``[(box, label, score)]``."""
    target = {
        "boxes": torch.tensor([b for b, _ in gt], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([label for _, label in gt], dtype=torch.int64),
        "iscrowd": torch.tensor(crowd or [0] * len(gt), dtype=torch.int64),
        "image_id": image_id,
    }
    prediction = {
        "boxes": torch.tensor([b for b, _, _ in predicted], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([label for _, label, _ in predicted], dtype=torch.int64),
        "scores": torch.tensor([s for _, _, s in predicted], dtype=torch.float32),
    }
    return prediction, target


A, B, C, D = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]


def test_confusion_matrix_of_a_known_case():
    prediction, target = box_case(
        [(A, 1), (B, 2), (C, 3), (D, 1)],
        [
            (A, 1, 0.9),  # correct
            (A, 1, 0.85),  # duplicate: a false detection
            (B, 1, 0.8),  # class 2 seen as 1
            (C, 3, 0.3),  # below class 3's threshold: dropped, so C is missed
            ([80, 0, 90, 10], 2, 0.7),  # on nothing
        ],
    )
    evaluator = CocoEvaluator("bbox", category_ids=[1, 2, 3])
    evaluator.update([prediction], [target])
    result = evaluator.confusion_matrix(thresholds={1: 0.5, 2: 0.5, 3: 0.5})
    assert isinstance(result, ConfusionMatrix)
    assert result.category_ids == [1, 2, 3]
    assert result.matrix.tolist() == [
        # predicted 1, 2, 3, background (missed)
        [1, 0, 0, 1],  # ground truth 1: A found, D missed
        [1, 0, 0, 0],  # ground truth 2: taken for 1
        [0, 0, 0, 1],  # ground truth 3: missed
        [1, 1, 0, 0],  # background: the duplicate and the detection on nothing
    ]
    # A sequence of thresholds, and a threshold that keeps C's detection.
    assert evaluator.confusion_matrix(thresholds=[0.5, 0.5, 0.2]).matrix[2].tolist() == [
        0,
        0,
        1,
        0,
    ]
    assert result.to_dict()["matrix"] == result.matrix.tolist()


def test_same_class_match_wins_over_a_better_overlap_of_another_class():
    # The detection overlaps class 2's instance exactly and class 1's at IoU 0.6: with COCO's
    # same-class matching first it is a correct class-1 detection.
    prediction, target = box_case([([0, 0, 10, 10], 2), ([0, 0, 10, 6], 1)], [(A, 1, 0.9)])
    evaluator = CocoEvaluator("bbox")
    evaluator.update([prediction], [target])
    assert evaluator.confusion_matrix(thresholds=0.5).matrix.tolist() == [
        [1, 0, 0],
        [0, 0, 1],
        [0, 0, 0],
    ]


def test_crowd_regions_take_no_part():
    prediction, target = box_case(
        [([0, 0, 40, 40], 1), (C, 1)], [([5, 5, 15, 15], 1, 0.9), (C, 2, 0.8)], crowd=[1, 0]
    )
    evaluator = CocoEvaluator("bbox", category_ids=[1, 2])
    evaluator.update([prediction], [target])
    # The detection inside the crowd region counts nowhere; C (class 1) was taken for 2.
    assert evaluator.confusion_matrix(thresholds=0.5).matrix.tolist() == [
        [0, 1, 0],
        [0, 0, 0],
        [0, 0, 0],
    ]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@settings(max_examples=25, deadline=None)
@given(data=st.data(), threshold=st.sampled_from([0.0, 0.5, 0.9, 1.1]))
def test_confusion_matrix_invariants(iou_type, data, threshold):
    predictions, targets = data.draw(detection_cases(iou_type, num_classes=3))
    evaluator = CocoEvaluator(iou_type, category_ids=[1, 2, 3, 4])
    evaluator.update(predictions, targets)
    thresholds = {1: threshold, 2: 0.5, 3: 0.7, 4: threshold}
    matrix = evaluator.confusion_matrix(iou_type, thresholds=thresholds).matrix
    k = 4
    gt_counts = np.zeros(k, dtype=np.int64)
    for target in targets:
        for label, crowd in zip(target["labels"].tolist(), target["iscrowd"].tolist()):
            gt_counts[label - 1] += 1 - crowd
    assert matrix[:k].sum(axis=1).tolist() == gt_counts.tolist()  # every instance once
    assert matrix[k, k] == 0
    kept = np.zeros(k, dtype=np.int64)
    for prediction in predictions:
        for label, score in zip(prediction["labels"].tolist(), prediction["scores"].tolist()):
            if label <= k and score >= thresholds[label]:
                kept[label - 1] += 1
    # Each kept detection once, except those on crowd regions.
    assert (matrix[:, :k].sum(axis=0) <= kept).all()
    # The diagonal is COCO's matching at the thresholds: the operating points' counts.
    points = evaluator.operating_points(iou_type)
    at_points = evaluator.confusion_matrix(iou_type, thresholds=points).matrix
    found = np.where(np.isnan(points.threshold), 0, points.true_positives)
    assert np.diag(at_points)[:k].tolist() == found.tolist()
    counted = points.true_positives + points.false_positives
    assert at_points[:, :k].sum(axis=0).tolist() == counted.tolist()


def test_confusion_matrix_bad_thresholds():
    prediction, target = box_case([(A, 1)], [(A, 1, 0.9)])
    evaluator = CocoEvaluator("bbox")
    evaluator.update([prediction], [target])
    with pytest.raises(ValueError, match="not evaluated"):
        evaluator.confusion_matrix(thresholds={5: 0.5})
    with pytest.raises(ValueError, match="has 2 values"):
        evaluator.confusion_matrix(thresholds=[0.5, 0.5])
    with pytest.raises(TypeError, match="thresholds must be"):
        evaluator.confusion_matrix(thresholds="high")
    # Default: the F1-best thresholds.
    assert evaluator.confusion_matrix().matrix.tolist() == [[1, 0], [0, 0]]


# -- bootstrap ---------------------------------------------------------------------------------


def evaluator_with(num_images: int, seed: int = 0, iou_type: str = "bbox", **options):
    rng = np.random.default_rng(seed)
    predictions, targets = _detection_case(rng, iou_type, num_images, options)
    evaluator = CocoEvaluator(iou_type)
    evaluator.update(predictions, targets)
    return evaluator


def test_intervals_contain_the_ap_and_are_reproducible():
    evaluator = evaluator_with(40, max_gt=6, num_classes=3)
    first = evaluator.compute(confidence=0.9, resamples=100, seed=3)["bbox"]
    again = evaluator.compute(confidence=0.9, resamples=100, seed=3)["bbox"]
    other = evaluator.compute(confidence=0.9, resamples=100, seed=4)["bbox"]
    plain = evaluator.compute()["bbox"]
    for name in ("AP", "AP50"):
        low, high = first[f"{name}_interval"]
        assert low < first[name] < high
        assert first[name] == plain[name]
        assert again[f"{name}_interval"] == first[f"{name}_interval"]
    assert other["AP_interval"] != first["AP_interval"]
    assert "AP_interval" not in plain
    wider = evaluator.compute(confidence=0.99, resamples=100, seed=3)["bbox"]["AP_interval"]
    assert wider[0] <= first["AP_interval"][0] and wider[1] >= first["AP_interval"][1]


def test_interval_spread_shrinks_with_more_images():
    small = evaluator_with(15, seed=1, max_gt=6).compute(confidence=0.9, resamples=100)
    large = evaluator_with(240, seed=1, max_gt=6).compute(confidence=0.9, resamples=100)
    width = lambda m: m["bbox"]["AP_interval"][1] - m["bbox"]["AP_interval"][0]  # noqa: E731
    assert width(large) < width(small) / 2


def test_degenerate_intervals():
    prediction, target = box_case([(A, 1), (B, 1)], [(A, 1, 0.9)])
    one = CocoEvaluator("bbox")
    one.update([prediction], [target])
    metrics = one.compute(confidence=0.95, resamples=20)["bbox"]
    # One image: every resample is that image.
    assert metrics["AP_interval"] == (metrics["AP"], metrics["AP"])
    none = CocoEvaluator("bbox")
    _, target = box_case([(A, 1)], [])
    none.update([{k: v[:0] for k, v in prediction.items()}], [target])
    assert none.compute(confidence=0.95, resamples=20)["bbox"]["AP_interval"] == (0.0, 0.0)
    no_truth = CocoEvaluator("bbox")
    no_truth.update(
        [prediction],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 1}],
    )
    assert no_truth.compute(confidence=0.95, resamples=20)["bbox"]["AP_interval"] == (-1.0, -1.0)
    empty = CocoEvaluator(("bbox", "keypoints")).compute(confidence=0.95, resamples=20)
    assert empty["bbox"]["AP50_interval"] == (-1.0, -1.0)
    assert "AP_interval" not in empty["keypoints"]  # no matching for keypoints


@pytest.mark.parametrize(
    "options, error",
    [
        ({"confidence": 1.0}, ValueError),
        ({"confidence": "0.9"}, TypeError),
        ({"confidence": 0.9, "resamples": 5}, ValueError),
        ({"confidence": 0.9, "resamples": 50.0}, TypeError),
        ({"confidence": 0.9, "seed": None}, TypeError),
    ],
)
def test_bad_bootstrap_arguments(options, error):
    with pytest.raises(error):
        CocoEvaluator("bbox").compute(**options)


@settings(max_examples=30, deadline=None)
@given(case=detection_cases("bbox", num_classes=3), seed=st.integers(0, 100))
def test_fast_resampled_ap_equals_full_accumulation(case, seed):
    """The bootstrap visits only true positives; it must equal accumulating the resample."""
    predictions, targets = case
    evaluator = CocoEvaluator("bbox", backend="pycocotools")
    evaluator.update(predictions, targets)
    images, gt, dt, params = evaluator._selection.prepare(evaluator._store.merged(), "bbox")
    if not params.category_ids:
        return
    matching = match(images, gt, dt, params)
    rows = {"AP": np.arange(10), "AP50": np.array([0])}
    fast = bootstrap(matching, iou_rows=rows, resamples=10, seed=seed)
    rng = np.random.default_rng(seed)
    count = len(matching.image_ids)
    data = layout(matching)
    for n in range(10):
        weights = np.bincount(rng.integers(0, count, count), minlength=count)
        precision, _, _ = accumulate(data, weights)
        for name, picked in rows.items():
            full = mean_defined(precision[picked])
            expected = np.nan if full == -1.0 else full
            np.testing.assert_allclose(fast[name][n], expected, rtol=0, atol=1e-12)
    # All weights 1: exactly compute()'s AP.
    precision, _, _ = accumulate(data)
    assert mean_defined(precision) == evaluator.compute()["bbox"]["AP"]
