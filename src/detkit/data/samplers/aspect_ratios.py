"""Aspect-ratio grouping: image sizes without decoding pixels, quantized into groups.

Batching images of similar shape wastes less padding (torchvision's detection models pad a
batch to its largest image), which saves memory and time. :func:`create_aspect_ratio_groups`
gives each image a group id for :class:`~detkit.data.GroupedBatchSampler`.
"""

from __future__ import annotations

import bisect
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detkit.types import image_size

__all__ = ["compute_aspect_ratios", "create_aspect_ratio_groups"]

logger = logging.getLogger(__name__)


def compute_aspect_ratios(
    dataset: Any, indices: Sequence[int] | np.ndarray | None = None, *, num_workers: int = 0
) -> np.ndarray:
    """Aspect ratio (width / height) of every image of ``dataset``, read without decoding.

    Sizes come from, in this order of preference:

    * the dataset's ``get_height_and_width(idx) -> (height, width)`` method
      (:class:`~detkit.data.InstanceMaskDataset` reads the image header;
      :class:`~detkit.data.CocoJsonDataset` reads the annotation file);
    * :class:`torch.utils.data.Subset` and :class:`torch.utils.data.ConcatDataset`, by mapping
      indices to the datasets they wrap (recursively);
    * COCO metadata: torchvision's ``CocoDetection`` (also wrapped by
      ``wrap_dataset_for_transforms_v2``) through ``dataset.coco.imgs``;
    * torchvision's ``VOCDetection``, through the image file headers.

    Any other dataset is loaded sample by sample (every image decoded, and transformed: the
    size is that of the returned image), with a warning that says how to avoid it.

    Args:
        dataset: a map-style dataset.
        indices: which samples (default: all, in order).
        num_workers: worker processes for the slow fallback only (a
            :class:`~torch.utils.data.DataLoader` that sends back sizes, not images).

    Returns:
        float64 array ``[len(indices)]`` of ``width / height``.

    Raises:
        ValueError: for an index out of range or an image with a non-positive side.

    >>> from detkit.data import CocoJsonDataset, write_synthetic_coco
    >>> import tempfile
    >>> sizes = [(40, 80), (60, 30)]  # (height, width), used in turn
    >>> root = write_synthetic_coco(tempfile.mkdtemp(), num_images=3, sizes=sizes)
    >>> dataset = CocoJsonDataset(root / "images", root / "annotations.json")
    >>> compute_aspect_ratios(dataset).tolist()
    [2.0, 0.5, 2.0]
    """
    if indices is None:
        indices = range(len(dataset))
    positions = _check_indices(indices, len(dataset), "indices")
    sizes = _sizes(dataset, positions, num_workers)
    if sizes.shape[0] and (sizes <= 0).any():
        bad = int(np.flatnonzero((sizes <= 0).any(axis=1))[0])
        raise ValueError(
            f"sample {positions[bad]} of {type(dataset).__name__} has size (height, width) = "
            f"{tuple(sizes[bad].tolist())}: both sides must be positive"
        )
    return sizes[:, 1] / sizes[:, 0]


