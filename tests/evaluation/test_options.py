"""Custom parameters: maxDets, IoU thresholds, area ranges, a category subset, OKS sigmas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coco_reference import STAT_NAMES, coco_dicts, pycocotools_eval
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import detection_cases

from detkit.evaluation import CocoEvaluator, available_backends

BACKENDS = available_backends()


def evaluate(iou_type, predictions, targets, **options):
    results = {}
    for backend in BACKENDS:
        evaluator = CocoEvaluator(iou_type, backend=backend, **options)
        evaluator.update(predictions, targets)
        results[backend] = evaluator.compute()[iou_type]
    return results


def mean_defined(values):
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


@settings(max_examples=10)
@given(case=detection_cases("bbox"), max_dets=st.sampled_from([(1, 10, 300), (5,), (2, 50)]))
def test_custom_max_dets_use_the_largest_for_ap(case, max_dets):
    """pycocotools' stats[0] looks for maxDets=100 whatever was asked (cocoapi#558); ours not."""
    predictions, targets = case

    def configure(p):
        p.maxDets = list(max_dets)

    reference = pycocotools_eval(
        *coco_dicts(predictions, targets, "bbox"), "bbox", configure=configure
    )
    precision, recall = reference.eval["precision"], reference.eval["recall"]
    expected_ap = mean_defined(precision[:, :, :, 0, -1])
    expected_ar = {f"AR{m}": mean_defined(recall[:, :, 0, i]) for i, m in enumerate(max_dets)}
    expected_ap50 = mean_defined(precision[:1, :, :, 0, -1])
    for metrics in evaluate("bbox", predictions, targets, max_dets=max_dets).values():
        assert metrics["AP"] == expected_ap
        assert metrics["AP50"] == expected_ap50
        assert {k: metrics[k] for k in expected_ar} == expected_ar
        assert "AR100" not in metrics or 100 in max_dets


@settings(max_examples=10)
@given(case=detection_cases("bbox"))
def test_custom_thresholds_area_ranges_and_categories(case):
    predictions, targets = case
    thresholds = [0.3, 0.5, 0.75]
    ranges = {"all": (0, 1e10), "small": (0, 400), "tiny": (0, 64), "large": (400, 1e10)}

    def configure(p):
        p.iouThrs = np.array(thresholds)
        p.areaRng = [list(r) for r in ranges.values()]
        p.areaRngLbl = list(ranges)
        p.catIds = [1, 2]

    reference = pycocotools_eval(
        *coco_dicts(predictions, targets, "bbox"), "bbox", configure=configure
    )
    precision, recall = reference.eval["precision"], reference.eval["recall"]
    expected = {
        "AP": mean_defined(precision[:, :, :, 0, -1]),
        "AP50": mean_defined(precision[1:2, :, :, 0, -1]),
        "AP75": mean_defined(precision[2:3, :, :, 0, -1]),
        "APs": mean_defined(precision[:, :, :, 1, -1]),
        "AP_tiny": mean_defined(precision[:, :, :, 2, -1]),
        "APl": mean_defined(precision[:, :, :, 3, -1]),
        "AR_tiny": mean_defined(recall[:, :, 2, -1]),
    }
    options = {"iou_thresholds": thresholds, "area_ranges": ranges, "category_ids": [1, 2]}
    for metrics in evaluate("bbox", predictions, targets, **options).values():
        assert {k: metrics[k] for k in expected} == expected
        assert set(metrics["per_class_AP"]) == {1, 2}
        assert "APm" not in metrics


def keypoint_sample(k):
    box = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    points = torch.rand(1, k, 3) * 40
    points[..., 2] = 2
    prediction = {
        "boxes": box,
        "scores": torch.ones(1),
        "labels": torch.ones(1, dtype=torch.int64),
        "keypoints": points,
    }
    target = {
        "boxes": box,
        "labels": torch.ones(1, dtype=torch.int64),
        "image_id": 1,
        "keypoints": points,
    }
    return [prediction], [target]


def test_keypoints_need_sigmas_unless_coco_17():
    predictions, targets = keypoint_sample(5)
    with pytest.raises(ValueError, match=r"5 keypoints, but kpt_oks_sigmas was not given"):
        CocoEvaluator("keypoints").update(predictions, targets)
    with pytest.raises(ValueError, match="kpt_oks_sigmas has 4 values"):
        CocoEvaluator("keypoints", kpt_oks_sigmas=[0.1] * 4).update(predictions, targets)
    evaluator = CocoEvaluator("keypoints", kpt_oks_sigmas=[0.1] * 5)
    evaluator.update(predictions, targets)
    assert evaluator.compute()["keypoints"]["AP"] == pytest.approx(1.0, abs=1e-12)
    evaluator = CocoEvaluator("keypoints")
    evaluator.update(*keypoint_sample(17))
    assert evaluator.compute()["keypoints"]["AP"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_dets", [0, 10]),
        ("max_dets", [10, 10]),
        ("iou_thresholds", [0.0, 0.5]),
        ("iou_thresholds", []),
        ("area_ranges", {"small": (0, 10)}),
        ("area_ranges", {"all": (10, 0)}),
        ("kpt_oks_sigmas", [0.1, -1]),
        ("category_ids", []),
        ("mask_threshold", 1.5),
    ],
)
def test_bad_options_raise_value_error_naming_them(option, value):
    with pytest.raises(ValueError, match=option):
        CocoEvaluator(("bbox", "keypoints"), **{option: value})


def test_default_tables_name_pycocotools_stats():
    evaluator = CocoEvaluator(("bbox", "segm", "keypoints"))
    evaluator.update(
        [
            {
                "boxes": np.zeros((0, 4)),
                "scores": np.zeros(0),
                "labels": np.zeros(0, int),
                "masks": np.zeros((0, 1, 4, 4)),
                "keypoints": np.zeros((0, 17, 3)),
            }
        ],
        [
            {
                "boxes": np.zeros((0, 4)),
                "labels": np.zeros(0, int),
                "masks": np.zeros((0, 4, 4)),
                "keypoints": np.zeros((0, 17, 3)),
                "image_id": 3,
            }
        ],
    )
    metrics = evaluator.compute()
    for iou_type, names in STAT_NAMES.items():
        assert [k for k in metrics[iou_type] if k != "per_class_AP"] == names
        assert all(metrics[iou_type][k] == -1.0 for k in names)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-3, 40) | st.integers(2**20 - 2, 2**20 + 2)),
    st.lists(st.integers(-3, 40) | st.integers(2**20 - 2, 2**20 + 2)),
)
def test_category_membership_equals_numpy_isin(ids, categories):
    # The table lookup that picks the evaluated categories' rows, against numpy's own.
    from detkit.evaluation._prepare import member

    values = np.asarray(ids, dtype=np.int64)
    assert np.array_equal(member(values, categories), np.isin(values, categories))
