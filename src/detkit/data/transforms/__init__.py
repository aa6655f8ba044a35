"""Paired image/target transforms for detection, built on ``torchvision.transforms.v2``.

Every transform takes and returns ``(image, target)`` in the target contract of
:mod:`detkit.types` (``image`` a PIL image or a ``Tensor[C, H, W]``, ``target`` a dict of
tv_tensors or plain tensors, or ``None`` at inference), so a pipeline plugs straight into
the datasets' ``transforms=`` and torchvision's detection models. Plain
``torchvision.transforms.v2`` transforms work too, in any position: the datasets and
:class:`Compose` run every pipeline through :func:`apply_transforms`, which keeps all fields
aligned. torchvision v2 does the geometry of images, boxes and masks; detkit adds what v2
lacks:

* keypoints ``Tensor[N, K, 3]`` keep their visibility through every geometric transform,
  points leaving the image become ``(0, 0, 0)``, and flips swap left and right keypoints
  (``flip_indices``; a flip of keypoints without a permutation is an error);
* ``area`` is recomputed after geometric transforms (from masks, else scaled with the
  boxes);
* instances are dropped from every per-instance field at once (boxes, labels, masks,
  keypoints, area, iscrowd and the fields you declare with ``instance_fields=``), whichever
  transform drops them (``v2.SanitizeBoundingBoxes`` included);
* inputs are never modified, and ``N = 0`` targets work everywhere.

Random parameters come from torch's global generator: ``torch.manual_seed`` reproduces a
pipeline (in ``DataLoader`` workers, torch seeds each worker for you).

>>> from detkit.data import transforms as T
>>> pipeline = T.Compose([
...     T.RandomHorizontalFlip(0.5),
...     T.ToDtype(torch.float32, scale=True),
...     T.SanitizeBoxes(),
... ])
"""

import torch  # noqa: F401  (used by the doctest above)

from detkit.data.transforms import keypoints as _keypoints
from detkit.data.transforms import presets as _presets
from detkit.data.transforms.adapter import V2Transform
from detkit.data.transforms.core import Transform, per_instance_keys, select_instances
from detkit.data.transforms.flips import RandomHorizontalFlip, RandomVerticalFlip
from detkit.data.transforms.geometry import (
    Fill,
    FixedSizeCrop,
    RandomIoUCrop,
    RandomShortestSize,
    RandomZoomOut,
    Resize,
    ScaleJitter,
)
from detkit.data.transforms.keypoints import (
    check_flip_indices,
    flip_indices_from_names,
    hide_outside,
    horizontal_flip_keypoints,
    vertical_flip_keypoints,
)
from detkit.data.transforms.photometric import (
    PILToTensor,
    RandomPhotometricDistort,
    ToDtype,
    ToImage,
)
from detkit.data.transforms.pipeline import Compose, apply_transforms, check_transforms
from detkit.data.transforms.presets import (
    eval_preset,
    hflip_preset,
    lsj_preset,
    multiscale_preset,
    ssd_preset,
    ssdlite_preset,
)
from detkit.data.transforms.sanitize import SanitizeBoxes

# Bound here with their descriptions, so that the API reference shows them under this name.

#: The 17 keypoints of a COCO person, in annotation order (``nose``, ``left_eye``, ...).
COCO_PERSON_KEYPOINT_NAMES = _keypoints.COCO_PERSON_KEYPOINT_NAMES

#: Left/right permutation of :data:`COCO_PERSON_KEYPOINT_NAMES` for flips (output keypoint
#: ``k`` is input keypoint ``COCO_PERSON_FLIP_INDICES[k]``); the nose stays, every left
#: keypoint trades places with its right twin.
COCO_PERSON_FLIP_INDICES = _keypoints.COCO_PERSON_FLIP_INDICES

#: Padding colour of the references' zoom-out and fixed-size crop (the ImageNet mean, 0..255).
REFERENCE_MEAN = _presets.REFERENCE_MEAN

__all__ = [
    "COCO_PERSON_FLIP_INDICES",
    "COCO_PERSON_KEYPOINT_NAMES",
    "REFERENCE_MEAN",
    "Compose",
    "Fill",
    "FixedSizeCrop",
    "PILToTensor",
    "RandomHorizontalFlip",
    "RandomIoUCrop",
    "RandomPhotometricDistort",
    "RandomShortestSize",
    "RandomVerticalFlip",
    "RandomZoomOut",
    "Resize",
    "SanitizeBoxes",
    "ScaleJitter",
    "ToDtype",
    "ToImage",
    "Transform",
    "V2Transform",
    "apply_transforms",
    "check_flip_indices",
    "check_transforms",
    "eval_preset",
    "flip_indices_from_names",
    "hflip_preset",
    "hide_outside",
    "horizontal_flip_keypoints",
    "lsj_preset",
    "multiscale_preset",
    "per_instance_keys",
    "select_instances",
    "ssd_preset",
    "ssdlite_preset",
    "vertical_flip_keypoints",
]
