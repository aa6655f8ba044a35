"""The example's PennFudanDataset on a synthetic Penn-Fudan folder."""

import shutil

import pytest
from dataset import PennFudanDataset

from detkit.types import validate_target


def test_pennfudan_dataset(synthetic_root):
    dataset = PennFudanDataset(synthetic_root)
    assert len(dataset) == 12
    for idx in range(len(dataset)):
        image, target = dataset[idx]
        validate_target(image, target)
        # each image is paired with the mask of its own name
        assert dataset.mask_path(idx).name == dataset.image_path(idx).stem + "_mask.png"


def test_pairs_by_name_when_a_mask_is_missing(synthetic_root, tmp_path):
    root = tmp_path / "PennFudanPed"
    shutil.copytree(synthetic_root, root)
    missing = sorted((root / "PedMasks").glob("*.png"))[3]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        PennFudanDataset(root)


def test_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PNG images under"):
        PennFudanDataset(tmp_path)
