"""Pictures of data, predictions and training: what people would rather look at than read.

* :mod:`detkit.visualize.draw`: ground truth and predictions drawn onto images (boxes,
  masks, keypoints, captions with labels and scores), with torchvision's drawing utilities;
* :mod:`detkit.visualize.style`: the colours (one per class, the same in every picture)
  and the captions (legible on any image) those drawings use;
* :mod:`detkit.visualize.plots`: figures made with matplotlib (an optional dependency:
  ``pip install "torch-detkit[plot]"``): a dataset audit's histograms, training curves.
"""

from detkit.visualize.draw import (
    COCO_PERSON_SKELETON,
    draw_instances,
    draw_prediction,
    draw_target,
    make_grid,
    save_image,
)
from detkit.visualize.plots import plot_audit, plot_training_curves
from detkit.visualize.style import caption_font, class_colors, draw_captions, label_color

__all__ = [
    "COCO_PERSON_SKELETON",
    "caption_font",
    "class_colors",
    "draw_captions",
    "draw_instances",
    "draw_prediction",
    "draw_target",
    "label_color",
    "make_grid",
    "plot_audit",
    "plot_training_curves",
    "save_image",
]
