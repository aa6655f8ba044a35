import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import detkit.data._image_files as image_io
from detkit.data import InstanceMaskDataset, write_synthetic_pennfudan
from detkit.types import validate_target


def pairs(root: Path):
    images = sorted((root / "PNGImages").glob("*.png"))
    return [(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images]


def write_sample(folder: Path, name: str, id_mask: np.ndarray, *, image_mode="RGB", mask_mode=None):
    """Write one image (random pixels) and its id mask; return the (image, mask) pair."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = id_mask.shape
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(image_mode)
    image_path, mask_path = folder / f"{name}.png", folder / f"{name}_mask.png"
    image.save(image_path)
    Image.fromarray(id_mask, mode=mask_mode).save(mask_path) if mask_mode else Image.fromarray(
        id_mask
    ).save(mask_path)
    return image_path, mask_path


def reference_target(id_mask: np.ndarray):
    """The tutorial's derivation (per-instance loop over np.unique), edge-convention boxes."""
    ids = np.unique(id_mask)
    ids = ids[ids != 0]
    masks = id_mask[None] == ids[:, None, None]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return ids, masks.astype(np.uint8), np.array(boxes, dtype=np.float32).reshape(-1, 4)


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), mask_mode=st.sampled_from(["L", "P", "I;16"]))
def test_synthetic_folders_give_valid_targets(tmp_path_factory, seed, mask_mode):
    root = write_synthetic_pennfudan(
        tmp_path_factory.mktemp("syn"),
        num_images=4,
        seed=seed,
        size_range=(32, 64),
        mask_mode=mask_mode,
        negative_fraction=0.3,
        thin_fraction=0.5,
        compress_level=0,
    )
    dataset = InstanceMaskDataset(pairs(root))
    for idx in range(len(dataset)):
        image, target = dataset[idx]
        validate_target(image, target, source=str(dataset.image_path(idx)))
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert target["image_id"] == idx
        id_mask = np.asarray(Image.open(dataset.mask_path(idx)))
        ids, masks, boxes = reference_target(id_mask)
        np.testing.assert_array_equal(target["masks"].numpy(), masks)
        np.testing.assert_array_equal(target["boxes"].numpy(), boxes)
        np.testing.assert_array_equal(target["area"].numpy(), masks.sum(axis=(1, 2)))
        assert target["labels"].tolist() == [1] * len(ids)
        assert target["iscrowd"].tolist() == [0] * len(ids)


def test_negative_sample_has_empty_fields(tmp_path):
    sample = write_sample(tmp_path, "neg", np.zeros((9, 11), np.uint8))
    image, target = InstanceMaskDataset([sample])[0]
    assert image.shape == (3, 9, 11)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, 9, 11) and target["masks"].dtype == torch.uint8
    assert target["area"].shape == (0,) and target["iscrowd"].shape == (0,)
    validate_target(image, target)


def test_non_contiguous_ids_16_bit_and_thin_instances(tmp_path):
    id_mask = np.zeros((10, 12), np.uint16)
    id_mask[2, 1:9] = 7  # one row
    id_mask[0:10, 11] = 300  # one column on the right border
    id_mask[5:8, 3:6] = 1000
    image, target = InstanceMaskDataset([write_sample(tmp_path, "a", id_mask)])[0]
    assert target["boxes"].tolist() == [[1, 2, 9, 3], [11, 0, 12, 10], [3, 5, 6, 8]]
    assert target["area"].tolist() == [8, 10, 9]
    validate_target(image, target)


