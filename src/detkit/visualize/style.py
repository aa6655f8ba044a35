"""Colours and captions: what makes a picture of instances readable at a glance.

Each class has one colour (:func:`label_color` by default, or the caller's choice through
:func:`class_colors`) that its masks, boxes, keypoints and caption tabs all share, in every
picture. A caption (class name, score) sits on a tab of that colour, in black or white,
whichever contrasts more with the tab (WCAG relative luminance), at a size that grows with
the image; :func:`caption_font` says which font is used.
"""

from __future__ import annotations

import colorsys
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageColor, ImageDraw, ImageFont

from detkit.tv_tensors import plain, to_xyxy

__all__ = ["caption_font", "class_colors", "draw_captions", "label_color"]

logger = logging.getLogger(__name__)

# The font captions use when none is given: DejaVu Sans, which every matplotlib ships.
_MATPLOTLIB_FONT = ("mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
_bitmap_font_noted = False


def label_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour for a class label (golden-ratio hues).

    >>> label_color(1), label_color(1) == label_color(2)
    ((77, 129, 255), False)
    """
    hue = (int(label) * 0.6180339887498949) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue if label else 0.0, 0.7 if label else 0.0, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def _rgb(color: Any, label: int | None = None) -> tuple[int, int, int]:
    """``color`` (a Pillow colour name or ``#hex`` string, or an RGB triple) as RGB."""
    whose = "" if label is None else f" for label {label}"
    if isinstance(color, str):
        try:
            return ImageColor.getrgb(color)[:3]
        except ValueError as exc:
            raise ValueError(f"colors: unknown colour {color!r}{whose}") from exc
    if (
        isinstance(color, Sequence)
        and len(color) == 3
        and all(isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in color)
    ):
        return int(color[0]), int(color[1]), int(color[2])
    raise ValueError(
        f"colors: {color!r}{whose} is not a colour: give a name such as 'red' or "
        "'#ff8800', or an (R, G, B) triple of ints in 0..255"
    )


def class_colors(
    labels: Sequence[int] | torch.Tensor,
    colors: Mapping[int, str | tuple[int, int, int]]
    | Callable[[int], str | tuple[int, int, int]]
    | str
    | tuple[int, int, int]
    | None = None,
) -> list[tuple[int, int, int]]:
    """The RGB colour of each instance, from its class label: one colour per class.

    Args:
        labels: each instance's class label, ``Tensor[N]`` or a sequence of ints.
        colors: ``None`` for :func:`label_color`; a mapping from label to colour (labels
            it lacks keep :func:`label_color`); a function of the label; or one colour
            for all. A colour is a name (``"red"``, ``"#ff8800"``) or an ``(R, G, B)``
            triple of ints in 0..255.

    Returns:
        ``N`` ``(R, G, B)`` tuples.

    Raises:
        ValueError: for a colour that is not one, naming its label.

    >>> class_colors([1, 2, 1], {2: "red"})
    [(77, 129, 255), (255, 0, 0), (77, 129, 255)]
    """
    if isinstance(labels, torch.Tensor):
        labels = plain(labels).reshape(-1).tolist()
    labels = [int(label) for label in labels]
    chosen = {}
    for label in set(labels):
        if colors is None:
            color: Any = label_color(label)
        elif isinstance(colors, Mapping):
            color = colors.get(label, label_color(label))
        elif callable(colors):
            color = colors(label)
        else:
            color = colors
        chosen[label] = _rgb(color, label)
    return [chosen[label] for label in labels]


def caption_font(
    size: int, font: str | os.PathLike | None = None
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The font captions are drawn in, ``size`` pixels high.

    The first that is available: the TrueType or OpenType file ``font``; DejaVu Sans, the
    font matplotlib ships, when matplotlib is installed (``pip install
    "torch-detkit[plot]"``); Pillow's own scalable font (Pillow >= 10.1 built with
    FreeType); else Pillow's small bitmap font, which has one size only (a logged note
    says so, once).

    Args:
        size: the font size in pixels (>= 1).
        font: a font file (or a name Pillow finds in the system's font folders).

    Raises:
        ValueError: for a size below 1.
        OSError: when ``font`` cannot be read as a font, naming it.

    >>> caption_font(14).size
    14
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"font_size must be an int >= 1, got {size!r}")
    size = int(size)
    if font is not None:
        try:
            return ImageFont.truetype(os.fspath(font), size)
        except OSError as exc:
            raise OSError(f"font: cannot read '{os.fspath(font)}' as a font: {exc}") from exc
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent.joinpath(*_MATPLOTLIB_FONT)
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    try:
        default = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one default font, without a size
        default = ImageFont.load_default()
    if not isinstance(default, ImageFont.FreeTypeFont):
        global _bitmap_font_noted
        if not _bitmap_font_noted:
            _bitmap_font_noted = True
            logger.info(
                "captions use Pillow's bitmap font, whose size is fixed: install "
                'matplotlib (pip install "torch-detkit[plot]") or pass font= (a .ttf '
                "file) for font_size to apply"
            )
    return default


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background`` (WCAG 2 luminance)."""
    linear = [
        c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in background
    ]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Contrast ratios (L1 + 0.05) / (L2 + 0.05) with black (L = 0) and with white (L = 1).
    on_black, on_white = (luminance + 0.05) / 0.05, 1.05 / (luminance + 0.05)
    return (0, 0, 0) if on_black >= on_white else (255, 255, 255)


def _default_font_size(height: int, width: int) -> int:
    """Caption size in pixels for an image: 1/40 of its shorter side, at least 11."""
    return max(11, round(min(height, width) / 40))


def _place_tab(
    x0: int,
    y0: int,
    y1: int,
    tab_w: int,
    tab_h: int,
    size: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int]:
    """Where a ``tab_w x tab_h`` tab for the box ``x0, y0 .. y1`` goes: ``(x, y, x1, y1)``.

    Above the box, else inside its top edge, else lower inside it, the first place that
    overlaps no ``taken`` tab; the place above (or inside) when every place overlaps one.
    """
    height, width = size
    x = min(max(x0, 0), max(width - tab_w, 0))
    lowest = max(height - tab_h, 0)
    inside = min(max(y0, 0), lowest)
    tries = [y0 - tab_h] if y0 >= tab_h else []
    tries += range(inside, min(max(y1 - tab_h, inside), lowest) + 1, tab_h)
    for y in tries:
        free = all(
            x >= right or y >= bottom or x + tab_w <= left or y + tab_h <= top
            for left, top, right, bottom in taken
        )
        if free:
            return x, y, x + tab_w, y + tab_h
    return x, tries[0], x + tab_w, tries[0] + tab_h


def draw_captions(
    image: torch.Tensor,
    boxes: torch.Tensor,
    texts: Sequence[str],
    colors: Sequence[str | tuple[int, int, int]],
    *,
    font_size: int | None = None,
    font: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Write each text on a tab of its colour at the top-left corner of its box.

    A tab sits just above its box, or inside the box's top edge when there is no room
    above or another tab is there already; further down inside the box while it overlaps
    another tab; shifted left when it would leave the picture. Earlier texts are placed
    first and drawn on top (a prediction's best-scoring detection comes first). Text is
    black or white, whichever contrasts more with the tab.

    Args:
        image: uint8 ``Tensor[3, H, W]``.
        boxes: ``Tensor[N, 4]`` XYXY (a :class:`~torchvision.tv_tensors.BoundingBoxes`
            in any axis-aligned format).
        texts: ``N`` captions.
        colors: ``N`` tab colours (names or ``(R, G, B)`` triples).
        font_size: text height in pixels; by default 1/40 of the image's shorter side,
            at least 11.
        font: a TrueType font file (see :func:`caption_font`).

    Returns:
        a new uint8 ``Tensor[3, H, W]``.

    Raises:
        ValueError: when ``texts`` or ``colors`` do not match the boxes.

    >>> canvas = draw_captions(torch.zeros(3, 40, 60, dtype=torch.uint8),
    ...                        torch.tensor([[10.0, 20.0, 50.0, 38.0]]),
    ...                        ["cat"], ["yellow"])
    >>> canvas[:, 19, 10].tolist()  # the tab, just above the box
    [255, 255, 0]
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.dtype != torch.uint8:
        raise TypeError("image must be a uint8 Tensor[3, H, W]")
    boxes = plain(to_xyxy(boxes)).detach().cpu().reshape(-1, 4)
    if len(texts) != len(boxes) or len(colors) != len(boxes):
        raise ValueError(
            f"{len(boxes)} boxes need as many texts and colors, got {len(texts)} texts "
            f"and {len(colors)} colors"
        )
    height, width = int(image.shape[1]), int(image.shape[2])
    if font_size is None:
        font_size = _default_font_size(height, width)
    pen_font = caption_font(font_size, font)
    picture = Image.fromarray(plain(image).detach().cpu().permute(1, 2, 0).numpy().copy())
    pen = ImageDraw.Draw(picture)
    # One height for every tab (from the tallest and deepest letters), so that they line up.
    # Boxes of text drawn at (0, 0) are whole pixels: int() only narrows Pillow's float type.
    _, top, _, bottom = (int(v) for v in pen.textbbox((0, 0), "Ay" + "".join(texts), font=pen_font))
    pad = max(1, (bottom - top) // 5)
    tab_h = bottom - top + 2 * pad
    placed: list[tuple[int, int, int, int]] = []
    for (x0, y0, _, y1), text in zip(boxes.floor().int().tolist(), texts):
        left, _, right, _ = pen.textbbox((0, 0), text, font=pen_font)
        tab_w = int(right - left) + 2 * pad
        placed.append(_place_tab(x0, y0, y1, tab_w, tab_h, (height, width), placed))
    for (x, y, x1, y1), text, color in reversed(list(zip(placed, texts, colors))):
        rgb = _rgb(color)
        left = pen.textbbox((0, 0), text, font=pen_font)[0]
        pen.rectangle((x, y, x1 - 1, y1 - 1), fill=rgb)
        pen.text((x + pad - left, y + pad - top), text, fill=_text_color(rgb), font=pen_font)
    return torch.from_numpy(np.array(picture)).permute(2, 0, 1).contiguous()
