"""Drawing ground truth and predictions: boxes, masks, keypoints, labels and scores.

Built on :func:`torchvision.utils.draw_bounding_boxes`, :func:`~torchvision.utils.draw_segmentation_masks`
and :func:`~torchvision.utils.draw_keypoints`; every function returns a new uint8
``Tensor[3, H, W]`` and leaves its inputs untouched.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

from detkit.files import atomic_write

__all__ = [
    "COCO_PERSON_SKELETON",
    "draw_instances",
    "draw_prediction",
    "draw_target",
    "label_color",
    "make_grid",
    "save_image",
]

#: Limb connections of COCO's 17 person keypoints (0-based indices), for ``connectivity``.
COCO_PERSON_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip


def label_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour for a class label (golden-ratio hues).

    >>> label_color(1), label_color(1) == label_color(2)
    ((77, 129, 255), False)
    """
    hue = (int(label) * 0.6180339887498949) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue if label else 0.0, 0.7 if label else 0.0, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def _to_uint8_image(image: Any) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(
            f"image must be a PIL image or a Tensor[3, H, W] (or [1, H, W]), got {shape}"
        )
    image = image.detach().cpu()
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise TypeError(f"integer images must be uint8, got {image.dtype}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def draw_instances(
    image: Any,
    boxes: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    scores: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    keypoints: torch.Tensor | None = None,
    label_names: Sequence[str] | Mapping[int, str] | None = None,
    connectivity: Sequence[tuple[int, int]] | None = None,
    mask_alpha: float = 0.5,
    box_width: int = 2,
    keypoint_radius: int = 2,
) -> torch.Tensor:
    """Draw instances on an image, coloured by class.

    Args:
        image: PIL image, uint8 ``Tensor[3, H, W]`` or float ``Tensor[3, H, W]`` in 0..1.
        boxes: ``Tensor[N, 4]`` XYXY.
        labels: int64 ``Tensor[N]``; colours and captions come from it.
        scores: optional ``Tensor[N]``, appended to captions as ``0.87``.
        masks: optional binary ``Tensor[N, H, W]`` (any dtype; non-zero is inside).
        keypoints: optional ``Tensor[N, K, 3]`` (x, y, visibility); only points with
            visibility > 0 are drawn.
        label_names: names for captions, indexed by label (a list whose item 0 is the
            background, or a mapping); labels without a name are shown as numbers.
        connectivity: keypoint pairs to join with lines (e.g. :data:`COCO_PERSON_SKELETON`).
        mask_alpha: opacity of the masks.
        box_width: box outline width in pixels.
        keypoint_radius: radius of keypoint dots.

    Returns:
        uint8 ``Tensor[3, H, W]``.

    >>> canvas = draw_instances(torch.zeros(3, 20, 20), torch.tensor([[2.0, 2.0, 12.0, 15.0]]),
    ...                         torch.tensor([1]), label_names=["background", "person"])
    >>> canvas.dtype, tuple(canvas.shape), int(canvas[:, 2, 5].sum()) > 0
    (torch.uint8, (3, 20, 20), True)
    """
    canvas = _to_uint8_image(image)
    boxes = boxes.detach().cpu().reshape(-1, 4).to(torch.float32)
    num = boxes.shape[0]
    labels = (
        torch.ones(num, dtype=torch.int64) if labels is None else labels.detach().cpu().reshape(-1)
    )
    if labels.shape[0] != num:
        raise ValueError(f"labels has {labels.shape[0]} entries for {num} boxes")
    if num == 0:
        return canvas.clone()
    colors = [label_color(int(label)) for label in labels]
    if masks is not None:
        masks = masks.detach().cpu()
        if masks.ndim == 4:  # Mask R-CNN's [N, 1, H, W]
            masks = masks[:, 0]
        if masks.shape[0] != num or tuple(masks.shape[1:]) != tuple(canvas.shape[1:]):
            raise ValueError(
                f"masks of shape {tuple(masks.shape)} do not match {num} boxes on an image of "
                f"size {tuple(canvas.shape[1:])}"
            )
        canvas = draw_segmentation_masks(canvas, masks != 0, alpha=mask_alpha, colors=colors)
    captions = []
    for i, label in enumerate(labels.tolist()):
        if isinstance(label_names, Mapping):
            name = label_names.get(label, str(label))
        elif label_names is not None and 0 <= label < len(label_names):
            name = label_names[label]
        else:
            name = str(label)
        captions.append(name if scores is None else f"{name} {float(scores[i]):.2f}")
    canvas = draw_bounding_boxes(canvas, boxes, labels=captions, colors=colors, width=box_width)
    if keypoints is not None:
        keypoints = keypoints.detach().cpu().to(torch.float32)
        if keypoints.ndim != 3 or keypoints.shape[0] != num or keypoints.shape[2] < 2:
            raise ValueError(
                f"keypoints must be a Tensor[{num}, K, 3], got {tuple(keypoints.shape)}"
            )
        visible = keypoints[..., 2] > 0 if keypoints.shape[2] > 2 else None
        # draw_keypoints takes one colour a call: one call per class, not per instance.
        for label in labels.unique().tolist():
            chosen = labels == label
            canvas = draw_keypoints(
                canvas,
                keypoints[chosen, :, :2],
                connectivity=list(connectivity or []) or None,
                colors=label_color(label),
                radius=keypoint_radius,
                width=max(box_width - 1, 1),
                visibility=None if visible is None else visible[chosen],
            )
    return canvas


