"""Batch collation for detection data loaders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["collate_fn"]


def collate_fn(batch: Sequence[tuple[Any, Any]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Turn a list of ``(image, target)`` samples into ``(images, targets)``.

    Detection images differ in size and targets in instance count, so nothing is stacked:
    the model takes the images and targets as sequences. This is a module-level function
    (unlike the ``lambda`` often seen in tutorials), so it pickles and works with
    ``num_workers > 0`` under the ``spawn`` start method.

    Args:
        batch: the samples of one batch, each an ``(image, target)`` pair.

    Returns:
        ``(images, targets)``, two tuples of equal length.

    Raises:
        TypeError: when a sample is not an ``(image, target)`` pair.

    >>> batch = [("img0", {"image_id": 0}), ("img1", {"image_id": 1})]
    >>> images, targets = collate_fn(batch)
    >>> images, targets
    (('img0', 'img1'), ({'image_id': 0}, {'image_id': 1}))
    """
    for i, sample in enumerate(batch):
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TypeError(
                f"collate_fn expects (image, target) pairs; sample {i} of the batch is a "
                f"{type(sample).__name__}"
                + (f" of length {len(sample)}" if isinstance(sample, (tuple, list)) else "")
            )
    if not batch:
        return (), ()
    images, targets = zip(*batch)
    return tuple(images), tuple(targets)
