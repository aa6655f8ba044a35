"""Draw the figure of the "Transforms and keypoints" guide: a sample before and after a flip.

Builds a synthetic person (mask, box and the 17 COCO keypoints, left arm raised) with PIL,
flips it with ``RandomHorizontalFlip(p=1.0, flip_indices=COCO_PERSON_FLIP_INDICES)`` and
draws both with ``torchvision.utils``: the person's left keypoints in blue, right ones in
orange, both wrists labelled. After the flip the raised arm is on the other side of the
image and, as in a photograph of the mirrored scene, it is now the person's right arm: its
wrist carries the right wrist's label and colour.

Run from the repository root: ``python docs/guides/make_transform_figure.py``; it writes
``docs/guides/_images/transforms_flip.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

from detkit.data.transforms import (
    COCO_PERSON_FLIP_INDICES,
    COCO_PERSON_KEYPOINT_NAMES,
    RandomHorizontalFlip,
)
from detkit.ops import masks_area, masks_to_boxes

SCALE = 1.5
WIDTH, HEIGHT = int(300 * SCALE), int(240 * SCALE)
CAPTION = 22  # pixels of caption under each panel
LEFT, RIGHT = (30, 80, 255), (240, 120, 0)
OUTPUT = Path(__file__).resolve().parent / "_images" / "transforms_flip.png"

# x, y of each COCO keypoint (the person faces the camera: their left is the image's right).
POSE = {
    "nose": (120, 52),
    "left_eye": (126, 46),
    "right_eye": (114, 46),
    "left_ear": (133, 50),
    "right_ear": (107, 50),
    "left_shoulder": (146, 80),
    "right_shoulder": (94, 80),
    "left_elbow": (170, 56),
    "right_elbow": (86, 118),
    "left_wrist": (184, 24),
    "right_wrist": (82, 152),
    "left_hip": (136, 148),
    "right_hip": (104, 148),
    "left_knee": (142, 188),
    "right_knee": (98, 188),
    "left_ankle": (146, 226),
    "right_ankle": (94, 226),
}
LIMBS = [
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
]


def at(name: str) -> tuple[float, float]:
    """Where keypoint ``name`` is on the canvas."""
    x, y = POSE[name]
    return x * SCALE, y * SCALE


def make_sample() -> tuple[torch.Tensor, dict]:
    """A synthetic photograph of one person, with its full detkit target."""
    rows = np.linspace(0, 1, HEIGHT)[:, None, None]
    sky, grass = np.array([170, 200, 235]), np.array([120, 160, 110])
    pixels = (sky * (1 - rows) + grass * rows).repeat(WIDTH, axis=1).astype(np.uint8)
    picture = Image.fromarray(pixels, "RGB")
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    for canvas, fill in ((ImageDraw.Draw(picture), (70, 60, 150)), (ImageDraw.Draw(mask), 1)):
        canvas.polygon(
            [at(k) for k in ("left_shoulder", "left_hip", "right_hip", "right_shoulder")],
            fill=fill,
        )
        for a, b in LIMBS:
            canvas.line([at(a), at(b)], fill=fill, width=int(12 * SCALE))
        x, y = at("nose")
        r = 18 * SCALE
        canvas.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    image = torch.from_numpy(np.array(picture)).permute(2, 0, 1)
    masks = torch.from_numpy(np.array(mask))[None]
    keypoints = torch.tensor(
        [[[*at(name), 2.0] for name in COCO_PERSON_KEYPOINT_NAMES]], dtype=torch.float32
    )
    target = {
        "boxes": masks_to_boxes(masks),
        "labels": torch.tensor([1]),
        "masks": masks,
        "keypoints": keypoints,
        "area": masks_area(masks),
        "iscrowd": torch.tensor([0]),
        "image_id": 0,
    }
    return image, target


def label(pen: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour) -> None:
    """Text on a white card, readable over any background."""
    left, top, right, bottom = pen.textbbox(xy, text)
    pen.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=(255, 255, 255))
    pen.text(xy, text, fill=colour)


def draw(image: torch.Tensor, target: dict, caption: str) -> Image.Image:
    """The sample with its mask, box and keypoints (left blue, right orange)."""
    canvas = draw_segmentation_masks(image, target["masks"].bool(), alpha=0.3, colors="yellow")
    canvas = draw_bounding_boxes(canvas, target["boxes"], colors="red", width=2)
    names = COCO_PERSON_KEYPOINT_NAMES
    for side, colour in (("left", LEFT), ("right", RIGHT)):
        index = [k for k, name in enumerate(names) if name.startswith(side)]
        canvas = draw_keypoints(canvas, target["keypoints"][:, index, :2], colors=colour, radius=5)
    panel = Image.new("RGB", (WIDTH, HEIGHT + CAPTION), (255, 255, 255))
    panel.paste(Image.fromarray(canvas.permute(1, 2, 0).numpy()), (0, 0))
    pen = ImageDraw.Draw(panel)
    for name, colour in (("left_wrist", LEFT), ("right_wrist", RIGHT)):
        x, y, _ = target["keypoints"][0, names.index(name)].tolist()
        text = name.replace("_", " ")
        width = pen.textlength(text)
        # Labels go on the side facing away from the body.
        x = x + 9 if x > WIDTH / 2 else x - 9 - width
        label(pen, (min(max(x, 2), WIDTH - width - 2), y - 6), text, colour)
    pen.text((4, HEIGHT + 5), caption, fill=(0, 0, 0))
    return panel


def main() -> None:
    image, target = make_sample()
    flip = RandomHorizontalFlip(p=1.0, flip_indices=COCO_PERSON_FLIP_INDICES)
    flipped_image, flipped = flip(image, target)
    panels = [
        draw(image, target, "before (blue: the person's left, orange: their right)"),
        draw(flipped_image, flipped, "RandomHorizontalFlip(flip_indices=COCO_PERSON_FLIP_INDICES)"),
    ]
    figure = Image.new("RGB", (2 * WIDTH + 12, HEIGHT + CAPTION), (255, 255, 255))
    for i, panel in enumerate(panels):
        figure.paste(panel, (i * (WIDTH + 12), 0))
    OUTPUT.parent.mkdir(exist_ok=True)
    figure.save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
