"""float32_decoding: under autocast, boxes, masks and keypoints are decoded in float32."""

from __future__ import annotations

import pytest
import torch
from strategies import tiny_detector

from detkit.models import float32_decoding


def _on_bfloat16_grid(values: torch.Tensor) -> bool:
    return bool(torch.equal(values.float(), values.bfloat16().float()))


def _predict(model, image, *, cast: bool):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if not cast:
            return model([image])[0]
        with float32_decoding(model):
            return model([image])[0]


@pytest.mark.parametrize(
    "options, fields",
    [
        ({}, ("boxes",)),
        ({"masks": True}, ("boxes", "masks")),
        ({"keypoints": 3}, ("boxes", "keypoints")),
    ],
)
def test_predictions_leave_the_bfloat16_grid_only_with_float32_decoding(options, fields):
    model = tiny_detector(size=640, **options).eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection
    image = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    plain = _predict(model, image, cast=False)
    assert len(plain["boxes"]) > 0
    assert plain["boxes"].dtype == torch.bfloat16  # torchvision decodes in the deltas' dtype
    cast = _predict(model, image, cast=True)
    for field in fields:
        assert cast[field].dtype == torch.float32, field
    # Coordinates of a 640-pixel image in bfloat16 sit on a grid of 2-4 pixels; decoded in
    # float32 they do not.
    assert not _on_bfloat16_grid(cast["boxes"])
    if "keypoints" in fields:
        assert not _on_bfloat16_grid(cast["keypoints"][..., :2])


def test_the_hooks_are_gone_after_the_block_and_on_an_error():
    model = tiny_detector()
    with float32_decoding(model) as modules:
        assert modules == [model.rpn.head, model.roi_heads.box_predictor]
        assert all(len(m._forward_hooks) == 1 for m in modules)
    assert all(not m._forward_hooks for m in modules)
    with pytest.raises(RuntimeError, match="inside"), float32_decoding(model):
        raise RuntimeError("inside")
    assert all(not m._forward_hooks for m in modules)


def test_one_stage_detectors_and_wrapped_models_are_found():
    from torchvision.models.detection import fcos_resnet50_fpn, retinanet_resnet50_fpn

    for build in (retinanet_resnet50_fpn, fcos_resnet50_fpn):
        model = build(weights=None, weights_backbone=None, num_classes=3)
        with float32_decoding(model) as modules:
            assert modules == [model.head]
    wrapper = torch.nn.Module()
    wrapper.module = tiny_detector(masks=True)  # what DistributedDataParallel looks like
    with float32_decoding(wrapper) as modules:
        assert len(modules) == 3
    with float32_decoding(torch.nn.Linear(2, 2)) as modules:  # another layout: nothing to do
        assert modules == []


def test_bfloat16_coordinates_cost_ap_as_the_docstring_says():
    """The docstring's figure: boxes 1 px from the truth on 1000x800 images lose 4.6 AP points
    when their coordinates are rounded to bfloat16, as torchvision's decoding does."""
    from detkit.evaluation import CocoEvaluator

    generator = torch.Generator().manual_seed(0)
    predictions, targets = [], []
    for image_id in range(200):
        corner = torch.rand(10, 2, generator=generator) * torch.tensor([800.0, 640.0])
        boxes = torch.cat([corner, corner + 8 + 120 * torch.rand(10, 2, generator=generator)], 1)
        labels = torch.ones(10, dtype=torch.int64)
        targets.append({"image_id": image_id, "boxes": boxes, "labels": labels})
        near = boxes + torch.randn(10, 4, generator=generator)
        scores = torch.rand(10, generator=generator)
        predictions.append({"boxes": near, "scores": scores, "labels": labels})
    ap = {}
    for dtype in (torch.float32, torch.bfloat16):
        evaluator = CocoEvaluator("bbox")
        rounded = [{**p, "boxes": p["boxes"].to(dtype).float()} for p in predictions]
        evaluator.update(rounded, targets)
        ap[dtype] = evaluator.compute()["bbox"]["AP"]
    assert round(ap[torch.float32], 3) == 0.860
    assert round(ap[torch.float32] - ap[torch.bfloat16], 3) == 0.046
