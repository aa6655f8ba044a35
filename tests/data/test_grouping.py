"""compute_aspect_ratios and create_aspect_ratio_groups."""

from __future__ import annotations

import bisect
import logging

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFile
from torch.utils.data import ConcatDataset, Subset

import detkit.data._image_files as image_io
from detkit.data import (
    CocoJsonDataset,
    InstanceMaskDataset,
    compute_aspect_ratios,
    create_aspect_ratio_groups,
    write_synthetic_coco,
)


class Decoded(Exception):
    """Raised by the patched decoders: a pixel decode happened."""


@pytest.fixture
def pairs(synthetic_root):
    images = sorted((synthetic_root / "PNGImages").glob("*.png"))
    return [(p, synthetic_root / "PedMasks" / f"{p.stem}_mask.png") for p in images]


@pytest.fixture
def true_ratios(pairs):
    """width / height of each image, from full decodes (before any patching)."""
    ratios = []
    for image_path, _ in pairs:
        with Image.open(image_path) as image:
            image.load()
            ratios.append(image.width / image.height)
    return np.asarray(ratios)


@pytest.fixture
def forbid_decoding(monkeypatch):
    """Make every pixel decode raise, and count attempts: torchvision's decoder (as the
    dataset calls it) and PIL's ``load`` (``ImageFile`` overrides ``Image.load``)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise Decoded("a pixel decode happened")

    def arm():
        monkeypatch.setattr(image_io, "_tv_decode_image", refuse)
        monkeypatch.setattr(Image.Image, "load", refuse)
        monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
        return attempts

    return arm


def test_the_decode_guard_bites(pairs, forbid_decoding):
    attempts = forbid_decoding()
    with pytest.raises(Decoded):
        InstanceMaskDataset(pairs)[0]
    with pytest.raises(Decoded), Image.open(pairs[0][0]) as image:
        image.load()
    assert len(attempts) == 2


def test_instance_mask_dataset_and_subsets_decode_no_pixels(pairs, true_ratios, forbid_decoding):
    attempts = forbid_decoding()
    dataset = InstanceMaskDataset(pairs)
    np.testing.assert_allclose(compute_aspect_ratios(dataset), true_ratios)
    subset = Subset(dataset, [5, 0, 3])
    np.testing.assert_allclose(compute_aspect_ratios(subset), true_ratios[[5, 0, 3]])
    nested = Subset(ConcatDataset([subset, dataset]), [4, 1, 0, 3 + 11])
    np.testing.assert_allclose(
        compute_aspect_ratios(nested), true_ratios[[1, 0, 5, 11]], err_msg="concat mapping"
    )
    np.testing.assert_allclose(compute_aspect_ratios(dataset, [2, 2]), true_ratios[[2, 2]])
    assert attempts == []


def test_coco_metadata_decodes_no_pixels(tmp_path, forbid_decoding):
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    sizes = [(40, 80), (64, 32), (30, 30)]
    root = write_synthetic_coco(tmp_path, num_images=3, sizes=sizes)
    expected = [w / h for h, w in sizes]
    ours = CocoJsonDataset(root / "images", root / "annotations.json")
    theirs = CocoDetection(str(root / "images"), str(root / "annotations.json"))
    attempts = forbid_decoding()
    for dataset in (ours, theirs, wrap_dataset_for_transforms_v2(theirs), Subset(ours, [0, 1, 2])):
        np.testing.assert_allclose(compute_aspect_ratios(dataset), expected)
    assert attempts == []


class PlainDataset(torch.utils.data.Dataset):
    """Knows nothing about sizes: the fallback must load its samples."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.loads = 0

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, idx):
        self.loads += 1
        height, width = self.sizes[idx]
        return torch.zeros(3, height, width), {"image_id": idx}


def test_fallback_loads_samples_with_a_warning_that_says_how_to_avoid_it():
    dataset = PlainDataset([(10, 20), (30, 15), (8, 8)])
    with pytest.warns(UserWarning, match=r"all 3 samples are loaded.*get_height_and_width"):
        ratios = compute_aspect_ratios(dataset)
    np.testing.assert_allclose(ratios, [2.0, 0.5, 1.0])
    assert dataset.loads == 3
    with pytest.warns(UserWarning, match="2 samples"):
        np.testing.assert_allclose(compute_aspect_ratios(dataset, [2, 0]), [1.0, 2.0])