@pytest.mark.parametrize("image_mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb(tmp_path, image_mode):
    id_mask = np.zeros((6, 5), np.uint8)
    id_mask[1:3, 1:4] = 1
    image_path, mask_path = write_sample(tmp_path, "x", id_mask, image_mode=image_mode)
    image, _target = InstanceMaskDataset([(image_path, mask_path)])[0]
    assert image.shape == (3, 6, 5) and image.dtype == torch.uint8
    expected = np.asarray(Image.open(image_path).convert("RGB")).transpose(2, 0, 1)
    if image_mode != "I;16":  # PIL and libpng scale 16-bit grayscale to 8 bits differently
        np.testing.assert_array_equal(image.numpy(), expected)


@pytest.mark.parametrize(
    "save_options", [{"bits": 1}, {"bits": 2}, {"bits": 4}, {"optimize": True}]
)
def test_low_bit_palette_masks(tmp_path, save_options):
    """Palette PNGs of 1-4 bits a pixel (``optimize=True`` writes them for few ids) keep their
    ids: torchvision's decoder leaves such rows unpacked, so they must not go through it."""
    id_mask = np.zeros((9, 13), np.uint8)
    id_mask[1:4, 2:6] = 1
    if "bits" not in save_options or save_options["bits"] > 1:
        id_mask[5:8, 7:12] = 2
    image_path, mask_path = write_sample(tmp_path, "x", id_mask)
    mask = Image.fromarray(id_mask, mode="P")
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    mask.save(mask_path, **save_options)
    assert Image.open(mask_path).mode == "P" and mask_path.read_bytes()[24] < 8
    dataset = InstanceMaskDataset([(image_path, mask_path)])
    np.testing.assert_array_equal(dataset.load_id_mask(0), id_mask)
    _ids, masks, boxes = reference_target(id_mask)
    _image, target = dataset[0]
    np.testing.assert_array_equal(target["masks"].numpy(), masks)
    np.testing.assert_array_equal(target["boxes"].numpy(), boxes)


def test_jpeg_images_and_binary_masks(tmp_path):
    Image.new("RGB", (8, 6), (200, 10, 10)).save(tmp_path / "a.jpg")
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:7] = True
    Image.fromarray(mask).save(tmp_path / "a_mask.png")  # mode "1"
    image, target = InstanceMaskDataset([(tmp_path / "a.jpg", tmp_path / "a_mask.png")])[0]
    assert image.shape == (3, 6, 8)
    assert target["boxes"].tolist() == [[3, 2, 7, 4]]


def test_one_bit_masks_hold_ids_0_and_1(tmp_path):
    """A 1-bit PNG (PIL mode "1") holds 0 and 1; Pillow hands its pixels over as bools whose
    bytes are 0 and 255, which read as id 255 (and label 255 from a 1-bit semantic mask)."""
    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:7] = True
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    Image.fromarray(mask).save(tmp_path / "a_sem.png")
    dataset = InstanceMaskDataset(
        [(tmp_path / "a.png", tmp_path / "a_mask.png")], semantic_masks=[tmp_path / "a_sem.png"]
    )
    np.testing.assert_array_equal(dataset.load_id_mask(0), mask.astype(np.uint8))
    assert dataset[0][1]["labels"].tolist() == [1]


