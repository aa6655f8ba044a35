"""Pictures of data, predictions and training: what people would rather look at than read.

* ``detkit.visualize.draw``: ground truth and predictions drawn onto images (boxes,
  masks, keypoints, captions with labels and scores), with torchvision's drawing utilities;
* ``detkit.visualize.style``: the colours (one per class, the same in every picture)
  and the captions (legible on any image) those drawings use;
* ``detkit.visualize.plots``: figures made with matplotlib (an optional dependency:
  ``pip install "torch-detkit[plot]"``): a dataset audit's histograms, training curves.
"""

from detkit.visualize import draw as _draw
from detkit.visualize.draw import (
    draw_instances,
    draw_prediction,
    draw_target,
    make_grid,
    save_image,
)
from detkit.visualize.plots import plot_audit, plot_training_curves
from detkit.visualize.style import caption_font, class_colors, draw_captions, label_color

#: Limb connections of COCO's 17 person keypoints (0-based indices), for the
#: ``connectivity`` of :func:`draw_instances`.
COCO_PERSON_SKELETON = _draw.COCO_PERSON_SKELETON

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
