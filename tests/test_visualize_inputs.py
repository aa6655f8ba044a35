"""Drawing inputs that would give a wrong picture without a word: refused or warned about."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from detkit.tv_tensors import KeyPointsWithVisibility
from detkit.visualize import draw_instances, draw_prediction, draw_target, make_grid, save_image

BOX = torch.tensor([[10.0, 5.0, 30.0, 15.0]])


def blank(h=40, w=60):
    return torch.zeros(3, h, w, dtype=torch.uint8)


def drawn_pixels(canvas):
    return int((canvas.sum(0) > 0).sum())


@pytest.mark.parametrize("low, high, hint", [(0.0, 200.0, "0..255"), (-2.1, 2.6, "normalised")])
def test_float_images_outside_0_1_are_refused_not_clamped(low, high, hint):
    image = torch.linspace(low, high, 3 * 40 * 60).reshape(3, 40, 60)
    with pytest.raises(ValueError, match=f"image: float values span .*{hint}"):
        draw_instances(image, BOX)
    with pytest.raises(ValueError, match=r"images\[1\]: float values span"):
        make_grid([blank(), image])
    with pytest.raises(ValueError, match="image: float values span"):
        save_image(image, "never.png")


def test_float_images_slightly_outside_0_1_are_clamped():
    image = torch.full((3, 4, 4), 1.05)
    image[0, 0, 0] = -0.05
    canvas = draw_instances(image, torch.zeros(0, 4))
    assert canvas[:, 1, 1].tolist() == [255, 255, 255]
    assert canvas[0, 0, 0] == 0


@pytest.mark.parametrize(
    "array", [np.full((4, 4), 40000, np.uint16), np.full((4, 4), 0.5, np.float32)]
)
def test_pil_images_of_more_than_8_bits_are_refused_not_clipped(array):
    with pytest.raises(ValueError, match=r"image: a PIL image of mode '(I;16|F)'"):
        draw_instances(Image.fromarray(array), torch.zeros(0, 4))
    canvas = draw_instances(Image.fromarray(np.full((4, 4), 9, np.uint8)), torch.zeros(0, 4))
    assert canvas[:, 0, 0].tolist() == [9, 9, 9]


def test_boxes_of_another_canvas_are_refused():
    boxes = tv_tensors.BoundingBoxes(BOX * 2, format="XYXY", canvas_size=(80, 120))
    with pytest.raises(ValueError, match=r"boxes: canvas_size \(80, 120\) .* \(40, 60\)"):
        draw_instances(blank(), boxes)
    with pytest.raises(ValueError, match=r"boxes: canvas_size"):
        draw_target(blank(), {"boxes": boxes, "labels": torch.tensor([1])})
    points = KeyPointsWithVisibility(torch.ones(1, 2, 3), canvas_size=(80, 120))
    with pytest.raises(ValueError, match=r"keypoints: canvas_size \(80, 120\)"):
        draw_instances(blank(), BOX, keypoints=points)
    same = tv_tensors.BoundingBoxes(BOX, format="XYXY", canvas_size=(40, 60))
    assert drawn_pixels(draw_instances(blank(), same, captions=False)) > 0


def test_non_finite_boxes_are_refused_naming_the_rows():
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0], [float("nan"), 1.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match=r"boxes: rows \[1\] are not finite"):
        draw_instances(blank(), boxes)


def test_normalized_boxes_are_warned_about():
    with pytest.warns(UserWarning, match=r"boxes: all 1 lie within \[0, 1\].*normalized"):
        draw_instances(blank(), torch.tensor([[0.1, 0.1, 0.5, 0.5]]))


def test_boxes_wholly_outside_the_image_are_warned_about():
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0], [100.0, 100.0, 200.0, 200.0]])
    with pytest.warns(UserWarning, match=r"boxes: 1 of 2 .* outside the 40x60 image"):
        draw_instances(blank(), boxes)


def test_boxes_on_the_image_draw_without_warnings():
    boxes = torch.tensor([[0.0, 0.0, 60.0, 40.0], [-5.0, 30.0, 10.0, 50.0], [0.0, 0.0, 1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw_instances(blank(), boxes)
        draw_instances(blank(1, 1), torch.tensor([[0.0, 0.0, 0.5, 1.0]]))
        draw_instances(blank(), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))  # a pixel


@pytest.mark.parametrize("kind", ["probabilities", "logits"])
def test_soft_masks_are_refused_by_draw_instances(kind):
    masks = torch.full((1, 1, 40, 60), 0.1 if kind == "probabilities" else -5.0)
    masks[..., 5:15, 10:30] = 0.9 if kind == "probabilities" else 3.0
    with pytest.raises(ValueError, match=r"masks: values other than 0 and 1 .* > 0\.5"):
        draw_instances(blank(), BOX, masks=masks)


def test_binary_masks_of_any_dtype_are_drawn_inside_only():
    inside = torch.zeros(1, 40, 60, dtype=torch.bool)
    inside[:, 5:15, 10:30] = True
    for masks in (inside, inside.to(torch.uint8) * 255, inside.float(), inside[:, None]):
        canvas = draw_instances(blank(), BOX, masks=masks, captions=False)
        assert canvas[:, 10, 20].sum() > 0 and canvas[:, 30, 45].sum() == 0


def test_prediction_masks_must_be_probabilities():
    logits = torch.full((1, 1, 40, 60), -5.0)
    logits[..., 5:15, 10:30] = 3.0
    prediction = {"boxes": BOX, "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    with pytest.raises(ValueError, match=r"prediction\['masks'\]: .*\[-5, 3\].*sigmoid"):
        draw_prediction(blank(), {**prediction, "masks": logits})
    canvas = draw_prediction(blank(), {**prediction, "masks": logits.sigmoid()}, captions=False)
    assert canvas[:, 10, 20].sum() > 0 and canvas[:, 30, 45].sum() == 0
    binary = (logits > 0).to(torch.uint8) * 255  # 0/255 masks are masks too
    canvas = draw_prediction(blank(), {**prediction, "masks": binary}, captions=False)
    assert canvas[:, 10, 20].sum() > 0 and canvas[:, 30, 45].sum() == 0


def test_prediction_without_scores_or_of_mismatched_lengths_is_named():
    with pytest.raises(ValueError, match=r"prediction has no 'scores' \(keys: boxes, labels\)"):
        draw_prediction(blank(), {"boxes": BOX, "labels": torch.tensor([1])})
    prediction = {"boxes": BOX, "labels": torch.tensor([1]), "scores": torch.tensor([0.9, 0.8])}
    with pytest.raises(ValueError, match=r"prediction\['scores'\] has 2 entries for 1 boxes"):
        draw_prediction(blank(), prediction)


def test_fractional_labels_are_refused_not_truncated():
    with pytest.raises(ValueError, match=r"labels must be whole numbers .*\[1\.7"):
        draw_instances(blank(), BOX, torch.tensor([1.7]))
    whole = draw_instances(blank(), BOX, torch.tensor([2.0]), captions=False)
    assert torch.equal(whole, draw_instances(blank(), BOX, torch.tensor([2]), captions=False))