def draw_target(image: Any, target: Mapping[str, Any], **kwargs: Any) -> torch.Tensor:
    """Draw a ground-truth target (boxes, labels, masks, keypoints) on its image.

    Args:
        image: the sample's image (PIL or ``Tensor[3, H, W]``).
        target: a target in the contract of :mod:`detkit.types`.
        **kwargs: passed to :func:`draw_instances` (``label_names``, ``connectivity``, ...).

    >>> target = {"boxes": torch.tensor([[1.0, 1.0, 6.0, 8.0]]), "labels": torch.tensor([2])}
    >>> draw_target(torch.zeros(3, 10, 10), target).shape
    torch.Size([3, 10, 10])
    """
    return draw_instances(
        image,
        target["boxes"],
        target.get("labels"),
        masks=target.get("masks"),
        keypoints=target.get("keypoints"),
        **kwargs,
    )


def draw_prediction(
    image: Any,
    prediction: Mapping[str, Any],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    **kwargs: Any,
) -> torch.Tensor:
    """Draw a model's prediction for one image, keeping detections above a score.

    Args:
        image: the image the model saw (PIL or ``Tensor[3, H, W]``).
        prediction: one element of a torchvision detection model's eval output
            (``boxes``, ``labels``, ``scores``; optional ``masks`` ``[N, 1, H, W]``
            probabilities and ``keypoints``).
        score_threshold: detections scoring below it are not drawn.
        mask_threshold: mask probabilities above it count as inside.
        **kwargs: passed to :func:`draw_instances`.

    >>> prediction = {"boxes": torch.tensor([[1.0, 1.0, 6.0, 8.0], [0.0, 0.0, 3.0, 3.0]]),
    ...               "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.1])}
    >>> draw_prediction(torch.zeros(3, 10, 10), prediction, score_threshold=0.5).shape
    torch.Size([3, 10, 10])
    """
    scores = prediction["scores"].detach().cpu()
    keep = scores >= score_threshold
    masks = prediction.get("masks")
    if masks is not None:
        masks = masks.detach().cpu()[keep] > mask_threshold
    keypoints = prediction.get("keypoints")
    if keypoints is not None:
        keypoints = keypoints.detach().cpu()[keep]
    return draw_instances(
        image,
        prediction["boxes"].detach().cpu()[keep],
        prediction["labels"].detach().cpu()[keep],
        scores=scores[keep],
        masks=masks,
        keypoints=keypoints,
        **kwargs,
    )


def make_grid(images: Sequence[torch.Tensor], *, ncols: int = 4, padding: int = 4) -> torch.Tensor:
    """Tile images of different sizes into one uint8 ``Tensor[3, H, W]`` (white gaps).

    Each cell is as large as the largest image; smaller images sit at its top-left.

    >>> make_grid([torch.zeros(3, 4, 6, dtype=torch.uint8), torch.zeros(3, 5, 2, dtype=torch.uint8)],
    ...           ncols=2, padding=1).shape
    torch.Size([3, 7, 15])
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    tiles = [_to_uint8_image(image) for image in images]
    cell_h = max(t.shape[1] for t in tiles)
    cell_w = max(t.shape[2] for t in tiles)
    cols = min(ncols, len(tiles))
    rows = -(-len(tiles) // cols)
    grid = torch.full(
        (3, rows * cell_h + (rows + 1) * padding, cols * cell_w + (cols + 1) * padding),
        255,
        dtype=torch.uint8,
    )
    for i, tile in enumerate(tiles):
        top = padding + (i // cols) * (cell_h + padding)
        left = padding + (i % cols) * (cell_w + padding)
        grid[:, top : top + tile.shape[1], left : left + tile.shape[2]] = tile
    return grid


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a ``Tensor[3, H, W]`` (uint8, or float in 0..1) as an image file, atomically.

    The format follows the suffix (``.png``, ``.jpg`` ...). The file is written with
    :func:`detkit.files.atomic_write`: a crash or a full disk never leaves a truncated picture,
    and the error names ``path`` and the system's reason.

    Raises:
        ValueError: for a suffix that names no image format PIL can write.
        OSError: when the file cannot be written (a full disk, no permission).

    >>> import tempfile
    >>> save_image(torch.zeros(3, 4, 4), Path(tempfile.mkdtemp()) / "a.png").suffix
    '.png'
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(
            f"cannot save '{path}': its suffix {path.suffix!r} names no image format PIL can "
            "write (use .png or .jpg)"
        )
    picture = Image.fromarray(_to_uint8_image(image).permute(1, 2, 0).contiguous().numpy())
    with atomic_write(path) as file:
        picture.save(file, format=image_format)
    return path
