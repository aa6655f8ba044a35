"""Synthetic Penn-Fudan-layout data, so that nothing in detkit needs a download to run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from detkit.ops import instance_ids

__all__ = ["write_synthetic_pennfudan"]

_MASK_MODES = ("L", "P", "I;16")


def _person(draw_image, draw_mask, *, x, y, height, width, color, instance_id, rng) -> None:
    """Draw a pedestrian-like figure (head, torso, two legs) with its top-left at (x, y)."""
    head = height * 0.16
    cx = x + width / 2
    draw = ((draw_image, tuple(color)), (draw_mask, instance_id))
    leg_top = y + head + height * 0.42
    leg_width = max(width * 0.28, 1.0)
    stride = rng.uniform(0.0, 0.12) * width
    shades = [tuple(int(c * 0.7) for c in color), tuple(int(c * 0.85) for c in color)]
    for canvas, fill in draw:
        legs = fill if canvas is draw_mask else shades[0]
        torso = fill if canvas is draw_mask else shades[1]
        canvas.ellipse([cx - head * 0.42, y, cx + head * 0.42, y + head], fill=fill)
        canvas.rounded_rectangle(
            [x + width * 0.05, y + head * 0.95, x + width * 0.95, leg_top + height * 0.04],
            radius=max(width * 0.15, 1),
            fill=torso,
        )
        canvas.rectangle([cx - leg_width - stride, leg_top, cx - 1 - stride, y + height], fill=legs)
        canvas.rectangle([cx + 1 + stride, leg_top, cx + leg_width + stride, y + height], fill=legs)


def write_synthetic_pennfudan(
    root: str | os.PathLike,
    num_images: int = 20,
    *,
    seed: int = 0,
    size_range: tuple[int, int] = (250, 1000),
    max_instances: int = 4,
    negative_fraction: float = 0.1,
    thin_fraction: float = 0.1,
    border_fraction: float = 0.2,
    mask_mode: str = "L",
    compress_level: int = 6,
) -> Path:
    """Write a synthetic dataset in the official Penn-Fudan layout and return its root.

    The layout is ``root/PNGImages/<name>.png`` with ``root/PedMasks/<name>_mask.png`` (an
    instance-id mask: 0 background, 1..N the pedestrians), names alternating between
    ``FudanPedNNNNN`` and ``PennPedNNNNN`` as in the real data. Images show person-like
    figures (head, torso, legs) of varied sizes and aspect ratios on a noisy background,
    so a detector can learn them. The same ``seed`` writes the same files.

    Some images have no instance at all (negative samples), some instances are cut by the
    image border, and some are one pixel thin (a single row or column), which exercises the
    edge cases of box derivation.

    Args:
        root: folder to write into (created if needed; existing files are overwritten).
        num_images: how many images to write.
        seed: seed of the random generator.
        size_range: ``(min, max)`` image side length in pixels; Penn-Fudan's images span
            about 250 to 1000 px. Use small values (e.g. ``(96, 160)``) for quick tests.
        max_instances: most pedestrians in one image.
        negative_fraction: probability that an image has no instance.
        thin_fraction: probability that an image also gets a one-pixel-thin instance.
        border_fraction: probability that a pedestrian is cut by the image border.
        mask_mode: PIL mode of the masks: ``"L"`` (8-bit), ``"P"`` (palette, as in the
            real data) or ``"I;16"`` (16-bit).
        compress_level: PNG compression level (0-9).

    Returns:
        ``Path(root)``.

    Raises:
        ValueError: for arguments out of range.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> root = write_synthetic_pennfudan(folder, num_images=3, size_range=(64, 96))
    >>> sorted(p.name for p in (root / "PedMasks").iterdir())
    ['FudanPed00000_mask.png', 'FudanPed00002_mask.png', 'PennPed00001_mask.png']
    """
    _check_arguments(
        num_images=num_images,
        size_range=size_range,
        max_instances=max_instances,
        fractions={
            "negative_fraction": negative_fraction,
            "thin_fraction": thin_fraction,
            "border_fraction": border_fraction,
        },
        mask_mode=mask_mode,
    )
    low, high = size_range
    root = Path(root)
    (root / "PNGImages").mkdir(parents=True, exist_ok=True)
    (root / "PedMasks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        width = int(rng.integers(low, high + 1))
        height = int(np.clip(width * rng.uniform(0.6, 1.4), low, high))
        image = _background(rng, width, height)
        mask = Image.new("L", (width, height), 0)
        draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)

        count = 0 if rng.random() < negative_fraction else int(rng.integers(1, max_instances + 1))
        for next_id in range(1, count + 1):
            x, y, person_h, person_w = _place_person(rng, width, height, border_fraction)
            color = rng.integers(0, 256, size=3)
            color[rng.integers(3)] = rng.integers(200, 256)  # keep figures saturated
            _person(
                draw_image,
                draw_mask,
                x=x,
                y=y,
                height=person_h,
                width=person_w,
                color=color,
                instance_id=next_id,
                rng=rng,
            )
        if count and rng.random() < thin_fraction:
            _thin_instance(rng, draw_image, draw_mask, width, height, instance_id=count + 1)

        name = f"{'FudanPed' if index % 2 == 0 else 'PennPed'}{index:05d}"
        image.save(root / "PNGImages" / f"{name}.png", compress_level=compress_level)
        _mask_image(_renumbered(mask), mask_mode).save(
            root / "PedMasks" / f"{name}_mask.png", compress_level=compress_level
        )
    return root


def _check_arguments(
    *,
    num_images: int,
    size_range: tuple[int, int],
    max_instances: int,
    fractions: dict[str, float],
    mask_mode: str,
) -> None:
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    low, high = size_range
    if not 16 <= low <= high:
        raise ValueError(f"size_range must be (min, max) with 16 <= min <= max, got {size_range}")
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1, got {max_instances}")
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if mask_mode not in _MASK_MODES:
        raise ValueError(f"mask_mode must be one of {_MASK_MODES}, got {mask_mode!r}")


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth background: a colour gradient plus mild noise, like an outdoor photograph."""
    base = rng.integers(60, 200, size=3)
    ramp = np.linspace(-40, 40, height)[:, None, None] * rng.uniform(-1, 1, size=3)
    noise = rng.normal(0, 5, size=(height, width, 3))
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _place_person(
    rng: np.random.Generator, width: int, height: int, border_fraction: float
) -> tuple[float, float, float, float]:
    """A pedestrian's ``(x, y, height, width)``: inside the image, or cut by its border."""
    person_h = float(rng.uniform(0.35, 0.9)) * height
    person_w = max(person_h * float(rng.uniform(0.28, 0.5)), 4.0)
    if rng.random() < border_fraction:
        # Cut by the left, right or bottom border.
        side = rng.integers(3)
        if side == 0:
            x = -person_w * 0.4
        elif side == 1:
            x = width - person_w * 0.6
        else:
            x = rng.uniform(0, max(width - person_w, 1))
        y = rng.uniform(0, height - person_h) if side < 2 else height - person_h * 0.7
    else:
        x = rng.uniform(0, max(width - person_w, 1))
        y = rng.uniform(0, max(height - person_h, 1))
    return x, y, person_h, person_w