def create_aspect_ratio_groups(
    dataset: Any, k: int = 3, *, indices: Sequence[int] | None = None, num_workers: int = 0
) -> list[int]:
    """Group id of every image by quantized aspect ratio, for :class:`GroupedBatchSampler`.

    Quantization is torchvision's reference recipe: the bin edges are
    ``2 ** linspace(-1, 1, 2k + 1)`` (``[1.0]`` for ``k = 0``) and an image with aspect ratio
    ``a = width / height`` goes to group ``bisect_right(edges, a)``, giving ``2k + 2`` groups
    (group ``0`` holds ratios below ``1/2``, the last group those of ``2`` and above). With
    ``k < 0`` grouping is disabled: every image is in group ``0``. A summary of the group
    sizes is logged at ``INFO`` level on the ``detkit.data.samplers.aspect_ratios`` logger.

    Args:
        dataset: a map-style dataset (sizes are read as :func:`compute_aspect_ratios` does).
        k: quantization factor (torchvision's ``--aspect-ratio-group-factor``, default 3).
        indices: which samples to group (default: all); the others get ``-1``, no group.
        num_workers: worker processes for the decode-everything fallback only.

    Returns:
        One group id per sample of ``dataset``, in ``[0, 2k + 2)``: entry ``i`` is sample
        ``i``'s group, as :class:`GroupedBatchSampler` reads them (with ``indices``, also for
        a reordered list of samples), and ``-1`` for a sample left out of ``indices``, which
        the sampler accepts as long as it never draws that sample.

    Raises:
        TypeError: when ``k`` is not an int.

    >>> from detkit.data import CocoJsonDataset, write_synthetic_coco
    >>> import tempfile
    >>> sizes = [(40, 80), (60, 30), (50, 50), (30, 33)]  # ratios 2, 0.5, 1, 1.1
    >>> root = write_synthetic_coco(tempfile.mkdtemp(), num_images=4, sizes=sizes)
    >>> dataset = CocoJsonDataset(root / "images", root / "annotations.json")
    >>> create_aspect_ratio_groups(dataset, k=1)  # edges 0.5, 1, 2
    [3, 1, 2, 2]
    >>> create_aspect_ratio_groups(dataset, k=1, indices=[2, 0])  # others: -1
    [3, -1, 2, -1]
    >>> create_aspect_ratio_groups(dataset, k=-1)
    [0, 0, 0, 0]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}: {k!r}")
    k = int(k)
    positions = None if indices is None else _check_indices(indices, len(dataset), "indices")
    if k < 0:
        zeros = np.zeros(len(dataset) if positions is None else len(positions), dtype=np.int64)
        logger.info("aspect-ratio grouping disabled (k=%d): %d images in group 0", k, len(zeros))
        return _per_sample(zeros, positions, len(dataset))
    ratios = compute_aspect_ratios(dataset, positions, num_workers=num_workers)
    edges = _bin_edges(k)
    # searchsorted(side="right") is bisect_right, vectorized.
    groups = np.searchsorted(np.asarray(edges), ratios, side="right")
    counts = np.bincount(groups, minlength=len(edges) + 1)
    if logger.isEnabledFor(logging.INFO):
        bounds = [0.0, *edges, float("inf")]
        summary = ", ".join(
            f"{g} [{bounds[g]:.3g}, {bounds[g + 1]:.3g}): {int(n)}" for g, n in enumerate(counts)
        )
        logger.info(
            "aspect-ratio groups (k=%d, width/height, %d images): %s", k, len(groups), summary
        )
    return _per_sample(groups, positions, len(dataset))


def _per_sample(groups: np.ndarray, positions: np.ndarray | None, length: int) -> list[int]:
    """The groups of ``positions`` (all samples when ``None``) as one entry per sample,
    ``-1`` for the samples not among ``positions``."""
    if positions is None:
        return groups.tolist()
    out = np.full(length, -1, dtype=np.int64)
    out[positions] = groups
    return out.tolist()


def _bin_edges(k: int) -> list[float]:
    if k == 0:
        return [1.0]
    return (2.0 ** np.linspace(-1, 1, 2 * k + 1)).tolist()


def _check_indices(indices: Sequence[int] | np.ndarray, length: int, argument: str) -> np.ndarray:
    try:
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{argument} must be a sequence of ints: {exc}") from None
    if positions.size and (positions.min() < 0 or positions.max() >= length):
        bad = positions[(positions < 0) | (positions >= length)][0]
        raise ValueError(f"{argument} holds {int(bad)}, out of range for {length} samples")
    return positions


def _sizes(dataset: Any, positions: np.ndarray, num_workers: int) -> np.ndarray:
    """``(height, width)`` rows, int64 ``[len(positions), 2]``, by the cheapest route."""
    if hasattr(dataset, "get_height_and_width"):
        sizes = [dataset.get_height_and_width(int(i)) for i in positions]
        return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    if isinstance(dataset, torch.utils.data.Subset):
        mapped = np.asarray([int(dataset.indices[int(i)]) for i in positions], dtype=np.int64)
        return _sizes(dataset.dataset, _from_end(mapped, dataset), num_workers)
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        return _concat_sizes(dataset, positions, num_workers)
    coco: Any = getattr(dataset, "coco", None)
    if hasattr(coco, "imgs") and hasattr(dataset, "ids"):
        infos = [coco.imgs[dataset.ids[int(i)]] for i in positions]
        return np.asarray([(info["height"], info["width"]) for info in infos], dtype=np.int64)
    voc = _voc_images(dataset)
    if voc is not None:
        from PIL import Image

        sizes = []
        for i in positions:
            with Image.open(voc[int(i)]) as image:  # parses the header only
                sizes.append(image.size[::-1])
        return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    return _decoded_sizes(dataset, positions, num_workers)


def _from_end(mapped: np.ndarray, subset: Any) -> np.ndarray:
    """A Subset's indices into its dataset, negative ones counted from its end as indexing
    does (``ConcatDataset`` and lists would read them so; the wrapped dataset's
    ``get_height_and_width`` and the ``ConcatDataset`` mapping here might not)."""
    if not (mapped < 0).any():
        return mapped
    length = len(subset.dataset)
    bad = mapped < -length
    if bad.any():
        raise ValueError(
            f"Subset of {type(subset.dataset).__name__} holds index {int(mapped[bad][0])}, out "
            f"of range for its {length} samples"
        )
    return np.where(mapped < 0, mapped + length, mapped)


def _concat_sizes(dataset: Any, positions: np.ndarray, num_workers: int) -> np.ndarray:
    sizes = np.zeros((len(positions), 2), dtype=np.int64)
    which = np.asarray(
        [bisect.bisect_right(dataset.cumulative_sizes, int(i)) for i in positions], dtype=np.int64
    )
    offsets = np.asarray([0, *dataset.cumulative_sizes[:-1]], dtype=np.int64)
    for part in np.unique(which):
        rows = np.flatnonzero(which == part)
        local = positions[rows] - offsets[part]
        sizes[rows] = _sizes(dataset.datasets[int(part)], local, num_workers)
    return sizes


def _voc_images(dataset: Any) -> list | None:
    try:
        from torchvision.datasets import VOCDetection
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    # wrap_dataset_for_transforms_v2 keeps the original dataset in ``_dataset``.
    inner = getattr(dataset, "_dataset", dataset)
    return inner.images if isinstance(inner, VOCDetection) else None


def _sample_size(sample: Any) -> tuple[int, int]:
    """DataLoader ``collate_fn`` of the fallback: a sample's image size, computed in the worker
    so that only two ints travel back (module level, so it pickles under ``spawn``)."""
    image = sample[0] if isinstance(sample, (tuple, list)) else sample
    return image_size(image)


def _decoded_sizes(dataset: Any, positions: np.ndarray, num_workers: int) -> np.ndarray:
    name = type(dataset).__name__
    warnings.warn(
        f"compute_aspect_ratios: {name} has no cheap way to give image sizes, so all "
        f"{len(positions)} samples are loaded (every image decoded). To avoid this, give "
        f"{name} a method get_height_and_width(idx) -> (height, width) that reads the size "
        "from metadata or the image header (e.g. PIL.Image.open(path).size, which is "
        "(width, height) and decodes nothing), or pass num_workers to parallelize the loading.",
        stacklevel=3,
    )
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=positions.tolist(),
        num_workers=num_workers,
        collate_fn=_sample_size,
    )
    sizes = np.asarray(list(loader), dtype=np.int64).reshape(-1, 2)
    logger.info(
        "loaded %d samples of %s for their sizes in %.1f s",
        len(positions),
        name,
        time.perf_counter() - start,
    )
    return sizes
