"""CocoEvaluator's behaviour at the edges: empty inputs, repeats, errors, output, export."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import numpy as np
import pytest
import torch
from coco_reference import STAT_NAMES, coco_dicts, pycocotools_eval
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from strategies import _detection_case

from detkit.evaluation import CocoEvaluator, available_backends

BACKENDS = available_backends()


def case(iou_type="bbox", seed=0, num_images=4, **options):
    options.setdefault("max_gt", 6)
    options.setdefault("empty_predictions", 0.0)
    return _detection_case(np.random.default_rng(seed), iou_type, num_images, options)


def perfect(targets, iou_type):
    """Predictions equal to the ground truth (crowds left out), scores all different."""
    predictions = []
    for target in targets:
        keep = target["iscrowd"] == 0
        n = int(keep.sum())
        prediction = {
            "boxes": target["boxes"][keep],
            "labels": target["labels"][keep],
            "scores": torch.linspace(0.9, 0.5, n) if n else torch.zeros(0),
        }
        if iou_type == "segm":
            prediction["masks"] = target["masks"][keep][:, None].float()
        if iou_type == "keypoints":
            prediction["keypoints"] = target["keypoints"][keep]
        predictions.append(prediction)
    return predictions


def compute(predictions, targets, iou_type="bbox", **options):
    evaluator = CocoEvaluator(iou_type, **options)
    evaluator.update(predictions, targets)
    return evaluator.compute()


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_predictions_give_ap_one(iou_type, backend):
    _, targets = case(iou_type, seed=3, crowd=0.0)
    for target in targets:  # visible keypoints: OKS 1 needs labelled keypoints
        if "keypoints" in target:
            target["keypoints"][..., 2] = 2
    metrics = compute(perfect(targets, iou_type), targets, iou_type, backend=backend)[iou_type]
    # pycocotools' precision is tp / (tp + fp + eps): exactly 1 only from 2 detections on.
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in metrics["per_class_AP"].values())
    reference = pycocotools_eval(
        *coco_dicts(perfect(targets, iou_type), targets, iou_type), iou_type
    )
    assert [metrics[k] for k in STAT_NAMES[iou_type]] == reference.stats.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_at_all_give_zero_not_a_crash(backend):
    """pycocotools' loadRes([]) raises IndexError (cocoapi#450); here AP is 0."""
    predictions, targets = case(seed=1)
    empty = [{k: v[:0] for k, v in p.items()} for p in predictions]
    metrics = compute(empty, targets, backend=backend)
    assert metrics["num_images"] == 4
    assert metrics["bbox"]["AP"] == 0.0
    assert metrics["bbox"]["AR100"] == 0.0
    reference = pycocotools_eval(*coco_dicts(empty, targets, "bbox"), "bbox")
    assert [metrics["bbox"][k] for k in STAT_NAMES["bbox"]] == reference.stats.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_ground_truth_and_no_images(backend):
    predictions, targets = case(seed=2, max_gt=0)
    metrics = compute(predictions, targets, backend=backend)
    assert metrics["num_images"] == 4
    assert all(metrics["bbox"][k] == -1.0 for k in STAT_NAMES["bbox"])
    assert metrics["bbox"]["per_class_AP"] == {}
    nothing = CocoEvaluator(backend=backend).compute()
    assert nothing["num_images"] == 0 and nothing["bbox"]["AP"] == -1.0


def test_images_without_ground_truth_count_their_false_positives():
    predictions, targets = case(seed=4, num_images=2)
    base = compute(predictions, targets)["bbox"]["AP"]
    negative = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "iscrowd": torch.zeros(0, dtype=torch.int64),
        "image_id": 99,
    }
    false_positive = {
        "boxes": torch.tensor([[0.0, 0.0, 30.0, 30.0]]),
        "scores": torch.ones(1),
        "labels": targets[0]["labels"][:1],
    }
    more = compute([*predictions, false_positive], [*targets, negative])
    assert more["num_images"] == 3
    assert more["bbox"]["AP"] < base


