"""Resizes, crops, padding, the torchvision v2 adapter and SanitizeBoxes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from strategies import keypoint_targets, make_target, random_image
from torchvision import tv_tensors
from torchvision.transforms import v2

from detkit.data import transforms as T
from detkit.data.transforms.sanitize import _check_boxes, _check_boxes_vectorized
from detkit.ops import box_area, masks_area, masks_to_boxes
from detkit.types import validate_target

H, W = 24, 32
FLIP3 = (0, 2, 1)

GEOMETRIC = {
    "resize_up": lambda: T.Resize((40, 56)),
    "resize_down": lambda: T.Resize(13, max_size=20),
    "shortest_size": lambda: T.RandomShortestSize([12, 20, 36], max_size=48),
    "scale_jitter": lambda: T.ScaleJitter((24, 24), scale_range=(0.3, 1.8)),
    "zoom_out": lambda: T.RandomZoomOut(fill=(10, 20, 30), side_range=(1.0, 2.0), p=1.0),
    "iou_crop": lambda: T.RandomIoUCrop(),
    "fixed_crop_small": lambda: T.FixedSizeCrop((16, 20), fill=5),
    "fixed_crop_large": lambda: T.FixedSizeCrop(40, fill=5),
    "hflip": lambda: T.RandomHorizontalFlip(1.0, flip_indices=FLIP3),
    "vflip": lambda: T.RandomVerticalFlip(1.0, flip_indices=FLIP3),
    "v2_rotation": lambda: T.V2Transform(v2.RandomRotation(40)),
    "v2_affine": lambda: T.V2Transform(
        v2.RandomAffine(degrees=15, translate=(0.3, 0.3), scale=(0.6, 1.4))
    ),
    "v2_crop_and_flip": lambda: T.V2Transform(
        v2.Compose([v2.RandomCrop((18, 20)), v2.RandomHorizontalFlip(0.5)]), flip_indices=FLIP3
    ),
}


def assert_same_target(a, b):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@given(
    name=st.sampled_from(sorted(GEOMETRIC)),
    target=keypoint_targets(H, W),
    with_masks=st.booleans(),
    sanitize=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=150)
def test_geometric_transforms_keep_targets_valid_and_aligned(
    name, target, with_masks, sanitize, seed
):
    """Every geometric transform's output is valid, with or without SanitizeBoxes after it."""
    if not with_masks:
        del target["masks"]
        target["area"] = box_area(target["boxes"])
    image = random_image(seed, H, W)
    snapshot_image, snapshot = image.clone(), copy.deepcopy(target)
    torch.manual_seed(seed)
    pipeline = [GEOMETRIC[name](), T.SanitizeBoxes()] if sanitize else [GEOMETRIC[name]()]
    out_image, out = T.Compose(pipeline, instance_fields=["track_ids"])(image, target)

    assert torch.equal(image, snapshot_image)
    assert_same_target(target, snapshot)  # inputs are never modified
    validate_target(out_image, out)
    height, width = out_image.shape[-2:]
    n = out["boxes"].shape[0]
    assert n <= target["boxes"].shape[0]
    assert {k for k, v in out.items() if isinstance(v, torch.Tensor) and v.shape[:1] == (n,)} >= (
        set(target) - {"image_id"}
    )
    boxes = out["boxes"]
    assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    # Surviving instances are a subsequence of the input's, with every field alongside.
    ids = out["track_ids"] - 100
    assert torch.equal(ids, ids.sort().values)
    assert torch.equal(out["labels"], target["labels"][ids])
    assert torch.equal(out["iscrowd"], target["iscrowd"][ids])
    kp = out["keypoints"]
    visible = kp[..., 2] > 0
    assert torch.equal(kp[~visible], torch.zeros_like(kp[~visible]))
    assert (kp[..., 0][visible] <= width).all() and (kp[..., 1][visible] <= height).all()
    assert (kp[..., :2][visible] >= 0).all()
    # Visibility only ever drops (points leaving the image); flags are never invented.
    source = target["keypoints"][ids][..., 2]
    swapped = source[:, list(FLIP3)]
    if name in ("hflip", "vflip"):
        source = swapped
    elif name == "v2_crop_and_flip":  # flipped or not, at random
        source = torch.where(kp[..., 2] == source, source, swapped)
    assert ((kp[..., 2] == source) | (kp[..., 2] == 0)).all()
    if "masks" in out:
        assert torch.equal(out["area"], masks_area(out["masks"]))
    elif name in ("hflip", "vflip"):
        assert torch.equal(out["area"], target["area"])
    else:
        assert torch.allclose(out["area"], box_area(out["boxes"]))


