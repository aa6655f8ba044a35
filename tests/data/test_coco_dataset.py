"""CocoJsonDataset against pycocotools, on generated COCO files."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detkit.data import CocoJsonDataset, write_synthetic_coco
from detkit.data.coco._fields import rle_string_problem
from detkit.types import validate_target


def load_coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools on numpy 2
        return COCO(str(path))


def ann_to_mask(coco: COCO, ann) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.annToMask(ann)


def kind(segmentation) -> str:
    if isinstance(segmentation, list):
        return "polygon"
    return "rle" if isinstance(segmentation["counts"], str) else "uncompressed"


def check_round_trip(root) -> dict[str, int]:
    """Every sample equals what pycocotools reads from the same file; returns kinds seen."""
    dataset = CocoJsonDataset(root / "images", root / "annotations.json")
    coco = load_coco(root / "annotations.json")
    category_ids = sorted(coco.cats)
    assert dataset.label_to_category == dict(enumerate(category_ids, 1))
    assert dataset.ids == [
        image["id"] for image in json.loads((root / "annotations.json").read_text())["images"]
    ]
    kinds = {"polygon": 0, "rle": 0, "uncompressed": 0, "negative": 0}
    for idx in range(len(dataset)):
        image, target = dataset[idx]
        image_id = dataset.ids[idx]
        info = coco.imgs[image_id]
        assert target["image_id"] == image_id and isinstance(target["image_id"], int)
        assert tuple(image.shape) == (3, info["height"], info["width"])
        validate_target(image, target)
        anns = coco.imgToAnns[image_id]
        kinds["negative"] += not anns
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        torch.testing.assert_close(
            target["boxes"], torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        )
        expected_labels = [category_ids.index(a["category_id"]) + 1 for a in anns]
        assert target["labels"].tolist() == expected_labels
        assert target["iscrowd"].tolist() == [a["iscrowd"] for a in anns]
        assert target["area"].tolist() == pytest.approx([a["area"] for a in anns])
        if not coco.anns:  # nothing to decide from: masks are on only when a file has them
            assert not dataset.with_masks and "masks" not in target
        else:
            masks = [ann_to_mask(coco, a) for a in anns]
            masks = np.stack(masks) if masks else np.zeros((0, *image.shape[1:]))
            np.testing.assert_array_equal(target["masks"].numpy(), masks)
            assert target["masks"].dtype == torch.uint8
        for a in anns:
            kinds[kind(a["segmentation"])] += 1
        if dataset.num_keypoints == 0:
            assert not dataset.with_keypoints and "keypoints" not in target
            assert all("keypoints" not in a for a in anns)
            continue
        keypoints = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32)
        torch.testing.assert_close(
            target["keypoints"], keypoints.reshape(len(anns), dataset.num_keypoints, 3)
        )
    return kinds


def test_round_trip_covers_every_segmentation_kind(tmp_path):
    root = write_synthetic_coco(
        tmp_path, num_images=10, seed=3, rle_fraction=0.3, crowd_fraction=0.3, negative_fraction=0.2
    )
    kinds = check_round_trip(root)
    assert all(count > 0 for count in kinds.values()), kinds


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), keypoints=st.integers(0, 4))
def test_round_trip_property(tmp_path_factory, seed, keypoints):
    root = write_synthetic_coco(
        tmp_path_factory.mktemp("coco"), num_images=3, seed=seed, num_keypoints=keypoints
    )
    check_round_trip(root)


@pytest.fixture
def coco_root(tmp_path):
    return write_synthetic_coco(
        tmp_path, num_images=6, seed=11, sizes=[(40, 50)], negative_fraction=0.3
    )


def edited(root, edit, name="edited.json"):
    """Write an edited copy of root's annotation file; returns its path."""
    data = json.loads((root / "annotations.json").read_text())
    edit(data)
    path = root / name
    path.write_text(json.dumps(data))
    return path


def first_annotation(data):
    return data["annotations"][0]


def test_attributes_for_evaluation_and_model_building(coco_root):
    dataset = CocoJsonDataset(coco_root / "images", coco_root / "annotations.json")
    assert dataset.label_to_category == {1: 2, 2: 5, 3: 9}
    assert dataset.category_to_label == {2: 1, 5: 2, 9: 3}
    assert dataset.class_names == ["__background__", "triangle", "box", "kite"]
    assert dataset.num_classes == 4 and dataset.num_keypoints == 3
    assert dataset.with_masks and dataset.with_keypoints
    assert [c["id"] for c in dataset.categories] == [2, 5, 9]