def test_labels_mapped_to_category_ids():
    predictions, targets = case(seed=5)
    mapping = {1: 7, 2: 18, 3: 90, 4: 91}
    metrics = compute(predictions, targets, label_to_category=mapping)["bbox"]
    reference = pycocotools_eval(
        *coco_dicts(predictions, targets, "bbox", label_to_category=mapping),
        "bbox",
        categories=sorted(mapping.values()),
    )
    assert [metrics[k] for k in STAT_NAMES["bbox"]] == reference.stats.tolist()
    assert set(metrics["per_class_AP"]) == set(mapping.values())
    assert metrics["per_class_AP"][91] == -1.0  # label 4 is only ever predicted
    with pytest.raises(
        ValueError,
        match=r"sample image_id=\d+ \(targets\[\d\]\): labels \[1\] are not in label_to_category",
    ):
        compute(predictions, targets, label_to_category={2: 18, 3: 90, 4: 91})


def test_ground_truth_label_0_without_a_mapping_is_logged_once(caplog):
    """Label 0 is background to torchvision's detectors: ground truth of label 0 is never
    predicted, so it lowers recall without a word unless the evaluator says so."""
    predictions, targets = case(seed=5)
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        compute(predictions, targets)
    assert "label 0" not in caplog.text  # labels from 1: nothing to say
    shifted = [{**t, "labels": t["labels"] - 1} for t in targets]
    first = next(i for i, t in enumerate(shifted) if (t["labels"] == 0).any())
    evaluator = CocoEvaluator("bbox")
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        for _ in range(2):
            evaluator.update(predictions, shifted)
    image_id = int(shifted[first]["image_id"])
    assert caplog.text.count("ground-truth label 0") == 1
    assert f"image_id={image_id} (targets[{first}])" in caplog.text
    caplog.clear()
    mapping = {label: label for label in range(5)}  # 0 is a class here, on purpose
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        compute(predictions, shifted, label_to_category=mapping)
    assert "label 0" not in caplog.text


def test_image_id_as_int_or_tensor_gives_the_same_numbers():
    predictions, targets = case(seed=6)
    as_int = [{**t, "image_id": int(t["image_id"])} for t in targets]
    as_tensor = [{**t, "image_id": torch.tensor(int(t["image_id"]))} for t in targets]
    assert compute(predictions, as_int) == compute(predictions, as_tensor)


