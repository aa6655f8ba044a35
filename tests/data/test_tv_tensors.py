"""Issue 12: samples are tv_tensors, and any torchvision v2 transform is safe in any position."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import keypoint_targets, make_target, random_image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

import detkit.tv_tensors
from detkit.data import (
    CocoJsonDataset,
    InstanceMaskDataset,
    collate_fn,
    write_synthetic_coco,
    write_synthetic_pennfudan,
)
from detkit.data import transforms as T
from detkit.ops import masks_to_boxes
from detkit.tv_tensors import (
    GEOMETRIC_FUNCTIONALS,
    KeyPointsWithVisibility,
    hide_outside,
    xyxy_boxes,
)
from detkit.types import to_tv_tensors, validate_target

H, W = 24, 32
FLIP3 = (0, 2, 1)


def get_transform(train):
    """The TorchVision object-detection tutorial's function, word for word."""
    transforms = []
    if train:
        transforms.append(v2.RandomHorizontalFlip(0.5))
    transforms.append(v2.ToDtype(torch.float, scale=True))
    transforms.append(v2.ToPureTensor())
    return v2.Compose(transforms)


@pytest.fixture(scope="module")
def pennfudan(tmp_path_factory):
    root = write_synthetic_pennfudan(
        tmp_path_factory.mktemp("pf"), num_images=3, size_range=(48, 80), seed=1
    )
    images = sorted((root / "PNGImages").glob("*.png"))
    return [(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images]


class Pedestrians(InstanceMaskDataset):
    """A subclass as a user writes one."""

    def __init__(self, pairs, transforms=None):
        super().__init__(pairs, transforms=transforms)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = write_synthetic_coco(tmp_path_factory.mktemp("coco"), num_images=4, seed=3)
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    for category in data["categories"]:  # sided names: flips must swap 1 and 2
        category["keypoints"] = ["tip", "left_corner", "right_corner"]
    path.write_text(json.dumps(data))
    return root


# -- the carriers ------------------------------------------------------------------------------


def test_datasets_return_tv_tensors_that_models_and_collate_take(pennfudan, coco):
    image, target = Pedestrians(pennfudan)[0]
    assert type(image) is tv_tensors.Image and image.dtype == torch.uint8
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert target["boxes"].canvas_size == tuple(image.shape[1:])
    assert type(target["masks"]) is tv_tensors.Mask
    validate_target(image, target)
    image, target = CocoJsonDataset(coco / "images", coco / "annotations.json")[0]
    assert type(image) is tv_tensors.Image
    assert type(target["keypoints"]) is KeyPointsWithVisibility
    assert target["keypoints"].flip_indices == (0, 2, 1)
    assert target["keypoints"].canvas_size == tuple(image.shape[1:])
    validate_target(image, target)
    _images, targets = collate_fn([(image, target), (image, target)])
    assert type(targets[0]["boxes"]) is tv_tensors.BoundingBoxes


def test_a_detection_model_trains_on_tv_tensor_samples(pennfudan, coco):
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, min_size=64, max_size=96
    )
    model.train()
    dataset = Pedestrians(pennfudan, transforms=T.Compose([T.ToDtype(torch.float32, scale=True)]))
    images, targets = collate_fn([dataset[0], dataset[1]])
    losses = model(list(images), list(targets))
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    keypoint_model = torchvision.models.detection.keypointrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=4,
        num_keypoints=3,
        min_size=64,
        max_size=96,
    ).train()
    kp_data = CocoJsonDataset(
        coco / "images", coco / "annotations.json", transforms=get_transform(False)
    )
    sample = next(kp_data[i] for i in range(len(kp_data)) if kp_data[i][1]["boxes"].shape[0])
    losses = keypoint_model([sample[0]], [sample[1]])
    assert torch.isfinite(losses["loss_keypoint"])