@pytest.mark.parametrize(
    "transform",
    [T.Resize((48, 64)), T.Resize((10, 13)), T.Resize((31, 23)), T.RandomHorizontalFlip(1.0)],
    ids=["x2", "down", "odd", "hflip"],
)
@given(target=keypoint_targets(H, W, num_keypoints=0))
@settings(max_examples=25)
def test_box_of_transformed_mask_matches_transformed_box(transform, target):
    _, out = transform(torch.zeros(3, H, W, dtype=torch.uint8), target)
    present = out["masks"].flatten(1).any(1).to(torch.bool)
    difference = (masks_to_boxes(out["masks"][present]) - out["boxes"][present]).abs()
    assert difference.numel() == 0 or difference.max() <= 1


def test_resize_scales_keypoints_in_continuous_coordinates():
    target = make_target([[2, 4, 10, 12]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[2.5, 4.5, 2.0], [0.0, 0.0, 0.0], [10.0, 12.0, 1.0]]])
    _, out = T.Resize((48, 64))(torch.zeros(3, H, W), target)
    assert out["boxes"].tolist() == [[4.0, 8.0, 20.0, 24.0]]
    assert out["keypoints"].tolist() == [[[5.0, 9.0, 2.0], [0.0, 0.0, 0.0], [20.0, 24.0, 1.0]]]
    assert out["area"].tolist() == [256.0]  # the mask's 8 x 8 pixels became 16 x 16


def test_crop_hides_keypoints_that_leave_the_image():
    target = make_target([[0, 0, 30, 20]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[5.0, 5.0, 2.0], [28.0, 18.0, 2.0]]])
    image, out = T.FixedSizeCrop((10, 10))(torch.zeros(3, H, W), target)
    kept = out["keypoints"][0]
    assert image.shape[-2:] == (10, 10)
    # Whatever the window, the two points 23 px apart cannot both remain inside it.
    assert (kept[:, 2] == 0).any()
    assert torch.equal(kept[kept[:, 2] == 0], torch.zeros(int((kept[:, 2] == 0).sum()), 3))


@pytest.mark.parametrize(
    "crop",
    [T.RandomIoUCrop(), T.FixedSizeCrop((10, 10)), T.V2Transform(v2.RandomCrop((10, 12)))],
    ids=["iou", "fixed", "v2_random_crop"],
)
def test_crops_drop_the_instances_they_cut_away(crop):
    target = make_target([[0, 0, 4, 4], [20, 14, 32, 24]], [1, 2], height=H, width=W)
    target["track_ids"] = torch.tensor([5, 6])
    crop = T.Compose([crop], instance_fields=["track_ids"])
    dropped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        image, out = crop(torch.zeros(3, H, W), target)
        validate_target(image, out)  # no SanitizeBoxes needed for a valid output
        dropped += 2 - len(out["labels"])
        assert torch.equal(out["track_ids"] - 4, out["labels"])
        assert out["masks"].shape[0] == len(out["labels"]) == out["area"].shape[0]
    assert dropped > 0


