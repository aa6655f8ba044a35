"""COCO-format annotation files: the dataset and how its json is read.

* :mod:`~detkit.data.coco.dataset`: :class:`CocoJsonDataset`;
* :mod:`~detkit.data.coco._parsing`: the json read once into columns, every problem listed;
* :mod:`~detkit.data.coco._fields`: the checks of single fields (boxes, keypoints,
  segmentations, RLE strings).
"""

from detkit.data.coco.dataset import CocoJsonDataset

__all__ = ["CocoJsonDataset"]