class SizedDataset(torch.utils.data.Dataset):
    """Gives its sizes through get_height_and_width, as detkit's datasets do."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def get_height_and_width(self, idx):
        return self.sizes[idx]

    def __getitem__(self, idx):
        height, width = self.sizes[idx]
        return torch.zeros(3, height, width), {"image_id": idx}


def test_subset_with_negative_indices_reads_the_samples_it_loads():
    # Subset passes its indices on as they are, and ConcatDataset counts a negative index
    # from its end: the ratio must be that of the image the subset actually loads.
    concat = ConcatDataset([SizedDataset([(10, 10), (10, 20)]), SizedDataset([(10, 40), (10, 80)])])
    subset = Subset(concat, [-1, 0, -3])
    expected = [subset[i][0].shape[2] / subset[i][0].shape[1] for i in range(3)]
    assert expected == [8.0, 1.0, 2.0]
    assert compute_aspect_ratios(subset).tolist() == expected
    plain = Subset(ConcatDataset([PlainDataset([(10, 10)]), PlainDataset([(10, 30)])]), [-1])
    with pytest.warns(UserWarning):
        assert compute_aspect_ratios(plain).tolist() == [3.0]
    with pytest.raises(ValueError, match=r"Subset.*index -5.*4 samples"):
        compute_aspect_ratios(Subset(concat, [-5]))


def test_fallback_in_worker_processes_sends_back_sizes():
    dataset = PlainDataset([(10, 20), (30, 15), (8, 8), (9, 27)])
    with pytest.warns(UserWarning):
        ratios = compute_aspect_ratios(dataset, num_workers=2)
    np.testing.assert_allclose(ratios, [2.0, 0.5, 1.0, 3.0])


@given(
    sizes=st.lists(st.tuples(st.integers(1, 500), st.integers(1, 500)), max_size=30),
    k=st.integers(0, 5),
)
def test_groups_follow_torchvisions_quantization(sizes, k):
    class Sized:
        def __len__(self):
            return len(sizes)

        def get_height_and_width(self, idx):
            return sizes[idx]

    # torchvision's reference recipe, written out with the standard library.
    edges = sorted((2 ** np.linspace(-1, 1, 2 * k + 1)).tolist() if k > 0 else [1.0])
    expected = [bisect.bisect_right(edges, w / h) for h, w in sizes]
    groups = create_aspect_ratio_groups(Sized(), k=k)
    assert groups == expected
    assert all(0 <= g < 2 * k + 2 for g in groups)


def test_known_group_boundaries():
    ratios = [0.25, 0.5, 0.7, 1.0, 1.5, 2.0, 4.0]  # width / height, heights 100

    class Sized:
        def __len__(self):
            return len(ratios)

        def get_height_and_width(self, idx):
            return 100, int(ratios[idx] * 100)

    # k = 1: edges 0.5, 1, 2; a ratio on an edge goes to the upper group (bisect_right).
    assert create_aspect_ratio_groups(Sized(), k=1) == [0, 1, 1, 2, 2, 3, 3]
    assert create_aspect_ratio_groups(Sized(), k=0) == [0, 0, 0, 1, 1, 1, 1]
    assert create_aspect_ratio_groups(Sized(), k=-1) == [0] * 7


def test_groups_with_indices_are_per_dataset_sample():
    # GroupedBatchSampler reads group_ids[i] as dataset index i's group: indices in another
    # order give the same entry per sample, and samples left out get -1 (no group).
    class Sized:
        def __len__(self):
            return 5

        def get_height_and_width(self, idx):
            return [(10, 30), (10, 10), (30, 10), (10, 11), (10, 25)][idx]

    every = create_aspect_ratio_groups(Sized(), k=1)
    assert create_aspect_ratio_groups(Sized(), k=1, indices=[4, 3, 2, 1, 0]) == every
    assert create_aspect_ratio_groups(Sized(), k=1, indices=[4, 3]) == [
        -1,
        -1,
        -1,
        every[3],
        every[4],
    ]
    assert create_aspect_ratio_groups(Sized(), k=-1, indices=[1, 1]) == [-1, 0, -1, -1, -1]


def test_summary_is_logged_not_printed(caplog, capsys):
    class Sized:
        def __len__(self):
            return 3

        def get_height_and_width(self, idx):
            return [(10, 30), (10, 10), (10, 11)][idx]

    with caplog.at_level(logging.INFO, logger="detkit.data.samplers.aspect_ratios"):
        create_aspect_ratio_groups(Sized(), k=1)
    assert capsys.readouterr() == ("", "")
    (record,) = caplog.records
    assert "3 images" in record.getMessage()
    assert "2 [1, 2): 2" in record.getMessage() and "3 [2, inf): 1" in record.getMessage()


def test_errors():
    class Flat:
        def __len__(self):
            return 2

        def get_height_and_width(self, idx):
            return (0, 5) if idx else (5, 5)

    with pytest.raises(ValueError, match=r"sample 1 of Flat has size \(height, width\) = \(0, 5\)"):
        compute_aspect_ratios(Flat())
    with pytest.raises(ValueError, match="indices holds 7, out of range for 2 samples"):
        compute_aspect_ratios(Flat(), [0, 7])
    with pytest.raises(TypeError, match="k must be an int"):
        create_aspect_ratio_groups(Flat(), k=1.5)