def test_fixed_size_crop_pads_with_fill_and_masks_with_zero():
    target = make_target([[0, 0, 4, 4]], height=4, width=6)
    image = torch.full((3, 4, 6), 200, dtype=torch.uint8)
    out_image, out = T.FixedSizeCrop((8, 8), fill=(1, 2, 3))(image, target)
    assert out_image.shape == (3, 8, 8)
    assert out_image[:, 7, 7].tolist() == [1, 2, 3] and out_image[:, 0, 0].tolist() == [200] * 3
    assert out["masks"].shape == (1, 8, 8) and int(out["masks"].sum()) == 16
    assert out["boxes"].tolist() == [[0.0, 0.0, 4.0, 4.0]]
    pil_image, pil_out = T.FixedSizeCrop((8, 8), fill=(1, 2, 3))(
        Image.fromarray(image.permute(1, 2, 0).numpy()), target
    )
    assert np.array(pil_image)[7, 7].tolist() == [1, 2, 3]
    assert torch.equal(pil_out["boxes"], out["boxes"])
    with pytest.raises(ValueError, match="size must be"):
        T.FixedSizeCrop((0, 5))


def test_fixed_size_crop_draws_top_and_left_independently():
    image = torch.arange(20 * 30, dtype=torch.float32).reshape(1, 20, 30)
    offsets = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out, _ = T.FixedSizeCrop((5, 5))(image, None)
        top, left = divmod(int(out[0, 0, 0]), 30)
        assert torch.equal(out, image[:, top : top + 5, left : left + 5])
        offsets.add((top, left))
    tops, lefts = {t for t, _ in offsets}, {left for _, left in offsets}
    assert len(tops) > 5 and len(lefts) > 5
    assert len(offsets) > len(tops)  # not one draw for both (the references' diagonal)


def test_zoom_out_fills_image_not_masks():
    torch.manual_seed(1)
    target = make_target([[0, 0, 4, 4]], height=4, width=4)
    out_image, out = T.RandomZoomOut(fill=7, side_range=(3.0, 3.0), p=1.0)(
        torch.full((3, 4, 4), 100, dtype=torch.uint8), target
    )
    assert out_image.shape == (3, 12, 12)
    assert int((out_image[0] == 100).sum()) == 16 and int((out_image[0] == 7).sum()) == 128
    assert int(out["masks"].sum()) == 16
    assert torch.equal(masks_to_boxes(out["masks"]), out["boxes"])


def test_iou_crop_keeps_empty_targets_and_never_hangs():
    empty = make_target([])
    image = torch.zeros(3, 32, 32)
    out_image, out = T.RandomIoUCrop(sampler_options=[0.5])(image, empty)
    assert out_image is image and out["boxes"].shape == (0, 4)


def test_pil_and_tensor_images_get_the_same_geometry():
    target = make_target([[3, 5, 20, 17]], height=H, width=W)
    image = random_image(0, H, W)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    for transform in (T.Resize((30, 50)), T.RandomHorizontalFlip(1.0)):
        tensor_image, tensor_out = transform(image, target)
        pil_image, pil_out = transform(pil, target)
        assert pil_image.size == (tensor_image.shape[2], tensor_image.shape[1])
        assert_same_target(tensor_out, pil_out)


# -- the torchvision v2 adapter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (T.RandomHorizontalFlip, v2.RandomHorizontalFlip),
        (T.RandomVerticalFlip, v2.RandomVerticalFlip),
    ],
    ids=["horizontal", "vertical"],
)
@given(target=keypoint_targets(H, W), seed=st.integers(0, 100))
@settings(max_examples=20)
def test_v2_flip_through_the_adapter_equals_detkit_flip(ours, theirs, target, seed):
    """detkit's flips (their own box arithmetic) give v2's kernels' numbers exactly."""
    image = random_image(seed, H, W)
    target["boxes"] = target["boxes"] + torch.rand(target["boxes"].shape) * 0.5  # not integers
    mine = ours(1.0, flip_indices=FLIP3)(image, target)
    adapted = T.V2Transform(theirs(1.0), flip_indices=FLIP3)(image, target)
    assert torch.equal(mine[0], adapted[0])
    assert_same_target(mine[1], adapted[1])


