"""Flips, keypoint permutations and the base machinery of detkit.data.transforms."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from strategies import keypoint_targets, make_target, random_image

from detkit.data import transforms as T
from detkit.ops import masks_to_boxes
from detkit.types import validate_target

H, W = 24, 32
FLIP3 = (0, 2, 1)  # keypoint 0 has no side; 1 and 2 are a left/right pair


def assert_same_target(a, b):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("flip", [T.RandomHorizontalFlip, T.RandomVerticalFlip])
@given(target=keypoint_targets(H, W), seed=st.integers(0, 1000))
@settings(max_examples=40)
def test_flip_twice_is_the_identity(flip, target, seed):
    image = random_image(seed, H, W)
    snapshot = copy.deepcopy(target)
    transform = flip(p=1.0, flip_indices=FLIP3)
    once_image, once = transform(image, target)
    twice_image, twice = transform(once_image, once)
    assert torch.equal(twice_image, image)
    assert_same_target(twice, target)
    assert_same_target(target, snapshot)  # the input was not modified
    validate_target(once_image, once)
    n = target["boxes"].shape[0]
    assert all(v.shape[0] == n for k, v in once.items() if k != "image_id")


@given(target=keypoint_targets(H, W), seed=st.integers(0, 1000))
@settings(max_examples=40)
def test_horizontal_flip_moves_boxes_masks_and_keypoints_together(target, seed):
    image = random_image(seed, H, W)
    out_image, out = T.RandomHorizontalFlip(p=1.0, flip_indices=FLIP3)(image, target)
    assert torch.equal(out_image, image.flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(out["boxes"], torch.stack([W - x2, y1, W - x1, y2], dim=1))
    # The box of the flipped mask is the flipped box, exactly (edge convention).
    assert torch.equal(masks_to_boxes(out["masks"]), out["boxes"])
    assert torch.equal(out["area"], target["area"])
    kp, new = target["keypoints"], out["keypoints"]
    for k, source in enumerate(FLIP3):
        visible = kp[:, source, 2] > 0
        assert torch.equal(new[:, k, 2], kp[:, source, 2])
        assert torch.equal(new[visible, k, 0], W - kp[visible, source, 0])
        assert torch.equal(new[visible, k, 1], kp[visible, source, 1])
        assert torch.equal(new[~visible, k], torch.zeros_like(new[~visible, k]))


@given(target=keypoint_targets(H, W), seed=st.integers(0, 1000))
@settings(max_examples=20)
def test_vertical_flip_values(target, seed):
    image = random_image(seed, H, W)
    out_image, out = T.RandomVerticalFlip(p=1.0, flip_indices=FLIP3)(image, target)
    assert torch.equal(out_image, image.flip(-2))
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(out["boxes"], torch.stack([x1, H - y2, x2, H - y1], dim=1))
    assert torch.equal(masks_to_boxes(out["masks"]), out["boxes"])


def test_known_coco_pose_flipped():
    """A standing person in a 640 x 427 COCO-sized image, facing the camera."""
    pose = {  # name: (x, y, visibility)
        "nose": (322.0, 105.0, 2),
        "left_eye": (330.0, 96.0, 2),
        "right_eye": (313.0, 97.0, 2),
        "left_ear": (341.0, 101.0, 1),
        "right_ear": (0.0, 0.0, 0),  # not labelled
        "left_shoulder": (362.0, 150.0, 2),
        "right_shoulder": (284.0, 152.0, 2),
        "left_elbow": (378.0, 207.0, 2),
        "right_elbow": (270.0, 210.0, 2),
        "left_wrist": (391.5, 259.0, 2),
        "right_wrist": (255.0, 262.5, 2),
        "left_hip": (346.0, 268.0, 2),
        "right_hip": (300.0, 269.0, 2),
        "left_knee": (350.0, 339.0, 2),
        "right_knee": (296.0, 341.0, 1),
        "left_ankle": (352.0, 410.0, 2),
        "right_ankle": (292.0, 412.0, 2),
    }
    keypoints = torch.tensor([[pose[n] for n in T.COCO_PERSON_KEYPOINT_NAMES]], dtype=torch.float32)
    target = {
        "boxes": torch.tensor([[240.0, 80.0, 405.0, 420.0]]),
        "labels": torch.tensor([1]),
        "keypoints": keypoints,
        "area": torch.tensor([165.0 * 340.0]),
        "image_id": 785,
    }
    image = torch.zeros(3, 427, 640, dtype=torch.uint8)
    flip = T.RandomHorizontalFlip(p=1.0, flip_indices=T.COCO_PERSON_FLIP_INDICES)
    _, out = flip(image, target)
    flipped = dict(zip(T.COCO_PERSON_KEYPOINT_NAMES, out["keypoints"][0].tolist(), strict=True))
    # The left wrist's point (391.5, 259) is now the right wrist, mirrored: 640 - 391.5.
    assert flipped["right_wrist"] == [248.5, 259.0, 2.0]
    assert flipped["left_wrist"] == [385.0, 262.5, 2.0]
    assert flipped["nose"] == [318.0, 105.0, 2.0]
    assert flipped["left_ear"] == [0.0, 0.0, 0.0]  # the unlabelled right ear, still unlabelled
    assert flipped["right_ear"] == [299.0, 101.0, 1.0]
    assert flipped["left_knee"] == [344.0, 341.0, 1.0]
    assert out["boxes"].tolist() == [[235.0, 80.0, 400.0, 420.0]]
    validate_target(image, out)


def test_flip_of_keypoints_without_flip_indices_fails_on_every_sample():
    target = make_target([[1, 1, 5, 5]])
    target["keypoints"] = torch.tensor([[[2.0, 2.0, 2.0], [3.0, 3.0, 2.0]]])
    target["image_id"] = 42
    for p in (0.0, 1.0):  # the error does not depend on the coin
        with pytest.raises(ValueError, match=r"image_id=42 has keypoints \(K = 2\).*flip_indices"):
            T.RandomHorizontalFlip(p=p)(torch.zeros(3, 32, 32), target)
    with pytest.raises(ValueError, match="K = 2 keypoints but flip_indices has 3"):
        T.RandomVerticalFlip(p=1.0, flip_indices=FLIP3)(torch.zeros(3, 32, 32), target)
    _, out = T.RandomHorizontalFlip(p=1.0, swap_left_right=False)(torch.zeros(3, 32, 32), target)
    assert out["keypoints"].tolist() == [[[30.0, 2.0, 2.0], [29.0, 3.0, 2.0]]]
    with pytest.raises(ValueError, match="swap_left_right=False"):
        T.RandomHorizontalFlip(flip_indices=[0], swap_left_right=False)
    # Without keypoints no permutation is needed; an empty K needs none either.
    target.pop("keypoints")
    T.RandomHorizontalFlip(p=1.0)(torch.zeros(3, 32, 32), target)
    target["keypoints"] = torch.zeros(1, 0, 3)
    T.RandomHorizontalFlip(p=1.0)(torch.zeros(3, 32, 32), target)


def test_flip_probability_follows_torch_seed():
    flip = T.RandomHorizontalFlip(p=0.5)
    target = make_target([[0, 0, 3, 3]], height=8, width=8)
    image = random_image(0, 8, 8)

    def run():
        return [flip(image, target)[1]["boxes"][0, 0].item() for _ in range(20)]

    torch.manual_seed(7)
    first = run()
    torch.manual_seed(7)
    assert run() == first
    assert set(first) == {0.0, 5.0}  # both outcomes happen in 20 draws
    with pytest.raises(ValueError, match=r"p must be a probability"):
        T.RandomHorizontalFlip(p=1.5)


def test_flip_pil_image_and_no_target():
    image = random_image(3, 6, 9)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    out, target = T.RandomHorizontalFlip(p=1.0)(pil, None)
    assert target is None and isinstance(out, Image.Image)
    assert torch.equal(torch.from_numpy(np.array(out)).permute(2, 0, 1), image.flip(-1))


def test_unflipped_sample_is_a_new_dict():
    target = make_target([[0, 0, 3, 3]])
    _, out = T.RandomHorizontalFlip(p=0.0)(torch.zeros(3, 32, 32), target)
    assert out is not target and out.keys() == target.keys()


# -- keypoint permutations ---------------------------------------------------------------------


def test_coco_flip_indices_swap_every_left_with_its_right():
    names = T.COCO_PERSON_KEYPOINT_NAMES
    assert len(names) == 17 == len(T.COCO_PERSON_FLIP_INDICES)
    for k, source in enumerate(T.COCO_PERSON_FLIP_INDICES):
        expected = names[k].replace("left", "@").replace("right", "left").replace("@", "right")
        assert names[source] == expected
    assert T.check_flip_indices(T.COCO_PERSON_FLIP_INDICES, 17) == T.COCO_PERSON_FLIP_INDICES


def test_flip_indices_from_names():
    names = ["head", "LeftHand", "RightHand", "l_foot", "r_foot", "tail"]
    assert T.flip_indices_from_names(names) == (0, 2, 1, 4, 3, 5)
    assert T.flip_indices_from_names(names, [("head", "tail")]) == (5, 1, 2, 3, 4, 0)
    assert T.flip_indices_from_names(["a"], []) == (0,)
    with pytest.raises(ValueError, match="'x', which is not one of"):
        T.flip_indices_from_names(names, [("head", "x")])
    with pytest.raises(ValueError, match="appears twice"):
        T.flip_indices_from_names(["a", "a"])
    with pytest.raises(ValueError, match="is in both"):
        T.flip_indices_from_names(names, [("head", "tail"), ("tail", "LeftHand")])
    with pytest.raises(ValueError, match="with itself"):
        T.flip_indices_from_names(names, [("head", "head")])


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("wing_l", "wing_r"),  # a suffix letter
        ("hand.L", "hand.R"),
        ("eyeL", "eyeR"),  # a camel-case letter
        ("LEye", "REye"),
        ("lEye", "rEye"),
        ("l_foot", "r_foot"),  # a prefix letter
        ("LeftEye", "RightEye"),  # a whole word
        ("front_left", "front_right"),
        ("frontLeft", "frontRight"),
        ("lwri", "rwri"),  # a bare prefix letter, when the twin is there (MPII's short names)
        ("Lwrist", "Rwrist"),
        ("LSHO", "RSHO"),
        ("L1", "R1"),  # an insect's first legs
    ],
)
def test_flip_indices_from_names_pairs_the_common_conventions(left, right):
    names = ["nose", right, left, "tail"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pair found is no warning
        assert T.flip_indices_from_names(names) == (0, 2, 1, 3)


def test_mpii_short_names_swap_on_flips():
    """MPII's names as pose repositories list them: with no separator after the side letter
    they used to pair nothing, and flips kept left and right without a word."""
    names = ["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thrx", "neck", "head"]
    names += ["rwri", "relb", "rsho", "lsho", "lelb", "lwri"]
    expected = (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)
    assert T.flip_indices_from_names(names) == expected
    # A bare letter pairs only with a twin: "lip" and "rump" are not sides.
    assert T.flip_indices_from_names(["lip", "rump", "lear", "rear"]) == (0, 1, 3, 2)


def test_a_sided_name_without_its_twin_is_reported_not_ignored():
    names = ["nose", "wing_l", "wing_r", "left_ear", "tail_R"]
    with pytest.warns(UserWarning, match=r"\['left_ear', 'tail_R'\] look like left/right"):
        flip = T.flip_indices_from_names(names)
    assert flip == (0, 2, 1, 3, 4)  # the pair is swapped, the lonely names stay
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.flip_indices_from_names(["nose", "blue", "Lever", "rib"])  # words, not sides


def test_check_flip_indices_errors():
    with pytest.raises(ValueError, match="repeats an index"):
        T.check_flip_indices([0, 0])
    with pytest.raises(ValueError, match="out of range"):
        T.check_flip_indices([0, 5])
    with pytest.raises(ValueError, match="K = 3"):
        T.check_flip_indices([0, 1], num_keypoints=3)
    with pytest.raises(TypeError, match="integers"):
        T.check_flip_indices([0.0, 1.0])
    with pytest.raises(ValueError, match="not its own inverse"):
        T.RandomHorizontalFlip(flip_indices=[1, 2, 0])
    assert T.check_flip_indices(torch.tensor([1, 0])) == (1, 0)


def test_hide_outside_and_nan():
    kp = torch.tensor([[[0.0, 0.0, 2.0], [10.0, 5.0, 1.0], [10.5, 2.0, 2.0], [float("nan"), 1, 2]]])
    assert T.hide_outside(kp, height=5, width=10).tolist() == [
        [[0.0, 0.0, 2.0], [10.0, 5.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    ]


# -- base machinery ----------------------------------------------------------------------------


def test_per_instance_keys_and_errors():
    target = make_target([[0, 0, 2, 2], [1, 1, 3, 3]], image_id=9)
    target["track_ids"] = torch.tensor([5, 6])
    target["image_tags"] = torch.tensor([1, 2, 3])  # per-image: not N long
    keys = T.per_instance_keys(target)
    # Only the contract's fields count unless others are declared: an undeclared tensor that
    # happens to be N long is never touched.
    assert keys == ["boxes", "labels", "masks", "area", "iscrowd"]
    kept = T.select_instances(target, torch.tensor([False, True]))
    assert kept["track_ids"].tolist() == [5, 6] and kept["image_tags"].tolist() == [1, 2, 3]
    assert kept["labels"].tolist() == [target["labels"][1].item()]
    assert kept["image_id"] == 9 and target["track_ids"].tolist() == [5, 6]
    bad = dict(target, labels=torch.tensor([1, 2, 3]))
    with pytest.raises(
        ValueError, match=r"image_id=9: field 'labels' has shape \(3,\) but there are 2"
    ):
        T.RandomHorizontalFlip()(torch.zeros(3, 32, 32), bad)


def test_declared_fields_stay_aligned_and_undeclared_ones_are_left_alone():
    """Issue 13: ``orig_size`` with two instances used to be filtered, ``names`` not."""
    from torchvision.transforms import v2

    target = make_target([[0, 0, 8, 8], [10, 10, 10.5, 12], [4, 4, 20, 20]], image_id=2)
    target["names"] = ["anna", "ben", "cleo"]
    target["track_ids"] = torch.tensor([7, 8, 9])
    target["orig_size"] = torch.tensor([32, 32, 3])  # three numbers, three instances
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    for sanitize in (T.SanitizeBoxes(), v2.SanitizeBoundingBoxes()):
        pipeline = T.Compose([sanitize], instance_fields=["names", "track_ids"])
        _, out = pipeline(image, target)
        assert out["names"] == ["anna", "cleo"], sanitize
        assert out["track_ids"].tolist() == [7, 9]
        assert out["iscrowd"].tolist() == target["iscrowd"][[0, 2]].tolist()
        assert out["area"].tolist() == target["area"][[0, 2]].tolist()
        assert out["orig_size"].tolist() == [32, 32, 3]
    assert target["names"] == ["anna", "ben", "cleo"]  # the input is not modified
    with pytest.raises(ValueError, match=r"field 'names' has shape length 2 but there are 3"):
        T.Compose([T.SanitizeBoxes()], instance_fields=["names"])(
            image, {**target, "names": ["a", "b"]}
        )
    with pytest.raises(ValueError, match="field 'names' must be a tensor or a list"):
        T.Compose([T.SanitizeBoxes()], instance_fields=["names"])(image, {**target, "names": "abc"})


def test_an_undeclared_per_instance_field_is_warned_when_instances_are_dropped():
    """A field with one entry for each of 5+ instances that nobody declared stays as it is
    when instances are dropped, and so no longer lines up: a warning names it, for detkit's
    own drops and v2's alike. Declared, or too short to tell, it passes silently."""
    from torchvision.transforms import v2

    boxes = [[0, 0, 8, 8], [10, 10, 10.5, 12], [4, 4, 20, 20], [1, 1, 9, 9], [2, 2, 30, 30]]
    target = make_target(boxes, image_id=4)
    target["track_ids"] = torch.tensor([7, 8, 9, 10, 11])
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    for sanitize in (T.SanitizeBoxes(), v2.SanitizeBoundingBoxes()):
        with pytest.warns(UserWarning, match="'track_ids' has one entry per instance but is"):
            _, out = T.Compose([sanitize])(image, target)
        assert len(out["boxes"]) == 4 and len(out["track_ids"]) == 5  # as the warning says
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, out = T.Compose([sanitize], instance_fields=["track_ids"])(image, target)
            assert out["track_ids"].tolist() == [7, 9, 10, 11]
            short = make_target(boxes[:3], image_id=5)
            T.Compose([sanitize])(image, {**short, "orig_size": torch.tensor([32, 32, 3])})


