"""The reference policies as presets: equivalence with torchvision's v2 references, datasets."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from strategies import make_target, random_image
from torchvision import tv_tensors
from torchvision.transforms import v2

from detkit.data import InstanceMaskDataset
from detkit.data import transforms as T
from detkit.types import validate_target

H, W = 24, 32


def reference_pipeline(policy):
    """torchvision's references/detection/presets.py (use_v2=True, backend "tv_tensor")."""
    return v2.Compose(
        [
            v2.ToImage(),
            *policy,
            v2.RandomHorizontalFlip(p=0.5),
            v2.ToDtype(torch.float, scale=True),
            v2.ConvertBoundingBoxFormat(tv_tensors.BoundingBoxFormat.XYXY),
            v2.SanitizeBoundingBoxes(),
            v2.ToPureTensor(),
        ]
    )


def reference_policies(mean):
    return {
        "hflip": (T.hflip_preset(), []),
        "multiscale": (
            T.multiscale_preset(min_size=(20, 28, 36), max_size=60),
            [v2.RandomShortestSize(min_size=(20, 28, 36), max_size=60)],
        ),
        "ssd": (
            T.ssd_preset(),
            [
                v2.RandomPhotometricDistort(),
                v2.RandomZoomOut(fill={tv_tensors.Mask: 0, "others": list(mean)}),
                v2.RandomIoUCrop(),
            ],
        ),
        "ssdlite": (T.ssdlite_preset(), [v2.RandomIoUCrop()]),
    }


@pytest.mark.parametrize("policy", ["hflip", "multiscale", "ssd", "ssdlite"])
def test_presets_draw_and_transform_like_torchvision_references(policy):
    ours, reference = reference_policies(T.REFERENCE_MEAN)[policy]
    reference = reference_pipeline(reference)
    target = make_target(
        [[1, 2, 12, 20], [14, 3, 30, 11], [5, 15, 9, 23]], [1, 2, 3], height=H, width=W
    )
    for seed in range(6):
        image = random_image(seed, H, W)
        torch.manual_seed(seed)
        our_image, our_target = ours(image, target)
        torch.manual_seed(seed)
        ref_image, ref_target = reference(
            image,
            {
                "boxes": tv_tensors.BoundingBoxes(
                    target["boxes"], format="XYXY", canvas_size=(H, W)
                ),
                "masks": tv_tensors.Mask(target["masks"]),
                "labels": target["labels"],
            },
        )
        assert torch.equal(our_image, ref_image)
        # detkit also drops instances whose mask a crop emptied while their box survived.
        present = ref_target["masks"].flatten(1).any(1).to(torch.bool)
        assert torch.equal(our_target["boxes"], ref_target["boxes"][present])
        assert torch.equal(our_target["labels"], ref_target["labels"][present])
        assert torch.equal(our_target["masks"], ref_target["masks"][present])
        validate_target(our_image, our_target)


def test_presets_are_the_references_policies():
    def kinds(pipeline):
        return [type(t).__name__ for t in pipeline.transforms]

    tail = ["RandomHorizontalFlip", "ToDtype", "SanitizeBoxes"]
    assert kinds(T.hflip_preset()) == ["ToImage", *tail]
    assert kinds(T.multiscale_preset()) == ["ToImage", "RandomShortestSize", *tail]
    assert kinds(T.lsj_preset()) == ["ToImage", "ScaleJitter", "FixedSizeCrop", *tail]
    assert kinds(T.ssd_preset()) == [
        "ToImage",
        "RandomPhotometricDistort",
        "RandomZoomOut",
        "RandomIoUCrop",
        *tail,
    ]
    assert kinds(T.ssdlite_preset()) == ["ToImage", "RandomIoUCrop", *tail]
    assert kinds(T.eval_preset()) == ["ToImage", "ToDtype"]
    multiscale = T.multiscale_preset().transforms[1].transform
    assert list(multiscale.min_size) == list(range(480, 801, 32)) and multiscale.max_size == 1333
    jitter, crop = T.lsj_preset().transforms[1:3]
    assert jitter.transform.target_size == (1024, 1024)
    assert jitter.transform.scale_range == (0.1, 2.0)
    assert crop.transform.size == (1024, 1024) and crop.transform.fill == [123.0, 117.0, 104.0]
    assert T.hflip_preset().transforms[1].p == 0.5
    assert T.ssd_preset().transforms[2].transform.side_range == (1.0, 4.0)