def test_labels_mapping_semantic_masks_and_crowd(tmp_path):
    id_mask = np.zeros((8, 8), np.uint8)
    id_mask[0:3, 0:3] = 4
    id_mask[5:8, 5:8] = 9
    semantic = np.zeros((8, 8), np.uint8)
    semantic[0:3, 0:3] = 2
    semantic[5:8, 5:8] = 3
    semantic[7, 7] = 2  # a minority pixel does not change the vote
    sample = write_sample(tmp_path, "s", id_mask)
    Image.fromarray(semantic).save(tmp_path / "s_sem.png")

    mapped = InstanceMaskDataset([sample], labels={4: 5, 9: 6}, crowd_ids=[9])
    _, target = mapped[0]
    assert target["labels"].tolist() == [5, 6]
    assert target["iscrowd"].tolist() == [0, 1]

    by_semantic = InstanceMaskDataset([sample], semantic_masks=[tmp_path / "s_sem.png"])
    assert by_semantic[0][1]["labels"].tolist() == [2, 3]

    class Override(InstanceMaskDataset):
        def instance_labels(self, idx, ids, id_mask):
            return torch.as_tensor(ids // 4, dtype=torch.int64)

    assert Override([sample])[0][1]["labels"].tolist() == [1, 2]

    class ZeroLabel(InstanceMaskDataset):  # an override's labels are checked on every read
        def instance_labels(self, idx, ids, id_mask):
            return torch.as_tensor(ids // 8, dtype=torch.int64)

    with pytest.raises(ValueError, match=r"s\.png.*label 0 is invalid: labels start at 1"):
        ZeroLabel([sample])[0]

    class HalfLabel(InstanceMaskDataset):  # a float label is not rounded without a word
        def instance_labels(self, idx, ids, id_mask):
            return torch.tensor([1.0, 2.5])

    with pytest.raises(ValueError, match=r"s\.png.*returned \[1\.0, 2\.5\]; labels are whole"):
        HalfLabel([sample])[0]

    class WholeFloats(InstanceMaskDataset):  # whole numbers in a float tensor become int64
        def instance_labels(self, idx, ids, id_mask):
            return torch.tensor([1.0, 2.0])

        def instance_iscrowd(self, idx, ids, id_mask):
            return torch.tensor([True, False])

    _, target = WholeFloats([sample])[0]
    assert target["labels"].dtype == target["iscrowd"].dtype == torch.int64
    assert target["labels"].tolist() == [1, 2] and target["iscrowd"].tolist() == [1, 0]

    class ShortCrowd(InstanceMaskDataset):  # an override's crowd flags are checked too
        def instance_iscrowd(self, idx, ids, id_mask):
            return torch.zeros(1, dtype=torch.int64)

    with pytest.raises(
        ValueError, match=r"image_id=0 .*s\.png.*instance_iscrowd must return .*Tensor\[2\]"
    ):
        ShortCrowd([sample])[0]

    class TwoCrowd(InstanceMaskDataset):
        def instance_iscrowd(self, idx, ids, id_mask):
            return torch.tensor([0, 2])

    with pytest.raises(ValueError, match=r"s\.png.*returned \[0, 2\]; crowd flags must be 0 or 1"):
        TwoCrowd([sample])[0]

    with pytest.raises(ValueError, match=r"instance ids \[9\] have no entry"):
        InstanceMaskDataset([sample], labels={4: 1})[0]
    with pytest.raises(ValueError, match="labels must be whole numbers >= 1"):
        InstanceMaskDataset([sample], labels=0)
    # A fractional label used to be truncated without a word (1.7 -> 1).
    with pytest.raises(
        ValueError, match=r"labels must be whole numbers >= 1 .*got \{'all instances': 1\.7\}"
    ):
        InstanceMaskDataset([sample], labels=1.7)
    with pytest.raises(ValueError, match=r"whole numbers >= 1 .*got \{4: 2\.5\}"):
        InstanceMaskDataset([sample], labels={4: 2.5, 9: 1})
    assert InstanceMaskDataset([sample], labels={4: 2.0, 9: 1})[0][1]["labels"].tolist() == [2, 1]


def test_semantic_mask_background_only_instance_is_an_error(tmp_path):
    id_mask = np.zeros((4, 4), np.uint8)
    id_mask[1:3, 1:3] = 1
    sample = write_sample(tmp_path, "s", id_mask)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "sem.png")
    dataset = InstanceMaskDataset([sample], semantic_masks=[tmp_path / "sem.png"])
    with pytest.raises(
        ValueError, match=r"instances \[1\] .* lie entirely on background .*sem.png"
    ):
        dataset[0]


def test_transforms_are_applied(tmp_path):
    id_mask = np.zeros((4, 4), np.uint8)
    id_mask[1:3, 1:3] = 1
    calls = []

    def transform(image, target):
        calls.append(target["image_id"])
        return image.float() / 255, target

    image, _ = InstanceMaskDataset([write_sample(tmp_path, "t", id_mask)], transforms=transform)[0]
    assert calls == [0] and image.dtype == torch.float32


def test_indexing(tmp_path):
    sample = write_sample(tmp_path, "i", np.zeros((4, 4), np.uint8))
    dataset = InstanceMaskDataset([sample, sample])
    assert len(dataset) == 2
    assert dataset[-1][1]["image_id"] == 1
    with pytest.raises(IndexError, match="out of range"):
        dataset[2]


# -- sizes without decoding ------------------------------------------------------------------


def test_get_height_and_width_reads_headers_only(tmp_path, monkeypatch):
    samples = [write_sample(tmp_path, f"h{i}", np.zeros((5 + i, 9), np.uint8)) for i in range(3)]
    Image.new("RGB", (13, 7)).save(tmp_path / "j.jpg")
    samples.append((tmp_path / "j.jpg", samples[0][1]))
    dataset = InstanceMaskDataset(samples)

    def no_decode(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(image_io, "_tv_decode_image", no_decode)
    monkeypatch.setattr(Image.Image, "load", no_decode)
    assert [dataset.get_height_and_width(i) for i in range(4)] == [(5, 9), (6, 9), (7, 9), (7, 13)]


# -- bad input: every error names the file ----------------------------------------------------


def good_pair(tmp_path):
    id_mask = np.zeros((6, 6), np.uint8)
    id_mask[1:4, 1:4] = 1
    return write_sample(tmp_path, "good", id_mask)


def test_missing_mask_reported_at_construction(tmp_path):
    image_path, mask_path = good_pair(tmp_path)
    mask_path.unlink()
    with pytest.raises(FileNotFoundError, match=str(mask_path)):
        InstanceMaskDataset([(image_path, mask_path)])


def test_missing_mask_reported_at_read(tmp_path):
    image_path, mask_path = good_pair(tmp_path)
    dataset = InstanceMaskDataset([(image_path, mask_path)])
    mask_path.unlink()
    with pytest.raises(
        FileNotFoundError,
        match=rf"sample image_id=0 \(.*\): mask file not found: '{re.escape(str(mask_path))}'",
    ):
        dataset[0]


def test_mask_size_differs_from_image(tmp_path):
    image_path, _ = good_pair(tmp_path)
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "wide_mask.png")
    dataset = InstanceMaskDataset([(image_path, tmp_path / "wide_mask.png")])
    with pytest.raises(
        ValueError, match=r"wide_mask.png' is 7x6 \(WxH\) but image .*good.png' is 6x6"
    ):
        dataset[0]


def test_corrupt_image(tmp_path):
    image_path, mask_path = good_pair(tmp_path)
    image_path.write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match=f"cannot decode image file '{image_path}'"):
        InstanceMaskDataset([(image_path, mask_path)])[0]