def test_bad_inputs_are_named():
    target = make_target([[0, 0, 2, 2]], image_id=3)
    with pytest.raises(
        ValueError, match=r"image_id=3: field 'masks' must be a Tensor\[N, 16, 32\]"
    ):
        T.RandomHorizontalFlip()(torch.zeros(3, 16, 32), target)
    with pytest.raises(TypeError, match="target must be a dict"):
        T.RandomHorizontalFlip()(torch.zeros(3, 32, 32), [target])
    with pytest.raises(TypeError, match="PIL image or a Tensor"):
        T.RandomHorizontalFlip()("image.png", target)
    with pytest.raises(ValueError, match="'keypoints' must be a Tensor\\[N, K, 3\\]"):
        T.RandomHorizontalFlip()(torch.zeros(3, 32, 32), dict(target, keypoints=torch.zeros(1, 2)))
    with pytest.raises(ValueError, match="'boxes' must be a Tensor"):
        T.RandomHorizontalFlip()(torch.zeros(3, 32, 32), {"labels": torch.tensor([1])})


def test_compose_runs_torchvision_v2_and_rejects_non_callables():
    from torchvision.transforms import v2

    pipeline = T.Compose([v2.RandomHorizontalFlip(p=1.0), T.ToDtype(torch.float32, scale=True)])
    _, out = pipeline(
        torch.zeros(3, 8, 10, dtype=torch.uint8), make_target([[0, 0, 2, 2]], height=8, width=10)
    )
    assert out["boxes"].tolist() == [[8.0, 0.0, 10.0, 2.0]]  # v2 alone would not move the box
    import torchvision.transforms as v1

    with pytest.raises(TypeError, match=r"transforms\[0\] is RandomHorizontalFlip .*\(v1\)"):
        T.Compose([v1.RandomHorizontalFlip()])
    # ... also inside a v2.Compose, where v2 would call it with (image, target) and fail.
    with pytest.raises(TypeError, match=r"transforms\[1\]\[0\] is Resize .*\(v1\)"):
        T.Compose([T.ToImage(), v2.Compose([v1.Resize(8)])])
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        T.Compose([T.ToImage(), 3])
    assert "RandomHorizontalFlip" in repr(pipeline)


