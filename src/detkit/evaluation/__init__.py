"""COCO evaluation: :class:`CocoEvaluator` and the conversions it is built from.

The evaluator takes torchvision model outputs and detkit targets batch by batch and returns
pycocotools' statistics as plain data, computed by the fastest installed backend (see
:data:`BACKENDS`) with numbers equal to pycocotools' own.
"""

from detkit.evaluation.analysis import ConfusionMatrix, OperatingPoints
from detkit.evaluation.backends import BACKENDS, available_backends
from detkit.evaluation.convert import coco_results, masks_to_rle, xyxy_to_xywh
from detkit.evaluation.evaluator import CocoEvaluator
from detkit.evaluation.ground_truth import coco_ground_truth, write_coco_ground_truth

__all__ = [
    "BACKENDS",
    "CocoEvaluator",
    "ConfusionMatrix",
    "OperatingPoints",
    "available_backends",
    "coco_ground_truth",
    "coco_results",
    "masks_to_rle",
    "write_coco_ground_truth",
    "xyxy_to_xywh",
]
