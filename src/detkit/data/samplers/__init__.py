"""Samplers: batches grouped by aspect ratio for training, exact shards for evaluation.

* :mod:`~detkit.data.samplers.aspect_ratios`: each image's aspect ratio, from its header or
  its dataset's metadata, quantised into groups;
* :mod:`~detkit.data.samplers.grouped`: :class:`GroupedBatchSampler`, batches whose images
  share a group;
* :mod:`~detkit.data.samplers.inference`: :class:`InferenceSampler`, contiguous shards that
  give every image to exactly one process.
"""

from detkit.data.samplers.aspect_ratios import compute_aspect_ratios, create_aspect_ratio_groups
from detkit.data.samplers.grouped import GroupedBatchSampler
from detkit.data.samplers.inference import InferenceSampler

__all__ = [
    "GroupedBatchSampler",
    "InferenceSampler",
    "compute_aspect_ratios",
    "create_aspect_ratio_groups",
]