def test_photometric_and_conversions_leave_the_target_alone():
    target = make_target([[0, 0, 2, 2]], height=4, width=4)
    image = random_image(1, 4, 4)
    torch.manual_seed(0)
    distorted, out = T.RandomPhotometricDistort(p=1.0)(image, target)
    assert distorted.shape == image.shape and not torch.equal(distorted, image)
    assert_same_target(out, target)
    assert out is not target
    as_float, _ = T.ToDtype(torch.float32, scale=True)(image, target)
    assert torch.allclose(as_float * 255, image.float())
    with pytest.raises(TypeError, match="put ToImage"):
        T.ToDtype(torch.float32)(Image.new("RGB", (4, 4)), target)
    array = image.permute(1, 2, 0).numpy()
    assert torch.equal(T.ToImage()(array, None)[0], image)
    assert torch.equal(T.ToImage()(Image.fromarray(array), None)[0], image)
    with pytest.warns(DeprecationWarning, match="use ToImage"):
        old = T.PILToTensor()
    assert torch.equal(old(Image.fromarray(array), None)[0], image)
    with pytest.raises(TypeError, match="PILToTensor"):
        old(array, None)


def test_float_images_outside_0_1_are_refused_where_they_would_be_hidden():
    # A float image in 0..255: colour jitter clamped it to 0..1 (a washed-out image that
    # then passed every range check) and ToDtype(scale=True) passed it on unscaled.
    target = {**make_target([[0, 0, 2, 2]], height=4, width=4), "image_id": 7}
    image = random_image(1, 4, 4).float()
    cases = [
        (T.RandomPhotometricDistort(p=1.0), "RandomPhotometricDistort: sample image_id=7"),
        (T.ToDtype(torch.float32, scale=True), r"ToDtype\(scale=True\): sample image_id=7"),
        (T.ToDtype(torch.float16, scale=True), "divide it by 255"),
        (T.ssd_preset(), "wash this one out"),
        (T.eval_preset(), "rescales integer images only"),
    ]
    for transform, message in cases:
        with pytest.raises(ValueError, match=message):
            transform(image, target)
    normalised = (image / 255 - 0.45) / 0.225
    with pytest.raises(ValueError, match=r"values in \[-\d\.\d+, 2\.\d+\], not 0..1"):
        T.RandomPhotometricDistort(p=1.0)(normalised, None)
    with pytest.raises(ValueError, match="contains NaN"):
        T.ToDtype(torch.float32, scale=True)(torch.full((3, 2, 2), float("nan")), None)
    # Images in 0..1 (and uint8 ones) pass as before.
    torch.manual_seed(0)
    unit = image / 255
    assert T.RandomPhotometricDistort(p=1.0)(unit, target)[0].dtype == torch.float32
    assert T.ToDtype(torch.float32, scale=True)(unit, target)[0] is unit
    assert T.ToDtype(torch.float32)(image, target)[0] is image  # no scale asked, no check


