"""Weights: where they come from (``sources``) and how they load into a model (``loading``).

Which function for which job (one route each):

* **build** a model with weights: the builders' ``weights=`` and ``weights_backbone=``
  (:func:`~detkit.models.detectors.detection_model`,
  :func:`~detkit.models.detectors.maskrcnn` ...), which also read the class count from the
  weights when ``num_classes`` is left out;
* **load** weights into a model you already have, for example to fine-tune from another
  run: :func:`load_weights` (``model`` first, as ``model.load_state_dict`` takes it);
* **resume** a training run (model, optimizer, scheduler, random state):
  :func:`detkit.engine.load_checkpoint` (the file first, then what to restore from it).

Every ``weights`` and ``weights_backbone`` argument takes a weights source:

* a torchvision weights enum, e.g. ``ResNet50_Weights.IMAGENET1K_V2``;
* its name, ``"DEFAULT"`` or ``"IMAGENET1K_V2"``, or the full
  ``"ResNet50_Weights.IMAGENET1K_V2"``;
* a local file: a plain state dict, or a checkpoint dict holding it under ``"model"`` (what
  detkit's engine writes), ``"state_dict"`` or ``"model_state_dict"``. Files are read with
  ``torch.load(..., weights_only=True)``: no code in a file runs. A state dict saved from a
  ``DistributedDataParallel`` model (keys starting ``module.``) is accepted as well;
* ``None``: random initialisation.

When a download is impossible (no network), :class:`WeightsDownloadError` says which file
could not be fetched from where, and how to pass it as a local file instead.

Loading is strict about the architecture but not about the heads that
:func:`~detkit.models.heads.replace_heads` changes on purpose: a box, mask or keypoint
predictor or a classification head whose shape differs from the file (another number of
classes) keeps its fresh initialisation, and that is logged at ``DEBUG`` level, not reported
as a problem.
"""

from detkit.models.weights.loading import LoadReport, load_weights, read_state_dict
from detkit.models.weights.sources import WeightsDownloadError
from detkit.models.weights.sources import WeightsSource as WeightsSource

# WeightsSource, for annotations, stays out of __all__: a typing alias has no docstring of its
# own, so the API page describes it by hand.
__all__ = ["LoadReport", "WeightsDownloadError", "load_weights", "read_state_dict"]
