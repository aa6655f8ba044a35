"""The base dataset for images that come with an instance-id mask (Penn-Fudan style)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from detkit.data._file_checks import find_missing, missing_files_error, path_pairs
from detkit.data._hook_results import checked_hook_results
from detkit.data._image_files import (
    ID_MASK_MODES,
    LazyName,
    MaxPixels,
    decode,
    header_size,
    orientation_hint,
    resolve_max_pixels,
)
from detkit.data.transformed import TransformedSamples
from detkit.ops import instance_classes, split_id_mask
from detkit.tv_tensors import xyxy_boxes
from detkit.types import PathLike, Target, Transforms, sample_name

__all__ = ["InstanceMaskDataset"]

_log = logging.getLogger("detkit.data")


class InstanceMaskDataset(TransformedSamples, torch.utils.data.Dataset):
    """Base dataset for images paired with an instance-id mask.

    In the mask, ``0`` is background and every other value is one instance (ids need not be
    contiguous). From it the dataset derives the whole target of :mod:`detkit.types`:
    ``boxes`` (edge convention, see :func:`detkit.ops.masks_to_boxes`), ``labels``,
    ``masks``, ``area`` (mask pixel count), ``iscrowd`` and ``image_id``. Images without
    instances are returned as negative samples with empty fields.

    A subclass says where its samples are, by passing ``samples`` (pairs of image and mask
    paths) to ``__init__``. With a single class there is nothing more to say; with several,
    an instance's label comes from one of:

    * ``labels=``: one label for every instance (default ``1``), or a mapping from instance id
      to label;
    * ``semantic_masks=``: a class-id mask per sample; an instance takes the class most of its
      pixels have;
    * overriding :meth:`instance_labels` (and :meth:`instance_iscrowd` for crowd flags).

    Samples are torchvision tv_tensors, as torchvision's detection tutorial has them: the
    image a uint8 :class:`~torchvision.tv_tensors.Image` ``[3, H, W]`` (grayscale, palette
    and RGBA images are converted to RGB), ``boxes`` a
    :class:`~torchvision.tv_tensors.BoundingBoxes` (XYXY, ``canvas_size=(H, W)``) and
    ``masks`` a :class:`~torchvision.tv_tensors.Mask`, so any ``torchvision.transforms.v2``
    transform moves them together. Instance masks may be 8-bit (``L`` or palette ``P``) or
    16-bit PNGs.

    **What reading does, and refuses** (every error names the sample and the file):

    * EXIF orientation is applied (``apply_exif_orientation=True``, the default) to images
      and masks alike, and :meth:`get_height_and_width` reports the size after it: pixels
      come out as image viewers and labelling tools show them, which is what annotations
      were drawn on. A mask whose size matches only the stored (unrotated) image gets an
      error saying so.
    * 16-bit images are scaled to 8 bits as ``value >> 8`` (the full 0..65535 range onto
      0..255; without it they would clip to almost white). 16-bit masks keep their ids.
    * An image or mask whose header announces more than ``max_image_pixels`` pixels is
      refused before decoding (a decompression bomb inflates a few kilobytes into
      gigabytes).
    * Masks in a lossy format (JPEG, lossy WebP, AVIF; told by the header, not the name)
      are refused: compression artefacts along object edges become ids of no object, that
      is, stray instances.
    * A path that is a directory, a FIFO or a device is refused as such, and a PNG whose
      image data is damaged (its CRC fails) as corrupt, before a decoder crashes on it.

    Args:
        samples: ``(image_path, mask_path)`` pairs, one per sample.
        transforms: optional paired transform ``transforms(image, target) -> (image, target)``:
            detkit's (:mod:`detkit.data.transforms`), torchvision v2's (a ``v2.Compose`` as in
            torchvision's tutorial) or any mix; it runs through
            :func:`~detkit.data.transforms.apply_transforms`, which keeps every field aligned.
        labels: label of every instance, or a mapping ``{instance_id: label}``. Labels start
            at 1 (0 is background).
        semantic_masks: optional class-id mask path per sample (same order as ``samples``).
        crowd_ids: instance ids to flag as ``iscrowd = 1`` in every sample.
        void_ids: ids that mark pixels of no instance, read as background: Pascal VOC's
            masks draw 255 along object borders and over unlabelled regions. A mask
            holding 255 beside other ids (and no 254) while ``void_ids`` is not given gets
            a logged warning, once: its 255 is then an instance.
        check_files: check at construction that every listed file exists and is a file, so
            a missing mask is reported at once rather than mid-epoch. It costs one directory
            listing per folder, not a ``stat`` per file, and opens nothing: 10,000 pairs take
            about twice as long as listing their folders. Files are read, and their content
            checked, only when a sample is.
        max_image_pixels: largest ``height * width`` of an image or mask. ``"pil"``
            (default): ``PIL.Image.MAX_IMAGE_PIXELS`` as it is at construction (about 89
            million); ``None``: no limit.
        apply_exif_orientation: apply the EXIF orientation of JPEG and PNG files (see
            above); ``False`` reads the pixels as stored.
        instance_fields: keys of extra per-instance fields a subclass adds to its targets
            (tensors or lists with one entry per instance), kept aligned by the transforms.

    Raises:
        ValueError: for an empty ``samples``, a malformed pair, a fractional or < 1 label, or (with
            ``check_files``) a listed path that is a directory or not a regular file.
        FileNotFoundError: naming the files that are missing (with ``check_files``).
        TypeError: for a ``max_image_pixels`` that is not a positive int, None or "pil".

    Example:
        >>> import tempfile
        >>> from detkit.data import write_synthetic_pennfudan
        >>> root = write_synthetic_pennfudan(tempfile.mkdtemp(), num_images=2, seed=0)
        >>> images = sorted((root / "PNGImages").glob("*.png"))
        >>> pairs = [(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images]
        >>> dataset = InstanceMaskDataset(pairs)
        >>> image, target = dataset[0]
        >>> type(image).__name__, image.dtype, image.shape[0]
        ('Image', torch.uint8, 3)
        >>> target["labels"].unique().tolist()
        [1]
        >>> boxes = target["boxes"]
        >>> boxes.format.name, boxes.canvas_size == tuple(image.shape[1:])
        ('XYXY', True)
        >>> dataset.get_height_and_width(0) == tuple(image.shape[1:])
        True
    """

    def __init__(
        self,
        samples: Sequence[tuple[PathLike, PathLike]],
        *,
        transforms: Transforms | None = None,
        labels: int | Mapping[int, int] = 1,
        semantic_masks: Sequence[PathLike] | None = None,
        crowd_ids: Collection[int] = (),
        void_ids: Collection[int] = (),
        check_files: bool = True,
        max_image_pixels: MaxPixels = "pil",
        apply_exif_orientation: bool = True,
        instance_fields: Sequence[str] = (),
    ) -> None:
        pairs = path_pairs(samples)
        if not pairs:
            raise ValueError("samples is empty: the dataset has no (image, mask) pairs")
        semantic_paths = None if semantic_masks is None else [Path(p) for p in semantic_masks]
        if semantic_paths is not None and len(semantic_paths) != len(pairs):
            raise ValueError(
                f"semantic_masks has {len(semantic_paths)} paths but samples has "
                f"{len(pairs)}: they must be parallel"
            )
        bad: dict[Any, Any]
        if isinstance(labels, Mapping):
            bad = {k: v for k, v in labels.items() if int(v) < 1 or int(v) != v}
            label_map = {int(k): int(v) for k, v in labels.items()}
            self._label: int | None = None
        else:
            bad = {"all instances": labels} if int(labels) < 1 or int(labels) != labels else {}
            label_map = {}
            self._label = int(labels)
        if bad:
            raise ValueError(f"labels must be whole numbers >= 1 (0 is background), got {bad}")
        self.set_transforms(transforms, instance_fields)
        self._pairs = pairs  # strings: 10,000 Path objects would cost more than listing the folder
        self.semantic_masks: list[Path] | None = semantic_paths
        self._label_map = label_map
        self._crowd_ids = np.array(sorted(int(i) for i in crowd_ids), dtype=np.int64)
        self._void_ids = np.array(sorted(int(i) for i in void_ids), dtype=np.int64)
        self._warned_void = bool(len(self._void_ids))  # nothing to warn about once given
        self._sizes: dict[int, tuple[int, int]] = {}
        self.max_image_pixels = resolve_max_pixels(max_image_pixels)
        self.apply_exif_orientation = bool(apply_exif_orientation)
        cls = type(self)
        self._overrides_hooks = (
            cls.instance_labels is not InstanceMaskDataset.instance_labels
            or cls.instance_iscrowd is not InstanceMaskDataset.instance_iscrowd
        )
        if check_files:
            self._check_files()

    @property
    def samples(self) -> list[tuple[Path, Path]]:
        """The ``(image_path, mask_path)`` pairs, as paths (a new list on each access)."""
        return [(Path(image), Path(mask)) for image, mask in self._pairs]

    def _check_files(self) -> None:
        # Images, then masks, then semantic masks: each folder's paths together.
        paths = [image for image, _ in self._pairs] + [mask for _, mask in self._pairs]
        paths += [str(p) for p in self.semantic_masks or []]
        problems = find_missing(paths)
        if problems:
            roles = ("image", "mask", "semantic mask")
            names = [f"sample {i % len(self)}, {roles[i // len(self)]}" for i in range(len(paths))]
            raise missing_files_error(problems, paths, names, "the dataset's samples")

    def __len__(self) -> int:
        return len(self._pairs)

    # -- what a subclass may override -------------------------------------------------------

    def image_path(self, idx: int) -> Path:
        """Path of sample ``idx``'s image."""
        return Path(self._pairs[idx][0])

    def mask_path(self, idx: int) -> Path:
        """Path of sample ``idx``'s instance-id mask."""
        return Path(self._pairs[idx][1])

    def _image_file(self, idx: int) -> PathLike:
        """``image_path(idx)``, as the text it was given unless a subclass overrides it.

        A ``Path`` costs about 50 us right after a decode, for nothing but the same text.
        """
        if type(self).image_path is InstanceMaskDataset.image_path:
            return self._pairs[idx][0]
        return self.image_path(idx)

    def _mask_file(self, idx: int) -> PathLike:
        """``mask_path(idx)``, as :meth:`_image_file` gives ``image_path(idx)``."""
        if type(self).mask_path is InstanceMaskDataset.mask_path:
            return self._pairs[idx][1]
        return self.mask_path(idx)

    def image_id(self, idx: int) -> int:
        """The ``image_id`` of sample ``idx`` (default: ``idx``)."""
        return idx

    def instance_labels(self, idx: int, ids: np.ndarray, id_mask: np.ndarray) -> torch.Tensor:
        """Labels of the instances ``ids`` of sample ``idx``, as int64 ``Tensor[N]``.

        Override for custom rules. The default uses ``semantic_masks`` when given, else the
        ``labels`` mapping or constant.

        Args:
            idx: the sample index.
            ids: int64 array ``[N]`` of the instance ids present in the mask, ascending.
            id_mask: the instance-id mask ``[H, W]``.
        """
        if self.semantic_masks is not None:
            return self._labels_from_semantic(idx, ids, id_mask)
        if self._label is not None:  # numpy: a torch op costs ~0.1 ms right after a decode
            labels = np.empty(len(ids), dtype=np.int64)
            labels.fill(self._label)  # np.full's Python code costs more than this
            return torch.from_numpy(labels)
        unknown = [int(i) for i in ids if int(i) not in self._label_map]
        if unknown:
            raise ValueError(
                f"{self._where(idx)}: mask '{self.mask_path(idx)}': instance ids {unknown} have no "
                f"entry in the labels mapping (known ids: {sorted(self._label_map)})"
            )
        return torch.tensor([self._label_map[int(i)] for i in ids], dtype=torch.int64)

    def instance_iscrowd(self, idx: int, ids: np.ndarray, id_mask: np.ndarray) -> torch.Tensor:
        """Crowd flags (int64 ``Tensor[N]``) of the instances ``ids`` of sample ``idx``.

        The default flags the ids given as ``crowd_ids``; override for other rules.
        """
        if not len(self._crowd_ids):
            return torch.from_numpy(np.zeros(len(ids), dtype=np.int64))
        return torch.from_numpy(np.isin(ids, self._crowd_ids).astype(np.int64))

    # -- reading -----------------------------------------------------------------------------

    def load_image(self, idx: int) -> torch.Tensor:
        """Decode sample ``idx``'s image as an RGB uint8 ``Tensor[3, H, W]``."""
        return self._decode(idx, self._image_file(idx), "image", rgb=True)

    def load_id_mask(self, idx: int) -> np.ndarray:
        """Decode sample ``idx``'s instance-id mask as an integer array ``[H, W]``."""
        return self._read_mask(idx, self._mask_file(idx), "mask")

    def _read_mask(self, idx: int, path: PathLike, what: str) -> np.ndarray:
        mask = self._decode(idx, path, what, rgb=False)
        if mask.shape[0] != 1:
            raise ValueError(
                f"{self._where(idx)}: {what} file '{path}' has {mask.shape[0]} channels; an id mask must "
                f"have one integer channel (PIL modes {', '.join(ID_MASK_MODES)})"
            )
        return mask.numpy()[0]  # numpy's indexing: a tenth of torch's

    def _decode(self, idx: int, path: PathLike, what: str, *, rgb: bool) -> torch.Tensor:
        return decode(
            path,
            LazyName(self._where, idx),
            what,
            rgb=rgb,
            max_pixels=self.max_image_pixels,
            exif=self.apply_exif_orientation,
        )

    def _where(self, idx: int) -> str:
        """How errors name sample ``idx``: its image_id and its image file."""
        return sample_name(image_id=self.image_id(idx), source=self.image_path(idx))

    def get_height_and_width(self, idx: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``idx``'s image, from its header (no pixel decode).

        Used by aspect-ratio grouping; results are cached.
        """
        size = self._sizes.get(idx)
        if size is None:
            size = self._sizes[idx] = header_size(
                self._image_file(idx), self._where(idx), exif=self.apply_exif_orientation
            )
        return size

    def get_target(self, idx: int, id_mask: np.ndarray) -> Target:
        """Derive sample ``idx``'s target from its instance-id mask ``[H, W]`` (its
        ``void_ids`` pixels read as background)."""
        if len(self._void_ids):
            void = np.isin(id_mask, self._void_ids)
            if void.any():
                id_mask = np.where(void, 0, id_mask).astype(id_mask.dtype, copy=False)
        ids, present, boxes, areas = split_id_mask(id_mask)
        if not self._warned_void and len(ids) > 1 and ids[-1] == 255 and ids[-2] != 254:
            self._warned_void = True
            _log.warning(
                "%s: mask '%s' holds id 255 beside ids %s: Pascal VOC-style masks mark void "
                "pixels (object borders, unlabelled regions) with 255, which is read here "
                "as one more instance. If it is void, pass void_ids=(255,). Said once",
                self._where(idx),
                self.mask_path(idx),
                ids[:-1].tolist(),
            )
        labels = self.instance_labels(idx, ids, id_mask)
        iscrowd = self.instance_iscrowd(idx, ids, id_mask)
        # The default hooks' results are right by construction (their labels were checked
        # when the dataset was made); right after a decode each torch call costs 5-20 us.
        if self._overrides_hooks:
            where = f"{self._where(idx)}: mask '{self.mask_path(idx)}'"
            labels, iscrowd = checked_hook_results(where, len(ids), labels, iscrowd)
        height, width = id_mask.shape
        return {
            "boxes": xyxy_boxes(boxes, (height, width)),
            "labels": labels,
            # Mask by as_subclass: what Mask() does after two calls that change nothing here.
            "masks": torch.from_numpy(present.view(np.uint8)).as_subclass(tv_tensors.Mask),
            "area": torch.from_numpy(areas.astype(np.float32)),
            "iscrowd": iscrowd,
            "image_id": self.image_id(idx),
        }

    def __getitem__(self, idx: int) -> tuple[Any, Target]:
        size = len(self)
        if not -size <= idx < size:
            raise IndexError(f"index {idx} is out of range for a dataset of {size} samples")
        idx %= size
        image = self.load_image(idx)
        id_mask = self.load_id_mask(idx)
        if id_mask.shape != tuple(image.shape[1:]):
            raise ValueError(
                f"{self._where(idx)}: mask '{self.mask_path(idx)}' is {id_mask.shape[1]}x"
                f"{id_mask.shape[0]} (WxH) but image '{self.image_path(idx)}' is "
                f"{image.shape[2]}x{image.shape[1]}"
                + (orientation_hint(self.image_path(idx)) if self.apply_exif_orientation else "")
            )
        target = self.get_target(idx, id_mask)
        image = image.as_subclass(tv_tensors.Image)  # what Image() does for [3, H, W]
        return self.transformed(image, target, source=self._image_file(idx))

    def _labels_from_semantic(self, idx: int, ids: np.ndarray, id_mask: np.ndarray) -> torch.Tensor:
        path = self.semantic_masks[idx]  # type: ignore[index]  # only called when set
        semantic = self._read_mask(idx, path, "semantic mask")
        if semantic.shape != id_mask.shape:
            raise ValueError(
                f"{self._where(idx)}: semantic mask '{path}' has shape {semantic.shape}, instance mask "
                f"'{self.mask_path(idx)}' has {id_mask.shape}"
            )
        labels = instance_classes(id_mask, semantic, ids)
        orphans = ids[labels == 0]
        if len(orphans):
            raise ValueError(
                f"{self._where(idx)}: instances {orphans.tolist()} of mask '{self.mask_path(idx)}' lie "
                f"entirely on background (class 0) in semantic mask '{path}'"
            )
        return torch.from_numpy(labels)