def test_keypoints_keep_their_metadata_through_tensor_operations():
    kp = KeyPointsWithVisibility(
        torch.tensor([[[1.0, 2.0, 2.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]]),
        canvas_size=(4, 10),
        flip_indices=FLIP3,
    )
    for copy_ in (
        kp.clone(),
        kp.to("cpu"),
        kp.detach(),
        copy.deepcopy(kp),
        pickle.loads(pickle.dumps(kp)),
    ):
        assert type(copy_) is KeyPointsWithVisibility
        assert (copy_.canvas_size, copy_.flip_indices) == ((4, 10), FLIP3)
        assert torch.equal(copy_, kp)
    assert type(kp[..., 0]) is torch.Tensor  # arithmetic gives plain tensors, as tv_tensors do
    with pytest.raises(ValueError, match=r"shape \[N, K, 3\]"):
        KeyPointsWithVisibility(torch.zeros(2, 3), canvas_size=(4, 4))
    with pytest.raises(ValueError, match="not its own inverse"):
        KeyPointsWithVisibility(torch.zeros(1, 3, 3), canvas_size=(4, 4), flip_indices=[1, 2, 0])


GEOMETRY_CALLS = {
    F.resize: ([18, 40],),
    F.affine: (),
    F.rotate: (30.0,),
    F.pad: ([3, 1, 2, 4],),
    F.crop: (2, 3, 15, 20),
    F.perspective: ([[0, 0], [31, 0], [31, 23], [0, 23]], [[2, 1], [29, 0], [31, 20], [0, 23]]),
    F.elastic: (torch.rand(1, H, W, 2) * 0.2,),
    F.center_crop: ([12, 20],),
    F.resized_crop: (1, 2, 16, 24, [20, 30]),
}
GEOMETRY_KWARGS = {F.affine: {"angle": 10.0, "translate": [2, 1], "scale": 1.1, "shear": [3, 0]}}


@pytest.mark.parametrize("functional", GEOMETRIC_FUNCTIONALS, ids=lambda f: f.__name__)
@given(target=keypoint_targets(H, W))
@settings(max_examples=15, deadline=None)
def test_every_geometric_kernel_moves_coordinates_as_torchvision_does(functional, target):
    """Coordinates equal v2's own KeyPoints kernel; visibility is kept; outside -> (0, 0, 0)."""
    kp = KeyPointsWithVisibility(target["keypoints"], canvas_size=(H, W), flip_indices=FLIP3)
    args, kwargs = GEOMETRY_CALLS[functional], GEOMETRY_KWARGS.get(functional, {})
    out = functional(kp, *args, **kwargs)
    reference = functional(
        tv_tensors.KeyPoints(target["keypoints"][..., :2], canvas_size=(H, W)), *args, **kwargs
    )
    assert type(out) is KeyPointsWithVisibility and out.flip_indices == FLIP3
    assert out.canvas_size == reference.canvas_size
    expected = torch.cat([reference.as_subclass(torch.Tensor), target["keypoints"][..., 2:]], -1)
    expected = hide_outside(expected, *reference.canvas_size)
    assert torch.equal(out.as_subclass(torch.Tensor), expected)


def test_flips_of_keypoints_mirror_in_continuous_coordinates_and_swap():
    kp = KeyPointsWithVisibility(
        torch.tensor([[[2.0, 1.0, 2.0], [1.5, 0.5, 2.0], [2.5, 0.5, 1.0]]]),
        canvas_size=(4, 10),
        flip_indices=FLIP3,
    )
    assert F.horizontal_flip(kp).tolist() == [[[8.0, 1.0, 2.0], [7.5, 0.5, 1.0], [8.5, 0.5, 2.0]]]
    assert F.vertical_flip(kp).tolist() == [[[2.0, 3.0, 2.0], [2.5, 3.5, 1.0], [1.5, 3.5, 2.0]]]
    unknown = KeyPointsWithVisibility(kp, canvas_size=(4, 10))
    with pytest.raises(ValueError, match="no flip_indices"):
        F.horizontal_flip(unknown)


# -- the tutorial, unchanged -------------------------------------------------------------------


def forced_tutorial_transform():
    transform = get_transform(train=True)
    transform.transforms[0].p = 1.0  # the flip forced
    return transform


def test_the_tutorials_get_transform_on_an_instance_mask_subclass(pennfudan):
    plain_data = Pedestrians(pennfudan)
    flipped = Pedestrians(pennfudan, transforms=forced_tutorial_transform())
    for i in range(len(plain_data)):
        image, target = plain_data[i]
        new_image, new = flipped[i]
        assert type(new_image) is torch.Tensor and new_image.dtype == torch.float32
        expected = F.to_dtype(image.flip(-1).as_subclass(torch.Tensor), torch.float, scale=True)
        assert torch.equal(new_image, expected)
        assert torch.equal(new["masks"], target["masks"].flip(-1))
        assert torch.equal(new["boxes"], masks_to_boxes(new["masks"]))
        width = image.shape[-1]
        x1, y1, x2, y2 = target["boxes"].as_subclass(torch.Tensor).unbind(1)
        assert torch.equal(new["boxes"], torch.stack([width - x2, y1, width - x1, y2], 1))
        assert torch.equal(new["area"], target["area"])
        validate_target(new_image, new)


def test_the_tutorials_get_transform_on_coco_json_with_keypoints(coco):
    plain_data = CocoJsonDataset(coco / "images", coco / "annotations.json")
    flipped = CocoJsonDataset(
        coco / "images", coco / "annotations.json", transforms=forced_tutorial_transform()
    )
    checked = 0
    for i in range(len(plain_data)):
        image, target = plain_data[i]
        new_image, new = flipped[i]
        width = image.shape[-1]
        expected = F.to_dtype(image.flip(-1).as_subclass(torch.Tensor), torch.float, scale=True)
        assert torch.equal(new_image, expected)
        assert torch.equal(new["masks"], target["masks"].flip(-1))
        x1, y1, x2, y2 = target["boxes"].as_subclass(torch.Tensor).unbind(1)
        assert torch.equal(new["boxes"], torch.stack([width - x2, y1, width - x1, y2], 1))
        kp = target["keypoints"].as_subclass(torch.Tensor)
        for k, source in enumerate(FLIP3):  # left and right corners traded places
            visible = kp[:, source, 2] > 0
            assert torch.equal(new["keypoints"][:, k, 2], kp[:, source, 2])
            assert torch.equal(new["keypoints"][visible, k, 0], width - kp[visible, source, 0])
            assert torch.equal(new["keypoints"][visible, k, 1], kp[visible, source, 1])
            checked += int(visible.sum())
        validate_target(new_image, new)
    assert checked > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
def test_torchvisions_coco_wrapper_sample_through_detkit_transforms_and_back(coco):
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    dataset = wrap_dataset_for_transforms_v2(
        CocoDetection(str(coco / "images"), str(coco / "annotations.json")),
        target_keys={"boxes", "labels", "masks", "image_id"},
    )
    image, target = next(dataset[i] for i in range(len(dataset)) if "boxes" in dataset[i][1])
    ours = T.Compose([T.ToImage(), T.RandomHorizontalFlip(1.0), T.Resize((40, 50))])
    theirs = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(1.0), v2.Resize((40, 50))])
    mine_image, mine = ours(image, target)
    ref_image, ref = theirs(image, target)
    assert (
        type(mine["boxes"]) is tv_tensors.BoundingBoxes and type(mine["masks"]) is tv_tensors.Mask
    )
    assert torch.equal(mine_image, ref_image)
    assert torch.equal(mine["masks"], ref["masks"])
    torch.testing.assert_close(mine["boxes"], ref["boxes"])
    # ... and back: the output is a v2 sample, which a v2 flip takes back to where it was.
    back_image, back = v2.RandomHorizontalFlip(1.0)(mine_image, mine)
    again_image, again = T.RandomHorizontalFlip(1.0)(back_image, back)
    assert torch.equal(again["boxes"], mine["boxes"]) and torch.equal(again_image, mine_image)


