"""Ground truth given up front (coco_gt=): json path, COCO object or dict; its pitfalls."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from coco_reference import STAT_NAMES, coco_dicts, pycocotools_eval
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from strategies import _detection_case

from detkit.evaluation import CocoEvaluator, available_backends

BACKENDS = available_backends()


def case(iou_type="bbox", seed=0):
    options = {"max_gt": 6, "empty_predictions": 0.0}
    return _detection_case(np.random.default_rng(seed), iou_type, 4, options)


def ground_truth(predictions, targets, iou_type):
    images, annotations, _ = coco_dicts(predictions, targets, iou_type)
    categories = [
        {"id": c, "name": str(c)} for c in sorted({a["category_id"] for a in annotations})
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def ids_only(targets):
    return [{"image_id": t["image_id"]} for t in targets]


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
@pytest.mark.parametrize("form", ["path", "coco", "dict"])
def test_coco_gt_equals_targets_and_pycocotools(iou_type, form, tmp_path):
    predictions, targets = case(iou_type, seed=1)
    dataset = ground_truth(predictions, targets, iou_type)
    if form == "path":
        for ann in dataset["annotations"]:
            if "segmentation" in ann:
                ann["segmentation"]["counts"] = ann["segmentation"]["counts"].decode()
        source = tmp_path / "gt.json"
        source.write_text(json.dumps(dataset))
    elif form == "coco":
        source = COCO()
        source.dataset = dataset
        source.createIndex()
    else:
        source = dataset
    before = copy.deepcopy(dataset)
    reference = pycocotools_eval(*coco_dicts(predictions, targets, iou_type), iou_type)
    for backend in BACKENDS:
        evaluator = CocoEvaluator(iou_type, coco_gt=source, backend=backend)
        evaluator.update(predictions[:2], ids_only(targets[:2]))
        evaluator.update(predictions[2:], [int(t["image_id"]) for t in targets[2:]])
        metrics = evaluator.compute()[iou_type]
        assert [metrics[k] for k in STAT_NAMES[iou_type]] == reference.stats.tolist()
    assert dataset == before  # never modified


def test_only_the_images_seen_are_evaluated():
    predictions, targets = case(seed=2)
    dataset = ground_truth(predictions, targets, "bbox")
    evaluator = CocoEvaluator(coco_gt=dataset)
    evaluator.update(predictions[:2], ids_only(targets[:2]))
    metrics = evaluator.compute()
    subset = pycocotools_eval(
        *coco_dicts(predictions[:2], targets[:2], "bbox"),
        "bbox",
        categories=[c["id"] for c in dataset["categories"]],
    )
    assert metrics["num_images"] == 2
    assert [metrics["bbox"][k] for k in STAT_NAMES["bbox"]] == subset.stats.tolist()


def test_annotation_id_zero_does_not_misscore():
    """pycocotools takes a match to annotation id 0 for no match (cocoapi#664)."""
    dataset = {
        "images": [{"id": 1, "height": 64, "width": 64}],
        "annotations": [
            {
                "id": i,
                "image_id": 1,
                "category_id": 1,
                "bbox": [x, 5.0, 8.0, 8.0],
                "area": 64.0,
                "iscrowd": 0,
            }
            for i, x in enumerate([1.0, 20.0, 40.0])
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    boxes = torch.tensor([[x, 5.0, x + 8.0, 13.0] for x in (1.0, 20.0, 40.0)])
    prediction = {
        "boxes": boxes,
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.ones(3, dtype=torch.int64),
    }
    for backend in BACKENDS:
        evaluator = CocoEvaluator(coco_gt=dataset, backend=backend)
        evaluator.update([prediction], [1])
        assert evaluator.compute()["bbox"]["AP"] == 1.0
    raw = pycocotools_eval(
        dataset["images"],
        dataset["annotations"],
        [
            {"image_id": 1, "category_id": 1, "bbox": [*b[:2], 8.0, 8.0], "score": s}
            for b, s in zip(boxes.tolist(), [0.9, 0.8, 0.7])
        ],
        "bbox",
    )
    assert raw.stats[0] < 0.9  # what plain pycocotools reports for the same input


def test_missing_iscrowd_and_area_are_filled(caplog):
    """pycocotools raises KeyError on them (cocoapi#374); here iscrowd=0, area=box area."""
    predictions, targets = case(seed=3)
    dataset = ground_truth(predictions, targets, "bbox")
    bare = copy.deepcopy(dataset)
    for ann in bare["annotations"]:
        del ann["iscrowd"], ann["area"]
    filled = copy.deepcopy(bare)
    for ann in filled["annotations"]:
        ann["iscrowd"], ann["area"] = 0, ann["bbox"][2] * ann["bbox"][3]
    reference = pycocotools_eval(
        filled["images"], filled["annotations"], coco_dicts(predictions, targets, "bbox")[2], "bbox"
    )
    with caplog.at_level("WARNING"):
        evaluator = CocoEvaluator(coco_gt=bare)
        evaluator.update(predictions, ids_only(targets))
        metrics = evaluator.compute()["bbox"]
    assert [metrics[k] for k in STAT_NAMES["bbox"]] == reference.stats.tolist()
    assert "have no 'area'" in caplog.text


def test_polygons_are_rasterized_like_pycocotools():
    dataset = {
        "images": [{"id": 5, "height": 40, "width": 50}],
        "annotations": [
            {
                "id": 1,
                "image_id": 5,
                "category_id": 2,
                "bbox": [5, 5, 20, 15],
                "area": 200.0,
                "iscrowd": 0,
                "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]],
            },
            {
                "id": 2,
                "image_id": 5,
                "category_id": 2,
                "bbox": [30, 10, 10, 10],
                "area": 50.0,
                "iscrowd": 0,
                "segmentation": [[30, 10, 40, 10, 30, 20]],
            },
        ],
        "categories": [{"id": 2, "name": "two"}],
    }
    masks = torch.zeros(2, 1, 40, 50)
    masks[0, 0, 5:20, 5:25] = 1
    masks[1, 0, 10:20, 30:36] = 1
    prediction = {
        "boxes": torch.zeros(2, 4),
        "scores": torch.tensor([0.9, 0.6]),
        "labels": torch.tensor([2, 2]),
        "masks": masks,
    }
    results = [
        {
            "image_id": 5,
            "category_id": 2,
            "score": s,
            "segmentation": mask_utils.encode(np.asfortranarray(m[0].numpy().astype(np.uint8))),
        }
        for m, s in zip(masks, [0.9, 0.6])
    ]
    reference = pycocotools_eval(dataset["images"], dataset["annotations"], results, "segm")
    for backend in BACKENDS:
        evaluator = CocoEvaluator("segm", coco_gt=dataset, backend=backend)
        evaluator.update([prediction], [5])
        metrics = evaluator.compute()["segm"]
        assert [metrics[k] for k in STAT_NAMES["segm"]] == reference.stats.tolist()


def test_empty_segmentation_is_a_clear_error():
    """pycocotools crashes deep inside on ``segmentation: []`` in segm mode."""
    dataset = {
        "images": [{"id": 1, "height": 8, "width": 8}],
        "annotations": [
            {
                "id": 4,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "area": 4.0,
                "iscrowd": 0,
                "segmentation": [],
            }
        ],
        "categories": [{"id": 1}],
    }
    evaluator = CocoEvaluator("segm", coco_gt=dataset)
    evaluator.update(
        [
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 1, 8, 8),
            }
        ],
        [1],
    )
    with pytest.raises(ValueError, match=r"annotation 4 \(image_id 1\) has no segmentation"):
        evaluator.compute()
    bbox = CocoEvaluator("bbox", coco_gt=dataset)  # fine for boxes
    bbox.update(
        [
            {
                "boxes": torch.tensor([[0.0, 0, 2, 2]]),
                "scores": torch.ones(1),
                "labels": torch.ones(1, dtype=torch.int64),
            }
        ],
        [1],
    )
    assert bbox.compute()["bbox"]["AP"] == pytest.approx(1.0, abs=1e-12)


def test_image_not_in_coco_gt_and_unknown_categories(caplog):
    predictions, targets = case(seed=4)
    dataset = ground_truth(predictions, targets, "bbox")
    with pytest.raises(
        ValueError, match=r"targets\[0\]: image_id 123456 is not in coco_gt \(4 images\)"
    ):
        CocoEvaluator(coco_gt=dataset).update(predictions[:1], [123456])
    shifted = [{**p, "labels": p["labels"] + 100} for p in predictions]
    evaluator = CocoEvaluator(coco_gt=dataset)
    evaluator.update(shifted, ids_only(targets))
    with caplog.at_level("WARNING"):
        metrics = evaluator.compute()
    assert metrics["bbox"]["AP"] == 0.0
    assert "outside the evaluated categories" in caplog.text


def _one_mask_dataset(segmentation, *, height=8, width=8, category_id=1):
    return {
        "images": [{"id": 1, "height": height, "width": width}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": category_id,
                "bbox": [2, 2, 3, 3],
                "area": 9.0,
                "iscrowd": 0,
                "segmentation": segmentation,
            }
        ],
        "categories": [{"id": 1}],
    }