def test_repeated_identical_images_count_once_and_different_ones_raise():
    predictions, targets = case(seed=7)
    once = compute(predictions, targets)
    evaluator = CocoEvaluator()
    evaluator.update(predictions[:2], targets[:2])
    evaluator.update(predictions, targets)  # the first two again, identical
    evaluator.update(predictions[1:2] * 2, targets[1:2] * 2)  # twice in one batch
    assert evaluator.num_images == 4
    assert evaluator.compute() == once
    changed = {**predictions[0], "scores": predictions[0]["scores"] * 0.5}
    image_id = int(targets[0]["image_id"])
    with pytest.raises(ValueError, match=f"image_id {image_id} was already updated"):
        evaluator.update([changed], targets[:1])
    evaluator.reset()
    assert evaluator.num_images == 0
    evaluator.update([changed], targets[:1])
    assert evaluator.num_images == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p, t: (p[:1], t), "got 1 predictions but 2 targets"),
        (lambda p, t: ({1: p[0], 2: p[1]}, t), "not dicts keyed by image id"),
        (
            lambda p, t: ([{k: v for k, v in p[0].items() if k != "scores"}, p[1]], t),
            r"sample image_id=\d+ \(predictions\[0\]\): missing 'scores'",
        ),
        (
            lambda p, t: ([{**p[0], "boxes": p[0]["boxes"][:, :3]}, p[1]], t),
            r"sample image_id=\d+ \(predictions\[0\]\): expected .*'boxes' \(\d+, 3\)",
        ),
        (
            lambda p, t: (p, [t[0], {k: v for k, v in t[1].items() if k != "image_id"}]),
            r"targets\[1\] has no 'image_id'",
        ),
        (lambda p, t: (p, [t[0], {**t[1], "image_id": 1.5}]), r"targets\[1\]\['image_id'\]"),
        (
            lambda p, t: ([{**p[0], "boxes": p[0]["boxes"] * float("nan")}, p[1]], t),
            r"sample image_id=\d+ \(predictions\[0\]\): 'bbox' has NaN",
        ),
        (
            lambda p, t: (p, [{**t[0], "labels": t[0]["labels"].tolist()}, t[1]]),
            r"sample image_id=\d+ \(targets\[0\]\): field 'labels' must be a tensor",
        ),
        # Fractional labels were truncated (1.7 -> class 1) and matched.
        (
            lambda p, t: ([p[0], {**p[1], "labels": p[1]["labels"] + 0.7}], t),
            r"sample image_id=\d+ \(predictions\[1\]\): 'labels' must be integers .* got \d+\.7",
        ),
        (
            lambda p, t: (p, [{**t[0], "labels": t[0]["labels"].double() + 0.5}, t[1]]),
            r"sample image_id=\d+ \(targets\[0\]\): 'labels' must be integers .* got \d+\.5",
        ),
        (
            lambda p, t: ([{**p[0], "labels": p[0]["labels"] * float("nan")}, p[1]], t),
            r"sample image_id=\d+ \(predictions\[0\]\): 'labels' must be integers .* got nan",
        ),
        (
            lambda p, t: ([p[0], {**p[1], "labels": p[1]["labels"] > 0}], t),
            r"sample image_id=\d+ \(predictions\[1\]\): 'labels' must be integers, got dtype torch.bool",
        ),
        # Ground truth with x2 < x1 (XYWH passed as XYXY) could match nothing: ignored silently.
        (
            lambda p, t: (p, [{**t[0], "boxes": t[0]["boxes"][:, [0, 3, 2, 1]]}, t[1]]),
            r"sample image_id=\d+ \(targets\[0\]\): box 0 \[.*\] has x2 < x1 or y2 < y1",
        ),
        # A negative area put the instance outside every area range: ignored, silently.
        (
            lambda p, t: (p, [{**t[0], "area": -t[0]["area"]}, t[1]]),
            r"sample image_id=\d+ \(targets\[0\]\): 'area' of instance 0 is -\d+\.0; areas "
            "must be >= 0",
        ),
    ],
)
def test_bad_batches_raise_naming_the_image(mutate, message):
    predictions, targets = case(seed=8, num_images=2, max_gt=3, max_random=2)
    with pytest.raises((ValueError, TypeError), match=message):
        CocoEvaluator().update(*mutate(predictions, targets))


def xywh(boxes):
    """XYXY boxes as XYWH, shifted right so that some width is below its x1."""
    shifted = boxes + torch.tensor([30.0, 30.0, 30.0, 30.0])
    return torch.cat([shifted[:, :2], shifted[:, 2:] - shifted[:, :2]], dim=1)


def test_inverted_predicted_boxes_are_false_positives_with_a_warning(caplog):
    """A model may predict x2 < x1 (false positives, as in pycocotools); XYWH boxes passed as
    XYXY give such boxes too, and lowered AP (0.72 -> 0.54 here) without a word."""
    predictions, targets = case(seed=1)
    flipped = [{**predictions[0], "boxes": xywh(predictions[0]["boxes"])}, *predictions[1:]]
    evaluator = CocoEvaluator("bbox")
    evaluator.update(flipped[:2], targets[:2])
    evaluator.update(flipped[2:], targets[2:])
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        metrics = evaluator.compute()["bbox"]
    reference = pycocotools_eval(*coco_dicts(flipped, targets, "bbox"), "bbox")
    assert [metrics[k] for k in STAT_NAMES["bbox"]] == reference.stats.tolist()
    assert metrics["AP"] < compute(predictions, targets)["bbox"]["AP"]
    count = int((flipped[0]["boxes"][:, 2:] < flipped[0]["boxes"][:, :2]).any(1).sum())
    image_id = int(targets[0]["image_id"])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        f"{count} predicted boxes have x2 < x1 or y2 < y1 (the first: sample "
        f"image_id={image_id} (predictions[0]): box "
    )
    assert 'box_convert(boxes, "xywh", "xyxy")' in warning
    # An update refused (image 0 again, other scores) adds nothing to the count.
    rescored = {**flipped[0], "scores": flipped[0]["scores"] / 2}
    with pytest.raises(ValueError, match="already updated with different"):
        evaluator.update([rescored], targets[:1])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        evaluator.compute()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [warning]
    caplog.clear()
    evaluator.reset()
    evaluator.update(predictions, targets)
    with caplog.at_level(logging.WARNING, logger="detkit.evaluation"):
        evaluator.compute()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_boxes_of_zero_width_or_height_are_evaluated_like_pycocotools():
    """x2 == x1 is a (degenerate) XYXY box, not a malformed one: evaluated, not refused."""
    predictions, targets = case(seed=8, num_images=2, max_gt=3, max_random=2)
    flat = predictions[0]["boxes"].clone()
    flat[0, 2] = flat[0, 0]
    flat[1, 3] = flat[1, 1]
    predictions = [{**predictions[0], "boxes": flat}, predictions[1]]
    reference = pycocotools_eval(*coco_dicts(predictions, targets, "bbox"), "bbox")
    metrics = compute(predictions, targets)["bbox"]
    assert [metrics[k] for k in STAT_NAMES["bbox"]] == reference.stats.tolist()


