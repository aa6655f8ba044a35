import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import binary_masks, id_masks

from detkit.ops import (
    _boxes_from_presence,
    box_area,
    id_mask_to_masks,
    instance_classes,
    instance_ids,
    masks_area,
    masks_to_boxes,
    split_id_mask,
)


def coco_boxes(masks: torch.Tensor) -> np.ndarray:
    """pycocotools' toBbox (XYWH) of each mask, as XYXY."""
    if masks.shape[0] == 0:
        return np.zeros((0, 4))
    fortran = np.asfortranarray(masks.permute(1, 2, 0).numpy())
    xywh = mask_utils.toBbox(mask_utils.encode(fortran))
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


@given(binary_masks())
def test_masks_to_boxes_equals_pycocotools(masks):
    expected = coco_boxes(masks)
    np.testing.assert_array_equal(masks_to_boxes(masks).numpy(), expected)


@given(binary_masks(min_instances=1))
def test_torch_path_equals_numpy_path(masks):
    present = masks != 0
    torch_boxes = _boxes_from_presence(present.any(dim=2), present.any(dim=1))
    assert torch.equal(torch_boxes, masks_to_boxes(masks))


@given(binary_masks())
def test_masks_area_equals_pycocotools(masks):
    area = masks_area(masks)
    if masks.shape[0]:
        fortran = np.asfortranarray(masks.permute(1, 2, 0).numpy())
        expected = mask_utils.area(mask_utils.encode(fortran))
        np.testing.assert_array_equal(area.numpy(), expected)
    assert area.dtype == torch.float32 and area.shape == (masks.shape[0],)


def test_thin_instances_never_degenerate():
    masks = torch.zeros(3, 6, 7, dtype=torch.uint8)
    masks[0, 2, 1:5] = 1  # one row
    masks[1, 0:6, 6] = 1  # one column, touching the right border
    masks[2, 5, 0] = 1  # a single pixel in the bottom-left corner
    assert masks_to_boxes(masks).tolist() == [
        [1.0, 2.0, 5.0, 3.0],
        [6.0, 0.0, 7.0, 6.0],
        [0.0, 5.0, 1.0, 6.0],
    ]


def test_masks_to_boxes_bad_rank():
    with pytest.raises(ValueError, match=r"Tensor\[N, H, W\]"):
        masks_to_boxes(torch.zeros(4, 4))


def test_box_area():
    assert box_area(torch.tensor([[0, 0, 2, 3], [1, 1, 1, 5]])).tolist() == [6.0, 0.0]
    with pytest.raises(ValueError, match=r"Tensor\[N, 4\]"):
        box_area(torch.zeros(3))


@given(id_masks())
def test_instance_ids_equal_numpy_unique(id_mask):
    ids, counts = instance_ids(id_mask, return_counts=True)
    expected_ids, expected_counts = np.unique(id_mask, return_counts=True)
    keep = expected_ids != 0
    np.testing.assert_array_equal(ids, expected_ids[keep])
    np.testing.assert_array_equal(counts, expected_counts[keep])


def test_instance_ids_large_and_negative_values():
    mask = np.array([[0, 70000], [-3, 70000]], dtype=np.int32)
    assert instance_ids(mask).tolist() == [-3, 70000]
    with pytest.raises(TypeError, match="integers"):
        instance_ids(np.zeros((2, 2), dtype=np.float32))


@given(id_masks(dtype=np.uint16))
def test_id_mask_to_masks_matches_per_id_comparison(id_mask):
    masks = id_mask_to_masks(id_mask)
    ids = instance_ids(id_mask)
    assert masks.dtype == torch.uint8 and masks.shape == (len(ids), *id_mask.shape)
    for i, value in enumerate(ids):
        np.testing.assert_array_equal(masks[i].numpy(), (id_mask == value).astype(np.uint8))


@given(
    st.sampled_from([np.uint8, np.uint16, np.int32]).flatmap(
        lambda d: id_masks(max_id=200, dtype=d)
    )
)
def testsplit_id_mask_equals_the_plain_derivation(id_mask):
    ids, present, boxes, areas = split_id_mask(id_mask)
    masks = id_mask_to_masks(id_mask)
    np.testing.assert_array_equal(ids, instance_ids(id_mask))
    np.testing.assert_array_equal(present.view(np.uint8), masks.numpy())
    assert torch.equal(boxes, masks_to_boxes(masks))
    np.testing.assert_array_equal(areas, masks_area(masks).numpy())


@given(id_masks(max_id=40, max_side=40, dtype=np.uint8), st.booleans())
def test_split_id_mask_byte_search_equals_the_general_path(id_mask, transpose):
    # 8-bit masks take the byte-search path; ids up to 32 are searched for one by one (absent
    # ones included), larger ones come from a histogram; a transposed view is not C-ordered.
    array = id_mask.T if transpose else id_mask
    ids, present, boxes, areas = split_id_mask(array)
    wide_ids, wide_present, wide_boxes, wide_areas = split_id_mask(array.astype(np.int32))
    np.testing.assert_array_equal(ids, wide_ids)
    np.testing.assert_array_equal(present, wide_present)
    assert present.dtype == np.bool_ and present.flags.c_contiguous
    assert torch.equal(boxes, wide_boxes) and boxes.dtype == torch.float32
    np.testing.assert_array_equal(areas, wide_areas)
    assert ids.dtype == areas.dtype == np.int64


def test_split_id_mask_of_an_empty_or_blank_8_bit_mask():
    for array in (np.zeros((0, 5), np.uint8), np.zeros((3, 4), np.uint8)):
        ids, present, boxes, areas = split_id_mask(array)
        assert ids.shape == areas.shape == (0,)
        assert present.shape == (0, *array.shape) and boxes.shape == (0, 4)


def test_instance_classes_equal_a_per_instance_majority_vote():
    rng = np.random.default_rng(3)
    for _ in range(20):
        id_mask = rng.integers(0, 6, (9, 11)).astype(np.uint16)
        semantic = rng.integers(0, 4, (9, 11)).astype(np.uint8)
        ids = instance_ids(id_mask)
        expected = []
        for i in ids:
            votes = np.bincount(semantic[id_mask == i], minlength=4)
            votes[0] = 0  # background does not vote
            expected.append(int(votes.argmax()) if votes.max() else 0)
        assert instance_classes(id_mask, semantic, ids).tolist() == expected
    assert instance_classes(np.zeros((2, 2), np.uint8), np.ones((2, 2)), np.zeros(0)).shape == (0,)