def test_negatives_kept_by_default_with_empty_fields_or_dropped(coco_root):
    dataset = CocoJsonDataset(coco_root / "images", coco_root / "annotations.json")
    counts = [len(dataset.get_target(i)["boxes"]) for i in range(len(dataset))]
    negative = counts.index(0)
    target = dataset.get_target(negative)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 40, 50) and target["keypoints"].shape == (0, 3, 3)
    assert target["area"].shape == (0,) and target["iscrowd"].dtype == torch.int64
    validate_target(dataset[negative][0], target)
    positives = CocoJsonDataset(
        coco_root / "images", coco_root / "annotations.json", keep_negatives=False
    )
    assert positives.ids == [i for i, c in zip(dataset.ids, counts) if c]
    assert len(positives) == sum(c > 0 for c in counts) < len(dataset)


def test_masks_option(coco_root):
    boxes_only = CocoJsonDataset(
        coco_root / "images", coco_root / "annotations.json", with_masks=False
    )
    assert "masks" not in boxes_only[0][1] and not boxes_only.with_masks

    def strip(data):
        for a in data["annotations"]:
            a["segmentation"] = []

    path = edited(coco_root, strip)
    auto = CocoJsonDataset(coco_root / "images", path)
    assert not auto.with_masks and "masks" not in auto[0][1]
    with pytest.raises(ValueError, match=r"has no 'segmentation'.*with_masks=False"):
        CocoJsonDataset(coco_root / "images", path, with_masks=True)


def test_missing_area_is_computed_and_v0_keypoints_are_zeroed(coco_root):
    def edit(data):
        ann = first_annotation(data)
        del ann["area"], ann["iscrowd"]
        ann["keypoints"][:3] = [7.5, 3.0, 0]  # an exporter that keeps coordinates of v = 0

    path = edited(coco_root, edit)
    coco = load_coco(path)
    ann = coco.dataset["annotations"][0]
    dataset = CocoJsonDataset(coco_root / "images", path)
    target = dataset.get_target(dataset.ids.index(ann["image_id"]))
    row = [a["id"] for a in coco.imgToAnns[ann["image_id"]]].index(ann["id"])
    assert target["area"][row] == float(ann_to_mask(coco, ann).sum())
    assert target["iscrowd"][row] == 0
    assert target["keypoints"][row, 0].tolist() == [0.0, 0.0, 0.0]
    boxes_only = CocoJsonDataset(coco_root / "images", path, with_masks=False).get_target(
        dataset.ids.index(ann["image_id"])
    )
    _, _, w, h = ann["bbox"]
    assert boxes_only["area"][row] == pytest.approx(w * h)