def test_truncated_image(tmp_path):
    id_mask = np.zeros((64, 64), np.uint8)
    image_path, mask_path = write_sample(tmp_path, "big", id_mask)
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot decode image file '{image_path}' .*truncated"):
        InstanceMaskDataset([(image_path, mask_path)])[0]


def test_color_mask_is_rejected(tmp_path):
    image_path, _ = good_pair(tmp_path)
    Image.new("RGB", (6, 6)).save(tmp_path / "rgb_mask.png")
    with pytest.raises(ValueError, match=r"rgb_mask\.png' has 3 channels"):
        InstanceMaskDataset([(image_path, tmp_path / "rgb_mask.png")])[0]


def test_directory_instead_of_file(tmp_path):
    _, mask_path = good_pair(tmp_path)
    (tmp_path / "folder.png").mkdir()
    dataset = InstanceMaskDataset([(tmp_path / "folder.png", mask_path)], check_files=False)
    with pytest.raises(ValueError, match=r"folder\.png' is a directory"):
        dataset[0]


def test_unreadable_file(tmp_path, monkeypatch):
    image_path, mask_path = good_pair(tmp_path)
    dataset = InstanceMaskDataset([(image_path, mask_path)])
    if os.geteuid() != 0:
        image_path.chmod(0)
    else:  # root reads everything: simulate the refusal the OS gives other users
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if Path(path) == image_path:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(image_io.os, "open", refuse)
    with pytest.raises(PermissionError, match=f"cannot read image file '{image_path}'"):
        dataset[0]


