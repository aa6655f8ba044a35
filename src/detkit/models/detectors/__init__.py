"""Whole detectors: by name, or an R-CNN on the backbone of your choice.

One route per job:

* **any detector by name**, from a script or a configuration file:
  :func:`detection_model` takes torchvision's detection model names
  (``"maskrcnn_resnet50_fpn"``: torchvision's architecture, with its COCO weights as
  ``weights="DEFAULT"``) and detkit's R-CNN families (``"maskrcnn"`` with
  ``backbone="convnext_tiny"``, ``fpn=False`` ...);
* **an R-CNN on any classification backbone**, in code: :func:`fasterrcnn`,
  :func:`maskrcnn`, :func:`keypointrcnn` (what ``detection_model`` calls for the families).

``detectors/named.py`` holds :func:`detection_model`, ``detectors/torchvision_models.py``
builds torchvision's named models, ``detectors/rcnn.py`` holds the R-CNN builders and
``detectors/rcnn_assembly.py`` the way they put a model together (anchors, RoI pooling and
predictors that follow the backbone and the heads).
"""

from detkit.models.detectors.named import detection_model
from detkit.models.detectors.rcnn import fasterrcnn, keypointrcnn, maskrcnn

__all__ = ["detection_model", "fasterrcnn", "keypointrcnn", "maskrcnn"]