def test_integral_float_labels_count_as_their_integers():
    predictions, targets = case(seed=8, num_images=3)
    expected = compute(predictions, targets)
    as_floats = [{**p, "labels": p["labels"].float()} for p in predictions]
    targets_as_floats = [{**t, "labels": t["labels"].double()} for t in targets]
    assert compute(as_floats, targets_as_floats) == expected


def test_segm_errors_name_the_image():
    predictions, targets = case("segm", seed=9, num_images=1, max_gt=2)
    image_id = int(targets[0]["image_id"])
    no_masks = {k: v for k, v in targets[0].items() if k != "masks"}
    with pytest.raises(ValueError, match=f"image_id={image_id}.*needs ground-truth 'masks'"):
        CocoEvaluator("segm").update(predictions, [no_masks])
    small = {**predictions[0], "masks": predictions[0]["masks"][..., :5, :5]}
    with pytest.raises(ValueError, match=f"image_id={image_id}.*masks are \\(5, 5\\)"):
        CocoEvaluator("segm").update([small], targets)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iou_types": "boxes"}, "unknown 'boxes'"),
        ({"iou_types": ("bbox", "bbox")}, "duplicates"),
        ({"backend": "detectron2"}, "backend must be 'auto' or one of"),
        ({"label_to_category": [1, 2]}, "label_to_category must be a dict"),
        ({"coco_gt": 3}, "coco_gt must be a COCO json path"),
    ],
)
def test_bad_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        CocoEvaluator(**kwargs)


def test_missing_backend_is_a_clear_error(monkeypatch):
    import detkit.evaluation.backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["pycocotools"])
    with pytest.raises(ValueError, match="'hotcoco' is not installed"):
        CocoEvaluator(backend="hotcoco")
    assert CocoEvaluator(backend="auto").backend == "pycocotools"


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_summary_is_pycocotools_table(iou_type):
    predictions, targets = case(iou_type, seed=10)
    evaluator = CocoEvaluator(iou_type)
    with pytest.raises(RuntimeError, match="compute"):
        evaluator.summary()
    evaluator.update(predictions, targets)
    evaluator.compute()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        pycocotools_eval(*coco_dicts(predictions, targets, iou_type), iou_type).summarize()
    expected = [line for line in printed.getvalue().splitlines() if "@[" in line]
    assert evaluator.summary().splitlines() == [f"IoU metric: {iou_type}", *expected]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_output_is_silenced_unless_verbose(backend, capsys, caplog):
    predictions, targets = case(seed=11)
    compute(predictions, targets, backend=backend)
    assert capsys.readouterr().out == ""
    with caplog.at_level("INFO", logger="detkit.evaluation.evaluator"):
        compute(predictions, targets, backend=backend, verbose=True)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in caplog.text
    if backend == "pycocotools":
        assert "Accumulating evaluation results" in capsys.readouterr().out


