"""Draw the pictures of the evaluation guide's analysis sections with detkit itself.

A simulated detector on a simulated validation set of 200 images with three classes
(triangle, box, kite; 1-4 instances each): every instance is found with probability 0.85
(its box jittered, a score drawn high), a box is taken for a kite one time in eight, and
each image gets a Poisson(1.5) number of false detections with lower scores. The
pictures show the analysis (``CocoEvaluator.operating_points``, ``confusion_matrix``,
``compute(confidence=...)``) on numbers that look like a detector's, not a trained model.

* ``evaluation_pr_curves.png``: ``plot_pr_curves`` at IoU 0.5, F1-best points marked;
* ``evaluation_confusion.png``: ``plot_confusion_matrix`` at those thresholds.

Run from the repository root (seconds, offline)::

    python docs/guides/make_analysis_pictures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detkit.evaluation import CocoEvaluator
from detkit.visualize import plot_confusion_matrix, plot_pr_curves

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "guides" / "_images"
NAMES = {1: "triangle", 2: "box", 3: "kite"}


def simulated(num_images: int = 200, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(predictions, targets)`` of a simulated detector (see the module docstring)."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for image_id in range(1, num_images + 1):
        n = int(rng.integers(1, 5))
        wh = rng.uniform(20, 90, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (200 - wh)
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(1, 4, n)
        found = rng.random(n) < 0.85
        jitter = rng.normal(0, 0.08, (n, 4)) * np.tile(wh, 2)
        predicted = labels.copy()
        predicted[(labels == 2) & (rng.random(n) < 0.125)] = 3
        scores = np.clip(rng.normal(0.75, 0.15, n), 0.05, 0.99)
        extra = int(rng.poisson(1.5))
        ewh = rng.uniform(20, 90, (extra, 2))
        exy = rng.uniform(0, 1, (extra, 2)) * (200 - ewh)
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels),
                "image_id": image_id,
            }
        )
        predictions.append(
            {
                "boxes": torch.tensor(
                    np.concatenate([(boxes + jitter)[found], np.concatenate([exy, exy + ewh], 1)]),
                    dtype=torch.float32,
                ),
                "labels": torch.tensor(np.r_[predicted[found], rng.integers(1, 4, extra)]),
                "scores": torch.tensor(
                    np.r_[scores[found], np.clip(rng.normal(0.4, 0.2, extra), 0.05, 0.95)],
                    dtype=torch.float32,
                ),
            }
        )
    return predictions, targets


def main() -> None:
    predictions, targets = simulated()
    evaluator = CocoEvaluator("bbox")
    evaluator.update(predictions, targets)
    metrics = evaluator.compute(confidence=0.95, resamples=200, seed=0)["bbox"]
    points = evaluator.operating_points(iou=0.5)
    matrix = evaluator.confusion_matrix(thresholds=points)
    IMAGES.mkdir(parents=True, exist_ok=True)
    plot_pr_curves(points, IMAGES / "evaluation_pr_curves.png", class_names=NAMES)
    plot_confusion_matrix(matrix, IMAGES / "evaluation_confusion.png", class_names=NAMES)
    low, high = metrics["AP50_interval"]
    print(f"AP50 {metrics['AP50']:.3f} (95% interval {low:.3f}-{high:.3f})")
    for name, values in points.to_dict()["classes"].items():
        print(NAMES[int(name)], {k: round(v, 3) for k, v in values.items()})
    print(matrix.matrix)


if __name__ == "__main__":
    main()
