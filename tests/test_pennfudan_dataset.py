"""The example's PennFudanDataset on a synthetic Penn-Fudan folder."""

import builtins
import os
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


def test_construction_reads_no_file_and_skips_hidden_ones(synthetic_root, tmp_path, monkeypatch):
    """Construction lists the two folders and nothing more: 10,000 images cost a listing."""
    root = tmp_path / "PennFudanPed"
    shutil.copytree(synthetic_root, root)
    (root / "PNGImages" / "._FudanPed00001.png").write_bytes(b"macOS resource fork")
    expected = sorted(p.name for p in (root / "PNGImages").iterdir() if p.name[0] != ".")

    def refuse(*args, **kwargs):
        raise AssertionError("construction touched a file")

    for module, name in [(os, "stat"), (os, "open"), (builtins, "open"), (os, "scandir")]:
        monkeypatch.setattr(module, name, refuse)
    try:
        dataset = PennFudanDataset(root)
    finally:
        monkeypatch.undo()  # pytest itself needs os.stat to report
    assert [dataset.image_path(i).name for i in range(len(dataset))] == expected
    assert all(dataset.mask_path(i).exists() for i in range(len(dataset)))