def _thin_instance(
    rng: np.random.Generator,
    draw_image: ImageDraw.ImageDraw,
    draw_mask: ImageDraw.ImageDraw,
    width: int,
    height: int,
    *,
    instance_id: int,
) -> None:
    """A one-pixel-thin instance: a pole (one column) or a wire (one row)."""
    if rng.random() < 0.5:
        x0 = int(rng.integers(0, width))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
        draw_mask.line([x0, y0, x0, y1 + 1], fill=instance_id, width=1)
        draw_image.line([x0, y0, x0, y1 + 1], fill=(20, 20, 20), width=1)
    else:
        y0 = int(rng.integers(0, height))
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
        draw_mask.line([x0, y0, x1 + 1, y0], fill=instance_id, width=1)
        draw_image.line([x0, y0, x1 + 1, y0], fill=(20, 20, 20), width=1)


def _renumbered(mask: Image.Image) -> np.ndarray:
    """The instance ids of ``mask`` as 1..N: occlusion may hide an earlier figure completely."""
    ids_mask = np.asarray(mask)
    present = instance_ids(ids_mask)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.uint8)
    return lookup[ids_mask]


def _mask_image(ids_mask: np.ndarray, mode: str) -> Image.Image:
    if mode == "L":
        return Image.fromarray(ids_mask, "L")
    if mode == "P":
        image = Image.fromarray(ids_mask, "P")
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[1:] = np.random.default_rng(0).integers(64, 256, size=(255, 3))
        image.putpalette(palette.ravel().tolist())
        return image
    return Image.fromarray(ids_mask.astype(np.uint16))
