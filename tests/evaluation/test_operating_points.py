"""Per-class operating points: pycocotools' curves, and F1-best thresholds found by brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from coco_reference import coco_dicts, pycocotools_eval
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import _detection_case, detection_cases

from detkit.evaluation import CocoEvaluator, OperatingPoints


def evaluator_for(iou_type, predictions, targets, **options):
    evaluator = CocoEvaluator(iou_type, backend="pycocotools", **options)
    for start in range(0, len(targets), 2):
        evaluator.update(predictions[start : start + 2], targets[start : start + 2])
    return evaluator


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_curves_equal_pycocotools(iou_type, data):
    predictions, targets = data.draw(detection_cases(iou_type, num_classes=3))
    images, annotations, results = coco_dicts(predictions, targets, iou_type)
    evaluator = evaluator_for(iou_type, predictions, targets)
    if not annotations:
        return
    reference = pycocotools_eval(images, annotations, results, iou_type)
    recall = reference.eval["recall"][:, :, 0, -1]
    for t, iou in ((0, 0.5), (5, 0.75), (9, 0.95)):
        points = evaluator.operating_points(iou_type, iou=iou)
        assert points.category_ids == reference.params.catIds
        np.testing.assert_array_equal(
            points.precision, reference.eval["precision"][t, :, :, 0, -1].T
        )
        np.testing.assert_array_equal(points.scores, reference.eval["scores"][t, :, :, 0, -1].T)
        np.testing.assert_array_equal(points.recall_levels, reference.params.recThrs)
        for k in range(len(points.category_ids)):
            defined = recall[:, k][recall[:, k] > -1]
            assert points.ar[k] == (np.mean(defined) if defined.size else -1.0)
            row = points.precision[k]
            assert points.ap[k] == (np.mean(row[row > -1]) if (row > -1).any() else -1.0)


def brute_force_best(evaluator, iou_type, predictions, targets, t):
    """{category: (threshold, precision, recall, f1)} by trying every score as threshold on
    pycocotools' own per-image matching (evalImgs)."""
    images, annotations, results = coco_dicts(predictions, targets, iou_type)

    def configure(params):
        params.areaRng, params.areaRngLbl, params.maxDets = [[0, 1e10]], ["all"], [100]

    reference = pycocotools_eval(images, annotations, results, iou_type, configure=configure)
    best = {}
    n_images = len(reference.params.imgIds)
    for k, category in enumerate(reference.params.catIds):
        entries = [e for e in reference.evalImgs[k * n_images : (k + 1) * n_images] if e]
        scores = np.concatenate([np.asarray(e["dtScores"]) for e in entries] or [np.zeros(0)])
        matched = np.concatenate([e["dtMatches"][t] > 0 for e in entries] or [np.zeros(0, bool)])
        ignored = np.concatenate([e["dtIgnore"][t] for e in entries] or [np.zeros(0, bool)])
        positives = sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in entries)
        candidates = []
        for threshold in sorted(set(scores.tolist()), reverse=True):
            kept = (scores >= threshold) & ~ignored
            tp, fp = int((kept & matched).sum()), int((kept & ~matched).sum())
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / positives if positives else 0.0
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            candidates.append((f1, threshold, p, r))
        top = max(candidates, key=lambda c: (c[0], c[1]), default=(0.0,))
        best[category] = (top[1], top[2], top[3], top[0]) if top[0] > 0 else None
        if positives == 0:
            best[category] = "no ground truth"
    return best


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_f1_best_threshold_equals_brute_force(iou_type, data):
    predictions, targets = data.draw(detection_cases(iou_type, num_classes=3))
    if not any(len(t["boxes"]) for t in targets):
        return
    evaluator = evaluator_for(iou_type, predictions, targets)
    for t, iou in ((0, 0.5), (5, 0.75)):
        points = evaluator.operating_points(iou_type, iou=iou)
        expected = brute_force_best(evaluator, iou_type, predictions, targets, t)
        for k, category in enumerate(points.category_ids):
            if expected[category] == "no ground truth":
                assert np.isnan(points.threshold[k]) and np.isnan(points.f1[k])
                continue
            if expected[category] is None:  # no true positive at any threshold
                assert np.isnan(points.threshold[k])
                assert (points.precision_at[k], points.recall_at[k], points.f1[k]) == (0, 0, 0)
                continue
            threshold, precision, recall, f1 = expected[category]
            assert points.threshold[k] == threshold
            assert points.precision_at[k] == pytest.approx(precision, abs=1e-12)
            assert points.recall_at[k] == pytest.approx(recall, abs=1e-12)
            assert points.f1[k] == pytest.approx(f1, abs=1e-12)
            assert points.true_positives[k] == round(recall * points.num_ground_truth[k])


