"""Issue 15 item 7: a dataset audit that reports every bad sample at once, with statistics."""

from __future__ import annotations

import sys
import zlib
from typing import ClassVar

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from PIL import Image
from strategies import targets

from detkit.data import InstanceMaskDataset, audit, best_anchor_iou, write_synthetic_pennfudan
from detkit.data._image_headers import png_problem
from detkit.types import InvalidTargetError, target_problems, validate_target
from detkit.visualize import plot_audit


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = write_synthetic_pennfudan(
        tmp_path_factory.mktemp("pf"), num_images=6, size_range=(60, 90), seed=4
    )
    images = sorted((root / "PNGImages").glob("*.png"))
    return [(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images]


class Faulty(InstanceMaskDataset):
    """Breaks three samples in several ways at once, as a careless export would."""

    faults: ClassVar[dict[int, str]] = {}

    def get_target(self, idx, id_mask):
        target = super().get_target(idx, id_mask)
        boxes = target["boxes"].as_subclass(torch.Tensor).clone()
        labels = target["labels"].clone()
        fault = self.faults.get(idx)
        if fault == "boxes":
            boxes[0, 2] = boxes[0, 0]  # degenerate
            boxes[-1, 3] = 10_000.0  # outside the image
        elif fault == "label":
            labels[0] = 0  # background used as a label
        elif fault == "nan":
            boxes[0, 0] = float("nan")
        return {**target, "boxes": boxes, "labels": labels}


def test_every_bad_sample_is_reported_at_once_with_its_file(pairs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    samples = [*pairs, (broken, pairs[0][1])]
    dataset = Faulty(samples)
    crowded = [i for i in range(len(pairs)) if len(InstanceMaskDataset(pairs)[i][1]["labels"]) > 1]
    assert len(crowded) >= 3
    dataset.faults = dict(zip(crowded, ["boxes", "label", "nan"]))
    report = audit(dataset)
    assert not report.ok and report.num_samples == 7
    by_index = {}
    for problem in report.problems:
        by_index.setdefault(problem.index, []).append(problem)
    first, second, third = crowded[:3]
    assert sorted(by_index) == sorted([first, second, third, 6])
    assert [p.field for p in by_index[first]] == ["boxes", "boxes"]  # both, not the first only
    assert (
        "box 0" in by_index[first][0].message
        and "zero or negative width" in by_index[first][0].message
    )
    assert "outside" in by_index[first][1].message
    assert by_index[second][0].field == "labels" and "label 0" in by_index[second][0].message
    assert "NaN" in by_index[third][0].message
    assert by_index[6][0].field == "file" and "broken.png" in str(by_index[6][0])
    for index, problems in by_index.items():
        if index != 6:
            assert str(samples[index][0]) in str(problems[0])
            assert f"image_id={index}" in str(problems[0])
    text = report.summary()
    assert "broken.png" in text and "problem(s) in 4 sample(s)" in text
    # The good samples' statistics are still there.
    good = [i for i in range(7) if i not in by_index]
    expected = sum(len(dataset[i][1]["labels"]) for i in good)
    assert report.instances_per_class == {1: expected}


def test_statistics_against_a_model_and_its_anchors(pairs):
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=2
    )
    dataset = InstanceMaskDataset(pairs)
    report = audit(dataset, model=model)
    generator = model.rpn.anchor_generator
    assert report.anchor_sizes == tuple(sorted({float(s) for lvl in generator.sizes for s in lvl}))
    assert report.aspect_ratios == (0.5, 1.0, 2.0)
    # Box sizes are in the model's input pixels: each image is resized to min_size 320.
    widths = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        h, w = image.shape[-2:]
        scale = min(320 / min(h, w), 640 / max(h, w))
        boxes = target["boxes"].as_subclass(torch.Tensor)
        widths += ((boxes[:, 2] - boxes[:, 0]) * scale).tolist()
    np.testing.assert_allclose(report.box_sizes[:, 0], widths, rtol=1e-6)
    coverage = report.anchor_coverage(0.5)
    brute = []
    for w, h in report.box_sizes:
        best = 0.0
        for s in report.anchor_sizes:
            for r in report.aspect_ratios:
                aw, ah = s / r**0.5, s * r**0.5
                inter = min(w, aw) * min(h, ah)
                best = max(best, inter / (w * h + aw * ah - inter))
        brute.append(best >= 0.5)
    assert coverage == pytest.approx(np.mean(brute))
    assert "anchors: sizes" in report.summary()
    with pytest.raises(AssertionError):  # labels >= num_classes are caught with a model
        assert audit(dataset, model=model, num_classes=1).ok


def test_best_anchor_iou_is_one_for_an_exact_anchor():
    sizes = np.array([[32.0 / 2**0.5, 32.0 * 2**0.5], [64.0, 64.0]])
    np.testing.assert_allclose(best_anchor_iou(sizes, [32, 64], [2.0, 1.0]), [1.0, 1.0])


def test_the_picture_is_written_and_matplotlib_is_optional(pairs, tmp_path, monkeypatch):
    report = audit(InstanceMaskDataset(pairs), anchor_sizes=[32, 64], aspect_ratios=[1.0])
    figure = plot_audit(report, tmp_path / "audit.png")
    assert (tmp_path / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 3
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install \"torch-detkit\[plot\]\""):
        plot_audit(report)


@given(target=targets(height=20, width=24))
@settings(max_examples=60, deadline=None)
def test_validate_target_raises_exactly_when_there_are_problems(target):
    """One body of checks: validate_target raises the first of target_problems, or nothing."""
    image = torch.zeros(3, 20, 24)
    for broken in (target, {**target, "labels": target["labels"] * 0}):
        problems = target_problems(image, broken)
        if problems:
            with pytest.raises(InvalidTargetError) as info:
                validate_target(image, broken)
            assert info.value.field == problems[0].field
            assert problems[0].message in str(info.value)
        else:
            validate_target(image, broken)


def corrupt_idat(path, *, keep_crc: bool) -> None:
    """Overwrite 12 bytes inside a PNG's image data, as bit rot or a zero-filled disk block
    does; ``keep_crc`` recomputes the chunk's CRC (a file written corrupt)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT")
    length = int.from_bytes(data[start - 4 : start], "big")
    data[start + 6 : start + 18] = bytes(12)
    if keep_crc:
        crc = zlib.crc32(data[start : start + 4 + length])
        data[start + 4 + length : start + 8 + length] = crc.to_bytes(4, "big")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("keep_crc", [False, True], ids=["bad_crc", "bad_deflate"])
@pytest.mark.parametrize("role", ["image", "mask"])
def test_a_corrupt_png_is_reported_not_decoded(pairs, tmp_path, role, keep_crc):
    """torchvision 0.29's PNG decoder crashes the whole process (a segmentation fault that
    names no file) on a PNG whose image data is corrupt: the audit checks PNG files first
    and reports the file instead of reading it."""
    copies = []
    for image, mask in pairs[:3]:
        copies.append((tmp_path / image.name, tmp_path / mask.name))
        copies[-1][0].write_bytes(image.read_bytes())
        copies[-1][1].write_bytes(mask.read_bytes())
    broken = copies[1][0 if role == "image" else 1]
    corrupt_idat(broken, keep_crc=keep_crc)
    report = audit(InstanceMaskDataset(copies))
    assert [(p.index, p.field) for p in report.problems] == [(1, "file")]
    message = str(report.problems[0])
    assert f"{role} file '{broken}' is a corrupt PNG" in message
    assert ("CRC error in chunk IDAT" in message) != keep_crc
    assert report.num_samples == 3 and sum(report.instances_per_class.values()) > 0


def test_png_problem_reads_every_chunk(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)).save(path)
    data = path.read_bytes()
    assert png_problem(data) is None
    assert png_problem(b"GIF89a") is None  # not a PNG: nothing to say
    assert "truncated" in png_problem(data[: len(data) - 20])
    assert "no IEND chunk" in png_problem(data[:33])
    corrupt_idat(path, keep_crc=True)
    assert "image data does not inflate" in png_problem(path.read_bytes())
