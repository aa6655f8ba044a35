"""Deprecated module name: COCO ground-truth files live in :mod:`detkit.evaluation.ground_truth`.

Import :func:`~detkit.evaluation.coco_ground_truth` and
:func:`~detkit.evaluation.write_coco_ground_truth` from :mod:`detkit.evaluation`.
"""

from detkit.evaluation.ground_truth import coco_ground_truth, write_coco_ground_truth

__all__ = ["coco_ground_truth", "write_coco_ground_truth"]
