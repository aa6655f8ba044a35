"""Detection backbones from any torchvision classification model: one feature map, or an FPN.

``backbones/trunk.py`` cuts a classification model into blocks and stages;
``backbones/builders.py`` makes the two kinds of backbone from them.

Both builders take a classification model, by name (``"mobilenet_v2"``, ``"resnet50"``,
``"convnext_tiny"`` ...) or as an instance, cut its feature trunk out (everything its
``forward`` runs before global pooling), and measure each block's output stride and channel
count with one dry run of a small image, so nothing is typed by hand (no ``out_channels = 1280``).

* :func:`trunk_backbone` -- the tutorial's ``mobilenet_v2().features`` recipe for any model:
  the deepest feature map alone, ``out_channels`` set. Works for every torchvision
  classification model except ViT and MaxViT (whose features are not a convolutional map).
* :func:`fpn_backbone` -- a feature pyramid over the trunk's stages (``returned_strides``,
  by default the last four: 4, 8, 16, 32 for most models) plus a max-pooled top level, as
  :class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`. For ResNets the module
  and its state-dict keys are those of torchvision's ``resnet_fpn_backbone``, so torchvision's
  COCO detector weights load into detkit's ResNet-50 FPN models.

**Stages and** ``trainable_layers``. The trunk's blocks are grouped into stages, a new stage at
every block that lowers the resolution. ``trainable_layers=k`` trains the ``k`` deepest stages
and freezes the rest; the default is 3 when the backbone starts from pretrained weights and all
stages otherwise (torchvision's defaults). For ResNets (5 stages) and MobileNets (6: the final
1x1 convolution counts as one) this is the same unit as torchvision's
``trainable_backbone_layers``. An out-of-range value raises a ``ValueError`` listing the stages.

**Batch norm.** When the backbone is pretrained (``weights`` given, or an instance whose batch
norm layers carry trained statistics) every batch norm becomes
:class:`~torchvision.ops.misc.FrozenBatchNorm2d`, as in torchvision's detection models (batch
statistics of 2 images would ruin them). Batch norm inside a frozen stage is frozen in any case.
``frozen_batchnorm=True/False`` overrides the default.

Each backbone has ``out_channels`` (what torchvision's detectors need) and ``feature_strides``,
``{name: stride}`` of the maps it returns, from which detkit's builders derive anchors and RoI
pooling.
"""

from detkit.models.backbones.builders import fpn_backbone, trunk_backbone

__all__ = ["fpn_backbone", "trunk_backbone"]