@pytest.mark.parametrize(
    "transform",
    [T.RandomHorizontalFlip(1.0), T.Resize((16, 16)), T.SanitizeBoxes()],
    ids=lambda t: type(t).__name__,
)
def test_a_none_field_is_named_not_crashed_on(transform):
    """``masks=None`` breaks the contract: every transform says so instead of failing inside."""
    target = {
        "boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]),
        "labels": torch.tensor([1]),
        "masks": None,
        "image_id": 4,
    }
    with pytest.raises(ValueError, match=r"image_id=4.*field 'masks' must be a tensor"):
        transform(torch.zeros(3, 8, 8, dtype=torch.uint8), target)


def test_a_dataset_of_ones_own_shares_the_datasets_transform_handling():
    """TransformedSamples is what InstanceMaskDataset and CocoJsonDataset share: a v1
    transform is refused when the dataset is made, and samples stay aligned through v2."""
    import torchvision.transforms as v1
    from torchvision.transforms import v2

    from detkit.data import TransformedSamples

    class Boxes(TransformedSamples, torch.utils.data.Dataset):
        def __init__(self, transforms=None):
            self.set_transforms(transforms, instance_fields=("track_ids",))

        def __len__(self):
            return 1

        def __getitem__(self, idx):
            target = {
                "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 1.0, 9.0, 3.0]]),
                "labels": torch.tensor([1, 2]),
                "track_ids": [7, 9],
                "image_id": idx,
            }
            return self.transformed(torch.zeros(3, 4, 10), target, source=f"{idx}.png")

    with pytest.raises(TypeError, match=r"transforms\[0\] is ToTensor from torchvision"):
        Boxes(v2.Compose([v1.ToTensor()]))
    _, target = Boxes(v2.RandomHorizontalFlip(p=1.0))[0]
    assert target["boxes"].tolist() == [[8.0, 0.0, 10.0, 2.0], [1.0, 1.0, 5.0, 3.0]]
    assert target["track_ids"] == [7, 9]
    assert Boxes()[0][1]["boxes"].tolist() == [[0.0, 0.0, 2.0, 2.0], [5.0, 1.0, 9.0, 3.0]]
