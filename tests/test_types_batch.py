"""The batch checks of detkit.types (check_predictions, check_targets): the one validator
CocoEvaluator.update and coco_results run first, on every image of a batch."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from detkit.evaluation import CocoEvaluator, coco_results
from detkit.types import check_predictions, check_targets


def prediction(n=3, *, k=2, size=(6, 8)):
    return {
        "boxes": torch.rand(n, 4),
        "scores": torch.rand(n),
        "labels": torch.ones(n, dtype=torch.int64),
        "masks": torch.rand(n, 1, *size),
        "keypoints": torch.rand(n, k, 3),
    }


def target(n=3, *, k=2, size=(6, 8)):
    return {
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(n, 1),
        "labels": torch.ones(n, dtype=torch.int64),
        "masks": torch.ones(n, *size, dtype=torch.uint8),
        "keypoints": torch.ones(n, k, 3),
        "area": torch.ones(n),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
    }


ALL = ("bbox", "segm", "keypoints")


@given(
    counts=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    numpy_arrays=st.booleans(),
    mask_rank=st.sampled_from([3, 4]),
)
def test_well_formed_batches_pass(counts, numpy_arrays, mask_rank):
    predictions = [prediction(n) for n in counts]
    targets = [target(n) for n in counts]
    for p in predictions:
        if mask_rank == 3:
            p["masks"] = p["masks"][:, 0]
    if numpy_arrays:
        predictions = [{k: v.numpy() for k, v in p.items()} for p in predictions]
        targets = [{k: v.numpy() for k, v in t.items()} for t in targets]
    ids = list(range(10, 10 + len(counts)))
    check_predictions(predictions, ids, iou_types=ALL)
    check_targets(targets, ids, iou_types=ALL)


# (field, a wrong value for N = 3, what the message says)
PREDICTION_FAULTS = [
    ("boxes", torch.rand(3, 5), r"'boxes' \(3, 5\)"),
    ("scores", torch.rand(2), r"'scores' \(2,\)"),
    ("labels", torch.ones(3, 1, dtype=torch.int64), r"'labels' \(3, 1\)"),
    ("masks", torch.rand(3, 2, 6, 8), r"'masks' \(3, 2, 6, 8\)"),
    ("keypoints", torch.rand(3, 2, 2), r"'keypoints' \(3, 2, 2\)"),
    ("labels", torch.ones(3, dtype=torch.bool), "'labels' must be integers, got dtype torch.bool"),
    ("boxes", [[0, 0, 1, 1]] * 3, "'boxes' must be a tensor, got list"),
    ("scores", None, "missing 'scores'"),
]


@given(
    fault=st.sampled_from(PREDICTION_FAULTS),
    size=st.integers(1, 4),
    data=st.data(),
)
def test_a_bad_prediction_is_named_by_position_and_image_id(fault, size, data):
    position = data.draw(st.integers(0, size - 1))
    key, value, message = fault
    predictions = [prediction() for _ in range(size)]
    predictions[position] = {**predictions[position], key: value}
    ids = [100 + i for i in range(size)]
    with pytest.raises((ValueError, TypeError)) as error:
        check_predictions(predictions, ids, iou_types=ALL)
    text = str(error.value)
    assert text.startswith(f"sample image_id={100 + position} (predictions[{position}]): ")
    assert re.search(message, text), text


TARGET_FAULTS = [
    ("boxes", torch.rand(3, 3), r"field 'boxes' must be a Tensor\[N, 4\], got \(3, 3\)"),
    (
        "labels",
        torch.ones(4, dtype=torch.int64),
        r"field 'labels' has shape \(4,\) but there are 3",
    ),
    ("area", torch.ones(3, 1), r"field 'area' must be a Tensor\[3\], got shape \(3, 1\)"),
    ("iscrowd", torch.zeros(2, dtype=torch.int64), r"field 'iscrowd' has shape \(2,\)"),
    ("masks", torch.ones(3, 1, 6, 8, dtype=torch.uint8), r"'masks' must be a Tensor\[N, H, W\]"),
    ("masks", None, "missing 'masks': segm evaluation needs ground-truth 'masks'"),
    (
        "keypoints",
        torch.ones(3, 2),
        r"'keypoints' must be a Tensor\[N, K, 3\] .*got shape \(3, 2\)",
    ),
    ("area", [1.0, 1.0, 1.0], "field 'area' must be a tensor, got list"),
    ("labels", torch.ones(3, dtype=torch.complex64), "'labels' must be integers"),
]


@pytest.mark.parametrize(("key", "value", "message"), TARGET_FAULTS)
def test_a_bad_target_is_named_by_position_and_image_id(key, value, message):
    targets = [target(), {**target(), key: value}]
    with pytest.raises(ValueError, match=r"^sample image_id=8 \(targets\[1\]\): " + f".*{message}"):
        check_targets(targets, [7, 8], iou_types=ALL)


def test_not_a_dict_is_a_type_error():
    with pytest.raises(TypeError, match=r"sample image_id=3 \(predictions\[0\]\): expected a dict"):
        check_predictions([[1, 2]], [3])
    with pytest.raises(TypeError, match=r"sample image_id=4 \(targets\[0\]\): expected a dict"):
        check_targets([(1, 2)], [4])


def test_only_the_fields_of_the_asked_iou_types_are_needed():
    bare = {k: v for k, v in prediction().items() if k in ("boxes", "scores", "labels")}
    check_predictions([bare], [1], iou_types=("bbox",))
    with pytest.raises(ValueError, match="missing 'masks'"):
        check_predictions([bare], [1], iou_types=("segm",))
    no_boxes = {k: v for k, v in prediction().items() if k != "boxes"}
    check_predictions([no_boxes], [1], iou_types=("segm", "keypoints"))


def test_the_evaluator_and_coco_results_check_first_and_keep_nothing_of_a_bad_batch():
    evaluator = CocoEvaluator(("bbox", "segm"))
    good_t, good_p = target(size=(6, 8)), prediction(size=(6, 8))
    bad_p = {**prediction(), "masks": torch.rand(3, 2, 6, 8)}
    with pytest.raises(ValueError, match=r"sample image_id=2 \(predictions\[1\]\)"):
        evaluator.update([good_p, bad_p], [{**good_t, "image_id": 1}, {**good_t, "image_id": 2}])
    assert evaluator.num_images == 0  # the good image of the refused batch is not kept either
    with pytest.raises(ValueError, match=r"sample image_id=5 \(predictions\[0\]\)"):
        coco_results([{**good_p, "boxes": np.zeros((3, 3))}], [5])


SHAPE_FAULTS = [f for f in TARGET_FAULTS if f[1] is not None and "integers" not in f[2]]


@pytest.mark.parametrize(("key", "value", "message"), SHAPE_FAULTS)
def test_transforms_and_evaluation_say_the_same_of_a_malformed_target(key, value, message):
    """One shape check (detkit.types.instance_shape_problem) behind both: a transform's
    refusal and the evaluator's name the same field with the same words."""
    from detkit.data import transforms as T
    from detkit.types import instance_shape_problem

    broken = {**target(), key: value, "image_id": 8}
    problem = instance_shape_problem(broken)
    assert problem is not None and problem.field == key
    said = f"field '{problem.field}' {problem.message}"
    assert re.search(message, said), said
    with pytest.raises(ValueError) as by_evaluator:
        CocoEvaluator("bbox").update([prediction()], [broken])
    assert said in str(by_evaluator.value)
    # A transform also knows the image, so masks are checked against its size.
    problem = instance_shape_problem(broken, image_size=(6, 8))
    with pytest.raises(ValueError) as by_transform:
        T.RandomHorizontalFlip(1.0)(torch.zeros(3, 6, 8), broken)
    assert f"field '{problem.field}' {problem.message}" in str(by_transform.value)