def _square_prediction(size=8):
    masks = torch.zeros(1, 1, size, size)
    masks[0, 0, 2:5, 2:5] = 0.9
    return {
        "boxes": torch.tensor([[2.0, 2.0, 5.0, 5.0]]),
        "scores": torch.ones(1),
        "labels": torch.ones(1, dtype=torch.int64),
        "masks": masks,
    }


def test_well_formed_rle_ground_truth_in_all_its_forms_scores_one():
    square = np.zeros((8, 8), dtype=np.uint8, order="F")
    square[2:5, 2:5] = 1
    rle = mask_utils.encode(square)
    runs = [16 + 2, 3, 5, 3, 5, 3, 8 * 8 - 16 - 2 - 19]  # the same square, uncompressed
    for segmentation in (
        rle,
        {**rle, "counts": rle["counts"].decode()},
        {"size": [8, 8], "counts": runs},
    ):
        evaluator = CocoEvaluator("segm", coco_gt=_one_mask_dataset(segmentation))
        evaluator.update([_square_prediction()], [1])
        assert evaluator.compute()["segm"]["AP"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        # runs of 5 + 2 pixels: pycocotools leaves the other 57 uninitialised
        ({"size": [8, 8], "counts": "52"}, r"covers 7 pixels, not 8 x 8 = 64"),
        # 2660 pixels: pycocotools writes past the mask's end
        ({"size": [8, 8], "counts": b"b035000f0Rb0"}, r"covers \d+ pixels, not 8 x 8 = 64"),
        ({"size": [8, 8], "counts": "b035000f"}, r"is malformed"),  # last number unfinished
        ({"size": [8, 8], "counts": "b0 35"}, r"is malformed"),  # a character below '0'
        ({"size": [8, 8], "counts": [10, 3, 40]}, r"cover 8 x 8 = 64 pixels, got 53"),
        ({"size": [8, 8], "counts": [70, -6]}, r"must be non-negative"),
        ({"size": [8, 8], "counts": "é"}, r"compressed ASCII string"),
        ({"counts": "b035000f0"}, r"needs 'size'"),
        ({"size": [6, 10], "counts": ">33000l0"}, r"\(6, 10\) \(height, width\) but the image"),
    ],
)
def test_rle_ground_truth_that_pycocotools_misreads_is_a_clear_error(segmentation, message):
    evaluator = CocoEvaluator("segm", coco_gt=_one_mask_dataset(segmentation))
    evaluator.update([_square_prediction()], [1])
    with pytest.raises(ValueError, match=r"coco_gt annotation 7 \(image_id 1\).*" + message):
        evaluator.compute()