def test_float64_predictions_are_not_rounded():
    box = torch.tensor([[1.0 + 1e-12, 2.0, 3.25 + 1e-9, 4.5]], dtype=torch.float64)
    prediction = {
        "boxes": box,
        "scores": torch.tensor([0.3 + 1e-13], dtype=torch.float64),
        "labels": torch.tensor([1]),
    }
    target = {"boxes": box.float(), "labels": torch.tensor([1]), "image_id": 1}
    evaluator = CocoEvaluator()
    evaluator.update([prediction], [target])
    (row,) = evaluator.results()
    assert row["bbox"] == [1.0 + 1e-12, 2.0, (3.25 + 1e-9) - (1.0 + 1e-12), 2.5]
    assert row["score"] == 0.3 + 1e-13


def test_mask_threshold():
    probabilities = torch.tensor([[[[0.2, 0.6], [0.8, 0.5]]]])
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.tensor([[[0, 1], [1, 0]]], dtype=torch.uint8),
        "image_id": 1,
    }
    prediction = {
        "boxes": target["boxes"],
        "scores": torch.ones(1),
        "labels": torch.tensor([1]),
        "masks": probabilities,
    }
    for threshold, area in ((0.5, 2), (0.1, 4), (0.7, 1)):
        evaluator = CocoEvaluator("segm", mask_threshold=threshold)
        evaluator.update([prediction], [target])
        (row,) = evaluator.results("segm")
        from pycocotools import mask as mask_utils

        assert int(mask_utils.area(row["segmentation"])) == area


def test_mask_logits_and_0_255_probabilities_are_refused_naming_the_image():
    """Logits thresholded at 0.5 (a probability of 0.62) scored segm AP 0.22 instead of 0.43
    on this case, without a word; 0..255 probabilities over-segmented (0.002)."""
    predictions, targets = case("segm", seed=2)
    logits = [{**p, "masks": torch.logit(p["masks"].clamp(1e-4, 1 - 1e-4))} for p in predictions]
    image_id = int(targets[0]["image_id"])
    message = (
        rf"image_id={image_id} \(predictions\[0\]\): 'masks' hold values down to -9\.2.*sigmoid"
    )
    with pytest.raises(ValueError, match=message):
        compute(logits, targets, "segm")
    # 0..255 probabilities were thresholded at 0.5 / 255: refused too; binary 0/255 pass.
    scaled = [{**p, "masks": p["masks"] * 255} for p in predictions]
    with pytest.raises(ValueError, match=r"'masks' hold values up to 2\d\d.*divide 0..255"):
        compute(scaled, targets, "segm")
    binary = [{**p, "masks": (p["masks"] > 0.5).float() * 255} for p in predictions]
    assert compute(binary, targets, "segm") == compute(predictions, targets, "segm")
    # Masks of no pixel have no values to tell by: evaluated as integer masks are.
    box = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    flat = {"boxes": box, "labels": torch.tensor([1]), "image_id": 1}
    flat_target = {**flat, "masks": torch.zeros(1, 0, 5, dtype=torch.uint8)}
    floating = {**flat, "scores": torch.ones(1), "masks": torch.zeros(1, 1, 0, 5)}
    integer = {**floating, "masks": torch.zeros(1, 1, 0, 5, dtype=torch.uint8)}
    assert compute([floating], [flat_target], "segm") == compute([integer], [flat_target], "segm")
    # The slight undershoot of an interpolation is no logit: thresholded as it is.
    below = [{**p, "masks": p["masks"] - 0.05} for p in predictions]
    clamped = [{**p, "masks": p["masks"].clamp(min=0)} for p in below]
    assert compute(below, targets, "segm") == compute(clamped, targets, "segm")


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_written_results_reproduce_the_metrics_in_pycocotools(iou_type, tmp_path):
    predictions, targets = case(iou_type, seed=12)
    evaluator = CocoEvaluator(iou_type)
    evaluator.update(predictions, targets)
    metrics = evaluator.compute()[iou_type]
    path = evaluator.write_results(tmp_path / "results.json")
    images, annotations, _ = coco_dicts(predictions, targets, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in sorted({a["category_id"] for a in annotations})],
        }
        gt.createIndex()
        dt = gt.loadRes(str(path))
        reference = COCOeval(gt, dt, iou_type)
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert [metrics[k] for k in STAT_NAMES[iou_type]] == reference.stats.tolist()
    assert len(json.loads(path.read_text())) == sum(len(p["scores"]) for p in predictions)