def test_bad_samples_argument():
    with pytest.raises(ValueError, match="samples is empty"):
        InstanceMaskDataset([])
    with pytest.raises(ValueError, match=r"samples\[0\] must be an \(image_path, mask_path\) pair"):
        InstanceMaskDataset(["a.png"])
    with pytest.raises(ValueError, match="semantic_masks has 0 paths but samples has 1"):
        InstanceMaskDataset([("a.png", "b.png")], semantic_masks=[], check_files=False)


def test_check_files_names_sample_and_role_of_each_problem(tmp_path):
    samples = [write_sample(tmp_path, f"s{i}", np.zeros((4, 4), np.uint8)) for i in range(20)]
    semantic = [tmp_path / f"s{i}.png" for i in range(20)]  # any existing file will do
    samples[12][1].unlink()
    semantic[7] = tmp_path / "no_such_classes.png"
    (tmp_path / "dir.png").mkdir()
    samples[3] = (tmp_path / "dir.png", samples[3][1])
    with pytest.raises(FileNotFoundError) as info:
        InstanceMaskDataset(samples, semantic_masks=semantic)
    message = str(info.value)
    assert message.startswith("3 file(s) listed in the dataset's samples are not readable files")
    assert f"sample 3, image (is a directory): {tmp_path / 'dir.png'}" in message
    assert f"sample 12, mask (does not exist): {tmp_path / 's12_mask.png'}" in message
    assert (
        f"sample 7, semantic mask (does not exist): {tmp_path / 'no_such_classes.png'}" in message
    )
    dataset = InstanceMaskDataset(samples[:3], check_files=False)
    assert dataset.samples == [(Path(a), Path(b)) for a, b in samples[:3]]
    assert dataset.image_path(1) == samples[1][0] and dataset.mask_path(2) == samples[2][1]


def voc_style_mask() -> np.ndarray:
    """Two objects, each outlined by 255 as Pascal VOC's SegmentationObject PNGs draw them."""
    id_mask = np.zeros((12, 12), np.uint8)
    id_mask[1:6, 1:6] = 255
    id_mask[2:5, 2:5] = 1
    id_mask[6:11, 6:11] = 255
    id_mask[7:10, 7:10] = 2
    return id_mask


def test_void_ids_are_background_and_a_voc_border_unnamed_is_logged_once(tmp_path, caplog):
    id_mask = voc_style_mask()
    sample = write_sample(tmp_path, "voc", id_mask)
    semantic = np.where(id_mask == 255, 255, np.where(id_mask > 0, 7, 0)).astype(np.uint8)
    Image.fromarray(semantic).save(tmp_path / "voc_sem.png")
    with caplog.at_level("WARNING", logger="detkit.data"):
        plain = InstanceMaskDataset([sample, sample])
        for _ in range(2):
            _, target = plain[0]
        plain[1]
    assert target["labels"].tolist() == [1, 1, 1]  # the borders: a third "instance"
    assert caplog.text.count("holds id 255 beside ids [1, 2]") == 1
    assert "void_ids=(255,)" in caplog.text and "voc_mask.png" in caplog.text

    caplog.clear()
    with caplog.at_level("WARNING", logger="detkit.data"):
        for options in ({}, {"semantic_masks": [tmp_path / "voc_sem.png"]}):
            dataset = InstanceMaskDataset([sample], void_ids=(255,), **options)
            _, target = dataset[0]
            assert target["boxes"].tolist() == [[2, 2, 5, 5], [7, 7, 10, 10]]
            assert target["area"].tolist() == [9, 9]
            assert target["labels"].tolist() == ([7, 7] if options else [1, 1])
            expected = np.stack([id_mask == 1, id_mask == 2]).astype(np.uint8)
            np.testing.assert_array_equal(target["masks"].numpy(), expected)
    assert caplog.text == ""


def test_ids_up_to_255_are_instances_without_a_warning(tmp_path, caplog):
    id_mask = np.arange(256, dtype=np.uint8).reshape(16, 16)  # 255 instances, 254 among them
    sample = write_sample(tmp_path, "many", id_mask)
    with caplog.at_level("WARNING", logger="detkit.data"):
        _, target = InstanceMaskDataset([sample])[0]
    assert len(target["labels"]) == 255 and caplog.text == ""
