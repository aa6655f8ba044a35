"""predict.py --thresholds: per-class score thresholds (the evaluator's operating points)."""

import json

import common
import predict
import pytest
import torch
from PIL import Image
from torch import nn

from detkit.evaluation import CocoEvaluator


class FixedModel(nn.Module):
    """Returns the same two detections of class 1 (scores 0.9 and 0.4) and one of class 2."""

    def forward(self, images):
        return [
            {
                "boxes": torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]]),
                "scores": torch.tensor([0.9, 0.4, 0.3]),
                "labels": torch.tensor([1, 1, 2]),
            }
            for _ in images
        ]


def run(tmp_path, monkeypatch, *extra):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.setattr(predict, "load_trained", lambda path, device: (FixedModel(), {}))
    drawn = []

    def draw(image, prediction, *, score_threshold, **kwargs):
        drawn.append(prediction["scores"][prediction["scores"] >= score_threshold].tolist())
        return torch.zeros(3, 8, 8, dtype=torch.uint8)

    monkeypatch.setattr(predict, "draw_prediction", draw)
    (tmp_path / "model.pt").write_bytes(b"")
    argv = ["--checkpoint", str(tmp_path / "model.pt"), "--images", str(tmp_path / "a.png"),
            "--output-dir", str(tmp_path / "out"), *extra]  # fmt: skip
    results = predict.main(argv)
    return drawn, results


def test_without_thresholds_one_score_for_all(tmp_path, monkeypatch):
    drawn, results = run(tmp_path, monkeypatch, "--score-threshold", "0.35")
    assert [pytest.approx(s) for s in drawn[0]] == [0.9, 0.4]
    assert len(results) == 3


def test_operating_points_file(tmp_path, monkeypatch):
    # Operating points as the evaluator writes them: class 1 at 0.4 (its F1-best score).
    evaluator = CocoEvaluator("bbox")
    target = {"boxes": torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6]]), "labels": torch.tensor([1, 1]),
              "image_id": 1}  # fmt: skip
    evaluator.update(FixedModel()([None])[:1], [target])
    points = evaluator.operating_points().to_dict()
    assert points["classes"]["1"]["threshold"] == pytest.approx(0.4)
    (tmp_path / "points.json").write_text(json.dumps(points))
    # Class 2 has no threshold in the file: --score-threshold (0.95) applies to it.
    drawn, results = run(
        tmp_path, monkeypatch, "--thresholds", str(tmp_path / "points.json"),
        "--score-threshold", "0.95",
    )  # fmt: skip
    assert [pytest.approx(s) for s in drawn[0]] == [0.9, 0.4]
    assert len(results) == 3  # results.json keeps every detection


@pytest.mark.parametrize(
    "content, shown",
    [
        ({"1": 0.5, "2": 0.2}, [0.9, 0.3]),
        ({"operating_points": {"bbox": {"classes": {"1": {"threshold": 0.95}, "2": {"threshold": None}}}}}, []),
        ({"operating_points": {"classes": {"2": {"threshold": 0.25}}}}, [0.9, 0.4, 0.3]),
    ],
)  # fmt: skip
def test_threshold_file_layouts(tmp_path, monkeypatch, content, shown):
    (tmp_path / "t.json").write_text(json.dumps(content))
    drawn, _ = run(tmp_path, monkeypatch, "--thresholds", str(tmp_path / "t.json"),
                   "--score-threshold", "0.35")  # fmt: skip
    assert [pytest.approx(s) for s in drawn[0]] == shown


@pytest.mark.parametrize(
    "content, message",
    [("not json", "cannot read"), ('["a"]', "not a json of per-class thresholds"),
     ('{"person": 0.5}', "not a json of per-class thresholds")],
)  # fmt: skip
def test_bad_threshold_files_name_the_file(tmp_path, monkeypatch, content, message):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(common.UserError, match=message) as error:
        run(tmp_path, monkeypatch, "--thresholds", str(tmp_path / "t.json"))
    assert "t.json" in str(error.value)
    with pytest.raises(common.UserError, match="cannot read"):
        run(tmp_path, monkeypatch, "--thresholds", str(tmp_path / "missing.json"))