def test_many_updates_grow_the_columns_without_changing_a_number():
    predictions, targets = case("segm", seed=13, num_images=300, max_side=40, max_random=10)
    assert sum(len(p["scores"]) for p in predictions) > 2048  # the columns grow twice
    one_batch = CocoEvaluator("segm")
    one_batch.update(predictions, targets)
    one_by_one = CocoEvaluator("segm")
    for prediction, target in zip(predictions, targets):
        one_by_one.update([prediction], [target])
    one_by_one.update(predictions[:3], targets[:3])  # stored long ago, identical: skipped
    assert one_by_one.num_images == 300
    assert one_by_one.compute() == one_batch.compute()
    assert one_by_one.results("segm") == one_batch.results("segm")
    changed = {**predictions[1], "scores": predictions[1]["scores"] + 0.01}
    with pytest.raises(ValueError, match="already updated with different"):
        one_by_one.update([changed], targets[1:2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_keypoint_batches_before_and_after_real_ones(backend):
    """An update with no images, or instances with no keypoints yet ([0, 0, 3]), neither
    crashes nor fixes K: the metrics equal those of the real batch alone."""
    predictions, targets = case("keypoints", seed=5)
    evaluator = CocoEvaluator("keypoints", backend=backend)
    evaluator.update([], [])
    empty_target = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "keypoints": torch.zeros(0, 0, 3),
        "image_id": 999,
    }
    empty_prediction = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "keypoints": torch.zeros(0, 0, 3),
    }
    evaluator.update([empty_prediction], [empty_target])
    evaluator.update(predictions, targets)
    evaluator.update([], [])
    metrics = evaluator.compute()["keypoints"]
    alone = compute(predictions, targets, "keypoints", backend=backend)["keypoints"]
    # Image 999 has neither ground truth nor detections: it changes nothing.
    assert [metrics[k] for k in STAT_NAMES["keypoints"]] == [
        alone[k] for k in STAT_NAMES["keypoints"]
    ]
    reference = pycocotools_eval(
        *coco_dicts([empty_prediction, *predictions], [empty_target, *targets], "keypoints"),
        "keypoints",
    )
    assert [metrics[k] for k in STAT_NAMES["keypoints"]] == reference.stats.tolist()


def test_results_file_is_replaced_atomically(tmp_path, monkeypatch):
    """A failure while writing leaves the previous results file whole and no temporary file."""
    predictions, targets = case(seed=3)
    evaluator = CocoEvaluator()
    evaluator.update(predictions, targets)
    path = evaluator.write_results(tmp_path / "results.json")
    before = path.read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        evaluator.write_results(path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.mark.parametrize("box_format", ["XYXY", "XYWH", "CXCYWH"])
def test_tv_tensors_targets_and_predictions_give_the_same_numbers(box_format):
    """Datasets return tv_tensors; boxes in another format are converted, not misread."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2.functional import convert_bounding_box_format

    predictions, targets = case("segm", seed=11, num_images=3)
    expected = compute(predictions, targets, ("bbox", "segm"))

    def wrap(boxes, size):
        boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)
        return convert_bounding_box_format(boxes, new_format=box_format)

    wrapped_targets = [
        {
            **t,
            "boxes": wrap(t["boxes"], t["masks"].shape[-2:]),
            "masks": tv_tensors.Mask(t["masks"]),
        }
        for t in targets
    ]
    wrapped_predictions = [
        {
            **p,
            "boxes": wrap(p["boxes"], p["masks"].shape[-2:]),
            "masks": tv_tensors.Mask(p["masks"]),
        }
        for p in predictions
    ]
    assert compute(wrapped_predictions, wrapped_targets, ("bbox", "segm")) == expected
