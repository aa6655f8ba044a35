"""Pictures of data, predictions and training: what people would rather look at than read.

* :mod:`detkit.visualize.draw`: ground truth and predictions drawn onto images (boxes,
  masks, keypoints, labels, scores), with torchvision's drawing utilities;
* :mod:`detkit.visualize.plots`: figures made with matplotlib (an optional dependency:
  ``pip install "torch-detkit[plot]"``), such as a dataset audit's histograms.
"""

from detkit.visualize.draw import (
    COCO_PERSON_SKELETON,
    draw_instances,
    draw_prediction,
    draw_target,
    label_color,
    make_grid,
    save_image,
)
from detkit.visualize.plots import plot_audit

__all__ = [
    "COCO_PERSON_SKELETON",
    "draw_instances",
    "draw_prediction",
    "draw_target",
    "label_color",
    "make_grid",
    "plot_audit",
    "save_image",
]