def test_box_overshoot_within_tolerance_is_clipped(coco_root):
    def edit(data):
        ann = first_annotation(data)
        ann["bbox"] = [-0.4, 30.0, 50.6, 10.7]  # image is 50 x 40: overshoots by 0.4 and 0.7

    dataset = CocoJsonDataset(coco_root / "images", edited(coco_root, edit))
    image_index = dataset.ids.index(
        json.loads((coco_root / "edited.json").read_text())["annotations"][0]["image_id"]
    )
    boxes = dataset.get_target(image_index)["boxes"]
    assert [0.0, 30.0, 50.0, 40.0] in boxes.tolist()
    with pytest.raises(ValueError, match=r"outside the image by more than box_tolerance=0\.5"):
        CocoJsonDataset(coco_root / "images", coco_root / "edited.json", box_tolerance=0.5)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda d: first_annotation(d).update(image_id=999),
            r"annotation id 1: image_id 999 is not in 'images'",
        ),
        (
            lambda d: first_annotation(d).update(category_id=4),
            r"annotation id 1 \(image id \d+ '\d+\.png'\): category_id 4 is not in 'categories'",
        ),
        (
            lambda d: first_annotation(d).update(bbox=[10, 5, 45, 3]),
            r"annotation id 1 \(image id \d+ '\d+\.png', 50x40 WxH\): bbox .* outside the image",
        ),
        (
            lambda d: first_annotation(d).update(bbox=[10, 5, 0, 3]),
            r"annotation id 1 .* is degenerate .*drop_degenerate=True",
        ),
        (lambda d: first_annotation(d).update(bbox=[10, 5, 3]), r"'bbox' must be 4 finite numbers"),
        (lambda d: first_annotation(d).update(iscrowd=2), r"'iscrowd' must be 0 or 1"),
        (
            lambda d: first_annotation(d).update(keypoints=[1, 2, 2]),
            r"'keypoints' must hold 9 numbers",
        ),
        (
            lambda d: first_annotation(d).update(keypoints=[1, 2, 3] * 3),
            r"visibilities must be 0, 1 or 2",
        ),
        (
            lambda d: first_annotation(d).update(segmentation=[[1, 2, 3, 4, 5]]),
            r"polygon 0 .* flat list of \(x, y\) pairs, got 5 values",
        ),
        (
            lambda d: first_annotation(d).update(segmentation={"size": [4, 4], "counts": [16]}),
            r"RLE 'segmentation' has size \[4, 4\] but the image is \[40, 50\]",
        ),
        (
            lambda d: first_annotation(d).update(
                segmentation={"size": [40, 50], "counts": [10, 5]}
            ),
            r"counts sum to 15, not height \* width = 2000",
        ),
        (lambda d: d["images"].append(dict(d["images"][0])), r"image id \d+ appears twice"),
        (lambda d: d["images"][0].pop("height"), r"needs positive integer 'height' and 'width'"),
        (
            lambda d: d["categories"].append({"id": 5, "name": "again"}),
            r"category id 5 appears twice",
        ),
        (lambda d: d.pop("images"), r"has no 'images' list"),
        # Values that used to be read silently (wrong, or crashing pycocotools later).
        (
            lambda d: first_annotation(d).update(area=-5.0),
            r"annotation id 1 \(image id \d+ '\d+\.png'\): 'area' must be a finite number >= 0",
        ),
        (lambda d: first_annotation(d).update(area=math.nan), r"'area' must be a finite number"),
        (lambda d: first_annotation(d).update(area=math.inf), r"'area' must be a finite number"),
        (lambda d: first_annotation(d).update(area=True), r"'area' must be a finite number"),
        (
            lambda d: d["annotations"][1].update(id=first_annotation(d)["id"]),
            r"annotations\[1\]: annotation id 1 appears twice",
        ),
        (
            lambda d: first_annotation(d).update(bbox=[True, 5, 10, 3]),
            r"annotation id 1 .*'bbox' must be 4 finite numbers",
        ),
        (
            lambda d: first_annotation(d).update(bbox=["10", "5", "10", "3"]),
            r"annotation id 1 .*'bbox' must be 4 finite numbers",
        ),
        (
            lambda d: first_annotation(d).update(segmentation=[["1", "1", "20", "1", "20", "20"]]),
            r"annotation id 1 .*polygon 0 of 'segmentation' must hold numbers only",
        ),
        (
            lambda d: first_annotation(d).update(segmentation=[[math.nan, 1, 20, 1, 20, 20]]),
            r"annotation id 1 .*polygon 0 of 'segmentation' has a NaN or infinite coordinate",
        ),
        (
            lambda d: first_annotation(d).update(segmentation=[[1e12, 1, 20, 1, 20, 20]]),
            r"polygon 0 .* more than an image size \(50 px\) outside the 50x40 \(WxH\) image",
        ),
        (
            lambda d: first_annotation(d).update(keypoints=["1", "2", "2"] * 3),
            r"annotation id 1 .*'keypoints' must be a list of numbers",
        ),
        (
            lambda d: first_annotation(d).update(keypoints=[1, 2, True] * 3),
            r"'keypoints' must be a list of numbers",
        ),
        (
            lambda d: first_annotation(d).update(keypoints=[math.nan, 2, 2] * 3),
            r"'keypoints' must be finite numbers",
        ),
        (
            lambda d: first_annotation(d).update(
                segmentation={"size": [40, 50], "counts": [True, 1999]}
            ),
            r"uncompressed RLE counts must be non-negative integers",
        ),
        (
            lambda d: d["images"][0].update(file_name="../../../etc/passwd"),
            r"image id \d+: 'file_name' '\.\./\.\./\.\./etc/passwd' leads outside image_root .*"
            r"allow_paths_outside_root=True",
        ),
        (lambda d: d["images"][0].update(file_name="/etc/passwd"), r"leads outside image_root"),
        (lambda d: d["images"][0].update(file_name="..\\x.png"), r"leads outside image_root"),
        (lambda d: d["images"][0].update(file_name="C:x.png"), r"leads outside image_root"),
        (lambda d: d["images"][0].update(file_name="a\x00.png"), r"contains a NUL character"),
        (
            lambda d: d["images"][0].update(width=10**6, height=10**6),
            r"image id \d+ \('\d+\.png'\) is 1000000x1000000 \(WxH\) = 1,000,000,000,000 "
            r"pixels, over max_image_pixels=",
        ),
    ],
)
def test_bad_files_get_errors_naming_file_image_and_annotation(coco_root, edit, match):
    path = edited(coco_root, edit)
    with pytest.raises(ValueError, match=match) as info:
        CocoJsonDataset(coco_root / "images", path)
    assert str(path) in str(info.value)