def test_two_flips_rotate_without_swapping():
    target = make_target([[2, 3, 10, 7]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[3.0, 4.0, 2.0], [5.0, 6.0, 1.0], [8.0, 5.0, 2.0]]])
    both = v2.Compose([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)])
    _, out = T.V2Transform(both, flip_indices=FLIP3)(torch.zeros(3, H, W), target)
    assert out["boxes"].tolist() == [[22.0, 17.0, 30.0, 21.0]]
    assert out["keypoints"].tolist() == [[[29.0, 20.0, 2.0], [27.0, 18.0, 1.0], [24.0, 19.0, 2.0]]]
    with pytest.raises(ValueError, match="without flip_indices"):  # even when the coin says no
        T.V2Transform(v2.RandomHorizontalFlip(0.0))(torch.zeros(3, H, W), target)


def test_a_callable_using_v2_functionals_mirrors_keypoints_with_their_permutation():
    def mirror(image, target):  # a plain function: the keypoints' flip kernel does the swap
        flip = v2.functional.horizontal_flip
        moved = {k: flip(v) for k, v in target.items() if isinstance(v, tv_tensors.TVTensor)}
        return flip(image), {**target, **moved}

    target = make_target([[2, 3, 10, 7]], height=H, width=W, image_id=11)
    target["keypoints"] = torch.tensor([[[3.0, 4.0, 2.0], [5.0, 6.0, 1.0], [8.0, 5.0, 2.0]]])
    del target["area"], target["iscrowd"]
    _, out = T.V2Transform(mirror, flip_indices=FLIP3)(torch.zeros(3, H, W), target)
    assert out["keypoints"].tolist() == [[[29.0, 4.0, 2.0], [24.0, 5.0, 2.0], [27.0, 6.0, 1.0]]]
    assert out["boxes"].tolist() == [[22.0, 3.0, 30.0, 7.0]]
    with pytest.raises(ValueError, match=r"image_id=11.*no flip_indices"):
        T.V2Transform(mirror)(torch.zeros(3, H, W), target)


def test_adapter_follows_v2_sanitize_and_rejects_unsaid_drops():
    target = make_target([[0, 0, 8, 8], [2, 2, 3, 9], [4, 4, 12, 12]], [1, 2, 3], height=H, width=W)
    target["boxes"][1, 2] = 2.5  # 0.5 px wide: below v2's min_size
    target["track_ids"] = torch.tensor([7, 8, 9])
    target["keypoints"] = torch.arange(18, dtype=torch.float32).reshape(3, 2, 3) % 3
    keypoints = torch.where(target["keypoints"][..., 2:] == 0, 0.0, target["keypoints"])
    target["keypoints"] = keypoints
    for sanitize in (v2.SanitizeBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=None)):
        pipeline = T.Compose([T.V2Transform(sanitize)], instance_fields=["track_ids"])
        _, out = pipeline(torch.zeros(3, H, W), target)
        assert out["labels"].tolist() == [1, 3] and out["track_ids"].tolist() == [7, 9]
        assert out["masks"].shape[0] == 2
        assert torch.equal(out["keypoints"], keypoints[[0, 2]])
        assert out["iscrowd"].tolist() == [0, 0] and out["area"].tolist() == [64.0, 64.0]

    def drop_the_last_box(image, target):  # drops boxes and labels by hand, nothing else
        return image, {**target, "boxes": target["boxes"][:-1], "labels": target["labels"][:-1]}

    with pytest.raises(ValueError, match="dropped boxes without dropping the rest"):
        T.V2Transform(drop_the_last_box)(torch.zeros(3, H, W), target)
    with pytest.raises(TypeError, match="already a detkit transform"):
        T.V2Transform(T.Resize(4))


def test_adapter_returns_xyxy_plain_tensors_and_handles_no_target():
    target = make_target([[2, 3, 10, 7]], height=H, width=W)
    image, out = T.V2Transform(v2.ConvertBoundingBoxFormat("XYWH"))(torch.zeros(3, H, W), target)
    assert out["boxes"].tolist() == [[2.0, 3.0, 10.0, 7.0]]
    assert type(image) is torch.Tensor and type(out["boxes"]) is torch.Tensor
    assert type(out["masks"]) is torch.Tensor
    resized, none = T.V2Transform(v2.Resize((5, 6)))(torch.zeros(3, H, W), None)
    assert none is None and type(resized) is torch.Tensor and resized.shape == (3, 5, 6)


