"""Conversions (XYWH, RLE, result dicts) and writing a dataset's ground truth as COCO json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from pycocotools import mask as mask_utils
from strategies import binary_masks

from detkit.data import InstanceMaskDataset
from detkit.evaluation import (
    CocoEvaluator,
    coco_ground_truth,
    coco_results,
    masks_to_rle,
    write_coco_ground_truth,
    xyxy_to_xywh,
)


@settings(max_examples=60)
@given(masks=binary_masks(max_side=40))
def test_masks_to_rle_equals_pycocotools_one_by_one(masks):
    expected = [mask_utils.encode(np.asfortranarray(m.numpy())) for m in masks]
    assert masks_to_rle(masks) == expected
    assert masks_to_rle(masks.bool()) == expected
    assert masks_to_rle(masks.numpy()[:, None]) == expected
    probabilities = masks[:, None].float() * 0.75 + 0.1  # 0.85 inside, 0.1 outside
    assert masks_to_rle(probabilities) == expected
    assert masks_to_rle(probabilities, threshold=0.9) == [
        mask_utils.encode(np.asfortranarray(np.zeros_like(m.numpy()))) for m in masks
    ]


@pytest.mark.filterwarnings("ignore:detkit.evaluation.xyxy_to_xywh is deprecated")
def test_xyxy_to_xywh_keeps_float64_and_is_exact_for_float32():
    boxes32 = torch.tensor([[0.1, 0.2, 100.7, 50.3]])
    x1, y1, x2, y2 = boxes32[0].tolist()
    assert xyxy_to_xywh(boxes32).tolist() == [[x1, y1, x2 - x1, y2 - y1]]
    boxes64 = torch.tensor([[0.1, 0.2, 100.7, 50.3]], dtype=torch.float64)
    assert xyxy_to_xywh(boxes64).tolist() == [[0.1, 0.2, 100.7 - 0.1, 50.3 - 0.2]]
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        xyxy_to_xywh(torch.zeros(2, 3))
    halves = torch.tensor([[1.0, 2.0, 4.5, 8.0]], dtype=torch.bfloat16)  # exact in bf16
    assert xyxy_to_xywh(halves).tolist() == [[1.0, 2.0, 3.5, 6.0]]
    assert xyxy_to_xywh(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_xyxy_to_xywh_is_deprecated_for_box_convert_in_float64_which_is_exact():
    boxes = torch.tensor([[0.1, 0.2, 100.7, 50.3], [3.0, 4.0, 5.5, 9.25]])
    with pytest.warns(DeprecationWarning, match="box_convert"):
        old = xyxy_to_xywh(boxes)
    new = torchvision.ops.box_convert(boxes.double(), "xyxy", "xywh").numpy()
    assert old.tolist() == new.tolist()


def test_coco_results_of_nothing_is_an_empty_list():
    for iou_type in ("bbox", "segm", "keypoints"):
        assert coco_results([], [], iou_type=iou_type) == []


def test_coco_results_formats():
    prediction = {
        "boxes": torch.tensor([[1.0, 2.0, 4.0, 8.0]]),
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([2]),
        "masks": torch.ones(1, 1, 3, 3),
        "keypoints": torch.tensor([[[1.0, 2.0, 1.0], [3.0, 5.0, 1.0]]]),
    }
    (segm,) = coco_results([prediction], [torch.tensor(4)], iou_type="segm")
    assert segm["segmentation"]["size"] == [3, 3]
    assert isinstance(segm["segmentation"]["counts"], str)
    json.dumps(segm)
    (points,) = coco_results([prediction], [4], iou_type="keypoints", label_to_category={2: 5})
    assert points == {
        "image_id": 4,
        "category_id": 5,
        "keypoints": [1.0, 2.0, 1.0, 3.0, 5.0, 1.0],
        "score": 0.5,
    }
    with pytest.raises(ValueError, match="must align"):
        coco_results([prediction], [1, 2])
    with pytest.raises(ValueError, match="iou_type must be one of"):
        coco_results([prediction], [1], iou_type="mask")


def test_dataset_ground_truth_json_evaluates_like_targets(synthetic_root, tmp_path):
    root = synthetic_root
    images = sorted((root / "PNGImages").glob("*.png"))
    dataset = InstanceMaskDataset([(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images])
    path = write_coco_ground_truth(dataset, tmp_path / "gt.json", category_names={1: "person"})
    written = json.loads(path.read_text())
    assert written["categories"] == [{"id": 1, "name": "person", "supercategory": ""}]
    assert [a["id"] for a in written["annotations"]] == list(
        range(1, len(written["annotations"]) + 1)
    )
    samples = [dataset[i] for i in range(len(dataset))]
    assert len(written["images"]) == len(samples)
    assert sum(len(t["boxes"]) for _, t in samples) == len(written["annotations"])
    predictions = []
    generator = torch.Generator().manual_seed(0)
    for _, target in samples:
        n = len(target["boxes"])
        jitter = torch.randn(n, 4, generator=generator)
        masks = target["masks"][:, None].float() * 0.8
        predictions.append(
            {
                "boxes": target["boxes"] + jitter,
                "labels": target["labels"],
                "scores": torch.rand(n, generator=generator),
                "masks": masks,
            }
        )
    targets = [t for _, t in samples]
    from_targets = CocoEvaluator(("bbox", "segm"))
    from_file = CocoEvaluator(("bbox", "segm"), coco_gt=path)
    for start in range(0, len(samples), 3):
        from_targets.update(predictions[start : start + 3], targets[start : start + 3])
        from_file.update(
            predictions[start : start + 3], [t["image_id"] for t in targets[start : start + 3]]
        )
    assert from_file.compute() == from_targets.compute()


def test_coco_ground_truth_errors():
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0]]),
        "labels": torch.tensor([1]),
        "image_id": 4,
    }
    image = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match="image_id 4 appears twice"):
        coco_ground_truth([(image, target), (image, target)])
    with pytest.raises(ValueError, match=r"sample \(dataset\[0\]\): target has no 'image_id'"):
        coco_ground_truth([(image, {"boxes": target["boxes"], "labels": target["labels"]})])
    mapped = coco_ground_truth([(image, target)], label_to_category={1: 3, 2: 9})
    assert [c["id"] for c in mapped["categories"]] == [3, 9]
    assert mapped["annotations"][0]["category_id"] == 3


def _one_box_sample(image_id: int, label: int) -> tuple:
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0]]),
        "labels": torch.tensor([label]),
        "image_id": image_id,
    }
    return torch.zeros(3, 8, 8), target


@pytest.mark.parametrize("writer", ["ground_truth", "results"])
def test_failed_json_writes_leave_the_previous_file_whole(tmp_path, monkeypatch, writer):
    """Both files the evaluation writes go through detkit.files.atomic_write: synced before
    the rename, so a failing sync (a full disk) keeps the old file and leaves no temporary."""
    path = tmp_path / "out.json"

    def write(label: int) -> None:
        if writer == "ground_truth":
            write_coco_ground_truth([_one_box_sample(1, label)], path)
        else:
            evaluator = CocoEvaluator()
            _, target = _one_box_sample(1, label)
            prediction = {
                "boxes": target["boxes"],
                "scores": torch.tensor([0.9]),
                "labels": target["labels"],
            }
            evaluator.update([prediction], [target])
            evaluator.write_results(path)

    write(1)
    before = path.read_text()
    assert '"category_id": 1' in before

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("detkit.files.os.fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        write(2)
    assert "out.json" in str(raised.value)  # the error names the file
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