def test_error_lists_every_problem_up_to_a_limit(coco_root):
    def edit(data):
        for a in data["annotations"]:
            a["category_id"] = 77

    with pytest.raises(ValueError) as info:
        CocoJsonDataset(coco_root / "images", edited(coco_root, edit))
    count = len(json.loads((coco_root / "annotations.json").read_text())["annotations"])
    assert f"{count} problem(s)" in str(info.value)
    assert str(info.value).count("category_id 77") == min(count, 10)


def test_drop_degenerate_skips_with_a_logged_warning(coco_root, caplog):
    path = edited(coco_root, lambda d: first_annotation(d).update(bbox=[10, 5, 0, 3]))
    total = len(json.loads(path.read_text())["annotations"])
    with caplog.at_level(logging.WARNING, logger="detkit.data.coco"):
        dataset = CocoJsonDataset(coco_root / "images", path, drop_degenerate=True)
    assert "dropped 1 annotation(s)" in caplog.text and "annotation id 1" in caplog.text
    kept = sum(len(dataset.get_target(i)["boxes"]) for i in range(len(dataset)))
    assert kept == total - 1


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [{"id": 1,}]}')
    with pytest.raises(ValueError, match=r"broken.json' is not valid JSON: .* line 1, column"):
        CocoJsonDataset(tmp_path, path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        CocoJsonDataset(tmp_path, path)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoJsonDataset(tmp_path, tmp_path / "nope.json")


def test_missing_and_mismatched_image_files(coco_root):
    victim = sorted((coco_root / "images").iterdir())[1]
    shutil.move(victim, coco_root / "moved.png")
    with pytest.raises(
        FileNotFoundError,
        match=rf"(?s)1 file\(s\) listed in .* do not exist:\n  image id 3: .*{victim.name}",
    ):
        CocoJsonDataset(coco_root / "images", coco_root / "annotations.json")
    dataset = CocoJsonDataset(
        coco_root / "images", coco_root / "annotations.json", check_files=False
    )
    with pytest.raises(
        FileNotFoundError,
        match=rf"sample image_id=3 \(.*\): image file not found: '.*{victim.name}'",
    ):
        dataset[1]
    Image.new("RGB", (40, 50)).save(victim)  # rotated: W and H swapped
    with pytest.raises(
        ValueError, match=r"sample image_id=3 .* is 40x50 \(WxH\) but .* says 50x40.*rotated"
    ):
        dataset[1]


@pytest.mark.skipif(os.sep != "/", reason="'\\' separates folders on Windows")
def test_windows_separators_in_file_names_are_named_as_the_cause(coco_root):
    """A file written on Windows with os.path.join names 'train\\000001.png': on POSIX the
    backslash is part of a file name, so every image is 'missing' though all are there."""
    (coco_root / "images" / "train").mkdir()

    def edit(data):
        for image in data["images"]:
            shutil.move(coco_root / "images" / image["file_name"], coco_root / "images" / "train")
            image["file_name"] = "train\\" + image["file_name"]

    path = edited(coco_root, edit)
    with pytest.raises(FileNotFoundError) as info:
        CocoJsonDataset(coco_root / "images", path)
    message = str(info.value)
    assert "train\\" in message and "do not exist" in message
    assert "Windows" in message and "'/'" in message
    assert "/images/train/000001.png' exists" in message  # the file '/' would name


def test_transforms_pickling_and_no_decode_for_metadata(coco_root, monkeypatch):
    calls = []

    def transforms(image, target):
        calls.append(target["image_id"])
        return image.float() / 255, target

    dataset = CocoJsonDataset(
        coco_root / "images", coco_root / "annotations.json", transforms=transforms
    )
    image, _ = dataset[-1]
    assert image.dtype == torch.float32 and calls == [dataset.ids[-1]]
    clone = pickle.loads(
        pickle.dumps(CocoJsonDataset(coco_root / "images", coco_root / "annotations.json"))
    )
    torch.testing.assert_close(clone[2][1]["masks"], dataset[2][1]["masks"])

    import detkit.data.coco.dataset as coco_module

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image")

    monkeypatch.setattr(coco_module, "decode", refuse)
    assert dataset.get_height_and_width(0) == (40, 50)
    assert dataset.get_target(0)["image_id"] == dataset.ids[0]
    with pytest.raises(IndexError, match="index 6 is out of range"):
        dataset.get_target(6)


def normalize_boxes(data):
    """Boxes as fractions of their image's size, as YOLO-style converters write them."""
    sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    for ann in data["annotations"]:
        width, height = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        ann.update(bbox=[x / width, y / height, w / width, h / height])
        for key in ("segmentation", "area", "keypoints"):
            ann.pop(key, None)


def test_normalized_boxes_are_refused_not_read_as_sub_pixel_boxes(coco_root):
    """Boxes in 0..1 (fractions of the image) would load as objects smaller than a pixel in
    the top-left corner, which SanitizeBoxes then drops: training on negatives only."""
    path = edited(coco_root, normalize_boxes)
    with pytest.raises(ValueError, match=r"every bbox lies within \[0, 1\] .*normalized") as info:
        CocoJsonDataset(coco_root / "images", path)
    assert str(path) in str(info.value)

    # A single box of a whole pixel at the origin is a box, not a fraction.
    def one_pixel(data):
        del data["annotations"][1:]
        data["annotations"][0].update(bbox=[0, 0, 1, 1], area=1)
        data["annotations"][0].pop("segmentation")

    dataset = CocoJsonDataset(coco_root / "images", edited(coco_root, one_pixel), with_masks=False)
    assert [[0.0, 0.0, 1.0, 1.0]] in [
        dataset.get_target(i)["boxes"].tolist() for i in range(len(dataset))
    ]


def test_xyxy_boxes_are_named_as_the_likely_cause(coco_root):
    """Converters often write [x1, y1, x2, y2] where COCO wants [x, y, w, h]: read as COCO,
    boxes on the right or bottom reach outside the image, and the error says why."""

    def to_xyxy(data):
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            ann["bbox"] = [x, y, x + w, y + h]

    path = edited(coco_root, to_xyxy)
    with pytest.raises(ValueError, match=r"reaches outside the image") as info:
        CocoJsonDataset(coco_root / "images", path)
    lines = str(info.value).splitlines()
    assert "[x1, y1, x2, y2]" in lines[1] and "[x, y, width, height]" in lines[1]
    # Boxes that merely overshoot are not told they might be corners.
    path = edited(coco_root, lambda d: first_annotation(d).update(bbox=[10, 5, 45, 3]))
    with pytest.raises(ValueError, match=r"reaches outside the image") as info:
        CocoJsonDataset(coco_root / "images", path)
    assert "[x1, y1, x2, y2]" not in str(info.value)


def valid_polygon(data):
    ann = first_annotation(data)
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    return ann, image


def assert_first_annotation_is_its_first_polygon(dataset, path):
    """The mask of the file's first annotation is what pycocotools draws of its first polygon."""
    coco = load_coco(path)
    ann = coco.dataset["annotations"][0]
    index = dataset.ids.index(ann["image_id"])
    row = [a["id"] for a in coco.imgToAnns[ann["image_id"]]].index(ann["id"])
    expected = ann_to_mask(coco, {**ann, "segmentation": ann["segmentation"][:1]})
    np.testing.assert_array_equal(dataset.get_target(index)["masks"][row].numpy(), expected)


def test_polygons_of_fewer_than_3_points_are_left_out(coco_root, caplog):
    def edit(data):
        ann = first_annotation(data)
        ann["segmentation"] = [[2, 2, 20, 2, 20, 20, 2, 20], [30, 30, 35, 35]]  # a 2-point line

    path = edited(coco_root, edit)
    with caplog.at_level(logging.WARNING, logger="detkit.data.coco"):
        dataset = CocoJsonDataset(coco_root / "images", path)
    assert "ignored polygons of fewer than 3 points" in caplog.text
    assert_first_annotation_is_its_first_polygon(dataset, path)

    path = edited(coco_root, lambda d: first_annotation(d).update(segmentation=[[1, 1, 5, 5]]))
    with pytest.raises(ValueError, match=r"annotation id 1 .*fewer than 3 points.*drop_degenerate"):
        CocoJsonDataset(coco_root / "images", path)
    total = len(json.loads(path.read_text())["annotations"])
    dataset = CocoJsonDataset(coco_root / "images", path, drop_degenerate=True)
    assert sum(len(dataset.get_target(i)["boxes"]) for i in range(len(dataset))) == total - 1


def test_polygons_outside_the_image_are_left_out_like_those_of_fewer_than_3_points(
    coco_root, caplog
):
    """A polygon beyond an edge of the image covers no pixel: an annotation with only such
    polygons would load as a box with an empty mask (Mask R-CNN taught that it is nothing)."""

    def edit(data):
        ann, image = valid_polygon(data)
        width = image["width"]
        beyond = [width, 2, width + 9, 2, width + 9, 20]  # right of the image, within a width
        ann["segmentation"] = [[2, 2, 20, 2, 20, 20, 2, 20], beyond]

    path = edited(coco_root, edit)
    with caplog.at_level(logging.WARNING, logger="detkit.data.coco"):
        dataset = CocoJsonDataset(coco_root / "images", path)
    assert "ignored polygons of fewer than 3 points or outside the image" in caplog.text
    assert_first_annotation_is_its_first_polygon(dataset, path)

    for beyond in ([-9, 2, 0, 2, 0, 20], [2, -20, 20, -20, 10, 0]):  # left of it, above it
        path = edited(coco_root, lambda d, b=beyond: first_annotation(d).update(segmentation=[b]))
        with pytest.raises(
            ValueError, match=r"annotation id 1 .*outside the image.*drop_degenerate"
        ):
            CocoJsonDataset(coco_root / "images", path)
    total = len(json.loads(path.read_text())["annotations"])
    dataset = CocoJsonDataset(coco_root / "images", path, drop_degenerate=True)
    assert sum(len(dataset.get_target(i)["boxes"]) for i in range(len(dataset))) == total - 1


@pytest.mark.parametrize(
    "polygon",
    [[2, 2, 10, 10, 20, 20], [5.1, 5.1, 5.3, 5.1, 5.2, 5.3]],
    ids=["collinear", "within-a-pixel"],
)
def test_a_polygon_that_covers_no_pixel_is_logged_once_when_read(coco_root, caplog, polygon):
    """Three points or more, inside the image, and yet no pixel: the mask is empty beside a
    box. Only rasterizing tells, so reading the sample says so (once per dataset)."""
    path = edited(coco_root, lambda d: first_annotation(d).update(segmentation=[polygon]))
    dataset = CocoJsonDataset(coco_root / "images", path)
    image_id = json.loads(path.read_text())["annotations"][0]["image_id"]
    index = dataset.ids.index(image_id)
    with caplog.at_level(logging.WARNING, logger="detkit.data.coco"):
        for _ in range(2):
            masks = dataset.get_target(index)["masks"]
        for i in range(len(dataset)):
            dataset.get_target(i)
    assert masks.flatten(1).amax(dim=1).tolist().count(0) == 1
    assert caplog.text.count("covers no pixel") == 1
    assert f"image_id={image_id} " in caplog.text and "annotation id 1 covers" in caplog.text


def test_readable_polygons_log_nothing(coco_root, caplog):
    dataset = CocoJsonDataset(coco_root / "images", coco_root / "annotations.json")
    with caplog.at_level(logging.WARNING, logger="detkit.data.coco"):
        for i in range(len(dataset)):
            dataset.get_target(i)
    assert "covers no pixel" not in caplog.text


def rle_of(mask: np.ndarray) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        (rle_of(np.ones((100, 100))), r"covers 10000 pixels, not height \* width = 2000"),
        # A mask one column short: pycocotools would leave 40 pixels of whatever memory held.
        (rle_of(np.eye(40, 49)), r"covers 1960 pixels, not height \* width = 2000"),
        (rle_of(np.eye(40, 50))[:-1] + "h", r"ends in the middle of a run length"),
        ("0~~", r"characters outside '0'..'o'"),
    ],
)
def test_compressed_rle_must_cover_the_image_exactly(coco_root, counts, match):
    def edit(data):
        ann, image = valid_polygon(data)
        ann["segmentation"] = {"size": [image["height"], image["width"]], "counts": counts}

    path = edited(coco_root, edit)
    dataset = CocoJsonDataset(coco_root / "images", path)
    image_id = json.loads(path.read_text())["annotations"][0]["image_id"]
    with pytest.raises(
        ValueError, match=rf"sample image_id={image_id} \('.*\.png'\): .*annotation id 1: .*{match}"
    ):
        dataset.get_target(dataset.ids.index(image_id))