@pytest.mark.parametrize("field", ["category_id", "image_id"])
def test_fractional_ids_in_coco_gt_are_errors_integral_floats_are_fine(field):
    dataset = ground_truth(*case(seed=5), "bbox")
    dataset["annotations"][0][field] = dataset["annotations"][0][field] + 0.7
    with pytest.raises(ValueError, match=rf"coco_gt annotation 1.*'{field}' must be an integer"):
        CocoEvaluator(coco_gt=dataset)
    dataset["annotations"][0][field] = float(round(dataset["annotations"][0][field] - 0.7))
    CocoEvaluator(coco_gt=dataset)  # 3.0 is the integer 3


@pytest.mark.parametrize("field", ["masks", "canvas_size"])
def test_targets_of_resized_images_are_refused_with_coco_gt(field):
    """The model's predictions are in the frame of the image it saw: a target whose image was
    resized (an eval transform) no longer matches coco_gt's annotations, and scoring them
    together would give a wrong AP without a word."""
    from torchvision import tv_tensors

    predictions, targets = case("segm", seed=5)
    dataset = ground_truth(predictions, targets, "segm")
    height, width = targets[1]["masks"].shape[1:]
    evaluator = CocoEvaluator("bbox", coco_gt=dataset)
    same = [{**t, "boxes": tv_tensors.BoundingBoxes(t["boxes"], format="XYXY",
             canvas_size=tuple(t["masks"].shape[1:]))} for t in targets]  # fmt: skip
    evaluator.update(predictions, same)  # at coco_gt's sizes: fine
    resized = dict(same[1])
    if field == "masks":
        resized["masks"] = resized["masks"][:, : height // 2]
    else:
        del resized["masks"]
        resized["boxes"] = tv_tensors.BoundingBoxes(
            resized["boxes"] / 2, format="XYXY", canvas_size=(height // 2, width // 2)
        )
    image_id = int(targets[1]["image_id"])
    with pytest.raises(
        ValueError,
        match=rf"targets\[1\] \(image_id {image_id}\): the image is \(\d+, \d+\) \(H, W\).*"
        rf"coco_gt gives \({height}, {width}\): the model sees a resized image",
    ):
        CocoEvaluator("bbox", coco_gt=dataset).update(predictions[:2], [same[0], resized])