def test_lsj_preset_output_size_and_validity():
    target = make_target([[1, 2, 12, 20], [14, 3, 30, 11]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[5.0, 5.0, 2.0]], [[20.0, 5.0, 2.0]]])
    pipeline = T.lsj_preset(size=40, swap_left_right=False)
    for seed in range(8):
        torch.manual_seed(seed)
        image, out = pipeline(random_image(seed, H, W), target)
        assert image.shape == (3, 40, 40) and image.dtype == torch.float32
        validate_target(image, out)


def test_presets_reproduce_under_manual_seed_and_keep_inputs():
    target = make_target([[1, 2, 12, 20], [14, 3, 30, 11]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[5.0, 5.0, 2.0], [6.0, 5.0, 2.0]]] * 2)
    snapshot = copy.deepcopy(target)
    pipeline = T.ssd_preset(flip_indices=[1, 0])
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([pipeline(random_image(s, H, W), target) for s in range(5)])
    for (image_a, target_a), (image_b, target_b) in zip(*runs):
        assert torch.equal(image_a, image_b)
        assert all(torch.equal(target_a[k], target_b[k]) for k in target_a if k != "image_id")
    assert all(torch.equal(target[k], snapshot[k]) for k in target if k != "image_id")


def test_pipelines_pickle_for_dataloader_workers():
    """Workers started with spawn receive the transforms pickled (lambdas would fail)."""
    target = make_target([[1, 2, 12, 20], [14, 3, 30, 11]], height=H, width=W)
    target["keypoints"] = torch.tensor([[[5.0, 5.0, 2.0], [6.0, 5.0, 2.0]]] * 2)
    for pipeline in (
        T.ssd_preset(flip_indices=[1, 0]),
        T.lsj_preset(size=32, flip_indices=[1, 0]),
        T.Compose([v2.RandomRotation(20), T.SanitizeBoxes()]),
    ):
        copy_ = pickle.loads(pickle.dumps(pipeline))
        torch.manual_seed(5)
        expected = pipeline(random_image(1, H, W), target)
        torch.manual_seed(5)
        got = copy_(random_image(1, H, W), target)
        assert torch.equal(expected[0], got[0])
        assert all(torch.equal(expected[1][k], got[1][k]) for k in got[1] if k != "image_id")


def test_inference_without_target():
    image = random_image(0, H, W)
    for pipeline in (T.eval_preset(), T.ssd_preset(), T.lsj_preset(size=32)):
        out, target = pipeline(image, None)
        assert target is None and out.dtype == torch.float32


@pytest.mark.parametrize(
    "transform",
    [
        T.hflip_preset(swap_left_right=False),
        T.multiscale_preset(min_size=[16], max_size=40, swap_left_right=False),
        T.lsj_preset(size=20, swap_left_right=False),
        T.ssd_preset(swap_left_right=False),
        T.ssdlite_preset(swap_left_right=False),
        T.eval_preset(),
        T.Resize((10, 12)),
        T.RandomZoomOut(p=1.0),
        T.RandomIoUCrop(),
        T.FixedSizeCrop(8),
        T.RandomVerticalFlip(1.0, swap_left_right=False),
        T.RandomPhotometricDistort(p=1.0),
        T.SanitizeBoxes(),
        T.V2Transform(v2.RandomRotation(30)),
    ],
    ids=lambda t: type(t).__name__,
)
def test_empty_targets_pass_everywhere(transform):
    target = make_target([], height=H, width=W, image_id=4)
    target["keypoints"] = torch.zeros((0, 5, 3))
    torch.manual_seed(0)
    image, out = transform(random_image(0, H, W), target)
    height, width = image.shape[-2:]
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].shape == (0,) and out["area"].shape == (0,)
    assert out["masks"].shape == (0, height, width) and out["keypoints"].shape == (0, 5, 3)
    assert out["image_id"] == 4
    validate_target(image, out)


@pytest.mark.parametrize(
    "preset",
    [T.hflip_preset, T.ssd_preset, lambda: T.lsj_preset(size=64), T.eval_preset],
    ids=["hflip", "ssd", "lsj", "eval"],
)
def test_presets_on_a_dataset(synthetic_root, preset):
    images = sorted((synthetic_root / "PNGImages").glob("*.png"))
    pairs = [(p, synthetic_root / "PedMasks" / f"{p.stem}_mask.png") for p in images]
    dataset = InstanceMaskDataset(pairs, transforms=preset())
    torch.manual_seed(0)
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
        validate_target(image, target)
