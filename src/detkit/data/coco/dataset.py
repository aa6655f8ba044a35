"""A dataset for COCO-format annotation files, the export format of most labelling tools."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from detkit.data._file_checks import find_missing, missing_files_error
from detkit.data._image_files import (
    LazyName,
    MaxPixels,
    decode,
    orientation_hint,
    resolve_max_pixels,
)
from detkit.data.coco._fields import rle_string_problem
from detkit.data.coco._parsing import load_json, parse
from detkit.data.transformed import TransformedSamples
from detkit.data.transforms.keypoints import flip_indices_from_names
from detkit.ops import box_area, masks_area
from detkit.tv_tensors import KeyPointsWithVisibility, check_flip_indices, xyxy_boxes
from detkit.types import PathLike, Target, Transforms, sample_name

__all__ = ["CocoJsonDataset"]

logger = logging.getLogger("detkit.data.coco")


class CocoJsonDataset(TransformedSamples, torch.utils.data.Dataset):
    """Images and a COCO-format annotation file (CVAT, Label Studio, Roboflow exports, COCO).

    Sample ``idx`` is ``(image, target)`` in the contract of :mod:`detkit.types`, carried as
    torchvision tv_tensors so that any ``torchvision.transforms.v2`` transform moves every
    field with the image: ``image`` a uint8 :class:`~torchvision.tv_tensors.Image`
    ``[3, H, W]`` (RGB), and ``target`` with

    * ``boxes`` float :class:`~torchvision.tv_tensors.BoundingBoxes` ``[N, 4]``: the file's
      ``bbox`` ``[x, y, w, h]`` as XYXY ``[x, y, x + w, y + h]`` (COCO boxes already use
      continuous pixel coordinates), ``canvas_size=(H, W)``;
    * ``labels`` int64 ``Tensor[N]``: category ids mapped to contiguous labels ``1..C`` in
      ascending order of id (see :attr:`label_to_category`);
    * ``masks`` uint8 :class:`~torchvision.tv_tensors.Mask` ``[N, H, W]`` (see
      ``with_masks``), decoded by pycocotools from
      polygons, compressed RLE or uncompressed RLE (crowd regions), exactly as pycocotools'
      ``COCO.annToMask`` does. A segmentation that covers no pixel (collinear points, or a
      polygon within a pixel) gives an empty mask, and a logged warning the first time;
    * ``keypoints`` float :class:`~detkit.tv_tensors.KeyPointsWithVisibility` ``[N, K, 3]``
      (see ``with_keypoints``): ``(x, y, v)`` with ``v = 0`` points set to ``(0, 0, 0)``;
      instances without keypoints get all-zero rows. Flips swap left and right keypoints
      through :attr:`flip_indices`;
    * ``area`` float ``Tensor[N]``: the file's ``area`` (computed only where it is missing:
      the mask pixel count with masks, else the box area);
    * ``iscrowd`` int64 ``Tensor[N]`` (``0`` where missing) and ``image_id``: the COCO image id.

    Images keep the order of the file's ``images`` list; annotations keep their file order
    within an image. Images without annotations are negative samples (empty targets).

    **Checks at construction** (one :class:`ValueError` lists every problem found, naming the
    annotation id, image id and file name): malformed JSON (with line and column), an
    annotation whose ``image_id`` or ``category_id`` is unknown, a ``bbox`` that is not 4
    finite numbers, a box reaching outside its image by more than ``box_tolerance`` pixels, a
    degenerate box (zero or negative width or height inside the image), boxes that all lie
    within the first pixel (normalized coordinates, fractions of the image), a missing or
    malformed ``segmentation`` when masks are produced, keypoints of the wrong length or
    visibility. Boxes within the tolerance are clipped to the image: exporters round
    coordinates, and COCO itself has boxes that overshoot their image by a fraction of a pixel.
    Missing image files raise :class:`FileNotFoundError` (all listed) when ``check_files``.

    Also refused at construction, because each would otherwise give a wrong target without a
    word or crash later: an ``area`` that is negative, NaN or infinite (``validate_target``
    rejects it); an annotation ``id`` that appears twice (pycocotools keeps only one of
    them); strings or booleans where numbers belong (``bbox``, ``area``, polygons,
    ``keypoints``, RLE counts); a polygon coordinate that is NaN, infinite or more than an
    image size outside the image (pycocotools rasterizes it without bound and crashes the
    process); an image whose ``width * height`` exceeds ``max_image_pixels`` (its masks
    alone would exhaust memory); a ``file_name`` with a NUL character, or one that leads
    outside ``image_root`` (absolute, a drive, or a ``..`` component; a hostile file could
    otherwise read any file on the machine) unless ``allow_paths_outside_root=True``.
    A compressed RLE is checked when its mask is decoded (its run lengths must cover exactly
    ``height * width`` pixels: pycocotools fills the rest of a short one with whatever memory
    held, different on every read), with an error naming the annotation, image and file.

    **Reading** goes through the same checked path as :class:`InstanceMaskDataset`: EXIF
    orientation applied (``apply_exif_orientation``), 16-bit images scaled to 8 bits, the
    pixel limit enforced from the file's header before decoding. The file's ``width`` and
    ``height`` are taken as the size shown, after EXIF orientation, as labelling tools
    display and export it; an image whose decoded size differs is an error, which says so
    when the EXIF orientation explains the difference.

    Args:
        image_root: folder the images' ``file_name`` entries are relative to.
        annotation_file: the COCO ``.json`` file.
        transforms: optional paired transform ``transforms(image, target) -> (image, target)``:
            detkit's, torchvision v2's or any mix; it runs through
            :func:`~detkit.data.transforms.apply_transforms`, which keeps every field aligned.
        keep_negatives: keep images without annotations (default); ``False`` drops them.
        with_masks: produce ``masks``. ``None`` (default) decides once for the whole file:
            masks when any annotation has a ``segmentation`` (then every annotation needs one);
            ``False`` loads boxes only (faster, for box detectors); ``True`` requires them.
        with_keypoints: produce ``keypoints``; ``None`` (default): when a category lists
            keypoint names or an annotation has keypoints.
        box_tolerance: how far (in pixels) a box may reach outside its image before it is an
            error rather than clipped; default ``1.0``.
        drop_degenerate: skip degenerate boxes with a logged warning instead of raising.
        check_files: check at construction that every image file exists and is a file (one
            directory listing per folder; no file is opened).
        max_image_pixels: largest ``height * width`` of an image, checked against the file's
            sizes at construction and against each image's header before decoding.
            ``"pil"`` (default): ``PIL.Image.MAX_IMAGE_PIXELS`` as it is at construction;
            ``None``: no limit.
        apply_exif_orientation: apply the EXIF orientation of JPEG and PNG files; ``False``
            reads pixels as stored, for files annotated on unrotated pixels.
        allow_paths_outside_root: read ``file_name`` entries that are absolute or contain
            ``..``; only for annotation files you trust.
        flip_indices: the keypoints' left/right permutation for flips. By default it is
            derived from the keypoint names of the file's categories with
            :func:`~detkit.data.transforms.flip_indices_from_names` (``left_eye`` /
            ``right_eye`` and the other common conventions); without names it is unknown,
            and a flip of keypoints raises an error asking for it.
        instance_fields: keys of extra per-instance fields a subclass adds to its targets,
            kept aligned by the transforms.

    Attributes:
        ids (list[int]): the COCO image id of every sample, in order.
        categories (list[dict]): the file's categories, sorted by id (label ``i`` is
            ``categories[i - 1]``).
        label_to_category (dict[int, int]): label -> COCO category id, for evaluation
            (``CocoEvaluator(label_to_category=...)``) and for writing predictions.
        category_to_label (dict[int, int]): COCO category id -> label.
        class_names (list[str]): ``["__background__", name of label 1, ...]``.
        num_classes (int): ``C + 1``, the ``num_classes`` of torchvision's detection models.
        num_keypoints (int): ``K`` (``0`` without keypoints).
        with_masks (bool): whether targets hold ``masks``.
        with_keypoints (bool): whether targets hold ``keypoints``.
        flip_indices (tuple[int, ...] | None): the keypoints' left/right permutation.

    Raises:
        FileNotFoundError: for a missing annotation file or image files.
        ValueError: for a malformed file (see above), or an image path that is a directory.
        TypeError: for a ``max_image_pixels`` that is not a positive int, None or "pil".

    >>> import tempfile
    >>> from detkit.data import write_synthetic_coco
    >>> root = write_synthetic_coco(tempfile.mkdtemp(), num_images=4, seed=0)
    >>> dataset = CocoJsonDataset(root / "images", root / "annotations.json")
    >>> image, target = dataset[0]
    >>> image.dtype, tuple(image.shape[1:]) == dataset.get_height_and_width(0)
    (torch.uint8, True)
    >>> sorted(target)
    ['area', 'boxes', 'image_id', 'iscrowd', 'keypoints', 'labels', 'masks']
    >>> dataset.label_to_category, dataset.class_names
    ({1: 2, 2: 5, 3: 9}, ['__background__', 'triangle', 'box', 'kite'])
    """

    def __init__(
        self,
        image_root: PathLike,
        annotation_file: PathLike,
        *,
        transforms: Transforms | None = None,
        keep_negatives: bool = True,
        with_masks: bool | None = None,
        with_keypoints: bool | None = None,
        box_tolerance: float = 1.0,
        drop_degenerate: bool = False,
        check_files: bool = True,
        max_image_pixels: MaxPixels = "pil",
        apply_exif_orientation: bool = True,
        allow_paths_outside_root: bool = False,
        flip_indices: Sequence[int] | None = None,
        instance_fields: Sequence[str] = (),
    ) -> None:
        self.set_transforms(transforms, instance_fields)
        if not box_tolerance >= 0:
            raise ValueError(f"box_tolerance must be >= 0 pixels, got {box_tolerance}")
        self.image_root = Path(image_root)
        self.annotation_file = Path(annotation_file)
        self.max_image_pixels = resolve_max_pixels(max_image_pixels)
        self.apply_exif_orientation = bool(apply_exif_orientation)
        parsed, self.with_masks, self.with_keypoints = parse(
            load_json(self.annotation_file),
            self.annotation_file,
            with_masks=with_masks,
            with_keypoints=with_keypoints,
            box_tolerance=float(box_tolerance),
            drop_degenerate=drop_degenerate,
            keep_negatives=keep_negatives,
            max_pixels=self.max_image_pixels,
            allow_paths_outside_root=allow_paths_outside_root,
        )
        self._parsed = parsed
        self._warned_empty = False  # an empty mask has been logged (once per dataset)
        self.ids: list[int] = parsed.image_ids
        self.categories: list[dict[str, Any]] = parsed.categories
        self.label_to_category = {i: int(c["id"]) for i, c in enumerate(self.categories, 1)}
        self.category_to_label = {cid: label for label, cid in self.label_to_category.items()}
        self.class_names = ["__background__"] + [
            str(c.get("name", c["id"])) for c in self.categories
        ]
        self.num_classes = len(self.categories) + 1
        self.num_keypoints = 0 if parsed.keypoints is None else int(parsed.keypoints.shape[1])
        self.flip_indices = self._flip_indices(flip_indices)
        if check_files:
            self._check_files()

    def _flip_indices(self, given: Sequence[int] | None) -> tuple[int, ...] | None:
        if given is not None:
            return check_flip_indices(given, self.num_keypoints or None)
        for category in self.categories:
            names = category.get("keypoints")
            if isinstance(names, list) and len(names) == self.num_keypoints > 0:
                return flip_indices_from_names([str(name) for name in names])
        return None

    def _check_files(self) -> None:
        root = os.fspath(self.image_root)
        paths = [os.path.join(root, name) for name in self._parsed.file_names]
        problems = find_missing(paths)
        if problems:
            names = [f"image id {image_id}" for image_id in self.ids]
            listed = f"'{self.annotation_file}' (under image_root '{self.image_root}')"
            raise missing_files_error(problems, paths, names, listed)

    def __len__(self) -> int:
        return len(self.ids)

    def _index(self, idx: int) -> int:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range for a dataset of {len(self)} samples")
        return idx % len(self)

    def image_path(self, idx: int) -> Path:
        """Path of sample ``idx``'s image."""
        return self.image_root / self._parsed.file_names[self._index(idx)]

    def image_id(self, idx: int) -> int:
        """COCO image id of sample ``idx``."""
        return self.ids[self._index(idx)]

    def get_height_and_width(self, idx: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``idx``'s image, from the annotation file (no I/O)."""
        height, width = self._parsed.sizes[self._index(idx)].tolist()
        return height, width

    def load_image(self, idx: int) -> torch.Tensor:
        """Decode sample ``idx``'s image as an RGB uint8 ``Tensor[3, H, W]``.

        Raises:
            FileNotFoundError: when the file is missing.
            ValueError: when it cannot be decoded or its size differs from the file's
                ``height`` and ``width``.
        """
        idx = self._index(idx)
        path = self.image_path(idx)
        where = LazyName(sample_name, image_id=self.ids[idx], source=path)
        image = decode(
            path,
            where,
            "image",
            rgb=True,
            max_pixels=self.max_image_pixels,
            exif=self.apply_exif_orientation,
        )
        expected = self.get_height_and_width(idx)
        if tuple(image.shape[1:]) != expected:
            hint = orientation_hint(path) if self.apply_exif_orientation else ""
            raise ValueError(
                f"{where}: '{path}' is {image.shape[2]}x{image.shape[1]} (WxH) but "
                f"'{self.annotation_file}' says {expected[1]}x{expected[0]}; was the image "
                f"replaced or rotated after annotation?{hint}"
            )
        return image

    def get_target(self, idx: int) -> Target:
        """Sample ``idx``'s target, from the annotation file alone (no image decode)."""
        idx = self._index(idx)
        parsed = self._parsed
        start, end = parsed.offsets[idx : idx + 2].tolist()
        height, width = self.get_height_and_width(idx)
        boxes = torch.from_numpy(parsed.boxes[start:end].copy())
        area = parsed.area[start:end].copy()
        target: Target = {
            "boxes": xyxy_boxes(boxes, (height, width)),
            "labels": torch.from_numpy(parsed.labels[start:end].copy()),
            "image_id": self.ids[idx],
        }
        if self.with_masks:
            segms = parsed.segmentations[start:end]  # type: ignore[index]
            where = sample_name(image_id=self.ids[idx], source=self.image_path(idx))
            ann_ids = parsed.ann_ids[start:end]
            masks, pixels = _decode_masks(segms, height, width, ann_ids, where)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
            if not self._warned_empty and (pixels == 0).any():
                self._warned_empty = True
                logger.warning(
                    "%s: the segmentation of annotation id %d covers no pixel (a polygon "
                    "whose points are collinear or within a pixel), so its mask is empty "
                    "beside a box: Mask R-CNN learns that the box holds nothing. Said once "
                    "per dataset; detkit.data.audit() lists every such annotation",
                    where,
                    int(ann_ids[int(np.flatnonzero(pixels == 0)[0])]),
                )
        missing = np.isnan(area)
        if missing.any():  # no area in the file: the mask's pixel count, else the box's area
            rows = torch.from_numpy(missing)
            fill = masks_area(target["masks"][rows]) if self.with_masks else box_area(boxes[rows])
            area[missing] = fill.numpy()
        if parsed.keypoints is not None:
            target["keypoints"] = KeyPointsWithVisibility(
                torch.from_numpy(parsed.keypoints[start:end].copy()),
                canvas_size=(height, width),
                flip_indices=self.flip_indices,
            )
        target["area"] = torch.from_numpy(area)
        target["iscrowd"] = torch.from_numpy(parsed.iscrowd[start:end].copy())
        return target

    def __getitem__(self, idx: int) -> tuple[Any, Target]:
        idx = self._index(idx)
        image = tv_tensors.Image(self.load_image(idx))
        target = self.get_target(idx)
        return self.transformed(image, target, source=self.image_path(idx))


def _to_rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    """One RLE for a COCO segmentation, as ``COCO.annToRLE`` makes it."""
    if isinstance(segm, list):  # polygons (checked: each has >= 3 points)
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):  # uncompressed RLE, usual for crowd regions
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    problem = rle_string_problem(counts, (height, width))
    if problem:
        raise ValueError(problem)
    return {
        "size": [height, width],
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def _decode_masks(
    segms: list[Any], height: int, width: int, ann_ids: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``[N, H, W]`` uint8 masks, and each one's pixel count (from its RLE)."""
    if not segms:
        return np.zeros((0, height, width), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        # pycocotools trips numpy 2's __array__(copy=...) deprecation; harmless.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            rles = [_to_rle(segm, height, width) for segm in segms]
            decoded = mask_utils.decode(rles)  # [H, W, N], column-major
        except (TypeError, ValueError):
            for segm, ann_id in zip(segms, ann_ids.tolist()):  # find the culprit to name it
                try:
                    mask_utils.decode([_to_rle(segm, height, width)])
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        f"{where}: cannot read the segmentation of annotation id {ann_id}: {exc}"
                    ) from exc
            raise
        pixels = mask_utils.area(rles).astype(np.int64)
    return np.ascontiguousarray(decoded.transpose(2, 0, 1)), pixels
