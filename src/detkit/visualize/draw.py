"""Drawing ground truth and predictions: boxes, masks, keypoints, labels and scores.

Built on :func:`torchvision.utils.draw_bounding_boxes`,
:func:`~torchvision.utils.draw_segmentation_masks` and
:func:`~torchvision.utils.draw_keypoints`; every function returns a new uint8
``Tensor[3, H, W]`` and leaves its inputs untouched. Images and targets may be plain tensors
or :mod:`torchvision.tv_tensors` (boxes in any axis-aligned format are read as such).

Each instance is drawn in its class's colour (:func:`class_colors`): its mask, box outline,
keypoints and caption tab all share it, and a class keeps its colour from one picture to the
next. Captions (class name and score) are written by :func:`draw_captions`: black or white
text on the tab, whichever contrasts more, at a size that grows with the image.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

from detkit.files import atomic_write
from detkit.tv_tensors import plain, to_xyxy
from detkit.visualize._inputs import (
    binary_masks,
    check_canvas,
    drawing_boxes,
    mask_probabilities,
    uint8_image,
)
from detkit.visualize.style import class_colors, draw_captions

__all__ = [
    "COCO_PERSON_SKELETON",
    "draw_instances",
    "draw_prediction",
    "draw_target",
    "make_grid",
    "save_image",
]

#: Limb connections of COCO's 17 person keypoints (0-based indices), for ``connectivity``.
COCO_PERSON_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip


def _caption_texts(
    labels: list[int],
    scores: torch.Tensor | None,
    label_names: Sequence[str] | Mapping[int, str] | None,
) -> list[str]:
    captions = []
    unnamed = set()
    for i, label in enumerate(labels):
        if isinstance(label_names, Mapping):
            name = label_names.get(label, str(label))
        elif label_names is not None and 0 <= label < len(label_names):
            name = label_names[label]
        else:
            name = str(label)
            unnamed.add(label)
        captions.append(name if scores is None else f"{name} {float(scores[i]):.2f}")
    if label_names is not None and not isinstance(label_names, Mapping) and unnamed:
        # A list without its background item names every label by the next class: the
        # labels past its end are what shows it.
        warnings.warn(
            f"label_names has {len(label_names)} names, none for labels "
            f"{sorted(unnamed)} (shown as numbers): a list is indexed by label, item 0 "
            "being the background; without that item every caption names the next class",
            stacklevel=3,
        )
    return captions


def draw_instances(
    image: Any,
    boxes: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    scores: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    keypoints: torch.Tensor | None = None,
    label_names: Sequence[str] | Mapping[int, str] | None = None,
    colors: Mapping[int, str | tuple[int, int, int]]
    | Callable[[int], str | tuple[int, int, int]]
    | str
    | tuple[int, int, int]
    | None = None,
    font_size: int | None = None,
    font: str | os.PathLike | None = None,
    captions: bool = True,
    connectivity: Sequence[tuple[int, int]] | None = None,
    mask_alpha: float = 0.5,
    box_width: int = 2,
    keypoint_radius: int = 2,
) -> torch.Tensor:
    """Draw instances on an image, coloured by class, with legible captions.

    Args:
        image: PIL image, uint8 ``Tensor[3, H, W]`` or float ``Tensor[3, H, W]`` in 0..1
            (a :class:`~torchvision.tv_tensors.Image` too; ``[1, H, W]`` is grey). A float
            image in 0..255, or normalised with a mean and standard deviation, and a
            16-bit or float PIL image are refused rather than clipped.
        boxes: ``Tensor[N, 4]`` XYXY in pixels (a
            :class:`~torchvision.tv_tensors.BoundingBoxes` in any axis-aligned format,
            whose ``canvas_size`` must be the image's). Boxes that all lie within
            ``[0, 1]`` (normalized?) or wholly outside the image are drawn with a
            warning.
        labels: int64 ``Tensor[N]``; colours and captions come from it (all ``1`` when
            ``None``).
        scores: optional ``Tensor[N]``, appended to captions as ``0.87``.
        masks: optional binary ``Tensor[N, H, W]`` or ``[N, 1, H, W]`` (any dtype;
            non-zero is inside; float masks hold only 0 and 1: probabilities go to
            :func:`draw_prediction`).
        keypoints: optional ``Tensor[N, K, 3]`` (x, y, visibility); only points with
            visibility > 0 are drawn.
        label_names: names for captions, indexed by label (a list whose item 0 is the
            background, or a mapping); labels without a name are shown as numbers.
        colors: each class's colour, for its masks, boxes, keypoints and caption tabs: a
            mapping from label to colour (labels it lacks keep :func:`label_color`), a
            function of the label, or one colour for all (see :func:`class_colors`). A
            colour is a name (``"red"``, ``"#ff8800"``) or an ``(R, G, B)`` triple.
        font_size: caption height in pixels; by default 1/40 of the image's shorter
            side, at least 11.
        font: a TrueType font file for the captions (see :func:`caption_font`).
        captions: ``False`` to draw no captions.
        connectivity: keypoint pairs to join with lines (e.g. :data:`COCO_PERSON_SKELETON`).
        mask_alpha: opacity of the masks.
        box_width: box outline width in pixels.
        keypoint_radius: radius of keypoint dots.

    Returns:
        a new uint8 ``Tensor[3, H, W]``.

    Raises:
        TypeError: for an image that is not a PIL image or a ``[3, H, W]`` tensor.
        ValueError: when labels, masks or keypoints do not match the boxes or the image
            (another ``canvas_size``), for a float image outside 0..1, non-finite boxes,
            soft masks, or a colour that is not one.

    >>> canvas = draw_instances(
    ...     torch.zeros(3, 40, 40),
    ...     torch.tensor([[2.0, 16.0, 30.0, 38.0]]),
    ...     torch.tensor([1]),
    ...     label_names=["background", "person"],
    ...     colors={1: "orange"},
    ... )
    >>> canvas.dtype, tuple(canvas.shape), canvas[:, 30, 2].tolist()
    (torch.uint8, (3, 40, 40), [255, 165, 0])
    """
    canvas = uint8_image(image)
    size = (int(canvas.shape[1]), int(canvas.shape[2]))
    boxes = drawing_boxes(boxes, size)
    num = boxes.shape[0]
    labels = (
        torch.ones(num, dtype=torch.int64)
        if labels is None
        else plain(labels).detach().cpu().reshape(-1)
    )
    if labels.shape[0] != num:
        raise ValueError(f"labels has {labels.shape[0]} entries for {num} boxes")
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise ValueError(f"labels must be whole numbers (class ids), got {labels.tolist()[:5]}")
    if scores is not None:
        scores = plain(scores).detach().cpu().reshape(-1)
        if scores.shape[0] != num:
            raise ValueError(f"scores has {scores.shape[0]} entries for {num} boxes")
    if keypoints is not None:
        check_canvas(keypoints, "keypoints", size)
        keypoints = plain(keypoints).detach().cpu().to(torch.float32)
        if keypoints.ndim != 3 or keypoints.shape[0] != num or keypoints.shape[2] < 2:
            raise ValueError(
                f"keypoints must be a Tensor[{num}, K, 3], got {tuple(keypoints.shape)}"
            )
    if masks is not None:
        masks = binary_masks(masks, num, size)
    if num == 0:
        return canvas.clone()
    label_list = [int(label) for label in labels.tolist()]
    instance_colors = class_colors(label_list, colors)
    if masks is not None:
        canvas = draw_segmentation_masks(canvas, masks, alpha=mask_alpha, colors=instance_colors)
    canvas = draw_bounding_boxes(canvas, boxes, colors=instance_colors, width=box_width)
    if keypoints is not None:
        visible = keypoints[..., 2] > 0 if keypoints.shape[2] > 2 else None
        # draw_keypoints takes one colour a call: one call per colour, not per instance.
        for color in set(instance_colors):
            chosen = torch.tensor([c == color for c in instance_colors])
            canvas = draw_keypoints(
                canvas,
                keypoints[chosen, :, :2],
                connectivity=list(connectivity or []) or None,
                colors=color,
                radius=keypoint_radius,
                width=max(box_width - 1, 1),
                visibility=None if visible is None else visible[chosen],
            )
    if captions:
        texts = _caption_texts(label_list, scores, label_names)
        canvas = draw_captions(
            canvas, boxes, texts, instance_colors, font_size=font_size, font=font
        )
    return canvas


def draw_target(image: Any, target: Mapping[str, Any], **kwargs: Any) -> torch.Tensor:
    """Draw a ground-truth target (boxes, labels, masks, keypoints) on its image.

    Args:
        image: the sample's image (PIL or ``Tensor[3, H, W]``, a tv_tensor too).
        target: a target in the contract of :mod:`detkit.types`.
        **kwargs: passed to :func:`draw_instances` (``label_names``, ``colors``,
            ``font_size``, ``connectivity``, ...).

    >>> target = {"boxes": torch.tensor([[1.0, 1.0, 6.0, 8.0]]),
    ...           "labels": torch.tensor([2])}
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

    Captions show each detection's class and score (``person 0.87``).

    Args:
        image: the image the model saw (PIL or ``Tensor[3, H, W]``).
        prediction: one element of a torchvision detection model's eval output
            (``boxes``, ``labels``, ``scores``; optional ``masks`` ``[N, 1, H, W]``
            probabilities and ``keypoints``).
        score_threshold: detections scoring below it are not drawn.
        mask_threshold: mask probabilities above it count as inside.
        **kwargs: passed to :func:`draw_instances` (``label_names``, ``colors``,
            ``font_size``, ...).

    Raises:
        ValueError: for a prediction without ``boxes``, ``labels`` or ``scores``, scores
            that do not match the boxes, float masks outside 0..1 (logits), and what
            :func:`draw_instances` refuses.

    >>> prediction = {
    ...     "boxes": torch.tensor([[1.0, 1.0, 6.0, 8.0], [0.0, 0.0, 3.0, 3.0]]),
    ...     "labels": torch.tensor([1, 1]),
    ...     "scores": torch.tensor([0.9, 0.1]),
    ... }
    >>> draw_prediction(torch.zeros(3, 10, 10), prediction).shape
    torch.Size([3, 10, 10])
    """
    missing = [key for key in ("boxes", "labels", "scores") if key not in prediction]
    if missing:
        raise ValueError(
            f"prediction has no {', '.join(map(repr, missing))} (keys: "
            f"{', '.join(map(str, prediction))}): draw_prediction keeps detections by score; "
            "draw instances without scores with draw_target or draw_instances"
        )
    scores = plain(prediction["scores"]).detach().cpu().reshape(-1)
    boxes = to_xyxy(prediction["boxes"])
    kept = plain(boxes).detach().cpu().reshape(-1, 4)
    if scores.shape[0] != kept.shape[0]:
        raise ValueError(
            f"prediction['scores'] has {scores.shape[0]} entries for {kept.shape[0]} boxes"
        )
    keep = scores >= score_threshold
    masks = prediction.get("masks")
    if masks is not None:
        masks = mask_probabilities(masks)[keep] > mask_threshold
    keypoints = prediction.get("keypoints")
    if keypoints is not None:
        keypoints = plain(keypoints).detach().cpu()[keep]
    kept = kept[keep]
    if isinstance(boxes, tv_tensors.BoundingBoxes):  # its canvas_size is checked
        kept = tv_tensors.wrap(kept, like=boxes)
    return draw_instances(
        image,
        kept,
        plain(prediction["labels"]).detach().cpu()[keep],
        scores=scores[keep],
        masks=masks,
        keypoints=keypoints,
        **kwargs,
    )


def make_grid(images: Sequence[torch.Tensor], *, ncols: int = 4, padding: int = 4) -> torch.Tensor:
    """Tile images of different sizes into one uint8 ``Tensor[3, H, W]`` (white gaps).

    Each cell is as large as the largest image; smaller images sit at its top-left.

    >>> tiles = [torch.zeros(3, 4, 6), torch.zeros(3, 5, 2)]
    >>> make_grid(tiles, ncols=2, padding=1).shape
    torch.Size([3, 7, 15])
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    tiles = [uint8_image(image, f"images[{i}]") for i, image in enumerate(images)]
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
        ValueError: for a suffix that names no image format PIL can write, or a float
            image outside 0..1 (0..255, normalised).
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
    picture = Image.fromarray(uint8_image(image).permute(1, 2, 0).contiguous().numpy())
    with atomic_write(path) as file:
        picture.save(file, format=image_format)
    return path