def test_operating_point_of_a_known_case():
    # Class 1: 4 instances; detections by score: TP, FP, TP, TP, FP -> best F1 after the 4th.
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.ones(4, dtype=torch.int64),
        "image_id": 7,
    }
    found = [boxes[0], [0, 50, 10, 60], boxes[1], boxes[2], [0, 80, 10, 90]]
    prediction = {
        "boxes": torch.tensor(found, dtype=torch.float32),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),
        "labels": torch.ones(5, dtype=torch.int64),
    }
    evaluator = CocoEvaluator("bbox")
    evaluator.update([prediction], [target])
    points = evaluator.operating_points()
    assert points.threshold.tolist() == [pytest.approx(0.6)]
    assert points.precision_at.tolist() == [0.75]
    assert points.recall_at.tolist() == [0.75]
    assert points.f1.tolist() == [0.75]
    assert (points.true_positives.tolist(), points.false_positives.tolist()) == ([3], [1])
    assert points.num_ground_truth.tolist() == [4]
    # COCO's interpolated precision: 1 up to recall 0.25, then 0.75 up to 0.75, then 0.
    assert points.precision[0, :26].tolist() == pytest.approx([1.0] * 26)  # 1 / (1 + eps)
    assert points.precision[0, 26:76].tolist() == pytest.approx([0.75] * 50)
    assert points.precision[0, 76:].tolist() == [0.0] * 25
    data = json.loads(json.dumps(points.to_dict()))
    assert data["classes"]["1"]["threshold"] == pytest.approx(0.6)
    assert data["classes"]["1"]["f1"] == 0.75
    assert points.thresholds() == {1: pytest.approx(0.6)}


def test_iou_outside_the_evaluator_thresholds_and_undefined_classes():
    rng = np.random.default_rng(3)
    predictions, targets = _detection_case(rng, "bbox", 6, {"max_gt": 5, "num_classes": 3})
    evaluator = evaluator_for("bbox", predictions, targets, category_ids=[1, 2, 3, 99])
    points = evaluator.operating_points(iou=0.62)
    images, annotations, results = coco_dicts(predictions, targets, "bbox")

    def configure(params):
        params.iouThrs = np.array([0.62])
        params.catIds = [1, 2, 3, 99]

    reference = pycocotools_eval(images, annotations, results, "bbox", configure=configure)
    np.testing.assert_array_equal(points.precision, reference.eval["precision"][0, :, :, 0, -1].T)
    assert points.iou == 0.62
    assert points.ap[3] == -1.0 and points.ar[3] == -1.0 and np.isnan(points.threshold[3])
    assert points.to_dict()["classes"]["99"]["threshold"] is None


def test_empty_evaluator_and_bad_arguments():
    evaluator = CocoEvaluator("bbox", category_ids=[1, 2])
    points = evaluator.operating_points()
    assert isinstance(points, OperatingPoints)
    assert points.category_ids == [1, 2] and points.ap.tolist() == [-1.0, -1.0]
    assert evaluator.confusion_matrix(thresholds=0.5).matrix.tolist() == [[0] * 3] * 3
    with pytest.raises(ValueError, match="iou must be"):
        evaluator.operating_points(iou=0)
    with pytest.raises(ValueError, match="not among"):
        evaluator.operating_points("segm")
    keypoints = CocoEvaluator("keypoints")
    with pytest.raises(ValueError, match="available for"):
        keypoints.operating_points()