# -- any v2 transform, any position ------------------------------------------------------------


@given(target=keypoint_targets(H, W), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_detkit_and_v2_flips_compose_either_way(target, seed):
    image = random_image(seed, H, W)
    image, sample = to_tv_tensors(image, target, flip_indices=FLIP3)
    snapshot = copy.deepcopy(sample)
    pipelines = [
        v2.Compose([T.RandomHorizontalFlip(1.0), v2.RandomHorizontalFlip(1.0)]),
        T.Compose([v2.RandomHorizontalFlip(1.0), T.RandomHorizontalFlip(1.0)]),
        T.Compose([v2.Compose([v2.RandomVerticalFlip(1.0)]), T.RandomVerticalFlip(1.0)]),
    ]
    for pipeline in pipelines:
        out_image, out = pipeline(image, sample)
        assert torch.equal(out_image, image)
        for key in ("boxes", "masks", "keypoints", "labels", "area", "iscrowd"):
            assert type(out[key]) is type(sample[key]), key
            assert torch.equal(out[key], sample[key]), key
    for key, value in snapshot.items():  # the input was not modified
        assert not isinstance(value, torch.Tensor) or torch.equal(value, sample[key])


def test_a_v2_pipeline_as_dataset_transforms_keeps_every_field_aligned(coco):
    pipeline = v2.Compose(
        [
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(),
            v2.Resize((48, 48)),
            v2.SanitizeBoundingBoxes(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    base = CocoJsonDataset(coco / "images", coco / "annotations.json")
    dataset = CocoJsonDataset(coco / "images", coco / "annotations.json", transforms=pipeline)
    for seed in range(12):
        torch.manual_seed(seed)
        i = seed % len(dataset)
        image, target = dataset[i]
        validate_target(image, target)
        n = target["boxes"].shape[0]
        assert all(
            target[k].shape[0] == n for k in ("labels", "masks", "keypoints", "area", "iscrowd")
        )
        if n:  # area is the pixel count of each (resized) mask, iscrowd follows its instance
            torch.testing.assert_close(
                target["area"], target["masks"].flatten(1).sum(1).float(), rtol=0, atol=0
            )
            assert set(target["labels"].tolist()) <= set(base[i][1]["labels"].tolist())


def test_v2_sanitize_and_clamp_work_on_detkit_samples(pennfudan):
    data = Pedestrians(pennfudan)
    image, target = next(data[i] for i in range(len(data)) if len(data[i][1]["labels"]) > 1)
    target = {**target, "boxes": target["boxes"].clone()}
    boxes = target["boxes"].as_subclass(torch.Tensor).clone()
    boxes[0, 2] = boxes[0, 0] + 0.5  # too thin for v2's min_size
    boxes[1, 2] = image.shape[-1] + 5  # sticks out
    target["boxes"] = tv_tensors.wrap(boxes, like=target["boxes"])
    pipeline = T.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()])
    out_image, out = pipeline(image, target)
    assert out["labels"].tolist() == target["labels"][1:].tolist()
    assert torch.equal(out["masks"], target["masks"][1:])
    assert out["iscrowd"].tolist() == target["iscrowd"][1:].tolist()
    assert out["area"].tolist() == target["area"][1:].tolist()
    assert float(out["boxes"][0, 2]) == image.shape[-1]
    validate_target(out_image, out)
    # Called on its own, v2 leaves area and iscrowd behind: validate_target says so.
    _, alone = v2.SanitizeBoundingBoxes()(image, target)
    with pytest.raises(ValueError, match="fields disagree on N"):
        validate_target(image, alone)


@pytest.mark.parametrize("fmt", ["XYWH", "CXCYWH"])
def test_boxes_in_other_formats_are_converted_never_misread(fmt):
    target = make_target([[2, 3, 10, 7]], height=H, width=W)
    xyxy = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(H, W))
    other = F.convert_bounding_box_format(xyxy, new_format=fmt)
    for run in (T.Compose([T.RandomHorizontalFlip(0.0)]), T.V2Transform(v2.Identity())):
        _, out = run(torch.zeros(3, H, W), {**target, "boxes": other})
        assert out["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
        assert out["boxes"].tolist() == [[2.0, 3.0, 10.0, 7.0]]
    validate_target(torch.zeros(3, H, W), {**target, "boxes": other})
    with pytest.raises(ValueError, match=r"XYWH format|CXCYWH format"):
        T.RandomHorizontalFlip(1.0)(torch.zeros(3, H, W), {**target, "boxes": other})


@pytest.mark.parametrize(
    "transform",
    [
        T.RandomHorizontalFlip(1.0, flip_indices=FLIP3),
        T.RandomVerticalFlip(1.0, flip_indices=FLIP3),
        T.Resize((30, 40)),
        T.FixedSizeCrop((20, 20)),
        T.RandomZoomOut(p=1.0),
        T.SanitizeBoxes(),
        T.RandomPhotometricDistort(p=1.0),
        T.ToDtype(torch.float32, scale=True),
        T.V2Transform(v2.RandomRotation(20)),
        T.hflip_preset(flip_indices=FLIP3),
        T.ssd_preset(flip_indices=FLIP3),
    ],
    ids=lambda t: type(t).__name__ if not isinstance(t, T.Compose) else "preset",
)
def test_detkit_transforms_return_tv_tensors_for_tv_tensor_inputs(transform):
    target = make_target([[2, 3, 10, 7], [12, 4, 30, 20]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[3.0, 4.0, 2.0], [4, 5, 1], [6, 6, 2]]] * 2)
    image, sample = to_tv_tensors(random_image(0, H, W), target, flip_indices=FLIP3)
    torch.manual_seed(0)
    out_image, out = transform(image, sample)
    assert type(out_image) is tv_tensors.Image
    assert type(out["boxes"]) is tv_tensors.BoundingBoxes
    assert out["boxes"].canvas_size == tuple(out_image.shape[-2:])
    assert type(out["masks"]) is tv_tensors.Mask
    assert type(out["keypoints"]) is KeyPointsWithVisibility
    assert out["keypoints"].canvas_size == tuple(out_image.shape[-2:])
    validate_target(out_image, out)
    # Plain tensors in, plain tensors out (existing code keeps working).
    torch.manual_seed(0)
    _plain_image, plain_out = transform(random_image(0, H, W), target)
    assert type(plain_out["boxes"]) is torch.Tensor and type(plain_out["masks"]) is torch.Tensor
    assert torch.equal(plain_out["boxes"], out["boxes"].as_subclass(torch.Tensor))


def test_a_callable_that_moves_only_the_image_is_an_error(pennfudan):
    def resize_image_only(image, target):
        return F.resize(image, [20, 20]), target

    dataset = Pedestrians(pennfudan, transforms=resize_image_only)
    with pytest.raises(ValueError, match=r"image is 20x20 .* field 'boxes' belongs to a"):
        dataset[0]

    def forgets_the_target(image, target):
        return F.horizontal_flip(image)

    dataset = Pedestrians(pennfudan, transforms=forgets_the_target)
    with pytest.raises(TypeError, match=r"must return an \(image, target\) pair"):
        dataset[0]


def test_v1_transforms_are_refused_up_front(pennfudan, coco):
    import torchvision.transforms as v1

    with pytest.raises(TypeError, match=r"transforms is RandomHorizontalFlip .*\(v1\)"):
        Pedestrians(pennfudan, transforms=v1.RandomHorizontalFlip())
    with pytest.raises(TypeError, match=r"transforms\[0\] is ToTensor .*\(v1\)"):
        CocoJsonDataset(
            coco / "images", coco / "annotations.json", transforms=v2.Compose([v1.ToTensor()])
        )


def test_a_v2_flip_of_keypoints_without_a_permutation_fails_on_the_first_sample(coco, tmp_path):
    data = json.loads((coco / "annotations.json").read_text())
    for category in data["categories"]:
        del category["keypoints"]  # no names: no permutation can be derived
    (tmp_path / "a.json").write_text(json.dumps(data))
    dataset = CocoJsonDataset(
        coco / "images", tmp_path / "a.json", transforms=v2.RandomHorizontalFlip(0.0)
    )
    assert dataset.flip_indices is None
    with pytest.raises(ValueError, match=r"image_id=\d+ .*without flip_indices"):
        next(dataset[i] for i in range(len(dataset)) if True)
    unsided = CocoJsonDataset(
        coco / "images",
        tmp_path / "a.json",
        flip_indices=(0, 1, 2),
        transforms=v2.RandomHorizontalFlip(1.0),
    )
    _image, target = unsided[0]
    assert target["keypoints"].flip_indices == (0, 1, 2)


@settings(max_examples=30, deadline=None)
@given(
    num=st.integers(0, 5),
    height=st.integers(1, 2000),
    width=st.integers(1, 2000),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)
def test_xyxy_boxes_is_the_constructor_made_faster(num, height, width, dtype):
    """The dataset's fast path gives what ``BoundingBoxes(...)`` gives: class, metadata, data
    (shared, not copied), and the same result through a v2 transform."""
    data = (torch.rand(num, 4) * 100).to(dtype)
    fast = xyxy_boxes(data, (height, width))
    slow = tv_tensors.BoundingBoxes(data, format="XYXY", canvas_size=(height, width))
    assert type(fast) is type(slow) is tv_tensors.BoundingBoxes
    assert vars(fast) == vars(slow)
    assert fast.data_ptr() == data.data_ptr()
    assert torch.equal(fast.as_subclass(torch.Tensor), slow.as_subclass(torch.Tensor))
    flipped_fast, flipped_slow = F.horizontal_flip(fast), F.horizontal_flip(slow)
    assert vars(flipped_fast) == vars(flipped_slow)
    assert torch.equal(flipped_fast, flipped_slow)


def test_xyxy_boxes_falls_back_to_the_constructor(monkeypatch):
    """Inputs the fast path does not cover (one box as ``[4]``, a tv_tensor), and a torchvision
    whose ``BoundingBoxes`` carries other metadata, go through the constructor."""
    one = xyxy_boxes(torch.tensor([1.0, 2.0, 3.0, 4.0]), (5, 6))
    assert one.shape == (1, 4) and one.canvas_size == (5, 6)
    already = tv_tensors.BoundingBoxes(torch.zeros(1, 4), format="XYXY", canvas_size=(1, 1))
    assert xyxy_boxes(already, (7, 8)).canvas_size == (7, 8)
    monkeypatch.setattr(detkit.tv_tensors, "_SETS_BOX_METADATA", False)
    made = []
    real = tv_tensors.BoundingBoxes.__new__
    monkeypatch.setattr(
        tv_tensors.BoundingBoxes, "__new__", lambda *a, **k: made.append(k) or real(*a, **k)
    )
    assert xyxy_boxes(torch.zeros(2, 4), (3, 4)).canvas_size == (3, 4)
    assert made == [{"format": tv_tensors.BoundingBoxFormat.XYXY, "canvas_size": (3, 4)}]


def test_torchvision_rotate_with_expand_is_named_as_the_cause():
    """torchvision sizes an image rotated with ``expand=True`` and its boxes apart by rounding
    (pytorch/vision#8654: at 10 degrees 72x60 vs 73x59); the error says so, and does not send
    the user looking for a transform of the image alone."""
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)
    boxes = tv_tensors.BoundingBoxes([[5.0, 5, 15, 20]], format="XYXY", canvas_size=(48, 64))
    assert F.rotate(image, 10, expand=True).shape[-2:] == (60, 72)
    assert F.rotate(boxes, 10, expand=True).canvas_size == (59, 73)
    target = {"boxes": boxes, "labels": torch.tensor([1]), "image_id": 3}
    with pytest.raises(ValueError) as info:
        T.apply_transforms(v2.RandomRotation((10, 10), expand=True), image, target)
    message = str(info.value)
    assert "field 'boxes' belongs to a" in message
    assert "expand=True" in message and "pytorch/vision#8654" in message
    assert "image alone" not in message
