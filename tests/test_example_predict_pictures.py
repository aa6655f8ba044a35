"""predict.py's pictures: one per input image, never overwriting another (or an input), and
score thresholds that can select something."""

import json

import common
import numpy as np
import predict
import pytest
import torch
from PIL import Image
from torch import nn


class OneDetection(nn.Module):
    def forward(self, images):
        return [
            {
                "boxes": torch.tensor([[0.0, 0, 4, 4]]),
                "scores": torch.tensor([0.9]),
                "labels": torch.tensor([1]),
            }
            for _ in images
        ]


def run(tmp_path, monkeypatch, images, *extra, output_dir=None):
    monkeypatch.setattr(predict, "load_trained", lambda path, device: (OneDetection(), {}))
    (tmp_path / "model.pt").write_bytes(b"")
    out = output_dir or tmp_path / "out"
    argv = ["--checkpoint", str(tmp_path / "model.pt"), "--images", *map(str, images),
            "--output-dir", str(out), *extra]  # fmt: skip
    predict.main(argv)
    return out, json.loads((out / "images.json").read_text())


def red_far_from_the_detection(path):
    with Image.open(path) as picture:
        return picture.convert("RGB").getpixel((50, 50))[0]


def test_inputs_with_the_same_stem_get_one_picture_each(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    inputs = [tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "x" / "b.png",
              tmp_path / "y" / "b.png"]  # fmt: skip
    for i, path in enumerate(inputs):
        Image.new("RGB", (64, 64), (40 * i + 20, 0, 0)).save(path)
    out, images = run(tmp_path, monkeypatch, inputs)
    assert len(list(out.glob("*.png"))) == 4  # none drawn over another
    pictures = [entry["picture"] for entry in images]
    assert len(set(pictures)) == 4
    assert pictures[0] == "a.png" and pictures[2] == "b.png"
    assert sorted(p.name for p in out.glob("*.png")) == sorted(pictures)
    for i, name in enumerate(pictures):  # each picture shows its own image
        assert red_far_from_the_detection(out / name) == pytest.approx(40 * i + 20, abs=3)


def test_pictures_never_overwrite_the_input_images(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "a.png")
    _, images = run(tmp_path, monkeypatch, [tmp_path], output_dir=tmp_path)
    with Image.open(tmp_path / "a.png") as original:
        assert original.getpixel((0, 0)) == (200, 0, 0)  # not a drawing over it
    (entry,) = [e for e in images if e["file_name"] == "a.png"]
    assert entry["picture"] == "a_1.png" and (tmp_path / "a_1.png").is_file()


@pytest.mark.parametrize("value", ["50", "nan", "-0.1"])
def test_score_threshold_outside_0_1_is_refused(tmp_path, monkeypatch, capsys, value):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as exit_:
        run(tmp_path, monkeypatch, [tmp_path / "a.png"], "--score-threshold", value)
    assert exit_.value.code == 2
    assert "--score-threshold" in capsys.readouterr().err


@pytest.mark.parametrize("content", [{"1": 62}, {"classes": {"1": {"threshold": -1}}}])
def test_thresholds_outside_0_1_are_refused_naming_the_class(tmp_path, monkeypatch, content):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "t.json").write_text(json.dumps(content))
    with pytest.raises(common.UserError, match=r"t\.json.*class 1.*0\.\.1"):
        run(tmp_path, monkeypatch, [tmp_path / "a.png"], "--thresholds", str(tmp_path / "t.json"))


def test_16_bit_images_are_skipped_with_a_message_not_clipped(tmp_path, monkeypatch, capsys):
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    _, images = run(tmp_path, monkeypatch, [tmp_path / "deep.png", tmp_path / "plain.png"])
    assert [entry["file_name"] for entry in images] == ["plain.png"]
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "skipping" in line]
    assert "deep.png" in line and "'I;16'" in line
