"""Precision-recall curves and confusion matrices drawn from the evaluator's analysis data."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from detkit.evaluation import CocoEvaluator
from detkit.visualize import plot_confusion_matrix, plot_pr_curves

pytest.importorskip("matplotlib")


@pytest.fixture
def evaluator():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 2]), "image_id": 1}
    prediction = {
        "boxes": torch.cat([boxes, torch.tensor([[60.0, 0, 70, 10]])]),
        "scores": torch.tensor([0.9, 0.8, 0.4, 0.7]),
        "labels": torch.tensor([1, 2, 1, 2]),
    }
    evaluator = CocoEvaluator("bbox", category_ids=[1, 2, 3])
    evaluator.update([prediction], [target])
    return evaluator


def test_pr_curves(evaluator, tmp_path):
    points = evaluator.operating_points()
    figure = plot_pr_curves(points, tmp_path / "pr.png", class_names={1: "cat", 2: "dog"})
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = figure.axes[0]
    # Classes 1 and 2 have ground truth (a curve and an operating point each); 3 has none.
    curves = [line for line in axes.lines if len(line.get_xdata()) == 101]
    assert len(curves) == 2
    np.testing.assert_array_equal(curves[1].get_ydata(), points.precision[1])
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == [f"cat (AP50 {points.ap[0]:.2f})", f"dog (AP50 {points.ap[1]:.2f})"]
    assert [t.get_text() for t in axes.texts] == [
        f"score ≥ {points.threshold[0]:.2f}",
        f"score ≥ {points.threshold[1]:.2f}",
    ]


def test_confusion_matrix(evaluator, tmp_path):
    matrix = evaluator.confusion_matrix(thresholds=0.3)
    figure = plot_confusion_matrix(matrix, tmp_path / "m.png", class_names=["bg", "cat", "dog"])
    assert (tmp_path / "m.png").stat().st_size > 0
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["cat", "dog", "3", "background"]
    written = [int(t.get_text()) for t in axes.texts]
    assert written == [v for v in matrix.matrix.ravel().tolist()][:-1]
    assert matrix.matrix.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    normalized = plot_confusion_matrix(matrix, normalize=True)
    assert normalized.axes[0].images[0].get_array().max() == 1.0


def test_without_matplotlib(evaluator, monkeypatch):
    points = evaluator.operating_points()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"torch-detkit\[plot\]"):
        plot_pr_curves(points)
    with pytest.raises(ImportError, match=r"torch-detkit\[plot\]"):
        plot_confusion_matrix(evaluator.confusion_matrix(thresholds=0.5))
