"""What detkit's datasets share: the user's ``transforms`` and ``instance_fields``, checked
once when the dataset is made, and the one way a sample goes through them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detkit.data.transforms.pipeline import apply_transforms, check_transforms
from detkit.types import Target, Transforms

__all__ = ["TransformedSamples"]


class TransformedSamples:
    """A dataset's ``transforms`` and ``instance_fields``; mixed into
    :class:`~detkit.data.InstanceMaskDataset` and :class:`~detkit.data.CocoJsonDataset`,
    and into a dataset of your own that returns samples in the target contract.

    >>> import torch
    >>> from detkit.data import transforms as T
    >>> samples = TransformedSamples()
    >>> samples.set_transforms(T.RandomHorizontalFlip(1.0), instance_fields=())
    >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    >>> target = {"boxes": boxes, "labels": torch.tensor([1])}
    >>> image = torch.zeros(3, 4, 10)
    >>> image, target = samples.transformed(image, target, source="a.png")
    >>> target["boxes"]
    tensor([[ 8.,  0., 10.,  2.]])
    """

    transforms: Transforms | None = None
    instance_fields: tuple[str, ...] = ()

    def set_transforms(self, transforms: Transforms | None, instance_fields: Sequence[str]) -> None:
        """Check and keep the pipeline (refusing v1 transforms up front) and the extra
        per-instance fields it must keep aligned.

        Raises:
            TypeError: for a pipeline that cannot keep a sample aligned, or
                ``instance_fields`` given as one string.
        """
        if transforms is not None:
            check_transforms(transforms)
        if isinstance(instance_fields, str):
            raise TypeError(f"instance_fields must be a sequence of keys, got {instance_fields!r}")
        self.transforms = transforms
        self.instance_fields = tuple(instance_fields)

    def transformed(self, image: Any, target: Target, *, source: Any) -> tuple[Any, Target]:
        """The sample through the pipeline (as it is without one); ``source`` names its file
        in errors."""
        if self.transforms is None:
            return image, target
        return apply_transforms(
            self.transforms, image, target, instance_fields=self.instance_fields, source=source
        )
