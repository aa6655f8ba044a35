"""Synthetic datasets written to disk, for demos, tests and docs without downloads.

* :mod:`~detkit.data.synthetic.pennfudan`: pedestrian-like images with instance-id masks in
  Penn-Fudan's folder layout;
* :mod:`~detkit.data.synthetic.coco`: shapes with polygons, RLE crowd regions and keypoints
  in a COCO json file.
"""

from detkit.data.synthetic.coco import write_synthetic_coco
from detkit.data.synthetic.pennfudan import write_synthetic_pennfudan

__all__ = ["write_synthetic_coco", "write_synthetic_pennfudan"]