@settings(max_examples=60)
@given(
    size=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    density=st.floats(0, 1),
    seed=st.integers(0, 1000),
)
def test_rle_check_accepts_exactly_what_pycocotools_encodes(size, density, seed):
    mask = np.random.default_rng(seed).random(size) < density
    counts = rle_of(mask)
    assert rle_string_problem(counts, size) is None
    assert rle_string_problem(counts, (size[0], size[1] + 1)) is not None
    assert rle_string_problem(counts.encode(), size) is None


def test_paths_outside_image_root_need_an_opt_in(coco_root):
    outside = coco_root / "outside.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(outside)

    def edit(data):
        data["images"].append(
            {"id": 1000, "file_name": "../outside.png", "height": 40, "width": 50}
        )

    path = edited(coco_root, edit)
    with pytest.raises(ValueError, match=r"image id 1000: 'file_name' '\.\./outside\.png' leads"):
        CocoJsonDataset(coco_root / "images", path)
    dataset = CocoJsonDataset(coco_root / "images", path, allow_paths_outside_root=True)
    assert dataset[dataset.ids.index(1000)][0].shape == (3, 40, 50)


def test_exif_orientation_is_applied_and_a_stored_size_json_says_so(coco_root):
    """A photo stored 40 wide and 50 high whose EXIF says "rotate 90": shown 50x40."""
    stored = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(coco_root / "images" / "phone.png", exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(coco_root / "images" / "phone.png")))

    def add(height, width):
        def edit(data):
            image = {"id": 77, "file_name": "phone.png", "height": height, "width": width}
            data["images"].append(image)

        return edited(coco_root, edit)

    dataset = CocoJsonDataset(coco_root / "images", add(40, 50))
    image, _ = dataset[dataset.ids.index(77)]
    np.testing.assert_array_equal(image.numpy(), shown.transpose(2, 0, 1))
    stored_size = add(50, 40)
    with pytest.raises(
        ValueError,
        match=r"sample image_id=77 .*phone\.png' is 50x40 \(WxH\) but .* says 40x50.* EXIF orientation "
        r"6: stored 40x50, shown \(and read by detkit\) 50x40; .*apply_exif_orientation=False",
    ):
        CocoJsonDataset(coco_root / "images", stored_size)[len(dataset) - 1]
    raw = CocoJsonDataset(coco_root / "images", stored_size, apply_exif_orientation=False)
    np.testing.assert_array_equal(raw[raw.ids.index(77)][0].numpy(), stored.transpose(2, 0, 1))


def test_file_name_of_a_directory_or_over_the_pixel_limit(coco_root):
    (coco_root / "images" / "folder").mkdir()

    def edit(data):
        data["images"].append({"id": 50, "file_name": "folder", "height": 40, "width": 50})

    path = edited(coco_root, edit)
    with pytest.raises(ValueError, match=r"image id 50 \(is a directory\): .*folder"):
        CocoJsonDataset(coco_root / "images", path)
    with pytest.raises(
        ValueError, match=r"is 50x40 \(WxH\) = 2,000 pixels, over max_image_pixels=1,999"
    ):
        CocoJsonDataset(coco_root / "images", path, max_image_pixels=1999)


def test_image_entries_sharing_a_file_are_logged(coco_root, caplog):
    def edit(data):
        data["images"][1]["file_name"] = data["images"][0]["file_name"]

    path = edited(coco_root, edit)
    images = json.loads(path.read_text())["images"]
    with caplog.at_level(logging.WARNING, logger="detkit.data.coco"):
        CocoJsonDataset(coco_root / "images", path)
    assert (
        f"1 image entries share a file with another, e.g. image ids {images[0]['id']} and "
        f"{images[1]['id']} both read '{images[0]['file_name']}'"
    ) in caplog.text