def test_adapter_recomputes_area_only_for_instances_that_change_size():
    target = make_target([[2, 3, 10, 7], [20, 4, 30, 20]], height=H, width=W)
    target["area"] = torch.tensor([123.0, 45.0])  # say, from polygons
    _, same = T.V2Transform(v2.ColorJitter(brightness=0.5))(random_image(0, H, W), target)
    assert same["area"].tolist() == [123.0, 45.0]
    _, moved = T.V2Transform(v2.Pad([1, 1, 1, 1]))(random_image(0, H, W), target)
    assert moved["area"].tolist() == [123.0, 45.0]  # shifted, not resized: same objects

    def left_part(image, target):  # the left 25 columns: cuts the second instance
        def crop(value):
            return v2.functional.crop(value, top=0, left=0, height=H, width=25)

        moved = {k: crop(v) for k, v in target.items() if isinstance(v, tv_tensors.TVTensor)}
        return crop(image), {**target, **moved}

    _, cut = T.V2Transform(left_part)(random_image(0, H, W), target)
    assert cut["area"].tolist() == [123.0, float(target["masks"][1][:, :25].sum())]


# -- SanitizeBoxes -------------------------------------------------------------------------------


def test_sanitize_drops_instances_with_all_their_fields():
    target = make_target(
        [[0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 2, 2], [6, 0, 10, 3]], [1, 2, 3, 4], height=10, width=12
    )
    target["boxes"][0, 2] = 14.0  # pokes out of the 12 px wide image
    target["masks"][1] = 0  # its object was cropped away
    target["keypoints"] = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(4, 2, 3)
    target["track_ids"] = torch.tensor([10, 11, 12, 13])
    snapshot = copy.deepcopy(target)
    sanitize = T.Compose([T.SanitizeBoxes(min_size=1.5)], instance_fields=["track_ids"])
    _, out = sanitize(torch.zeros(3, 10, 12), target)
    assert out["labels"].tolist() == [1, 4] and out["track_ids"].tolist() == [10, 13]
    assert out["boxes"].tolist() == [[0.0, 0.0, 12.0, 4.0], [6.0, 0.0, 10.0, 3.0]]
    assert torch.equal(out["keypoints"], target["keypoints"][[0, 3]])
    assert torch.equal(out["masks"], target["masks"][[0, 3]])
    assert out["area"].tolist() == [16.0, 12.0] and out["iscrowd"].tolist() == [0, 0]
    assert_same_target(target, snapshot)
    _, strict = T.SanitizeBoxes(clamp=False, drop_empty_masks=False)(torch.zeros(3, 10, 12), target)
    assert strict["labels"].tolist() == [2, 3, 4]
    _, by_area = T.SanitizeBoxes(min_area=13)(torch.zeros(3, 10, 12), target)
    assert by_area["labels"].tolist() == [1]


def test_sanitize_drops_nan_and_handles_empty_targets():
    target = make_target([[0, 0, 4, 4], [1, 1, 3, 3]], height=8, width=8)
    target["boxes"][1, 0] = float("nan")
    _, out = T.SanitizeBoxes()(torch.zeros(3, 8, 8), target)
    assert out["boxes"].tolist() == [[0.0, 0.0, 4.0, 4.0]]
    _, empty = T.SanitizeBoxes()(torch.zeros(3, 8, 8), make_target([], height=8, width=8))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 8)
    with pytest.raises(ValueError, match="min_size"):
        T.SanitizeBoxes(min_size=-1)


