"""The bbox fast lane of ``update`` stores exactly what the full path stores, and declines
every batch the full path would refuse, warn about or de-duplicate."""

from __future__ import annotations

import logging
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import detection_cases
from torchvision.ops import box_convert
from torchvision.tv_tensors import BoundingBoxes

from detkit.evaluation import CocoEvaluator
from detkit.evaluation._lane import BoxLane
from detkit.evaluation._table import DERIVED_COLUMNS


def _stored(evaluator: CocoEvaluator) -> dict:
    """Everything the evaluator holds for its images, column by column."""
    block = evaluator._flush().merged()
    if block is None:
        return {}
    out = {
        "ids": block.images.ids,
        "heights": block.images.heights,
        "widths": block.images.widths,
        "gt_counts": block.gt_counts,
        "dt_counts": block.dt_counts,
    }
    for part, table in (("gt", block.gt), ("dt", block.dt)):
        for name, column in table.columns(skip=DERIVED_COLUMNS[part]).items():
            out[f"{part}.{name}"] = column
        out[f"{part}.image_id"] = table.image_id
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _batches(cases, size):
    predictions, targets = [], []
    for n, (p, t) in enumerate(cases):
        for prediction, target in zip(p, t):
            target = {**target, "image_id": len(targets) + 1}
            if n % 3 == 1:  # some batches without iscrowd, some with integer iscrowd
                target.pop("iscrowd", None)
            if n % 3 == 2:  # tv_tensors boxes in XYWH: converted, not misread
                xywh = box_convert(target["boxes"], "xyxy", "xywh")
                target["boxes"] = BoundingBoxes(xywh, format="XYWH", canvas_size=(500, 500))
            predictions.append(prediction)
            targets.append(target)
    for start in range(0, len(targets), size):
        yield predictions[start : start + size], targets[start : start + size]


@settings(max_examples=40, deadline=None)
@given(st.lists(detection_cases(), min_size=1, max_size=6), st.integers(1, 3))
def test_the_lane_stores_what_the_full_path_stores(cases, batch_size):
    batches = list(_batches(cases, batch_size))
    fast, full = CocoEvaluator("bbox"), CocoEvaluator("bbox")
    offer, taken = BoxLane.offer, []

    def counted(self, *args):
        taken.append(offer(self, *args))
        return taken[-1]

    with mock.patch.object(BoxLane, "offer", counted):
        for predictions, targets in batches:
            fast.update(predictions, targets)
    with mock.patch.object(BoxLane, "offer", lambda self, *args: False):
        for predictions, targets in batches:
            full.update(predictions, targets)
    assert any(taken)  # the lane took batches (not a comparison of the full path with itself)
    assert fast.num_images == full.num_images
    _assert_same(_stored(fast), _stored(full))
    assert fast.compute() == full.compute()


def _case(n=3, image_id=1, **changes):
    target = {
        "boxes": torch.tensor([[1.0, 2.0, 11.0, 12.0]] * n),
        "labels": torch.ones(n, dtype=torch.int64),
        "area": torch.full((n,), 100.0),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "image_id": image_id,
    }
    prediction = {
        "boxes": torch.tensor([[1.0, 2.0, 11.0, 12.0]] * n),
        "scores": torch.full((n,), 0.9),
        "labels": torch.ones(n, dtype=torch.int64),
    }
    for key, value in changes.items():
        part, field = key.split("__")
        (target if part == "target" else prediction)[field] = value
    return prediction, target


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prediction__scores": torch.tensor([0.9, float("nan"), 0.1])}, "NaN"),
        ({"target__area": torch.tensor([1.0, -1.0, 1.0])}, "areas must be >= 0"),
        ({"target__boxes": torch.tensor([[5.0, 5, 1, 9]] * 3)}, "x2 < x1"),
        ({"target__labels": torch.tensor([1, -2, 1])}, "non-negative"),
        ({"prediction__labels": torch.tensor([1.5, 1.0, 1.0])}, "must be integers"),
    ],
)
def test_a_bad_batch_gets_the_full_paths_error_after_the_good_ones_are_kept(changes, message):
    evaluator = CocoEvaluator("bbox")
    good = _case(image_id=1)
    evaluator.update([good[0]], [good[1]])
    bad = _case(image_id=2, **changes)
    with pytest.raises(ValueError, match=message) as raised:
        evaluator.update([bad[0]], [bad[1]])
    assert "image_id=2" in str(raised.value)
    assert evaluator.num_images == 1  # the good batch kept, the bad one not
    assert evaluator.compute()["bbox"]["AP"] == 1.0


def test_the_lane_keeps_copies_not_the_callers_tensors():
    evaluator = CocoEvaluator("bbox")
    prediction, target = _case()
    evaluator.update([prediction], [target])
    prediction["boxes"].add_(50)  # the caller reuses its tensors after the update
    target["labels"].fill_(7)
    assert evaluator.compute()["bbox"]["AP"] == 1.0


def test_label_zero_is_still_warned_about_and_repeats_still_checked(caplog):
    evaluator = CocoEvaluator("bbox")
    first = _case(image_id=1)
    evaluator.update([first[0]], [first[1]])
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation.evaluator"):
        zero = _case(image_id=2, target__labels=torch.tensor([0, 1, 1]))
        evaluator.update([zero[0]], [zero[1]])
    assert "ground-truth label 0" in caplog.text
    evaluator.update([first[0]], [first[1]])  # an identical repeat: skipped
    assert evaluator.num_images == 2
    other = _case(image_id=1, prediction__scores=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="already updated with different"):
        evaluator.update([other[0]], [other[1]])
