import numpy as np
import pytest
import torch
from hypothesis import given
from PIL import Image
from strategies import make_target, targets

from detkit.types import (
    InvalidTargetError,
    empty_target,
    image_size,
    normalize_image_id,
    validate_target,
)

IMAGE = torch.zeros(3, 32, 32)


def good(**overrides):
    target = make_target([[1, 2, 10, 12], [0, 0, 32, 32]], [1, 3], image_id=42)
    target.update(overrides)
    return target


def test_valid_target_passes():
    validate_target(IMAGE, good())
    validate_target(Image.new("RGB", (32, 32)), good())


@given(targets())
def test_generated_targets_pass(target):
    validate_target(IMAGE, target)


@pytest.mark.parametrize("num_keypoints", [None, 17])
def test_empty_target_is_valid(num_keypoints):
    target = empty_target(32, 32, image_id=5, num_keypoints=num_keypoints)
    validate_target(IMAGE, target)
    assert target["boxes"].shape == (0, 4)
    assert target["masks"].shape == (0, 32, 32)
    if num_keypoints:
        assert target["keypoints"].shape == (0, 17, 3)


def test_image_id_tensor_accepted_and_normalized():
    validate_target(IMAGE, good(image_id=torch.tensor(42)))
    assert normalize_image_id(torch.tensor([7])) == 7
    assert normalize_image_id(np.int64(9)) == 9
    with pytest.raises(TypeError, match="image_id"):
        normalize_image_id(1.5)
    with pytest.raises(TypeError, match="image_id"):
        normalize_image_id(torch.tensor([1, 2]))


BAD_CASES = [
    ("boxes", {"boxes": torch.tensor([[1, 2, 10, 12], [0, 0, 32, 32]])}, "floating-point"),
    ("boxes", {"boxes": torch.zeros(2, 5)}, r"\[N, 4\]"),
    ("boxes", {"boxes": torch.zeros(8)}, "2 dimensions"),
    (
        "boxes",
        {"boxes": torch.tensor([[1.0, 2, 1, 12], [0, 0, 32, 32]])},
        "box 0 .* zero or negative",
    ),
    (
        "boxes",
        {"boxes": torch.tensor([[1.0, 2, 10, 12], [0, 0, 33, 32]])},
        "box 1 .* outside the 32x32",
    ),
    ("boxes", {"boxes": torch.tensor([[1.0, 2, 10, 12], [-1, 0, 3, 3]])}, "box 1 .* outside"),
    ("boxes", {"boxes": torch.tensor([[1.0, 2, 10, float("nan")], [0, 0, 3, 3]])}, "NaN"),
    ("labels", {"labels": torch.tensor([1, 0])}, "label 0 at instance 1"),
    ("labels", {"labels": torch.tensor([1, 2], dtype=torch.int32)}, "int64"),
    ("labels", {"labels": torch.tensor([1])}, "disagree on N"),
    ("masks", {"masks": torch.zeros(2, 32, 31, dtype=torch.uint8)}, "differs from the image size"),
    ("masks", {"masks": torch.zeros(2, 32, 32, dtype=torch.bool)}, "uint8"),
    ("masks", {"masks": torch.zeros(3, 32, 32, dtype=torch.uint8)}, "disagree on N"),
    ("keypoints", {"keypoints": torch.zeros(2, 17, 2)}, r"\[N, K, 3\]"),
    (
        "keypoints",
        {"keypoints": torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]]])},
        "visibility 0",
    ),
    ("keypoints", {"keypoints": torch.tensor([[[1.0, 1.0, 3.0]], [[0.0, 0.0, 0.0]]])}, "0, 1 or 2"),
    ("area", {"area": torch.tensor([1.0, -2.0])}, "non-negative"),
    ("iscrowd", {"iscrowd": torch.tensor([0, 2])}, "0 or 1"),
    ("image_id", {"image_id": "seven"}, "image_id"),
]


@pytest.mark.parametrize("field,override,message", BAD_CASES)
def test_bad_targets_name_sample_and_field(field, override, message):
    with pytest.raises(InvalidTargetError, match=message) as info:
        validate_target(IMAGE, good(**override), source="images/0042.png")
    text = str(info.value)
    assert f"field '{field}'" in text
    assert "images/0042.png" in text
    if field != "image_id":
        assert "image_id=42" in text
        assert info.value.image_id == 42
    assert info.value.field == field


@pytest.mark.parametrize("missing", ["boxes", "labels"])
def test_missing_required_field(missing):
    target = good()
    del target[missing]
    with pytest.raises(InvalidTargetError, match=f"'{missing}': missing"):
        validate_target(IMAGE, target)


def test_bad_image():
    with pytest.raises(InvalidTargetError, match="field 'image'"):
        validate_target(np.zeros((32, 32, 3)), good())
    with pytest.raises(InvalidTargetError, match=r"Tensor\[C, H, W\]"):
        validate_target(torch.zeros(1, 3, 32, 32), good())


def test_extra_keys_allowed():
    validate_target(IMAGE, good(track_ids=torch.tensor([4, 5])))


def test_image_size():
    assert image_size(Image.new("RGB", (30, 20))) == (20, 30)
    assert image_size(torch.zeros(2, 5, 7)) == (5, 7)
    with pytest.raises(TypeError):
        image_size([1, 2])


def test_validate_target_refuses_float_images_in_0_255_like_the_engine():
    """Issue 13: one definition of a valid image, shared by validation and the engine."""
    from detkit.types import check_image_range

    target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([1])}
    image = torch.full((3, 4, 4), 200.0)
    with pytest.raises(InvalidTargetError, match=r"field 'image': float values span") as info:
        validate_target(image, {**target, "image_id": 5})
    with pytest.raises(InvalidTargetError) as engine_info:
        check_image_range(image, image_id=5)
    assert str(info.value) == str(engine_info.value)
    validate_target(torch.rand(3, 4, 4), target)
    validate_target(torch.full((3, 4, 4), 200, dtype=torch.uint8), target)