@pytest.mark.parametrize("count", [2, 40])  # the per-box and the vectorized checks
def test_sanitize_recomputes_the_area_of_the_boxes_it_clamps(count):
    # Without masks the area is the box's (the contract); a clamped box is smaller.
    boxes = torch.tensor([[-2.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 9.0]]).repeat(count // 2, 1)
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(5, 5)),
        "labels": torch.ones(count, dtype=torch.int64),
        "area": box_area(boxes).to(torch.float64),
        "image_id": 3,
    }
    for sanitize in (T.SanitizeBoxes(), T.Compose([T.SanitizeBoxes()])):
        _, out = sanitize(torch.zeros(3, 5, 5), target)
        assert out["boxes"][:2].tolist() == [[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]]
        assert out["area"].tolist() == [16.0, 8.0] * (count // 2)
        assert out["area"].dtype == torch.float64
    assert target["area"].tolist() == [24.0, 16.0] * (count // 2)  # the input is untouched


def test_an_area_that_is_not_the_box_area_keeps_its_proportion_without_masks():
    # A COCO file's area is the segmentation's (here half the box); without masks the
    # transforms can only scale it with the box, not replace it with the box area.
    boxes = torch.tensor([[0.0, 0.0, 40.0, 20.0], [10.0, 4.0, 30.0, 14.0]])
    target = {
        "boxes": boxes,
        "labels": torch.tensor([1, 2]),
        "area": torch.tensor([400.0, 200.0]),  # half of 800, the box area of 200
        "image_id": 1,
    }
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    for resize in (T.Resize((10, 20)), T.Compose([T.Resize((10, 20))])):
        _, out = resize(image, target)
        assert out["boxes"].tolist() == [[0.0, 0.0, 20.0, 10.0], [5.0, 2.0, 15.0, 7.0]]
        assert out["area"].tolist() == [100.0, 50.0]
    shifted = {**target, "boxes": boxes + torch.tensor([20.0, 0.0, 20.0, 0.0])}
    _, out = T.SanitizeBoxes()(image, shifted)  # both boxes lose half their width
    assert out["boxes"][0].tolist() == [20.0, 0.0, 40.0, 20.0]
    assert out["area"].tolist() == [200.0, 100.0]


finite_or_not = st.one_of(
    st.floats(-5, 40, width=32), st.sampled_from([float("nan"), float("inf"), -float("inf")])
)


@given(
    rows=st.lists(st.lists(finite_or_not, min_size=4, max_size=4), max_size=12),
    clamp=st.booleans(),
    min_size=st.sampled_from([0.0, 1.0, 2.5]),
    min_area=st.sampled_from([0.0, 1.0, 6.0]),
)
@settings(max_examples=80)
def test_sanitize_python_and_vectorized_box_checks_agree(rows, clamp, min_size, min_area):
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    keep, clamped = _check_boxes(boxes, 24, 32, min_size, min_area, clamp=clamp)
    keep_v, clamped_v = _check_boxes_vectorized(boxes, 24, 32, min_size, min_area, clamp=clamp)
    assert list(keep) == keep_v.tolist()
    if clamp:
        expected = torch.minimum(boxes.clamp(min=0), torch.tensor([32.0, 24.0, 32.0, 24.0]))
        for got in (clamped, clamped_v):
            got = boxes if got is None else got
            torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
        kept = torch.from_numpy(keep_v)
        widths, heights = (expected[:, 2:] - expected[:, :2]).unbind(1)
        assert torch.equal(
            kept,
            (widths >= max(min_size, 1e-30))
            & (heights >= max(min_size, 1e-30))
            & (widths * heights >= min_area)
            # Infinite boxes are dropped, never clipped into full-image boxes (issue 13).
            & torch.isfinite(boxes).all(1),
        )


def test_sanitize_many_boxes_takes_the_vectorized_path():
    boxes = torch.tensor([[i % 30, 0.0, i % 30 + (i % 3), 5.0] for i in range(100)])
    target = {"boxes": boxes, "labels": torch.arange(1, 101), "track_ids": torch.arange(100)}
    sanitize = T.Compose([T.SanitizeBoxes(min_area=5)], instance_fields=["track_ids"])
    _, out = sanitize(torch.zeros(3, 24, 32), target)
    expected = [i for i in range(100) if i % 3]  # 1 x 5 boxes sit right on min_area
    assert out["track_ids"].tolist() == expected
    assert torch.equal(out["boxes"], boxes[expected])
